//! A run's output as the run store keeps it: the head, then the truncation mark and the tail.

use super::{OutputCap, TRUNCATION_MARKER};

/// A run's output as stored: the head as it came, then the latest output (the tail), with the
/// [`TRUNCATION_MARKER`] between them once the store dropped output from the middle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoredOutput<'a> {
    /// The stored text.
    pub text: &'a str,
    /// How many bytes at the start of `text` are the head.
    pub head_bytes: usize,
    /// Whether output was dropped (by the store's cap, which puts the mark after the head, or
    /// by the worker's).
    pub truncated: bool,
}

/// A stored output with more output appended: what to store next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppendedOutput {
    /// The stored text.
    pub text: String,
    /// How many bytes at the start of `text` are the head.
    pub head_bytes: usize,
    /// Whether output was dropped.
    pub truncated: bool,
}

impl<'a> StoredOutput<'a> {
    /// The head and the tail, without the mark between them. The head ends at `head_bytes`, cut
    /// back to a character boundary.
    pub fn parts(&self) -> (&'a str, &'a str) {
        let (head, rest) = self
            .text
            .split_at(floor_boundary(self.text, self.head_bytes));
        let tail = if self.truncated {
            rest.strip_prefix(TRUNCATION_MARKER).unwrap_or(rest)
        } else {
            rest
        };
        (head, tail)
    }

    /// This output with `data` appended (invalid UTF-8 replaced), kept within `cap`: while no
    /// tail has begun, output fills the head up to half the cap; the rest goes to the tail, which
    /// keeps the last `cap - cap / 2` bytes (whole characters), and dropping any sets `truncated`.
    pub fn append(&self, data: &[u8], cap: OutputCap) -> AppendedOutput {
        let text = String::from_utf8_lossy(data);
        let head_cap = cap.bytes / 2;
        let tail_cap = cap.bytes - head_cap;
        let (head, tail) = self.parts();
        let (mut head, mut tail) = (head.to_owned(), tail.to_owned());
        let mut truncated = self.truncated;
        let mut text: &str = &text;
        if tail.is_empty() && !truncated && head.len() < head_cap {
            let take = floor_boundary(text, head_cap - head.len());
            head.push_str(&text[..take]);
            text = &text[take..];
        }
        tail.push_str(text);
        if tail.len() > tail_cap {
            let cut = ceil_boundary(&tail, tail.len() - tail_cap);
            tail.drain(..cut);
            truncated = true;
        }
        let head_bytes = head.len();
        let text = if truncated {
            format!("{head}{TRUNCATION_MARKER}{tail}")
        } else {
            head + &tail
        };
        AppendedOutput {
            text,
            head_bytes,
            truncated,
        }
    }

    /// The last `new` bytes of the output, as a reader that has not seen them gets them: from the
    /// tail when output was dropped, led by the mark when some of them are no longer kept; never
    /// starting inside a character.
    pub fn last(&self, new: usize) -> Vec<u8> {
        if new == 0 {
            return Vec::new();
        }
        let (region, jumped) = if self.truncated {
            let (_, tail) = self.parts();
            (tail, new > tail.len())
        } else {
            (self.text, false)
        };
        let start = ceil_boundary(region, region.len().saturating_sub(new));
        let mut out = Vec::with_capacity(region.len() - start + TRUNCATION_MARKER.len());
        if jumped {
            out.extend_from_slice(TRUNCATION_MARKER.as_bytes());
        }
        out.extend_from_slice(&region.as_bytes()[start..]);
        out
    }
}

/// The largest character boundary of `s` at or before `i`.
fn floor_boundary(s: &str, mut i: usize) -> usize {
    i = i.min(s.len());
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// The smallest character boundary of `s` at or after `i`.
fn ceil_boundary(s: &str, mut i: usize) -> usize {
    i = i.min(s.len());
    while !s.is_char_boundary(i) {
        i += 1;
    }
    i
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(text: &str, head_bytes: usize, truncated: bool) -> StoredOutput<'_> {
        StoredOutput {
            text,
            head_bytes,
            truncated,
        }
    }

    #[test]
    fn parts_leave_the_mark_out() {
        let text = format!("01234{TRUNCATION_MARKER}bcdef");
        assert_eq!(stored(&text, 5, true).parts(), ("01234", "bcdef"));
        assert_eq!(stored("0123456789", 8, false).parts(), ("01234567", "89"));
        // A head length inside a character is cut back to its start.
        assert_eq!(stored("aéb", 2, false).parts(), ("a", "éb"));
    }

    #[test]
    fn appending_fills_the_head_then_rolls_the_tail() {
        let cap = OutputCap { bytes: 10 };
        let empty = stored("", 0, false);
        let first = empty.append(b"0123456", cap);
        assert_eq!(
            first,
            AppendedOutput {
                text: "0123456".into(),
                head_bytes: 5,
                truncated: false
            }
        );
        let second = stored(&first.text, first.head_bytes, first.truncated).append(b"789ab", cap);
        assert_eq!(
            second,
            AppendedOutput {
                text: format!("01234{TRUNCATION_MARKER}789ab"),
                head_bytes: 5,
                truncated: true
            }
        );
    }

    #[test]
    fn the_last_bytes_come_from_the_tail_led_by_the_mark_when_some_are_gone() {
        let text = format!("01234{TRUNCATION_MARKER}bcdef");
        let output = stored(&text, 5, true);
        assert_eq!(output.last(0), b"");
        assert_eq!(output.last(3), b"def");
        assert_eq!(
            output.last(9),
            format!("{TRUNCATION_MARKER}bcdef").as_bytes()
        );
        assert_eq!(stored("abc", 3, false).last(2), b"bc");
        // Never from inside a character.
        assert_eq!(stored("aé", 3, false).last(1), b"");
        assert_eq!(stored("aé", 3, false).last(2), "é".as_bytes());
    }
}
