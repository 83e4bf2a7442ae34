//! Bearer tokens with roles, shared by the gateway and the gRPC services.
//!
//! Tokens are configured as `name:role:sha256-hex` entries (the SHA-256 of the token, never the
//! token itself), separated by commas or new lines; `#` starts a comment. A presented token is
//! hashed and compared against every entry in constant time.
//!
//! Roles: `viewer` reads; `operator` also runs now, kills, enables and disables; `admin` also
//! creates, updates and deletes jobs. `worker` is apart: it may only ship run events
//! (`AppendRunEvents`), which no other role may, so a person's token cannot write run history
//! and a worker's token cannot do anything else.

use std::fmt;
use std::str::FromStr;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// What a caller may do: people's roles each include the ones before them (viewer, operator,
/// admin); a worker's role includes no other, and no other includes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Ship run events (workers), nothing else.
    Worker,
    /// Read jobs, runs, workers.
    Viewer,
    /// Also run now, kill, enable/disable.
    Operator,
    /// Also create, update and delete jobs.
    Admin,
}

impl Role {
    /// The role's name in configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Worker => "worker",
            Self::Viewer => "viewer",
            Self::Operator => "operator",
            Self::Admin => "admin",
        }
    }

    /// Whether a caller of this role may do what `needed` is required for.
    pub fn grants(self, needed: Role) -> bool {
        let rank = |r: Role| match r {
            Role::Worker => None,
            Role::Viewer => Some(0),
            Role::Operator => Some(1),
            Role::Admin => Some(2),
        };
        match (rank(self), rank(needed)) {
            (Some(have), Some(need)) => have >= need,
            (None, None) => true,
            _ => false,
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = AuthError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "viewer" => Ok(Self::Viewer),
            "operator" => Ok(Self::Operator),
            "admin" => Ok(Self::Admin),
            "worker" => Ok(Self::Worker),
            other => Err(AuthError::Config(format!(
                "unknown role {other:?} (viewer, operator, admin or worker)"
            ))),
        }
    }
}

/// Who a verified token belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The token's name in configuration.
    pub name: String,
    /// Its role.
    pub role: Role,
}

/// Why tokens could not be configured.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// A bad entry.
    #[error("token configuration: {0}")]
    Config(String),
    /// The token file could not be read.
    #[error("token file {path}: {reason}")]
    File {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
}

#[derive(Debug, Clone)]
struct Entry {
    name: String,
    role: Role,
    hash: [u8; 32],
}

/// The configured tokens.
#[derive(Debug, Clone, Default)]
pub struct TokenStore {
    entries: Vec<Entry>,
}

