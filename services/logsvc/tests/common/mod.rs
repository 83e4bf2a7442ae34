//! Starts logsvc in-process against a real MongoDB-protocol server and etcd.
#![allow(dead_code, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use distcron_core::Keys;
use distcron_kv::{EtcdConfig, EtcdKv, KvStore};
use distcron_logsvc::{serve, Storage};
use distcron_proto::logs::v1 as pb;
use distcron_proto::logs::v1::log_service_client::LogServiceClient;
use distcron_runstore::{MongoConfig, MongoRunStore, OutputCap};
use distcron_server::Instance;
use distcron_testkit::{shared_etcd, shared_mongo, unique_name};
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

pub struct Harness {
    pub client: LogServiceClient<Channel>,
    pub database: String,
    pub stop: CancellationToken,
    pub task: tokio::task::JoinHandle<()>,
}

impl Harness {
    pub async fn shared(cap: usize) -> Self {
        Self::on(&shared_mongo().uri(), cap).await
    }

    pub async fn on(mongo_uri: &str, cap: usize) -> Self {
        let database = unique_name("logsvc");
        let mut config = MongoConfig::new(mongo_uri);
        config.database = database.clone();
        config.timeout = Duration::from_secs(3);
        let runs = Arc::new(MongoRunStore::connect(&config).await.expect("mongo client"));
        let registry: Arc<dyn KvStore> = Arc::new(
            EtcdKv::connect(EtcdConfig::new(shared_etcd().endpoints()))
                .await
                .expect("etcd"),
        );
        let keys = Keys::new(&format!("/{}/", unique_name("reg")));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = format!("http://{}", listener.local_addr().expect("addr"));
        let instance = Instance {
            id: unique_name("i"),
            advertise: addr.clone(),
            registration_ttl: Duration::from_secs(5),
            tokens: Default::default(),
            tls: None,
        };
        let stop = CancellationToken::new();
        let storage = Storage {
            runs,
            retention_days: 7,
            cap: OutputCap { bytes: cap },
        };
        let task = tokio::spawn({
            let stop = stop.clone();
            async move {
                serve(storage, registry, keys, instance, listener, stop)
                    .await
                    .expect("serve")
            }
        });
        let client = LogServiceClient::connect(addr)
            .await
            .expect("connect logsvc");
        Self {
            client,
            database,
            stop,
            task,
        }
    }

    pub async fn shutdown(self) {
        self.stop.cancel();
        let _ = self.task.await;
    }
}

pub fn started(run_id: &str, job: &str, start_ms: i64) -> pb::RunEvent {
    pb::RunEvent {
        run_id: run_id.into(),
        trace_id: String::new(),
        span_id: String::new(),
        kind: Some(pb::run_event::Kind::Started(pb::RunStarted {
            job_name: job.into(),
            command: "echo hi".into(),
            plan_time_ms: start_ms,
            schedule_time_ms: start_ms,
            start_time_ms: start_ms,
            worker_id: "w1".into(),
            trigger: pb::RunTrigger::Schedule as i32,
            status: pb::RunStatus::Running as i32,
            err: String::new(),
        })),
    }
}

pub fn chunk(run_id: &str, seq: u64, data: &[u8]) -> pb::RunEvent {
    pb::RunEvent {
        run_id: run_id.into(),
        trace_id: String::new(),
        span_id: String::new(),
        kind: Some(pb::run_event::Kind::Output(pb::OutputChunk {
            seq,
            data: data.to_vec(),
        })),
    }
}

pub fn finished(run_id: &str, status: pb::RunStatus, end_ms: i64) -> pb::RunEvent {
    pb::RunEvent {
        run_id: run_id.into(),
        trace_id: String::new(),
        span_id: String::new(),
        kind: Some(pb::run_event::Kind::Finished(pb::RunFinished {
            status: status as i32,
            end_time_ms: end_ms,
            exit_code: Some(0),
            signal: None,
            err: String::new(),
            output_bytes_dropped: 0,
        })),
    }
}

pub fn batch(events: Vec<pb::RunEvent>) -> pb::AppendRunEventsRequest {
    pb::AppendRunEventsRequest { events }
}
