//! The log: segments, indexes, durability, recovery, retention, readers.

mod activity;
mod checkpoint;
mod durability;
mod engine;
mod maintenance;
mod options;
mod reader;
mod recovery;
mod retention;
mod retired;
mod scan;
mod seal;
mod segment;
mod view;

pub use durability::SyncStats;
pub(crate) use durability::{Async, Block, Wait, ready};
pub use engine::Log;
pub(crate) use engine::{is_log_file_name, lock_log_dir};
pub use options::{Durability, LogOptions, SEGMENT_BYTES_MAX, SEGMENT_BYTES_MIN};
pub use reader::{Cursor, Position};
pub(crate) use recovery::parse_segment_name;
pub use recovery::{RecoveryReport, Truncation};
pub use view::LogView;
