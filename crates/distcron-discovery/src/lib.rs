//! Service discovery over the key-value store.
//!
//! Every service instance registers `<prefix>services/<service>/<instance-id>` on a lease it keeps
//! alive ([`Registration`]) and revokes on shutdown, so it disappears at once; a crashed instance
//! disappears when its lease expires. Clients list and watch that prefix and balance over the live
//! set ([`balanced_channel`]); a static address list overrides discovery.

mod balance;
mod registration;

pub use balance::{balanced_channel, Endpoints};
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
}
