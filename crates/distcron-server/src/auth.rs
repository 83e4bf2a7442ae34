//! Token checks for gRPC calls: every call but health checks and reflection needs an
//! `authorization: Bearer <token>` whose role covers the method
//! ([`distcron_auth::grpc_required_role`]). With no tokens configured the layer is left out. The
//! caller's [`distcron_auth::Identity`] is put in the request's extensions for the handler
//! (logsvc binds worker tokens to the runs they may report).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use distcron_auth::{bearer, grpc_required_role, TokenStore};
use tower::{Layer, Service};

/// Paths that need no token: health probes and reflection.
fn is_open(path: &str) -> bool {
    path.starts_with("/grpc.health.") || path.starts_with("/grpc.reflection.")
}

/// Checks the token of a call to `path`; returns whose it is (`None` when no token is needed).
pub fn check(
    tokens: &TokenStore,
    path: &str,
    authorization: Option<&str>,
) -> Result<Option<distcron_auth::Identity>, tonic::Status> {
    if tokens.is_empty() || is_open(path) {
        return Ok(None);
    }
    let token = authorization
        .and_then(bearer)
        .ok_or_else(|| tonic::Status::unauthenticated("a bearer token is required"))?;
    let identity = tokens
        .verify(token)
        .ok_or_else(|| tonic::Status::unauthenticated("unknown token"))?;
    let needed = grpc_required_role(path);
    if !identity.role.grants(needed) {
        return Err(tonic::Status::permission_denied(format!(
            "token {:?} has role {}; {path} needs {needed}",
            identity.name, identity.role
        )));
    }
    Ok(Some(identity))
}

/// The layer.
#[derive(Debug, Clone)]
pub struct TokenAuthLayer {
    tokens: Arc<TokenStore>,
}

impl TokenAuthLayer {
    /// Checks calls against `tokens`.
    pub fn new(tokens: Arc<TokenStore>) -> Self {
        Self { tokens }
    }
}

impl<S> Layer<S> for TokenAuthLayer {
    type Service = TokenAuth<S>;

    fn layer(&self, inner: S) -> Self::Service {
        TokenAuth {
            inner,
            tokens: self.tokens.clone(),
        }
    }
}

/// The service the layer makes.
#[derive(Debug, Clone)]
pub struct TokenAuth<S> {
    inner: S,
    tokens: Arc<TokenStore>,
}

type BoxFuture<T, E> = Pin<Box<dyn Future<Output = Result<T, E>> + Send>>;

impl<S, B> Service<http::Request<B>> for TokenAuth<S>
where
    S: Service<http::Request<B>, Response = http::Response<tonic::body::Body>>,
    S::Future: Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        let authorization = request
            .headers()
            .get("authorization")
            .and_then(|v| v.to_str().ok());
        match check(&self.tokens, request.uri().path(), authorization) {
            Ok(identity) => {
                if let Some(identity) = identity {
                    request.extensions_mut().insert(identity);
                }
                Box::pin(self.inner.call(request))
            }
            Err(status) => Box::pin(async move { Ok(status.into_http()) }),
        }
    }
}
