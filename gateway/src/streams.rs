//! Limits on live-output streams (`GET /api/v1/runs/{runId}/output`): each holds a logsvc stream
//! and buffers, so their number is capped per caller (token name) and in total. A stream over
//! either cap is refused with 429 in the error envelope; its place frees when a stream ends.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::http::StatusCode;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::error::ApiError;

/// How many live-output streams may be open.
#[derive(Debug)]
pub struct StreamLimits {
    total: Arc<Semaphore>,
    per_caller: usize,
    open: Arc<Mutex<HashMap<String, usize>>>,
}

impl Default for StreamLimits {
    /// 256 in all, 16 per caller.
    fn default() -> Self {
        Self::new(256, 16)
    }
}

/// A place for one open stream; dropped when the stream ends.
#[derive(Debug)]
pub struct StreamPermit {
    _total: OwnedSemaphorePermit,
    caller: String,
    open: Arc<Mutex<HashMap<String, usize>>>,
}

impl Drop for StreamPermit {
    fn drop(&mut self) {
        if let Ok(mut open) = self.open.lock() {
            if let Some(n) = open.get_mut(&self.caller) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    open.remove(&self.caller);
                }
            }
        }
    }
}

fn too_many(message: String) -> ApiError {
    ApiError::new(StatusCode::TOO_MANY_REQUESTS, "resource_exhausted", message)
}

impl StreamLimits {
    /// At most `total` streams at once, `per_caller` of them for one caller.
    pub fn new(total: usize, per_caller: usize) -> Self {
        Self {
            total: Arc::new(Semaphore::new(total)),
            per_caller,
            open: Arc::default(),
        }
    }

    /// A place for a stream of `caller` (a token's name), or 429 when either cap is reached.
    pub fn open(&self, caller: &str) -> Result<StreamPermit, ApiError> {
        let mut open = self
            .open
            .lock()
            .map_err(|_| too_many("stream accounting unavailable".into()))?;
        let mine = open.get(caller).copied().unwrap_or(0);
        if mine >= self.per_caller {
            return Err(too_many(format!(
                "{caller:?} has {mine} live-output streams open, the most one caller may \
                 (--max-output-streams-per-token)"
            )));
        }
        let total = self.total.clone().try_acquire_owned().map_err(|_| {
            too_many(
                "the gateway serves as many live-output streams as it may (--max-output-streams)"
                    .into(),
            )
        })?;
        open.insert(caller.to_owned(), mine + 1);
        Ok(StreamPermit {
            _total: total,
            caller: caller.to_owned(),
            open: self.open.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_are_capped_per_caller_and_in_total_and_freed_when_they_end() {
        let limits = StreamLimits::new(3, 2);
        let a1 = limits.open("a");
        let a2 = limits.open("a");
        assert!(a1.is_ok() && a2.is_ok());
        let a3 = limits.open("a");
        assert!(a3.is_err_and(|e| e.status == StatusCode::TOO_MANY_REQUESTS));
        let b1 = limits.open("b");
        assert!(b1.is_ok());
        assert!(limits.open("c").is_err(), "3 in all");
        drop(a1);
        assert!(limits.open("a").is_ok(), "a place freed");
    }
}
