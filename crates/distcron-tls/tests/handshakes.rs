//! TLS and mutual TLS over real sockets: a tonic health server behind [`tls_incoming`], dialled by
//! tonic clients with the right and the wrong settings, and certificates replaced while it runs.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::path::Path;
use std::time::Duration;

use distcron_testkit::{Issued, TestCa};
use distcron_tls::{tls_incoming, ClientTls, Identity, ServerTls, GRPC_ALPN};
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Server};
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

fn identity(issued: &Issued) -> Identity {
    Identity {
        cert: issued.cert.clone(),
        key: issued.key.clone(),
    }
}

/// Serves gRPC health on a free loopback port with `tls`; returns `https://127.0.0.1:<port>`.
async fn serve(tls: ServerTls) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (_reporter, health) = tonic_health::server::health_reporter();
    tokio::spawn(
        Server::builder()
            .add_service(health)
            .serve_with_incoming(tls_incoming(listener, tls)),
    );
    format!("https://127.0.0.1:{port}")
}

/// One health check over a new connection with `config`.
async fn check(url: &str, config: ClientTlsConfig) -> Result<(), String> {
    let channel = Endpoint::from_shared(url.to_owned())
        .unwrap()
        .connect_timeout(Duration::from_secs(5))
        .tls_config(config)
        .map_err(|e| e.to_string())?
        .connect()
        .await
        .map_err(|e| format!("{e:?}"))?;
    HealthClient::new(channel)
        .check(HealthCheckRequest::default())
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
}

fn trusting(ca: &Path) -> ClientTlsConfig {
    ClientTlsConfig::new().ca_certificate(Certificate::from_pem(std::fs::read(ca).unwrap()))
}

fn presenting(config: ClientTlsConfig, issued: &Issued) -> ClientTlsConfig {
    config.identity(tonic::transport::Identity::from_pem(
        std::fs::read(&issued.cert).unwrap(),
        std::fs::read(&issued.key).unwrap(),
    ))
}

#[tokio::test]
async fn mutual_tls_admits_clients_with_a_certificate_of_the_ca_and_refuses_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new(&dir.path().join("ca"), "cluster CA").unwrap();
    let other = TestCa::new(&dir.path().join("other"), "someone else's CA").unwrap();
    let server = ca.issue("server", &["localhost", "127.0.0.1"]).unwrap();
    let client = ca.issue("client", &["worker-1"]).unwrap();
    let stranger = other.issue("stranger", &["worker-1"]).unwrap();
    let tls = ServerTls::load(&identity(&server), Some(ca.ca_pem()), GRPC_ALPN).unwrap();
    assert!(tls.is_mutual());
    let url = serve(tls).await;

    // A silent TCP client does not hold up the handshakes of others.
    let _silent = tokio::net::TcpStream::connect(url.trim_start_matches("https://"))
        .await
        .unwrap();
    check(&url, presenting(trusting(&ca.ca_pem()), &client))
        .await
        .expect("a client of the CA is served");
    let no_cert = check(&url, trusting(&ca.ca_pem())).await;
    assert!(
        no_cert.is_err(),
        "a client without a certificate was served"
    );
    let foreign_cert = check(&url, presenting(trusting(&ca.ca_pem()), &stranger)).await;
    assert!(foreign_cert.is_err(), "a client of another CA was served");
    let distrusting = check(&url, presenting(trusting(&other.ca_pem()), &client)).await;
    assert!(
        distrusting.is_err(),
        "a client without the CA accepted the server"
    );
    // The same server reached under a name its certificate does not carry.
    let wrong_name = check(
        &url,
        presenting(trusting(&ca.ca_pem()), &client).domain_name("jobsvc.example"),
    )
    .await;
    assert!(wrong_name.is_err(), "a wrong server name was accepted");
    // Plaintext to a TLS port gets nothing.
    let plain = Endpoint::from_shared(url.replace("https://", "http://"))
        .unwrap()
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await;
    if let Ok(channel) = plain {
        let call = HealthClient::new(channel)
            .check(HealthCheckRequest::default())
            .await;
        assert!(call.is_err(), "a plaintext call was served on the TLS port");
    }
}

#[tokio::test]
async fn replaced_certificate_files_apply_to_the_next_handshake_on_both_ends() {
    let dir = tempfile::tempdir().unwrap();
    let old_ca = TestCa::new(&dir.path().join("old"), "old CA").unwrap();
    let new_ca = TestCa::new(&dir.path().join("new"), "new CA").unwrap();
    let live = dir.path().join("live");
    std::fs::create_dir_all(&live).unwrap();
    let files = Issued {
        cert: live.join("server.pem"),
        key: live.join("server-key.pem"),
    };
    let live_ca = live.join("ca.pem");
    let install = |issued: &Issued, ca: &TestCa| {
        std::fs::copy(&issued.key, &files.key).unwrap();
        std::fs::copy(&issued.cert, &files.cert).unwrap();
        std::fs::copy(ca.ca_pem(), &live_ca).unwrap();
    };
    let names = ["localhost", "127.0.0.1"];
    install(&old_ca.issue("server", &names).unwrap(), &old_ca);
    let url = serve(ServerTls::load(&identity(&files), None, GRPC_ALPN).unwrap()).await;
    let mut client = ClientTls::load(live_ca.clone(), None).unwrap();
    check(&url, client.config())
        .await
        .expect("served with the first certificate");

    install(&new_ca.issue("server", &names).unwrap(), &new_ca);
    tokio::time::timeout(Duration::from_secs(20), client.changed())
        .await
        .expect("the client saw the new CA file");
    let mut served_new = false;
    for _ in 0..40 {
        if check(&url, client.config()).await.is_ok() {
            served_new = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(served_new, "the server never presented the new certificate");
    assert!(
        check(&url, trusting(&old_ca.ca_pem())).await.is_err(),
        "the old certificate is still served"
    );
}

#[test]
fn files_that_do_not_hold_what_they_should_are_refused_at_load() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let _guard = rt.enter();
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new(dir.path(), "CA").unwrap();
    let server = ca.issue("server", &["localhost"]).unwrap();
    let swapped = Identity {
        cert: server.key.clone(),
        key: server.cert.clone(),
    };
    let e = ServerTls::load(&swapped, None, GRPC_ALPN).unwrap_err();
    assert!(e.to_string().contains("server-key.pem"), "{e}");
    let missing = ClientTls::load(dir.path().join("nope.pem"), None).unwrap_err();
    assert!(missing.to_string().contains("nope.pem"), "{missing}");
}
