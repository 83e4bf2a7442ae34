//! TLS for distcron's gRPC servers, its gRPC clients and the gateway's HTTPS, with rustls (ring).
//!
//! Certificates, keys and CA bundles are PEM files. [`ServerTls`] and [`ClientTls`] load them at
//! start (a file that does not parse is an error then) and watch them afterwards ([`reload`]): when
//! a file changes, the new settings apply to the next handshake, and a change that does not load
//! (a half-written file, say) leaves the previous settings in place with a warning.
//! [`tls_incoming`] turns a listener into a stream of TLS connections for tonic.

mod client;
mod error;
mod incoming;
mod pem;
pub mod reload;
mod server;

pub use client::ClientTls;
pub use error::TlsError;
pub use incoming::{tls_incoming, HANDSHAKE_TIMEOUT, MAX_HANDSHAKES};
pub use server::{ServerTls, GRPC_ALPN, HTTP_ALPN};

/// Where a certificate chain and its private key are (PEM files).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The certificate chain, leaf first.
    pub cert: std::path::PathBuf,
    /// The private key (PKCS#8, PKCS#1 or SEC1).
    pub key: std::path::PathBuf,
}

/// The crypto provider every distcron TLS endpoint uses.
fn provider() -> std::sync::Arc<rustls::crypto::CryptoProvider> {
    std::sync::Arc::new(rustls::crypto::ring::default_provider())
}
