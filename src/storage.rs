//! Pluggable storage: every byte a [`crate::Log`] or [`crate::Bus`] reads or
//! writes goes through a [`Storage`], chosen with
//! [`crate::LogOptions::storage`] or [`crate::BusOptions::storage`]. The
//! default, [`StdStorage`], is the real file system.
//!
//! Implementations must keep the contract documented on each method: data
//! is durable only after [`StorageFile::sync_data`] (or `sync_all`, or
//! [`MappedFile::sync`]), and a created, removed or renamed entry only after
//! [`Storage::sync_dir`] of its directory. logbus's crash guarantees hold
//! only as far as the storage keeps that contract.
//!
//! With the feature `test-util`, `SimStorage` is an in-memory storage that
//! tells written bytes from synced ones and injects a `Fault`: torn
//! writes, failed syncs, disk full, halts and power loss. No stability
//! promise comes with it.

#[cfg(feature = "test-util")]
pub use crate::io::{Fault, SimStorage};
pub use crate::io::{LockGuard, MappedFile, StdStorage, Storage, StorageFile};
