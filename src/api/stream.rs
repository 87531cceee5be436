//! Receiving as a [`Stream`]: [`crate::Subscription::stream`],
//! [`crate::Group::stream`] and [`crate::Responder::stream`] turn a
//! handle's `recv_async` into a `futures_core::Stream`, so that
//! `while let Some(item) = stream.next().await` (with `StreamExt` from
//! `futures` or `tokio-stream`) reads until an error.

use std::pin::Pin;
use std::task::{Context, Poll};

use futures_core::Stream;

use crate::backend::BoxFuture;
use crate::error::Result;

/// The receive in progress; it hands the handle back for the next one.
type Step<'a, T> = BoxFuture<'a, (Result<T>, Next<'a, T>)>;
/// Starts the next receive.
struct Next<'a, T>(Box<dyn FnOnce() -> Step<'a, T> + Send + 'a>);

/// The items a handle receives, as a [`Stream`] (see `Subscription::stream`
/// and the like). Each item is one `recv_async`; after an error, which it
/// yields, the stream ends (open a new one to try again). It never ends
/// otherwise: stop reading when you are done. Cancellation as
/// `recv_async`: dropping the stream between items, or while it waits for
/// one, loses nothing.
#[must_use = "a stream does nothing until polled"]
pub struct RecvStream<'a, T> {
    step: Option<Step<'a, T>>,
    next: Option<Next<'a, T>>,
}

impl<'a, T: 'a> RecvStream<'a, T> {
    /// A stream of `recv(&mut handle)`, one after another.
    pub(crate) fn new<H, F>(handle: H, recv: F) -> RecvStream<'a, T>
    where
        H: Send + 'a,
        F: for<'h> Fn(&'h mut H) -> BoxFuture<'h, Result<T>> + Copy + Send + 'a,
    {
        RecvStream {
            step: None,
            next: Some(again(handle, recv)),
        }
    }
}

/// The next receive from `handle`.
fn again<'a, H, T, F>(mut handle: H, recv: F) -> Next<'a, T>
where
    H: Send + 'a,
    T: 'a,
    F: for<'h> Fn(&'h mut H) -> BoxFuture<'h, Result<T>> + Copy + Send + 'a,
{
    Next(Box::new(move || {
        Box::pin(async move {
            let result = recv(&mut handle).await;
            (result, again(handle, recv))
        })
    }))
}

impl<T> Stream for RecvStream<'_, T> {
    type Item = Result<T>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<T>>> {
        let this = self.get_mut();
        if this.step.is_none() {
            let Some(next) = this.next.take() else {
                return Poll::Ready(None); // ended by an error
            };
            this.step = Some((next.0)());
        }
        let Some(step) = this.step.as_mut() else {
            return Poll::Ready(None);
        };
        let Poll::Ready((result, next)) = step.as_mut().poll(cx) else {
            return Poll::Pending;
        };
        this.step = None;
        if result.is_ok() {
            this.next = Some(next);
        }
        Poll::Ready(Some(result))
    }
}

impl<T> std::fmt::Debug for RecvStream<'_, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecvStream")
            .field("receiving", &self.step.is_some())
            .field("ended", &(self.step.is_none() && self.next.is_none()))
            .finish()
    }
}
