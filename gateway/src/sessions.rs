//! Console sessions: the console's cookie holds a random session id, never the token.
//!
//! `POST /api/v1/session` checks a token and keeps it here, in this gateway's memory only (never
//! written anywhere), under a new random id (244 bits from the operating system's generator) that
//! expires after [`SESSION_TTL`]; `DELETE /api/v1/session` forgets it at once. A cookie sent to
//! another service on the same host name therefore carries only an id that this process alone can
//! use, until logout or expiry. Sessions do not survive a restart of the gateway, and each gateway
//! instance has its own (put the console behind one instance, or sticky sessions).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a console session lasts.
pub const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);
/// Most sessions kept at once; beyond it the oldest is forgotten.
pub const MAX_SESSIONS: usize = 10_000;

/// One logged-in console.
#[derive(Debug, Clone)]
struct Session {
    token: String,
    expires: Instant,
}

/// The live console sessions of this gateway.
#[derive(Debug, Default)]
pub struct Sessions {
    live: Mutex<HashMap<String, Session>>,
}

/// A new session id: two version-4 UUIDs (122 random bits each), as 64 hex digits.
fn new_id() -> String {
    format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    )
}

impl Sessions {
    /// Opens a session for `token` (already verified); returns its id.
    pub fn open(&self, token: &str) -> String {
        self.open_at(token, Instant::now())
    }

    fn open_at(&self, token: &str, now: Instant) -> String {
        let id = new_id();
        if let Ok(mut live) = self.live.lock() {
            live.retain(|_, s| s.expires > now);
            if live.len() >= MAX_SESSIONS {
                let oldest = live
                    .iter()
                    .min_by_key(|(_, s)| s.expires)
                    .map(|(k, _)| k.clone());
                if let Some(oldest) = oldest {
                    live.remove(&oldest);
                }
            }
            live.insert(
                id.clone(),
                Session {
                    token: token.to_owned(),
                    expires: now + SESSION_TTL,
                },
            );
        }
        id
    }

    /// The token of session `id`, if it is open and has not expired.
    pub fn token(&self, id: &str) -> Option<String> {
        self.token_at(id, Instant::now())
    }

    fn token_at(&self, id: &str, now: Instant) -> Option<String> {
        let mut live = self.live.lock().ok()?;
        match live.get(id) {
            Some(s) if s.expires > now => Some(s.token.clone()),
            Some(_) => {
                live.remove(id);
                None
            }
            None => None,
        }
    }

    /// Ends session `id` (logout).
    pub fn close(&self, id: &str) {
        if let Ok(mut live) = self.live.lock() {
            live.remove(id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_gives_its_token_until_it_is_closed_or_expires() {
        let sessions = Sessions::default();
        let now = Instant::now();
        let id = sessions.open_at("secret", now);
        assert_eq!(id.len(), 64);
        assert!(!id.contains("secret"));
        assert_ne!(sessions.open_at("secret", now), id, "ids are new each time");
        assert_eq!(sessions.token_at(&id, now).as_deref(), Some("secret"));
        assert_eq!(sessions.token_at("guess", now), None);
        assert_eq!(sessions.token_at(&id, now + SESSION_TTL), None, "expired");
        let other = sessions.open_at("secret", now);
        sessions.close(&other);
        assert_eq!(sessions.token_at(&other, now), None, "closed");
    }
}