/// The SHA-256 of `token`, as lower-case hex: what the configuration stores.
pub fn hash_token(token: &str) -> String {
    Sha256::digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn parse_hex(hex: &str) -> Option<[u8; 32]> {
    if hex.len() != 64 || !hex.is_ascii() {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

impl TokenStore {
    /// Parses `name:role:sha256-hex` entries separated by commas or new lines.
    pub fn parse(spec: &str) -> Result<Self, AuthError> {
        let mut entries = Vec::new();
        for raw in spec.split(['\n', ',']) {
            let line = raw.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let parts: Vec<&str> = line.split(':').map(str::trim).collect();
            let [name, role, hex] = parts.as_slice() else {
                return Err(AuthError::Config(format!(
                    "entry {line:?} is not name:role:sha256-hex"
                )));
            };
            if name.is_empty() {
                return Err(AuthError::Config(format!("entry {line:?} has no name")));
            }
            let role: Role = role.parse()?;
            let hash = parse_hex(&hex.to_ascii_lowercase()).ok_or_else(|| {
                AuthError::Config(format!(
                    "token {name:?}: the hash must be 64 hex digits (the SHA-256 of the token)"
                ))
            })?;
            entries.push(Entry {
                name: (*name).to_owned(),
                role,
                hash,
            });
        }
        Ok(Self { entries })
    }

    /// Reads entries from a file (same syntax as [`TokenStore::parse`]).
    pub fn from_file(path: &std::path::Path) -> Result<Self, AuthError> {
        let text = std::fs::read_to_string(path).map_err(|e| AuthError::File {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        Self::parse(&text)
    }

    /// Adds the entries of `other`.
    pub fn extend(&mut self, other: Self) {
        self.entries.extend(other.entries);
    }

    /// Whether no token is configured (authentication off).
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The identity `token` belongs to, if any. Every entry is compared, in constant time.
    pub fn verify(&self, token: &str) -> Option<Identity> {
        let presented: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let mut found: Option<&Entry> = None;
        for entry in &self.entries {
            if bool::from(entry.hash.ct_eq(&presented)) && found.is_none() {
                found = Some(entry);
            }
        }
        found.map(|e| Identity {
            name: e.name.clone(),
            role: e.role,
        })
    }
}

/// The tokens from an inline spec and/or a file. Refuses an empty set for a process listening on
/// any non-loopback address of `listens` unless `insecure_no_auth`: the product runs arbitrary
/// commands, so an open service on the network is remote code execution.
pub fn load_tokens(
    spec: Option<&str>,
    file: Option<&std::path::Path>,
    listens: &[std::net::SocketAddr],
    insecure_no_auth: bool,
) -> Result<TokenStore, AuthError> {
    let mut tokens = TokenStore::default();
    if let Some(spec) = spec {
        tokens.extend(TokenStore::parse(spec)?);
    }
    if let Some(path) = file {
        tokens.extend(TokenStore::from_file(path)?);
    }
    let open = listens.iter().find(|a| !a.ip().is_loopback());
    if let (true, Some(listen), false) = (tokens.is_empty(), open, insecure_no_auth) {
        return Err(AuthError::Config(format!(
            "refusing to serve {listen} without authentication: configure tokens \
             (--tokens / --tokens-file) or pass --insecure-no-auth"
        )));
    }
    Ok(tokens)
}

/// The token of an `Authorization: Bearer <token>` header value.
pub fn bearer(header: &str) -> Option<&str> {
    let (scheme, token) = header.split_once(' ')?;
    (scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty()).then(|| token.trim())
}

/// Every gRPC method distcron serves (`package.Service/Method`) with the role it needs. A test
/// checks it against the methods of the served descriptor sets, so a new RPC cannot go unlisted.
pub const GRPC_METHODS: &[(&str, Role)] = &[
    ("distcron.jobs.v1.JobService/SaveJob", Role::Admin),
    ("distcron.jobs.v1.JobService/DeleteJob", Role::Admin),
    ("distcron.jobs.v1.JobService/GetJob", Role::Viewer),
    ("distcron.jobs.v1.JobService/ListJobs", Role::Viewer),
    ("distcron.jobs.v1.JobService/KillJob", Role::Operator),
    ("distcron.jobs.v1.JobService/TriggerJob", Role::Operator),
    ("distcron.jobs.v1.JobService/SetJobEnabled", Role::Operator),
    ("distcron.jobs.v1.JobService/PreviewSchedule", Role::Viewer),
    ("distcron.jobs.v1.JobService/ListWorkers", Role::Viewer),
    ("distcron.logs.v1.LogService/AppendRunEvents", Role::Worker),
    ("distcron.logs.v1.LogService/ListRuns", Role::Viewer),
    ("distcron.logs.v1.LogService/GetRun", Role::Viewer),
    ("distcron.logs.v1.LogService/TailRun", Role::Viewer),
    ("distcron.logs.v1.LogService/JobStats", Role::Viewer),
];

/// The role a gRPC method (`/package.Service/Method`) needs: its entry in [`GRPC_METHODS`], and
/// for any method not listed there, admin (fail closed).
pub fn grpc_required_role(path: &str) -> Role {
    let method = path.strip_prefix('/').unwrap_or(path);
    GRPC_METHODS
        .iter()
        .find(|(m, _)| *m == method)
        .map_or(Role::Admin, |(_, role)| *role)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> TokenStore {
        let spec = format!(
            "ops:operator:{}, # the on-call\nboss:admin:{}\n",
            hash_token("op-secret"),
            hash_token("admin-secret").to_uppercase()
        );
        TokenStore::parse(&spec).unwrap_or_default()
    }

    #[test]
    fn tokens_are_recognised_by_hash_with_their_role() {
        let s = store();
        assert_eq!(
            s.verify("op-secret"),
            Some(Identity {
                name: "ops".into(),
                role: Role::Operator
            })
        );
        assert_eq!(s.verify("admin-secret").map(|i| i.role), Some(Role::Admin));
        assert_eq!(s.verify("nope"), None);
        assert_eq!(s.verify(""), None);
    }

    #[test]
    fn bad_entries_name_the_problem() {
        let err = |spec: &str| TokenStore::parse(spec).err().map(|e| e.to_string());
        assert!(err("a:admin").is_some_and(|e| e.contains("name:role:sha256-hex")));
        assert!(err("a:root:00").is_some_and(|e| e.contains("unknown role")));
        assert!(err("a:admin:xyz").is_some_and(|e| e.contains("64 hex digits")));
        assert!(TokenStore::parse("# nothing\n").is_ok_and(|s| s.is_empty()));
    }

    #[test]
    fn an_open_server_must_be_on_loopback_or_say_so() {
        let lo: std::net::SocketAddr = "127.0.0.1:8070"
            .parse()
            .unwrap_or(([127, 0, 0, 1], 0).into());
        let any: std::net::SocketAddr = "0.0.0.0:8070".parse().unwrap_or(([0, 0, 0, 0], 0).into());
        assert!(load_tokens(None, None, &[lo], false).is_ok_and(|t| t.is_empty()));
        assert!(load_tokens(None, None, &[lo, any], false).is_err());
        assert!(load_tokens(None, None, &[any], true).is_ok());
        let spec = format!("a:viewer:{}", hash_token("t"));
        assert!(load_tokens(Some(&spec), None, &[any], false).is_ok_and(|t| !t.is_empty()));
    }

    #[test]
    fn roles_are_ordered_and_methods_need_the_right_one() {
        use Role::*;
        assert!(Admin.grants(Operator) && Operator.grants(Viewer) && Admin.grants(Viewer));
        assert!(!Viewer.grants(Operator) && !Operator.grants(Admin));
        // The worker role is apart: only workers ship run events, and they do nothing else.
        assert!(Worker.grants(Worker));
        for person in [Viewer, Operator, Admin] {
            assert!(!person.grants(Worker), "{person}");
            assert!(!Worker.grants(person), "{person}");
        }
        assert_eq!(
            grpc_required_role("/distcron.logs.v1.LogService/AppendRunEvents"),
            Worker
        );
        // Not listed: needs the highest role.
        assert_eq!(
            grpc_required_role("/distcron.jobs.v1.JobService/NewMutation"),
            Admin
        );
        assert_eq!(grpc_required_role("/other.Service/SaveJob"), Admin);
        assert_eq!(
            grpc_required_role("/distcron.jobs.v1.JobService/SaveJob"),
            Role::Admin
        );
        assert_eq!(
            grpc_required_role("/distcron.jobs.v1.JobService/KillJob"),
            Role::Operator
        );
        assert_eq!(
            grpc_required_role("/distcron.logs.v1.LogService/ListRuns"),
            Role::Viewer
        );
        assert_eq!(bearer("Bearer abc"), Some("abc"));
        assert_eq!(bearer("basic abc"), None);
        assert_eq!(bearer("Bearer "), None);
    }
}
