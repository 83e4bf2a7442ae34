//! Why TLS settings could not be loaded.

use std::path::PathBuf;

/// Why TLS settings could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("reading {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A file holds no PEM item of the expected kind, or a malformed one.
    #[error("{path}: {reason}")]
    Pem {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// rustls refused the settings (a key that does not match its certificate, say).
    #[error("TLS settings: {0}")]
    Rustls(#[from] rustls::Error),
    /// The settings are incomplete: they would leave a hop in clear text.
    #[error("{0}")]
    Incomplete(String),
    /// The client-certificate verifier could not be built from the CA bundle.
    #[error("client CA {path}: {reason}")]
    ClientCa {
        /// The CA bundle.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}
