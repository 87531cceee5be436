//! Helpers shared by the integration tests. Each test binary compiles this
//! module on its own (`mod common;`) and uses only part of it.

pub mod child;
pub mod groups;
pub mod logs;
pub mod proptests;
pub mod records;
pub mod storage;
