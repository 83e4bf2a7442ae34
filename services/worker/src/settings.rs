//! This worker's fixed settings, taken from its configuration once at start.

use std::collections::BTreeMap;
use std::time::Duration;

/// Fixed settings of this worker.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Most runs at once.
    pub capacity: u32,
    /// Standby before a non-preferred worker claims.
    pub claim_standby: Duration,
    /// How long before its slot a slot is claimed.
    pub claim_lead: Duration,
    /// Largest tolerated clock offset.
    pub clock_skew_bound: Duration,
    /// SIGTERM to SIGKILL.
    pub kill_grace: Duration,
    /// The executable started as each run's group leader (this worker's own).
    pub group_leader: std::path::PathBuf,
    /// The shell.
    pub shell: std::path::PathBuf,
    /// Output shipped per run at most.
    pub output_cap_bytes: usize,
    /// How long a run's start (and output) waits to be shipped with its end.
    pub start_hold: Duration,
    /// Session lease TTL.
    pub session_ttl: Duration,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Most claim transactions in flight at once.
    pub max_claim_txns_in_flight: usize,
    /// Users other than its own that runs may run as (`*`: any).
    pub allowed_users: Vec<String>,
}
