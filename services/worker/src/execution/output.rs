//! A run's events as they are shipped, each stamped with the run's trace and span ids; its output
//! chunks are cut by [`distcron_core::output::OutputChunker`].

use distcron_proto::logs::v1 as pb;

/// The events of one run, stamped with the run's trace and span ids.
pub struct RunEvents {
    /// The run.
    pub run_id: String,
    /// Its trace.
    pub trace_id: String,
    /// Its span.
    pub span_id: String,
}

impl RunEvents {
    /// An event of this run.
    pub fn event(&self, kind: pb::run_event::Kind) -> pb::RunEvent {
        pb::RunEvent {
            run_id: self.run_id.clone(),
            trace_id: self.trace_id.clone(),
            span_id: self.span_id.clone(),
            kind: Some(kind),
        }
    }

    /// An output chunk of this run.
    pub fn chunk(&self, seq: u64, data: Vec<u8>) -> pb::RunEvent {
        self.event(pb::run_event::Kind::Output(pb::OutputChunk { seq, data }))
    }
}
