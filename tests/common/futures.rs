//! Driving a future without an executor: the `*_async` methods must work
//! on any executor, so the tests poll them by hand.

// Compiled into every test binary; only some use each helper.
#![allow(dead_code)]

use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

/// Polls `future` once, then drops it (a cancelled call if it was pending).
pub fn poll_once<F: Future>(future: F) -> Poll<F::Output> {
    let mut context = Context::from_waker(Waker::noop());
    pin!(future).poll(&mut context)
}

/// Runs `future` to completion on this thread, polling every millisecond
/// (no executor, no waker: what it waits for must not need one).
pub fn poll_until_ready<F: Future>(future: F) -> F::Output {
    let mut context = Context::from_waker(Waker::noop());
    let mut future = pin!(future);
    loop {
        if let Poll::Ready(output) = future.as_mut().poll(&mut context) {
            return output;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}
