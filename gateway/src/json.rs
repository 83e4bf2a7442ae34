//! JSON request bodies and query strings whose rejections use the API's error envelope
//! (`{"error":{code,message,field}}`) with the offending field named, instead of axum's plain-text
//! rejections.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, OptionalFromRequest, Request};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// A JSON body (`Content-Type: application/json`), deserialized with the path of the first wrong
/// field reported.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiJson<T>(pub T);

/// Query-string parameters, with the wrong parameter named.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiQuery<T>(pub T);

fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|mime| {
            let mime = mime.trim();
            mime.eq_ignore_ascii_case("application/json")
                || (mime.starts_with("application/") && mime.ends_with("+json"))
        })
}

/// The body's bytes; a body over the limit is a 413 in the envelope.
async fn body_of<S: Send + Sync>(req: Request, state: &S) -> Result<Bytes, ApiError> {
    Bytes::from_request(req, state).await.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            too_large()
        } else {
            ApiError::invalid("body", e.body_text())
        }
    })
}

/// The 413 answer, in the envelope.
pub fn too_large() -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
        "the request body is larger than the gateway accepts (--max-body-bytes)",
    )
}

/// The 400 for a deserialization error at its path, or at `whole` (`body`, `query`) when the
/// path names no field: `.` is the document itself, `?` a place serde could not name.
fn rejected_at<E: std::fmt::Display>(e: &serde_path_to_error::Error<E>, whole: &str) -> ApiError {
    let path = e.path().to_string();
    let field = if matches!(path.as_str(), "" | "." | "?") {
        whole
    } else {
        path.as_str()
    };
    ApiError::invalid(field, e.inner().to_string())
}

/// Deserializes `bytes` as a `T` (every body of the API is a JSON object), naming the first
/// field that is wrong (`body` for the document as a whole: not JSON, not an object).
fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(ApiError::invalid("body", "must be a JSON object"));
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| rejected_at(&e, "body"))?;
    de.end()
        .map_err(|e| ApiError::invalid("body", e.to_string()))?;
    Ok(value)
}

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        if !is_json(req.headers()) {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "the body must be JSON (Content-Type: application/json)",
            ));
        }
        let bytes = body_of(req, state).await?;
        parse(&bytes).map(Self)
    }
}

impl<T: DeserializeOwned, S: Send + Sync> OptionalFromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    /// No body (and no JSON content type) is `None`; a body is parsed like [`ApiJson`]'s.
    async fn from_request(req: Request, state: &S) -> Result<Option<Self>, Self::Rejection> {
        if !is_json(req.headers()) {
            return Ok(None);
        }
        let bytes = body_of(req, state).await?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(None);
        }
        parse(&bytes).map(|v| Some(Self(v)))
    }
}

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let query = parts.uri.query().unwrap_or("");
        let de = serde_urlencoded::Deserializer::new(form_urlencoded::parse(query.as_bytes()));
        serde_path_to_error::deserialize(de)
            .map(Self)
            .map_err(|e| rejected_at(&e, "query"))
    }
}

/// Turns the body-limit layer's own plain 413 (a `Content-Length` over the limit is refused
/// before any handler runs) into the envelope.
pub async fn envelope_too_large(response: Response) -> Response {
    let plain = response.status() == StatusCode::PAYLOAD_TOO_LARGE
        && !response
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/json"));
    if plain {
        too_large().into_response()
    } else {
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct Input {
        name: String,
        timeout_seconds: u32,
    }

    fn field_of(body: &str) -> Option<String> {
        parse::<Input>(body.as_bytes())
            .err()
            .and_then(|e| e.detail.field)
    }

    #[test]
    fn the_wrong_field_is_named() {
        assert_eq!(
            field_of(r#"{"name":"a","timeout_seconds":-1}"#).as_deref(),
            Some("timeout_seconds")
        );
        assert_eq!(
            field_of(r#"{"name":7,"timeout_seconds":1}"#).as_deref(),
            Some("name")
        );
        for whole in [
            "null",
            "[]",
            "{",
            "nope",
            r#"{"name":"a","timeout_seconds":1} x"#,
        ] {
            assert_eq!(field_of(whole).as_deref(), Some("body"), "{whole}");
        }
        assert!(parse::<Input>(br#"{"name":"a","timeout_seconds":1}"#).is_ok());
    }
}
