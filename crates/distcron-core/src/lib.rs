//! distcron's domain types, free of I/O.
//!
//! - [`job`]: job definitions as stored (JSON with the seed's field names), their validation, and
//!   conversion to and from the gRPC messages.
//! - [`keys`]: where everything lives in the key-value store.
//! - [`output`]: a run's output: the cap on how much is kept, the worker's chunks, and the stored
//!   shape (head, truncation mark, tail).
//! - [`records`]: the small JSON records workers and services keep in the store (running runs,
//!   kill requests, manual triggers, registrations), the slot ledger's encoding, and a run's
//!   status and trigger.
//! - [`wire`]: a run's status and trigger to and from their gRPC enums.

pub mod job;
pub mod keys;
pub mod output;
pub mod records;
pub mod wire;

pub use job::{FieldError, JobDefinition, MissedPolicy, OverlapPolicy};
pub use keys::{Key, Keys};

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Most bytes of a caller's input an error text quotes.
pub const MAX_QUOTED_BYTES: usize = 200;

/// `text` cut to at most `max_bytes` (on a character boundary), with what was left out said at
/// the end: error texts that quote input stay small whatever the input (a gRPC status travels in
/// a header, which a 300 KB quote overflows).
pub fn clip(text: &str, max_bytes: usize) -> std::borrow::Cow<'_, str> {
    if text.len() <= max_bytes {
        return text.into();
    }
    let mut end = max_bytes;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} bytes in all)", &text[..end], text.len()).into()
}

/// A new run id: a UUIDv7, so ids sort by creation time.
pub fn new_run_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clipped_text_keeps_its_start_and_says_how_long_it_was() {
        assert_eq!(clip("short", 10), "short");
        assert_eq!(clip("abcdefghij", 4), "abcd… (10 bytes in all)");
        // Never inside a character.
        assert_eq!(clip("ééé", 3), "é… (6 bytes in all)");
    }
}
