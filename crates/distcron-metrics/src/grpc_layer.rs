//! A tower layer that counts and times gRPC requests by service, method and status code.
//!
//! The status of a gRPC call is in the `grpc-status` header of a trailers-only response (most
//! errors) or in the trailers at the end of the body (every success), so the response body is
//! wrapped and the request is recorded when the body ends or is dropped (a stream the client
//! abandoned counts as `Cancelled`).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use http_body::{Body, Frame, SizeHint};

/// Adds [`GrpcMetricsService`] around a gRPC server.
#[derive(Debug, Clone, Copy, Default)]
pub struct GrpcMetricsLayer;

impl<S> tower::Layer<S> for GrpcMetricsLayer {
    type Service = GrpcMetricsService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        GrpcMetricsService { inner }
    }
}

/// Records each request in [`crate::grpc()`].
#[derive(Debug, Clone)]
pub struct GrpcMetricsService<S> {
    inner: S,
}

/// The name of a gRPC status code, as gRPC's own tools print it.
fn code_name(code: &[u8]) -> &'static str {
    match code {
        b"0" => "OK",
        b"1" => "Cancelled",
        b"2" => "Unknown",
        b"3" => "InvalidArgument",
        b"4" => "DeadlineExceeded",
        b"5" => "NotFound",
        b"6" => "AlreadyExists",
        b"7" => "PermissionDenied",
        b"8" => "ResourceExhausted",
        b"9" => "FailedPrecondition",
        b"10" => "Aborted",
        b"11" => "OutOfRange",
        b"12" => "Unimplemented",
        b"13" => "Internal",
        b"14" => "Unavailable",
        b"15" => "DataLoss",
        b"16" => "Unauthenticated",
        _ => "Unknown",
    }
}

/// Service and method of a request path `/<package.Service>/<Method>`; paths that are not one
/// of ours (or gRPC's own) become "other", so a caller cannot mint series.
fn service_method(path: &str) -> (String, String) {
    let mut parts = path.trim_start_matches('/').splitn(2, '/');
    match (parts.next(), parts.next()) {
        (Some(service), Some(method))
            if (service.starts_with("distcron.") || service.starts_with("grpc."))
                && service.len() <= 80
                && method.len() <= 80
                && !method.contains('/') =>
        {
            (service.to_owned(), method.to_owned())
        }
        _ => ("other".to_owned(), "other".to_owned()),
    }
}

/// Records one request when dropped.
#[derive(Debug)]
struct Recorder {
    service: String,
    method: String,
    start: Instant,
    code: Option<&'static str>,
    ended: bool,
}

impl Drop for Recorder {
    fn drop(&mut self) {
        let code = match (self.code, self.ended) {
            (Some(code), _) => code,
            (None, true) => "Unknown",
            (None, false) => "Cancelled",
        };
        crate::grpc().observe([&self.service, &self.method, code], self.start.elapsed());
    }
}

impl<S, B, ResBody> tower::Service<http::Request<B>> for GrpcMetricsService<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<ResBody>>,
{
    type Response = http::Response<RecordedBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let (service, method) = service_method(request.uri().path());
        ResponseFuture {
            inner: self.inner.call(request),
            recorder: Some(Recorder {
                service,
                method,
                start: Instant::now(),
                code: None,
                ended: false,
            }),
        }
    }
}

pin_project_lite::pin_project! {
    /// The response future of [`GrpcMetricsService`].
    #[derive(Debug)]
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
        recorder: Option<Recorder>,
    }
}

impl<F, ResBody, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<http::Response<ResBody>, E>>,
{
    type Output = Result<http::Response<RecordedBody<ResBody>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = std::task::ready!(this.inner.poll(cx));
        let mut recorder = this.recorder.take();
        Poll::Ready(match result {
            Ok(response) => {
                if let (Some(r), Some(code)) =
                    (recorder.as_mut(), response.headers().get("grpc-status"))
                {
                    r.code = Some(code_name(code.as_bytes()));
                }
                Ok(response.map(|body| RecordedBody {
                    inner: body,
                    recorder,
                }))
            }
            Err(e) => {
                if let Some(r) = recorder.as_mut() {
                    r.code = Some("Unavailable");
                }
                Err(e)
            }
        })
    }
}

pin_project_lite::pin_project! {
    /// A response body that records its request when it ends or is dropped.
    #[derive(Debug)]
    pub struct RecordedBody<B> {
        #[pin]
        inner: B,
        recorder: Option<Recorder>,
    }
}

impl<B: Body> Body for RecordedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let frame = std::task::ready!(this.inner.poll_frame(cx));
        match &frame {
            Some(Ok(f)) => {
                if let (Some(r), Some(code)) = (
                    this.recorder.as_mut(),
                    f.trailers_ref().and_then(|t| t.get("grpc-status")),
                ) {
                    r.code = Some(code_name(code.as_bytes()));
                    r.ended = true;
                }
            }
            Some(Err(_)) => {
                if let Some(r) = this.recorder.as_mut() {
                    r.code = r.code.or(Some("Internal"));
                }
            }
            None => {
                if let Some(r) = this.recorder.as_mut() {
                    r.ended = true;
                }
                // Record now rather than when the server gets round to dropping the body.
                this.recorder.take();
            }
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_become_bounded_labels() {
        assert_eq!(
            service_method("/distcron.jobs.v1.JobService/GetJob"),
            ("distcron.jobs.v1.JobService".into(), "GetJob".into())
        );
        assert_eq!(
            service_method("/grpc.health.v1.Health/Check"),
            ("grpc.health.v1.Health".into(), "Check".into())
        );
        assert_eq!(
            service_method("/evil.Service/x"),
            ("other".into(), "other".into())
        );
        assert_eq!(service_method("/"), ("other".into(), "other".into()));
    }

    #[test]
    fn codes_are_named() {
        assert_eq!(code_name(b"0"), "OK");
        assert_eq!(code_name(b"14"), "Unavailable");
        assert_eq!(code_name(b"99"), "Unknown");
    }
}
