//! Bearer-token authentication of HTTP requests, per route role.
//!
//! A request carries its token in `Authorization: Bearer <token>` or, from the console, a session
//! id in the `distcron_session` cookie (over HTTPS `__Host-distcron_session`, `Secure`) set by
//! `POST /api/v1/session` (HttpOnly, SameSite=Strict;
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

/// The console's session cookie over plain HTTP (a session id, never the token).
pub const SESSION_COOKIE: &str = "distcron_session";
/// The console's session cookie over HTTPS: `Secure`, and with the `__Host-` prefix browsers
/// only accept from a secure origin, for the exact host, with `Path=/` and no `Domain`.
pub const SECURE_SESSION_COOKIE: &str = "__Host-distcron_session";

/// Marks a request that arrived over HTTPS (the server loop adds it to every such request).
#[derive(Debug, Clone, Copy)]
pub struct Https;

/// Whether `extensions` mark an HTTPS request.
pub fn is_https(extensions: &http::Extensions) -> bool {
    extensions.get::<Https>().is_some()
}

/// The session id a request's cookies carry (the secure cookie over HTTPS, the plain one over
/// HTTP: a cookie set over one is not taken over the other).
pub fn session_id(headers: &header::HeaderMap, https: bool) -> Option<&str> {
    let name = if https {
        SECURE_SESSION_COOKIE
    } else {
        SESSION_COOKIE
    };
    headers
        .get(header::COOKIE)
        .and_then(|v| v.to_str().ok())
        .and_then(|c| cookie(c, name))
}

/// The `Set-Cookie` value that sets the session cookie to `id` for `max_age_secs` (0 clears
/// it).
pub fn session_cookie(id: &str, https: bool, max_age_secs: u64) -> String {
    if https {
        format!(
            "{SECURE_SESSION_COOKIE}={id}; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age={max_age_secs}"
        )
    } else {
        format!("{SESSION_COOKIE}={id}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age_secs}")
    }
}

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
    let session = session_id(headers, is_https(request.extensions())).map(str::to_owned);
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
