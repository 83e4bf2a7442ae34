//! The worker's cut of a run's output into numbered chunks: the head as it comes, then a rolling
//! tail shipped at the end, with what fell out in between counted as dropped.

use std::collections::VecDeque;

/// Largest output chunk shipped.
const CHUNK_BYTES: usize = 32 * 1024;

/// Output of one run, as numbered chunks of at most 32 KiB: the first `cap` bytes as they come,
/// then only a rolling tail of `cap / 2` bytes, shipped at the end; what fell out in between is
/// counted as dropped.
/// `cap` is the worker's [`OutputCap`](super::OutputCap) in bytes.
#[derive(Debug)]
pub struct OutputChunker {
    cap: usize,
    seq: u64,
    head_left: usize,
    pending: Vec<u8>,
    tail: VecDeque<u8>,
    dropped: u64,
}

impl OutputChunker {
    /// A chunker shipping at most `cap` bytes live.
    pub fn new(cap: usize) -> Self {
        Self {
            cap,
            seq: 0,
            head_left: cap,
            pending: Vec::new(),
            tail: VecDeque::new(),
            dropped: 0,
        }
    }

    /// Takes output; returns a chunk when one is full.
    pub fn push(&mut self, mut data: &[u8]) -> Option<(u64, Vec<u8>)> {
        let take = data.len().min(self.head_left);
        self.pending.extend_from_slice(&data[..take]);
        self.head_left -= take;
        data = &data[take..];
        if !data.is_empty() {
            self.tail.extend(data);
            let limit = self.cap / 2;
            if self.tail.len() > limit {
                let excess = self.tail.len() - limit;
                self.tail.drain(..excess);
                self.dropped += excess as u64;
            }
        }
        (self.pending.len() >= CHUNK_BYTES)
            .then(|| self.flush(false))
            .flatten()
    }

    /// The pending output as a chunk, if any. Unless `all`, an incomplete UTF-8 character at
    /// the end waits for the next piece.
    pub fn flush(&mut self, all: bool) -> Option<(u64, Vec<u8>)> {
        let mut cut = self.pending.len();
        if !all {
            if let Err(e) = std::str::from_utf8(&self.pending) {
                if e.error_len().is_none() {
                    cut = e.valid_up_to();
                }
            }
        }
        if cut == 0 {
            return None;
        }
        let rest = self.pending.split_off(cut);
        let chunk = std::mem::replace(&mut self.pending, rest);
        let seq = self.seq;
        self.seq += 1;
        Some((seq, chunk))
    }

    /// The remaining chunks at the end of the run (pending head output, then the tail), and the
    /// number of bytes dropped.
    pub fn finish(mut self) -> (Vec<(u64, Vec<u8>)>, u64) {
        let mut out: Vec<(u64, Vec<u8>)> = self.flush(true).into_iter().collect();
        if !self.tail.is_empty() {
            let mut tail: Vec<u8> = self.tail.drain(..).collect();
            // Start the tail on a character boundary.
            let skip = tail
                .iter()
                .take(3)
                .take_while(|b| (**b & 0xC0) == 0x80)
                .count();
            self.dropped += skip as u64;
            tail.drain(..skip);
            let mut rest = tail.as_slice();
            while !rest.is_empty() {
                let cut = piece_len(rest);
                out.push((self.seq, rest[..cut].to_vec()));
                self.seq += 1;
                rest = &rest[cut..];
            }
        }
        (out, self.dropped)
    }
}

/// The length of the next tail chunk of `rest`: at most [`CHUNK_BYTES`], ending on a character
/// boundary unless that would leave the chunk empty.
fn piece_len(rest: &[u8]) -> usize {
    if rest.len() <= CHUNK_BYTES {
        return rest.len();
    }
    let continuation = rest[CHUNK_BYTES - 3..=CHUNK_BYTES]
        .iter()
        .rev()
        .take_while(|b| (**b & 0xC0) == 0x80)
        .count();
    match CHUNK_BYTES - continuation {
        0 => CHUNK_BYTES,
        cut => cut,
    }
}

#[cfg(test)]
mod tests {
    use super::OutputChunker;

    #[test]
    fn head_then_tail_with_drops_counted() {
        let mut c = OutputChunker::new(8);
        assert_eq!(c.push(b"0123"), None);
        assert_eq!(c.push(b"4567ABCDEFGH"), None);
        let (rest, dropped) = c.finish();
        assert_eq!(rest, vec![(0, b"01234567".to_vec()), (1, b"EFGH".to_vec())]);
        assert_eq!(dropped, 4);
    }

    #[test]
    fn a_large_tail_is_shipped_in_chunks_of_at_most_32_kib_on_character_boundaries() {
        let cap = 4 * super::CHUNK_BYTES;
        let mut c = OutputChunker::new(cap);
        let mut shipped = 0;
        let text = "é".repeat(4 * cap);
        for piece in text.as_bytes().chunks(1000) {
            shipped += c.push(piece).map_or(0, |(_, chunk)| chunk.len());
        }
        let (rest, dropped) = c.finish();
        assert!(rest.len() > 2, "the tail is several chunks: {}", rest.len());
        let mut seqs = Vec::new();
        let mut total = shipped;
        for (seq, chunk) in &rest {
            assert!(
                chunk.len() <= super::CHUNK_BYTES,
                "chunk of {}",
                chunk.len()
            );
            assert!(
                std::str::from_utf8(chunk).is_ok(),
                "chunk {seq} splits a character"
            );
            seqs.push(*seq);
            total += chunk.len();
        }
        let first = seqs[0];
        assert_eq!(seqs, (first..first + seqs.len() as u64).collect::<Vec<_>>());
        assert_eq!(total as u64 + dropped, text.len() as u64);
    }

    #[test]
    fn utf8_characters_are_not_split_between_chunks() {
        let mut c = OutputChunker::new(1 << 20);
        let e = "é".as_bytes();
        assert_eq!(c.push(&[b'a', e[0]]), None);
        assert_eq!(c.flush(false), Some((0, b"a".to_vec())));
        assert_eq!(c.push(&[e[1]]), None);
        assert_eq!(c.flush(false), Some((1, "é".as_bytes().to_vec())));
    }
}
