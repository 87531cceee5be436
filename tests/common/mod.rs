//! Helpers shared by the integration tests. Each test binary compiles this
//! module on its own (`mod common;`) and uses only part of it.

#[macro_use]
pub mod backends;
pub mod child;
pub mod futures;
pub mod groups;
pub mod logs;
pub mod maintenance;
#[cfg(feature = "nats")]
pub mod nats_server;
pub mod proptests;
pub mod records;
pub mod storage;
pub mod writers;

#[allow(unused_imports)]
pub use backends::TestBackend;
