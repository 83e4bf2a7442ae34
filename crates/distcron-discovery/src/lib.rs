//! Service discovery over the key-value store.
//!
//! Every service instance registers `<prefix>services/<service>/<instance-id>` on a lease it keeps
//! alive ([`Registration`]) and revokes on shutdown, so it disappears at once; a crashed instance
//! disappears when its lease expires. Clients list and watch that prefix and balance over the live
//! set ([`balanced_channel`]); a static address list overrides discovery.

mod balance;
mod credentials;
mod registration;

pub use balance::{balanced_channel, Endpoints};
pub use credentials::BearerToken;
pub use registration::Registration;

/// Why discovery failed.
#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] distcron_kv::KvError),
    /// An address could not be used as a gRPC endpoint.
    #[error("bad endpoint {addr:?}: {reason}")]
    BadEndpoint {
        /// The address.
        addr: String,
        /// Why.
        reason: String,
    },
    /// A token that cannot be sent in a header.
    #[error("the token is not valid header text")]
    BadToken,
}

/// This host's name (from the kernel), or "localhost".
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "localhost".to_owned())
}

/// An instance id unique per process: `<host>-<pid>`.
pub fn default_instance_id() -> String {
    format!("{}-{}", hostname(), std::process::id())
}

/// The URL others dial to reach a server bound to `local`: the bound address itself, or the host
/// name when bound to all interfaces; `https://` when the server uses TLS.
pub fn advertise_url(local: std::net::SocketAddr, tls: bool) -> String {
    let scheme = if tls { "https" } else { "http" };
    if local.ip().is_unspecified() {
        format!("{scheme}://{}:{}", hostname(), local.port())
    } else {
        format!("{scheme}://{local}")
    }
}
