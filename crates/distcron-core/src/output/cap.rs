//! The output cap: the one setting (`--output-cap-bytes`) of how much of a run's output is kept.

use std::fmt;
use std::str::FromStr;

/// How much of a run's output is kept, in bytes: the worker ships the first `bytes` of it as
/// they come and a tail of half as much at the end; the run store keeps half of it from the start
/// (the head) and half from the end (the tail).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutputCap {
    /// Bytes kept at most (plus the truncation mark). [`OutputCap::new`] and parsing check the
    /// bounds; a literal skips the check (tests use it for tiny caps).
    pub bytes: usize,
}

impl OutputCap {
    /// The smallest cap accepted.
    pub const MIN_BYTES: usize = 1024;
    /// The largest cap accepted: far below MongoDB's 16 MiB document limit.
    pub const MAX_BYTES: usize = 8 * 1024 * 1024;

    /// A cap of `bytes`, which must be within [`OutputCap::MIN_BYTES`] and
    /// [`OutputCap::MAX_BYTES`].
    pub fn new(bytes: usize) -> Result<Self, OutputCapError> {
        if (Self::MIN_BYTES..=Self::MAX_BYTES).contains(&bytes) {
            Ok(Self { bytes })
        } else {
            Err(OutputCapError::OutOfRange)
        }
    }
}

impl Default for OutputCap {
    /// 1 MiB per run.
    fn default() -> Self {
        Self { bytes: 1024 * 1024 }
    }
}

impl FromStr for OutputCap {
    type Err = OutputCapError;

    /// A cap from a decimal number of bytes (a flag's or a configuration file's value).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bytes = s
            .parse()
            .map_err(|_| OutputCapError::NotANumber(s.to_owned()))?;
        Self::new(bytes)
    }
}

impl fmt::Display for OutputCap {
    /// The number of bytes, as [`OutputCap::from_str`] reads it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.bytes.fmt(f)
    }
}

/// Why an output cap was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OutputCapError {
    /// The value is not a number.
    #[error("{0:?} is not a number of bytes")]
    NotANumber(String),
    /// The number is outside the accepted bounds.
    #[error(
        "must be between {} and {} bytes",
        OutputCap::MIN_BYTES,
        OutputCap::MAX_BYTES
    )]
    OutOfRange,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_within_the_bounds_are_accepted() {
        assert_eq!(OutputCap::new(1024), Ok(OutputCap { bytes: 1024 }));
        assert_eq!(
            OutputCap::new(8 * 1024 * 1024),
            Ok(OutputCap {
                bytes: 8 * 1024 * 1024
            })
        );
        assert_eq!("1048576".parse(), Ok(OutputCap::default()));
    }

    #[test]
    fn caps_outside_the_bounds_are_refused() {
        assert_eq!(OutputCap::new(0), Err(OutputCapError::OutOfRange));
        assert_eq!(OutputCap::new(1023), Err(OutputCapError::OutOfRange));
        assert_eq!(
            OutputCap::new(8 * 1024 * 1024 + 1),
            Err(OutputCapError::OutOfRange)
        );
        assert_eq!(
            OutputCap::new(1).map_err(|e| e.to_string()),
            Err("must be between 1024 and 8388608 bytes".to_owned())
        );
    }

    #[test]
    fn a_cap_that_is_not_a_number_says_so() {
        assert_eq!(
            "1k".parse::<OutputCap>().map_err(|e| e.to_string()),
            Err("\"1k\" is not a number of bytes".to_owned())
        );
    }

    #[test]
    fn a_cap_reads_back_as_it_is_written() {
        let cap = OutputCap::new(4096).map_err(|e| e.to_string());
        assert_eq!(cap.map(|c| c.to_string()), Ok("4096".to_owned()));
    }
}
