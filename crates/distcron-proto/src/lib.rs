//! The gRPC contracts of distcron: generated messages, clients and servers for every service.
//!
//! One crate owns every `.proto` under `proto/` and its code generation, so all services agree
//! on one version of the wire types.
#![allow(missing_docs, clippy::all)]

/// Job definitions and job control (`distcron.jobs.v1`), served by jobsvc.
pub mod jobs {
    /// Version 1 of the job API.
    pub mod v1 {
        tonic::include_proto!("distcron.jobs.v1");
    }
}

/// Run history (`distcron.logs.v1`), served by logsvc.
pub mod logs {
    /// Version 1 of the log API.
    pub mod v1 {
        tonic::include_proto!("distcron.logs.v1");
    }
}

/// Metadata key naming the rejected field on `InvalidArgument` errors (printable ASCII: a field
/// naming a key with other characters has them escaped, as Rust's `escape_default` does).
pub const FIELD_METADATA: &str = "distcron-field";

/// Encoded `FileDescriptorSet` of every distcron proto, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("distcron_descriptor");
