//! NATS client errors as logbus errors.
//!
//! - "No responders" (nobody serves the subject: no stream leader during a
//!   failover, a stream that does not exist) and a server that cannot be
//!   reached at connect are [`Error::Unavailable`]: retrying later may
//!   succeed.
//! - Everything else the client or server reports (timeouts waiting for
//!   the server, refused requests, a lost connection) is
//!   [`Error::Backend`] with the operation and the client's message.
//! - A bus closed by this process is [`Error::Closed`], decided before any
//!   client call (the client's own "closed" errors do not say whose close
//!   it was). So is any call on a bus whose runtime (the caller's) shut
//!   down: the task it spawned there was cancelled (`client::join_error`).
//!
//! Request timeouts ([`Error::Timeout`] with the correlation id) are
//! mapped where requests are made.

use std::fmt::Display;

use async_nats::ConnectErrorKind;
use async_nats::jetstream::context::{PublishError, PublishErrorKind};

use crate::error::Error;

/// The backend name in [`Error::Backend`] and [`Error::Unavailable`].
pub(crate) const BACKEND: &str = "nats";

/// A failed operation: `context` says which.
pub(crate) fn nats_error(context: &str, error: impl Display) -> Error {
    Error::Backend {
        backend: BACKEND,
        message: format!("{context}: {error}"),
    }
}

fn unavailable(context: &str, error: impl Display) -> Error {
    Error::Unavailable {
        backend: BACKEND,
        message: format!("{context}: {error}"),
    }
}

/// A publish that failed, before or after reaching the stream.
pub(crate) fn publish_error(error: PublishError) -> Error {
    match error.kind() {
        PublishErrorKind::StreamNotFound => unavailable("publish", error),
        _ => nats_error("publish", error),
    }
}

/// A connection that could not be made.
pub(crate) fn connect_error(error: async_nats::ConnectError) -> Error {
    match error.kind() {
        ConnectErrorKind::Io | ConnectErrorKind::TimedOut | ConnectErrorKind::MaxReconnects => {
            unavailable("connect", error)
        }
        _ => nats_error("connect", error),
    }
}
