//! The shipper's on-disk spool of event batches, so a batch survives a crash of the worker until
//! logsvc has acknowledged it.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use distcron_proto::logs::v1 as pb;
use prost::Message;
use tokio::sync::Notify;

/// Largest encoded size of one batch and of one delivery, well under gRPC's 4 MiB message
/// limit.
pub const MAX_REQUEST_BYTES: usize = 2 * 1024 * 1024;

/// The on-disk spool: one file per batch (`<seq>.batch`, oldest first), written to a
/// temporary name, fsynced, then renamed; bounded in bytes.
#[derive(Debug)]
pub struct Spool {
    dir: PathBuf,
    max_bytes: u64,
    bytes: u64,
    files: VecDeque<(u64, u64)>,
    next: u64,
}

impl Spool {
    /// Opens (creating) the spool in `dir`, bounded at `max_bytes`; leftover temporary files
    /// of a crash are removed.
    pub fn open(dir: &Path, max_bytes: u64) -> std::io::Result<Self> {
        distcron_config::private::create_dir(dir)?;
        let mut files = Vec::new();
        for entry in std::fs::read_dir(dir)?.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.ends_with(".tmp") {
                let _ = std::fs::remove_file(entry.path());
            } else if let Some(seq) = name
                .strip_suffix(".batch")
                .and_then(|s| s.parse::<u64>().ok())
            {
                files.push((seq, entry.metadata().map(|m| m.len()).unwrap_or(0)));
            }
        }
        files.sort_unstable();
        let bytes = files.iter().map(|(_, n)| n).sum();
        let next = files.last().map_or(0, |(s, _)| s + 1);
        Ok(Self {
            dir: dir.to_owned(),
            max_bytes,
            bytes,
            files: files.into(),
            next,
        })
    }

    fn path(&self, seq: u64) -> PathBuf {
        self.dir.join(format!("{seq:020}.batch"))
    }

    /// Stores a batch durably; `Ok(false)` when the spool is full.
    pub fn push(&mut self, batch: &pb::AppendRunEventsRequest) -> std::io::Result<bool> {
        let data = batch.encode_to_vec();
        let len = data.len() as u64;
        if self.bytes + len > self.max_bytes {
            return Ok(false);
        }
        let seq = self.next;
        let tmp = self.dir.join(format!("{seq:020}.tmp"));
        {
            use std::io::Write;
            let mut f = distcron_config::private::write_file(&tmp)?;
            f.write_all(&data)?;
            f.sync_all()?;
        }
        std::fs::rename(&tmp, self.path(seq))?;
        self.next += 1;
        self.bytes += len;
        self.files.push_back((seq, len));
        Ok(true)
    }

    /// The oldest batches, oldest first, as many as fit in `max_bytes` (at least one).
    pub fn oldest(&self, max_bytes: u64) -> Vec<u64> {
        let mut total = 0;
        let mut seqs = Vec::new();
        for (seq, len) in &self.files {
            total += len;
            if total > max_bytes && !seqs.is_empty() {
                break;
            }
            seqs.push(*seq);
        }
        seqs
    }

    /// The stored bytes of batch `seq`.
    pub fn read(&self, seq: u64) -> std::io::Result<Vec<u8>> {
        std::fs::read(self.path(seq))
    }

    /// Deletes batch `seq` once delivered (only the oldest can go).
    pub fn pop(&mut self, seq: u64) {
        if self.files.front().map(|(s, _)| *s) == Some(seq) {
            if let Some((_, len)) = self.files.pop_front() {
                self.bytes -= len;
            }
            let _ = std::fs::remove_file(self.path(seq));
        }
    }

    /// Bytes stored.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Batches stored.
    pub fn len(&self) -> usize {
        self.files.len()
    }

    /// Whether no batch is stored.
    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }
}

/// The spool as the shipper's collector and deliverer share it.
pub struct Shared {
    /// The spool.
    pub spool: Mutex<Spool>,
    /// Woken when a batch was spooled.
    pub wake: Notify,
    /// Set once the shipper finishes: the deliverer stops when the spool is empty or the flush
    /// timeout is over.
    pub closing: std::sync::atomic::AtomicBool,
}

impl Shared {
    /// Sets the spool gauges from `spool`.
    pub fn update_gauges(&self, spool: &Spool) {
        let metrics = distcron_metrics::worker();
        metrics
            .spool_bytes
            .set(i64::try_from(spool.bytes()).unwrap_or(i64::MAX));
        metrics
            .spool_batches
            .set(i64::try_from(spool.len()).unwrap_or(i64::MAX));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(run: &str) -> pb::AppendRunEventsRequest {
        pb::AppendRunEventsRequest {
            events: vec![pb::RunEvent {
                run_id: run.into(),
                trace_id: String::new(),
                span_id: String::new(),
                kind: None,
            }],
        }
    }

    #[test]
    fn spool_survives_reopen_in_order_and_is_bounded() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut s = Spool::open(dir.path(), 1_000).expect("open");
        assert!(s.push(&batch("a")).expect("push"));
        assert!(s.push(&batch("b")).expect("push"));
        drop(s);
        let mut s = Spool::open(dir.path(), 1_000).expect("reopen");
        let first = s.oldest(u64::MAX)[0];
        let got = pb::AppendRunEventsRequest::decode(s.read(first).expect("read").as_slice())
            .expect("decode");
        assert_eq!(got.events[0].run_id, "a");
        s.pop(first);
        assert!(s.push(&batch("c")).expect("push"));
        let order: Vec<u64> = s.files.iter().map(|(q, _)| *q).collect();
        assert_eq!(order, [1, 2]);
        // Deliveries take the oldest batches that fit the byte budget, at least one.
        let one = s.files[0].1;
        assert_eq!(s.oldest(2 * one), [1, 2]);
        assert_eq!(s.oldest(2 * one - 1), [1]);
        assert_eq!(s.oldest(1), [1]);
        let mut tiny = Spool::open(&dir.path().join("tiny"), 5).expect("open");
        assert!(
            !tiny.push(&batch("too-big")).expect("push"),
            "full spool refuses"
        );
    }
}
