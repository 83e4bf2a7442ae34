//! The HTTP server loop: connections are accepted only while fewer than `max_connections` are
//! open, and a connection that does not send a request's headers within `header_read_timeout`
//! (a half-open or idle one included) is closed. One unauthenticated client therefore cannot use
//! up the process's file descriptors, which the scheduler in the same process needs for its runs.
//! With a certificate the server speaks HTTPS only (HTTP/1.1 and h2 by ALPN): every request is
//! marked [`Https`] (the session cookie becomes `__Host-`/`Secure`) and every answer carries
//! `Strict-Transport-Security`.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tower_http::set_header::SetResponseHeaderLayer;

use crate::auth::Https;
use crate::GatewayError;

/// The HSTS policy sent over HTTPS: browsers use only HTTPS for this host for a year.
pub const HSTS: &str = "max-age=31536000";

/// Limits of HTTP connections.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    /// Most connections open at once; more wait in the listen backlog.
    pub max_connections: usize,
    /// Longest wait for a request's headers on a connection (new or kept alive).
    pub header_read_timeout: Duration,
    /// How long shutdown waits for the requests in flight.
    pub shutdown_grace: Duration,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        Self {
            max_connections: 1024,
            header_read_timeout: Duration::from_secs(10),
            shutdown_grace: Duration::from_secs(10),
        }
    }
}

/// How long accepting pauses after the listener fails (out of file descriptors, say), so a
/// failing `accept` does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Serves `router` on `listener` within `limits` until `shutdown`, then lets the requests in
/// flight finish (up to the grace period).
pub async fn serve(
    router: Router,
    listener: TcpListener,
    shutdown: CancellationToken,
    limits: ConnectionLimits,
    tls: Option<distcron_tls::ServerTls>,
) -> Result<(), GatewayError> {
    tracing::info!(
        addr = ?listener.local_addr().ok(),
        max_connections = limits.max_connections,
        https = tls.is_some(),
        "gateway listening"
    );
    let router = if tls.is_some() {
        router
            .layer(axum::Extension(Https))
            .layer(SetResponseHeaderLayer::overriding(
                http::header::STRICT_TRANSPORT_SECURITY,
                http::HeaderValue::from_static(HSTS),
            ))
    } else {
        router
    };
    let open = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let graceful = GracefulShutdown::new();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    builder.http2().timer(TokioTimer::new());
    loop {
        let permit = tokio::select! {
            permit = open.clone().acquire_owned() => match permit {
                Ok(p) => p,
                Err(_) => break,
            },
            () = shutdown.cancelled() => break,
        };
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot accept a connection");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
            () = shutdown.cancelled() => break,
        };
        let service = TowerToHyperService::new(router.clone());
        let (builder, watcher) = (builder.clone(), graceful.watcher());
        let acceptor = tls.as_ref().map(distcron_tls::ServerTls::acceptor);
        tokio::spawn(async move {
            // hyper times out a request's headers once they start; a client that sends nothing
            // at all is given the same time for its first byte (and, over TLS, for the
            // handshake).
            let mut first = [0u8; 1];
            let first_byte =
                tokio::time::timeout(limits.header_read_timeout, stream.peek(&mut first)).await;
            if !matches!(first_byte, Ok(Ok(n)) if n > 0) {
                return;
            }
            let served = match acceptor {
                None => {
                    let connection =
                        builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
                    watcher.watch(connection.into_owned()).await
                }
                Some(acceptor) => {
                    let handshake =
                        tokio::time::timeout(limits.header_read_timeout, acceptor.accept(stream));
                    let stream = match handshake.await {
                        Ok(Ok(stream)) => stream,
                        Ok(Err(e)) => {
                            tracing::debug!(error = %e, "TLS handshake failed");
                            return;
                        }
                        Err(_) => return,
                    };
                    let connection =
                        builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
                    watcher.watch(connection.into_owned()).await
                }
            };
            if let Err(e) = served {
                tracing::debug!(error = %e, "connection ended with an error");
            }
            drop(permit);
        });
    }
    drop(listener);
    if tokio::time::timeout(limits.shutdown_grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("requests still in flight at the end of the shutdown grace");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::routing::get;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    async fn get_ok(addr: std::net::SocketAddr) -> std::io::Result<String> {
        let mut s = TcpStream::connect(addr).await?;
        s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await?;
        let mut answer = String::new();
        s.read_to_string(&mut answer).await?;
        Ok(answer)
    }

    #[tokio::test]
    async fn idle_connections_are_closed_and_past_the_cap_new_ones_wait() -> std::io::Result<()> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let stop = CancellationToken::new();
        let limits = ConnectionLimits {
            max_connections: 2,
            header_read_timeout: Duration::from_millis(500),
            shutdown_grace: Duration::from_secs(1),
        };
        let app = Router::new().route("/", get(|| async { "ok" }));
        let server = tokio::spawn(serve(app, listener, stop.clone(), limits, None));
        // Two clients that never send a request hold both places...
        let mut idle = [
            TcpStream::connect(addr).await?,
            TcpStream::connect(addr).await?,
        ];
        tokio::time::sleep(Duration::from_millis(100)).await;
        let waiting = tokio::spawn(get_ok(addr));
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(
            !waiting.is_finished(),
            "a third connection waits while two are open"
        );
        // ...until the header-read timeout closes them; then the waiting request is served.
        for s in &mut idle {
            let mut buf = [0u8; 64];
            let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
                .await
                .map_err(std::io::Error::other)??;
            assert_eq!(n, 0, "closed without an answer");
        }
        let answer = tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .map_err(std::io::Error::other)?
            .map_err(std::io::Error::other)??;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        stop.cancel();
        let _ = server.await;
        Ok(())
    }
}
