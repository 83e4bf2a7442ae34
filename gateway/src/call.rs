//! One call to jobsvc or logsvc: a clone of the balanced client, the request with the caller's
//! token and a deadline, and — for calls that only read — attempts again after failures in
//! transport.

use std::future::Future;
use std::time::Duration;

use crate::auth::Caller;

/// How long one backend call may take.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// Most attempts of a [`Attempts::Retried`] call.
const MAX_ATTEMPTS: u32 = 5;

/// Whether a call that failed in transport is sent again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attempts {
    /// Sent once: the call changes something (save, delete, trigger, kill, enable).
    Once,
    /// Sent again, backing off, after failures in transport: the call only reads, so another
    /// instance may answer it.
    Retried,
}

/// Sends `message` as `caller` to a clone of `client` with `send` (which names the method:
/// `|mut c, r| async move { c.get_job(r).await }`), at most as often as `attempts` says, and
/// answers the reply's message.
pub async fn call<C, M, T, F, Fut>(
    client: &C,
    caller: &Caller,
    attempts: Attempts,
    message: M,
    send: F,
) -> Result<T, tonic::Status>
where
    C: Clone,
    M: Clone,
    F: Fn(C, tonic::Request<M>) -> Fut,
    Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
{
    let token = caller.token.as_deref();
    let reply = match attempts {
        Attempts::Once => send(client.clone(), request(message, token)).await,
        Attempts::Retried => retry(|| send(client.clone(), request(message.clone(), token))).await,
    };
    reply.map(tonic::Response::into_inner)
}

/// A request carrying the caller's bearer token (if any) and a deadline.
pub fn request<T>(message: T, token: Option<&str>) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.set_timeout(CALL_TIMEOUT);
    if let Some(token) = token {
        if let Ok(value) = format!("Bearer {token}").parse() {
            request.metadata_mut().insert("authorization", value);
        }
    }
    request
}

/// Whether a call failed before any instance answered it: none was reachable (`Unavailable`), the
/// instance died with the call in flight (`Cancelled`, or `Unknown` made here from a transport
/// error: a status an instance sent has no source), so another instance may answer it.
fn failed_in_transport(status: &tonic::Status) -> bool {
    match status.code() {
        tonic::Code::Unavailable | tonic::Code::Cancelled => true,
        tonic::Code::Unknown => std::error::Error::source(status).is_some(),
        _ => false,
    }
}

/// Calls `f` until it succeeds, fails with an answer from an instance, or [`MAX_ATTEMPTS`]
/// attempts failed in transport, backing off 100, 200, 400, 800 ms: longer than discovery takes
/// to leave an unreachable instance out of the balancer (it probes every second).
async fn retry<T, F, Fut>(mut f: F) -> Result<T, tonic::Status>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, tonic::Status>>,
{
    let mut attempt = 0u32;
    loop {
        match f().await {
            Err(s) if failed_in_transport(&s) && attempt + 1 < MAX_ATTEMPTS => {
                attempt += 1;
                tracing::debug!(attempt, error = %s.message(), "backend unreachable; retrying");
                tokio::time::sleep(Duration::from_millis(100 << (attempt - 1))).await;
            }
            other => return other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_failures_before_an_instance_answered_are_retried() {
        assert!(failed_in_transport(&tonic::Status::unavailable(
            "tcp connect error"
        )));
        assert!(failed_in_transport(&tonic::Status::cancelled("gone")));
        let transport =
            tonic::Status::from_error(Box::new(std::io::Error::other("transport error")));
        assert_eq!(transport.code(), tonic::Code::Unknown);
        assert!(failed_in_transport(&transport));
        // An instance's own answers are final.
        assert!(!failed_in_transport(&tonic::Status::unknown(
            "from the server"
        )));
        assert!(!failed_in_transport(&tonic::Status::internal(
            "store failed"
        )));
        assert!(!failed_in_transport(&tonic::Status::not_found(
            "no such run"
        )));
    }
}
