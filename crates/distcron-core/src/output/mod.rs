//! A run's output: how much of it is kept ([`OutputCap`]), how the worker cuts it into chunks as
//! it comes ([`OutputChunker`]), and how it is stored ([`StoredOutput`]: the head, the
//! [`TRUNCATION_MARKER`], the tail).

mod cap;
mod chunker;
mod stored;

pub use cap::{OutputCap, OutputCapError};
pub use chunker::OutputChunker;
pub use stored::{AppendedOutput, StoredOutput};

/// The text that stands between the head and the tail of a stored output from which bytes were
/// dropped.
pub const TRUNCATION_MARKER: &str = "\n[... output truncated ...]\n";
