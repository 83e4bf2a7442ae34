//! `InvalidArgument` statuses that name the rejected field: the message says `field: reason` to
//! people, and the [`FIELD_METADATA`] metadata names the field to programs. The services make
//! them with [`invalid_argument`]; the gateway reads the field with [`rejected_field`] (it is
//! the `field` of its JSON errors), never from the message text.

use distcron_core::FieldError;
use distcron_proto::FIELD_METADATA;
use tonic::Status;

/// The `InvalidArgument` status of `error`: its message is `field: reason`, its
/// [`FIELD_METADATA`] the field (with characters outside printable ASCII escaped as Rust's
/// `escape_default` does).
pub fn invalid_argument(error: FieldError) -> Status {
    let mut status = Status::invalid_argument(error.to_string());
    if let Ok(field) = error.field.escape_default().to_string().parse() {
        status.metadata_mut().insert(FIELD_METADATA, field);
    }
    status
}

/// The field a status names in its [`FIELD_METADATA`], if it names one.
pub fn rejected_field(status: &Status) -> Option<&str> {
    status.metadata().get(FIELD_METADATA)?.to_str().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_field_travels_in_the_metadata() {
        let status = invalid_argument(FieldError::new("env.FOO", "too long"));
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        assert_eq!(status.message(), "env.FOO: too long");
        assert_eq!(rejected_field(&status), Some("env.FOO"));
        let escaped = invalid_argument(FieldError::new("env.Ü", "not a name"));
        assert_eq!(rejected_field(&escaped), Some("env.\\u{dc}"));
        // The message text alone names no field.
        let unnamed = Status::invalid_argument("cronExpr: bad minute 61");
        assert_eq!(rejected_field(&unnamed), None);
    }
}
