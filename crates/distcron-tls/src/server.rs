//! A TLS server's settings: its certificate and, for mutual TLS, the CA its clients' certificates
//! must chain to.

use std::path::PathBuf;
use std::sync::Arc;

use tokio::sync::watch;

use crate::{pem, reload, Identity, TlsError};

/// A server's TLS settings, reloaded when their files change; cheap to clone.
#[derive(Debug, Clone)]
pub struct ServerTls {
    config: watch::Receiver<Arc<rustls::ServerConfig>>,
    mutual: bool,
}

/// The ALPN protocols a gRPC server offers.
pub const GRPC_ALPN: &[&[u8]] = &[b"h2"];
/// The ALPN protocols an HTTP server (the gateway) offers.
pub const HTTP_ALPN: &[&[u8]] = &[b"h2", b"http/1.1"];

impl ServerTls {
    /// Serves `identity`; with `client_ca`, every client must present a certificate that chains
    /// to it. `alpn` is what the server offers ([`GRPC_ALPN`], [`HTTP_ALPN`]).
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime (the files are watched on it).
    pub fn load(
        identity: &Identity,
        client_ca: Option<PathBuf>,
        alpn: &'static [&'static [u8]],
    ) -> Result<Self, TlsError> {
        let mut files = vec![identity.cert.clone(), identity.key.clone()];
        files.extend(client_ca.clone());
        let mutual = client_ca.is_some();
        let identity = identity.clone();
        let config = reload::watch_files("server TLS", files, move || {
            build(&identity, client_ca.as_deref(), alpn)
        })?;
        Ok(Self { config, mutual })
    }

    /// Whether clients must present a certificate.
    pub fn is_mutual(&self) -> bool {
        self.mutual
    }

    /// An acceptor with the current settings.
    pub fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        tokio_rustls::TlsAcceptor::from(self.config.borrow().clone())
    }
}

fn build(
    identity: &Identity,
    client_ca: Option<&std::path::Path>,
    alpn: &[&[u8]],
) -> Result<rustls::ServerConfig, TlsError> {
    let builder = rustls::ServerConfig::builder_with_provider(crate::provider())
        .with_safe_default_protocol_versions()?;
    let builder = match client_ca {
        Some(path) => {
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(pem::roots(path)?),
                crate::provider(),
            )
            .build()
            .map_err(|e| TlsError::ClientCa {
                path: path.to_owned(),
                reason: e.to_string(),
            })?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config =
        builder.with_single_cert(pem::certs(&identity.cert)?, pem::key(&identity.key)?)?;
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(config)
}
