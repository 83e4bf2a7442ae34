//! Bearer-token authentication of HTTP requests, per route role.
//!
//! A request carries its token in `Authorization: Bearer <token>` or, from the console, a session
//! id in the `distcron_session` cookie set by `POST /api/v1/session` (HttpOnly, SameSite=Strict;
//! the token stays in this process, [`crate::sessions`]). A request authenticated by the cookie
//! that changes something must also carry `X-Requested-With` (which a cross-site form cannot set,
//! and which jQuery and the console send), against CSRF.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use distcron_auth::{bearer, Identity, Role, TokenStore};

use crate::sessions::Sessions;

use crate::error::ApiError;

/// The console's session cookie (a session id, never the token).
pub const SESSION_COOKIE: &str = "distcron_session";

/// Who is calling, for handlers: the token is passed on to the gRPC services.
#[derive(Debug, Clone, Default)]
pub struct Caller {
    /// The presented token (none when authentication is off).
    pub token: Option<String>,
    /// Whose it is.
    pub identity: Option<Identity>,
}

/// What a group of routes needs.
#[derive(Debug, Clone)]
pub struct Gate {
    /// The configured tokens (empty: authentication off).
    pub tokens: Arc<TokenStore>,
    /// The console's sessions.
    pub sessions: Arc<Sessions>,
    /// The least role.
    pub role: Role,
}

/// The value of cookie `name` in a `Cookie` header.
pub fn cookie<'a>(header_value: &'a str, name: &str) -> Option<&'a str> {
    header_value.split(';').find_map(|pair| {
        let (k, v) = pair.trim().split_once('=')?;
        (k == name && !v.is_empty()).then_some(v)
    })
}

fn unauthenticated(message: &str) -> Response {
    let mut response =
        ApiError::new(StatusCode::UNAUTHORIZED, "unauthenticated", message).into_response();
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        header::HeaderValue::from_static("Bearer"),
    );
    response
}

/// Middleware: lets the request through if its token has at least the gate's role.
pub async fn authorize(State(gate): State<Gate>, mut request: Request, next: Next) -> Response {
    if gate.tokens.is_empty() {
        request.extensions_mut().insert(Caller::default());
        return next.run(request).await;
    }
    let headers = request.headers();
    let from_header = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(bearer)
        .map(str::to_owned);
    let session = headers
        .get(header::COOKIE)
        .and_then(|v| v.to_str().ok())
        .and_then(|c| cookie(c, SESSION_COOKIE))
        .map(str::to_owned);
    let (token, by_cookie) = match (from_header, session) {
        (Some(t), _) => (t, false),
        (None, Some(id)) => match gate.sessions.token(&id) {
            Some(t) => (t, true),
            None => return unauthenticated("the console session has expired or was closed"),
        },
        (None, None) => return unauthenticated("a bearer token is required"),
    };
    let safe = matches!(
        *request.method(),
        Method::GET | Method::HEAD | Method::OPTIONS
    );
    if by_cookie && !safe && !headers.contains_key("x-requested-with") {
        return ApiError::new(
            StatusCode::FORBIDDEN,
            "permission_denied",
            "a change authenticated by the session cookie needs the X-Requested-With header",
        )
        .into_response();
    }
    let Some(identity) = gate.tokens.verify(&token) else {
        return unauthenticated("unknown token");
    };
    if !identity.role.grants(gate.role) {
        return ApiError::new(
            StatusCode::FORBIDDEN,
            "permission_denied",
            format!(
                "token {:?} has role {}; this needs {}",
                identity.name, identity.role, gate.role
            ),
        )
        .into_response();
    }
    request.extensions_mut().insert(Caller {
        token: Some(token),
        identity: Some(identity),
    });
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies_are_found_by_name() {
        assert_eq!(
            cookie("a=1; distcron_session=xyz; b=2", SESSION_COOKIE),
            Some("xyz")
        );
        assert_eq!(cookie("distcron_session=", SESSION_COOKIE), None);
        assert_eq!(cookie("other=1", SESSION_COOKIE), None);
    }
}
