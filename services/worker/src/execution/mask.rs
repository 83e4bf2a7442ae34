//! Masking a job's secret values in its run output.
//!
//! Output arrives in pieces, so a secret can be split between two of them: [`SecretMask`] holds
//! back the end of a piece while it could be the start of a secret, and writes `***` for every
//! secret it sees whole. Values shorter than [`MIN_MASKED_BYTES`] are not masked (masking `1`
//! would garble the output and hide nothing).

/// What a masked secret becomes in the output.
pub const MASK: &[u8] = b"***";
/// Shortest secret value that is masked.
pub const MIN_MASKED_BYTES: usize = 4;

/// Replaces a run's secret values in its output as it streams.
#[derive(Debug)]
pub struct SecretMask {
    /// The values, longest first (so a secret that contains another is masked whole).
    secrets: Vec<Vec<u8>>,
    held: Vec<u8>,
}

impl SecretMask {
    /// A mask of `values`, or `None` when none is long enough to mask.
    pub fn new<'a>(values: impl IntoIterator<Item = &'a str>) -> Option<Self> {
        let mut secrets: Vec<Vec<u8>> = values
            .into_iter()
            .filter(|v| v.len() >= MIN_MASKED_BYTES)
            .map(|v| v.as_bytes().to_vec())
            .collect();
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        secrets.dedup();
        (!secrets.is_empty()).then_some(Self {
            secrets,
            held: Vec::new(),
        })
    }

    /// The output that can be passed on after `piece`, masked; may hold back up to the longest
    /// secret's length less one byte until the next piece.
    pub fn push(&mut self, piece: &[u8]) -> Vec<u8> {
        let mut data = std::mem::take(&mut self.held);
        data.extend_from_slice(piece);
        let mut masked = self.mask(&data);
        let keep = self.partial_suffix(&masked);
        self.held = masked.split_off(masked.len() - keep);
        masked
    }

    /// What is held back, at the end of the output (it is no whole secret).
    pub fn finish(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.held)
    }

    fn mask(&self, data: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(data.len());
        let mut i = 0;
        'scan: while i < data.len() {
            for secret in &self.secrets {
                if data[i..].starts_with(secret) {
                    out.extend_from_slice(MASK);
                    i += secret.len();
                    continue 'scan;
                }
            }
            out.push(data[i]);
            i += 1;
        }
        out
    }

    /// The length of the longest end of `data` that is the start of some secret.
    fn partial_suffix(&self, data: &[u8]) -> usize {
        self.secrets
            .iter()
            .map(|secret| {
                (1..secret.len().min(data.len() + 1))
                    .rev()
                    .find(|&n| data.ends_with(&secret[..n]))
                    .unwrap_or(0)
            })
            .max()
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn masked(secrets: &[&str], pieces: &[&str]) -> String {
        let mut mask = SecretMask::new(secrets.iter().copied()).expect("a secret to mask");
        let mut out = Vec::new();
        for piece in pieces {
            out.extend(mask.push(piece.as_bytes()));
        }
        out.extend(mask.finish());
        String::from_utf8(out).expect("utf8")
    }

    #[test]
    fn whole_and_split_secrets_are_masked_and_the_rest_kept() {
        assert_eq!(masked(&["hunter22"], &["pw=hunter22\n"]), "pw=***\n");
        assert_eq!(masked(&["hunter22"], &["pw=hun", "ter22 ok"]), "pw=*** ok");
        assert_eq!(
            masked(&["hunter22"], &["h", "u", "n", "t", "e", "r", "2", "2"]),
            "***"
        );
        // A near miss at the end is given back, not swallowed.
        assert_eq!(masked(&["hunter22"], &["x hunter2"]), "x hunter2");
        assert_eq!(masked(&["abcd", "abcdef"], &["abcdef abcd"]), "*** ***");
    }

    #[test]
    fn short_values_are_not_masked() {
        assert!(SecretMask::new(["1", "abc", ""]).is_none());
    }
}
