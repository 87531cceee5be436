//! The bus: named topics and the patterns built on them, on the embedded
//! log or (feature `nats`) on NATS JetStream.

mod facade;
mod log_bus;
mod names;

pub use facade::Bus;
pub use log_bus::BusOptions;
pub(crate) use log_bus::{BusInner, LogReplies, OpenBus};
pub use names::{MAX_NAME_BYTES, validate_name};
#[cfg(feature = "nats")]
pub(crate) use names::{derived, needed_dead_letter_topic};
pub(crate) use names::{validate_dead_letter_source, validate_requester_name, validate_topic_name};
