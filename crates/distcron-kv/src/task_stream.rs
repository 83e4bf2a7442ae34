//! A stream fed by a background task that stops when the stream is dropped.

use std::future::Future;
use std::pin::Pin;

use futures::{Stream, StreamExt};
use tokio::sync::mpsc;

/// Runs `body` in a task feeding a bounded channel and returns the channel as a stream. The task
/// ends when `body` returns, or is aborted as soon as the stream is dropped, even while it waits.
pub(crate) fn task_stream<T, F, Fut>(body: F) -> Pin<Box<dyn Stream<Item = T> + Send>>
where
    T: Send + 'static,
    F: FnOnce(mpsc::Sender<T>) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let (tx, mut rx) = mpsc::channel(16);
    let closed = tx.clone();
    let task = tokio::spawn(body(tx));
    tokio::spawn(async move {
        closed.closed().await;
        task.abort();
    });
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx)).boxed()
}
