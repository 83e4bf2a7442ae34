//! Starts jobsvc in-process against a real etcd.
#![allow(dead_code, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use distcron_core::Keys;
use distcron_jobsvc::serve;
use distcron_kv::{EtcdConfig, EtcdKv, KvStore};
use distcron_proto::jobs::v1::job_service_client::JobServiceClient;
use distcron_proto::jobs::v1::{Job, SaveJobRequest};
use distcron_server::Instance;
use distcron_testkit::{shared_etcd, unique_name};
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

/// A running jobsvc with its store, key layout and a client.
pub struct Harness {
    pub store: Arc<dyn KvStore>,
    pub keys: Keys,
    pub client: JobServiceClient<Channel>,
    pub addr: String,
    pub stop: CancellationToken,
    pub task: tokio::task::JoinHandle<()>,
}

impl Harness {
    /// jobsvc on the shared etcd under a fresh key prefix.
    pub async fn shared() -> Self {
        Self::on(shared_etcd().endpoints()).await
    }

    /// jobsvc on the given etcd endpoints under a fresh key prefix.
    pub async fn on(endpoints: Vec<String>) -> Self {
        let store: Arc<dyn KvStore> = Arc::new(
            EtcdKv::connect(EtcdConfig::new(endpoints))
                .await
                .expect("etcd client"),
        );
        let keys = Keys::new(&format!("/{}/", unique_name("jobsvc")));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = format!("http://{}", listener.local_addr().expect("addr"));
        let stop = CancellationToken::new();
        let instance = Instance {
            id: unique_name("instance"),
            advertise: addr.clone(),
            registration_ttl: Duration::from_secs(5),
            tokens: Default::default(),
            tls: None,
        };
        let task = tokio::spawn({
            let (store, keys, stop) = (store.clone(), keys.clone(), stop.clone());
            async move {
                serve(store, keys, instance, listener, stop)
                    .await
                    .expect("jobsvc serve");
            }
        });
        let client = JobServiceClient::connect(addr.clone())
            .await
            .expect("connect jobsvc");
        Self {
            store,
            keys,
            client,
            addr,
            stop,
            task,
        }
    }

    pub async fn shutdown(self) {
        self.stop.cancel();
        let _ = self.task.await;
    }
}

/// A valid job definition.
pub fn job(name: &str) -> Job {
    Job {
        name: name.into(),
        command: "echo hello".into(),
        cron_expr: "*/5 * * * * *".into(),
        ..Default::default()
    }
}

pub fn save(job: Job) -> SaveJobRequest {
    SaveJobRequest {
        job: Some(job),
        expected_revision: None,
    }
}
