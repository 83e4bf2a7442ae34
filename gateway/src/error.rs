//! Errors of /api/v1 handlers: gRPC statuses and bad input turned into HTTP answers.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;

/// The body of every /api/v1 error.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// What went wrong.
    pub error: ErrorDetail,
}

/// One error.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Machine-readable kind: `invalid_argument`, `not_found`, `conflict`, `unauthenticated`,
    /// `permission_denied`, `unavailable`, `internal`.
    pub code: String,
    /// Human-readable message.
    pub message: String,
    /// The offending field, by its JSON name, for `invalid_argument`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

/// Most bytes of an error message.
const MAX_MESSAGE_BYTES: usize = 3 * distcron_core::MAX_QUOTED_BYTES;

/// An error answer of /api/v1.
#[derive(Debug)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Body.
    pub detail: ErrorDetail,
}

impl ApiError {
    /// A 400 naming `field`. Field and message are clipped ([`distcron_core::clip`]): they may
    /// quote the input.
    pub fn invalid(field: &str, message: impl Into<String>) -> Self {
        let field = distcron_core::clip(field, distcron_core::MAX_QUOTED_BYTES);
        let message = message.into();
        let message = distcron_core::clip(&message, MAX_MESSAGE_BYTES);
        Self {
            status: StatusCode::BAD_REQUEST,
            detail: ErrorDetail {
                code: "invalid_argument".into(),
                message: format!("{field}: {message}"),
                field: Some(field.into_owned()),
            },
        }
    }

    /// Any status with a code and message (clipped: it may quote the input).
    pub fn new(status: StatusCode, code: &str, message: impl Into<String>) -> Self {
        let message = message.into();
        Self {
            status,
            detail: ErrorDetail {
                code: code.into(),
                message: distcron_core::clip(&message, MAX_MESSAGE_BYTES).into_owned(),
                field: None,
            },
        }
    }
}

impl From<tonic::Status> for ApiError {
    fn from(status: tonic::Status) -> Self {
        use tonic::Code;
        let message = status.message().to_owned();
        let (http, code) = match status.code() {
            Code::InvalidArgument | Code::OutOfRange => {
                (StatusCode::BAD_REQUEST, "invalid_argument")
            }
            Code::NotFound => (StatusCode::NOT_FOUND, "not_found"),
            Code::AlreadyExists | Code::Aborted | Code::FailedPrecondition => {
                (StatusCode::CONFLICT, "conflict")
            }
            Code::Unauthenticated => (StatusCode::UNAUTHORIZED, "unauthenticated"),
            Code::PermissionDenied => (StatusCode::FORBIDDEN, "permission_denied"),
            Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled => {
                (StatusCode::SERVICE_UNAVAILABLE, "unavailable")
            }
            Code::ResourceExhausted => (StatusCode::TOO_MANY_REQUESTS, "resource_exhausted"),
            _ => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        };
        let field = (code == "invalid_argument")
            .then(|| distcron_server::rejected_field(&status).map(str::to_owned))
            .flatten();
        Self {
            status: http,
            detail: ErrorDetail {
                code: code.into(),
                message,
                field,
            },
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            tracing::warn!(status = %self.status, message = %self.detail.message, "request failed");
        }
        (self.status, Json(ErrorBody { error: self.detail })).into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_map_to_http_and_name_the_field() {
        let bad_minute = distcron_core::FieldError::new("cronExpr", "bad minute 61");
        let e = ApiError::from(distcron_server::invalid_argument(bad_minute));
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        assert_eq!(e.detail.field.as_deref(), Some("cronExpr"));
        assert_eq!(e.detail.message, "cronExpr: bad minute 61");
        let e = ApiError::from(tonic::Status::aborted("revision changed"));
        assert_eq!(e.status, StatusCode::CONFLICT);
        let e = ApiError::from(tonic::Status::unavailable("etcd down"));
        assert_eq!(e.status, StatusCode::SERVICE_UNAVAILABLE);
        // The field comes from the metadata, never from the message text.
        let e = ApiError::from(tonic::Status::invalid_argument("env.FOO: too long"));
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        assert_eq!(e.detail.field, None);
        let too_long = distcron_core::FieldError::new("env.FOO", "no field here");
        let e = ApiError::from(distcron_server::invalid_argument(too_long));
        assert_eq!(e.detail.field.as_deref(), Some("env.FOO"));
        // Only a 400 names a field.
        let mut odd = tonic::Status::not_found("no such job");
        odd.metadata_mut()
            .insert(distcron_proto::FIELD_METADATA, "name".parse().unwrap());
        assert_eq!(ApiError::from(odd).detail.field, None);
    }
}
