//! A TLS client's settings: the CA that verifies servers and, for mutual TLS, the certificate it
//! presents.

use std::path::PathBuf;
use std::sync::Arc;

use tokio::sync::watch;
use tonic::transport::{Certificate, ClientTlsConfig};

use crate::{pem, reload, Identity, TlsError};

/// A gRPC client's TLS settings, reloaded when their files change; cheap to clone.
#[derive(Debug, Clone)]
pub struct ClientTls {
    config: watch::Receiver<Arc<ClientTlsConfig>>,
}

impl ClientTls {
    /// Verifies servers with the CA bundle `ca` (and their names against the addresses dialled);
    /// presents `identity` to servers that ask for a client certificate.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime (the files are watched on it).
    pub fn load(ca: PathBuf, identity: Option<Identity>) -> Result<Self, TlsError> {
        let mut files = vec![ca.clone()];
        if let Some(id) = &identity {
            files.extend([id.cert.clone(), id.key.clone()]);
        }
        let config = reload::watch_files("client TLS", files, move || {
            let mut config =
                ClientTlsConfig::new().ca_certificate(Certificate::from_pem(pem::certs_pem(&ca)?));
            if let Some(id) = &identity {
                config = config.identity(tonic::transport::Identity::from_pem(
                    pem::certs_pem(&id.cert)?,
                    pem::key_pem(&id.key)?,
                ));
            }
            Ok(config)
        })?;
        Ok(Self { config })
    }

    /// The current settings, for a new endpoint.
    pub fn config(&self) -> ClientTlsConfig {
        self.config.borrow().as_ref().clone()
    }

    /// Resolves when the settings changed since the last call (or since cloning); `false` when
    /// they can no longer change.
    pub async fn changed(&mut self) -> bool {
        self.config.changed().await.is_ok()
    }
}
