//! The file seam: every byte logbus reads or writes goes through the
//! [`Storage`] trait. [`StdStorage`] is the real file system; `SimStorage`
//! (feature `test-util`) is an in-memory file system that injects torn
//! writes, fsync errors, disk full and power loss, used by the crash tests
//! and fuzzers; [`OverlayStorage`] reads real files and keeps every change
//! in memory, so the dump tool can run the real recovery as a dry run. The
//! public part is re-exported by `crate::storage`.

mod background;
mod checked;
mod mmap;
mod overlay;
mod seam;
#[cfg(feature = "test-util")]
mod sim;
mod std_fs;

pub(crate) use checked::CheckedStorage;
#[cfg(all(test, target_os = "linux"))]
pub(crate) use mmap::pin_current_thread_to_cpu0;
pub use overlay::OverlayStorage;
pub(crate) use seam::remove_tree;
pub use seam::{LockGuard, MappedFile, Storage, StorageFile, read_exact_at};
#[cfg(feature = "test-util")]
pub use sim::{Fault, SimStorage};
pub use std_fs::StdStorage;
