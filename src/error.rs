//! The crate's error type.
//!
//! Corruption and I/O are different errors: an I/O error says the operation
//! could not be carried out and changes nothing on disk; `Corrupt` says bytes
//! on disk are not what logbus wrote. Recovery only ever repairs the second.

use std::io;
use std::path::PathBuf;

/// Result alias used throughout logbus.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in logbus.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The operating system refused an I/O operation.
    #[error("I/O error: {0}")]
    Io(#[from] io::Error),

    /// Bytes on disk fail a check that logbus-written bytes always pass.
    #[error("corrupt data in {} at byte {position}: {kind}", file.display())]
    Corrupt {
        /// The damaged file.
        file: PathBuf,
        /// Byte position of the damage inside `file`.
        position: u64,
        /// What check failed.
        kind: CorruptKind,
    },

    /// Another process (or another handle in this process) owns the directory.
    #[error("{} is locked by another owner", .0.display())]
    Locked(PathBuf),

    /// An earlier write or fsync failed, so nothing written since can be
    /// trusted to be durable. Reopen the log to recover.
    #[error("log is poisoned by an earlier failed write or sync: {cause}")]
    Poisoned {
        /// The first failure.
        cause: String,
    },

    /// A record's encoded frame exceeds `max_record_bytes`. Nothing was written.
    #[error("record of {size} bytes exceeds the limit of {max} bytes")]
    RecordTooLarge {
        /// Encoded frame size of the rejected record.
        size: u64,
        /// The configured limit.
        max: u64,
    },

    /// A caller-supplied argument or option is outside its documented range.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),

    /// A delivery's lease ran out and the record was handed to another
    /// receiver (or settled): this delivery can no longer settle it.
    #[error("the lease on offset {offset} expired; the record was redelivered or settled")]
    LeaseExpired {
        /// The record's offset.
        offset: u64,
    },

    /// No reply arrived in time for the request with this correlation id
    /// (a late reply stays collectable).
    #[error("timed out waiting for the reply to {correlation_id:032x}")]
    Timeout {
        /// The request's correlation id.
        correlation_id: u128,
    },

    /// The log, or the bus the handle came from, was closed.
    #[error("closed: the log or bus this handle came from was closed")]
    Closed,

    /// A remote backend (the `nats` feature's JetStream) refused or failed
    /// an operation: a server error, a timeout waiting for the server, a
    /// lost connection, or an operation this backend does not offer (yet).
    #[error("{backend} backend: {message}")]
    Backend {
        /// Which backend (`"nats"`).
        backend: &'static str,
        /// What failed, as the backend reported it.
        message: String,
    },

    /// The backend cannot do what was asked: JetStream cannot express it
    /// (docs/NATS.md lists what the NATS backend does differently).
    #[error("the {backend} backend does not support {feature}")]
    Unsupported {
        /// Which backend (`"nats"`).
        backend: &'static str,
        /// What it does not support.
        feature: &'static str,
    },

    /// A remote backend has nobody to serve the operation right now (NATS
    /// "no responders": no stream leader during a cluster failover, or no
    /// server at all). Retrying later may succeed.
    #[error("{backend} backend unavailable: {message}")]
    Unavailable {
        /// Which backend (`"nats"`).
        backend: &'static str,
        /// What was unavailable.
        message: String,
    },
}

impl Error {
    /// True for errors that mean stored bytes are damaged.
    pub fn is_corruption(&self) -> bool {
        matches!(self, Error::Corrupt { .. })
    }

    /// The operating system's error number behind an [`Error::Io`] (e.g.
    /// `ENOSPC`), also where logbus added the operation and path to it.
    pub fn os_error(&self) -> Option<i32> {
        let Error::Io(io) = self else {
            return None;
        };
        let wrapped = || {
            io.get_ref()?
                .source()?
                .downcast_ref::<io::Error>()?
                .raw_os_error()
        };
        io.raw_os_error().or_else(wrapped)
    }

    pub(crate) fn corrupt(file: impl Into<PathBuf>, position: u64, kind: CorruptKind) -> Self {
        Error::Corrupt {
            file: file.into(),
            position,
            kind,
        }
    }
}

/// The check a corrupt region failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CorruptKind {
    /// The file does not start with the expected magic bytes.
    #[error("bad magic")]
    BadMagic,
    /// The file was written by an unknown format version.
    #[error("unsupported format version {0}")]
    UnsupportedVersion(u16),
    /// A checksum did not match the bytes it covers.
    #[error("checksum mismatch: stored 0x{stored:08x}, computed 0x{computed:08x}")]
    Checksum {
        /// Checksum read from disk.
        stored: u32,
        /// Checksum of the bytes read.
        computed: u32,
    },
    /// A frame or header ends before its declared length.
    #[error("truncated: {needed} bytes needed, {available} available")]
    Truncated {
        /// Bytes the structure declares.
        needed: u64,
        /// Bytes present.
        available: u64,
    },
    /// A length field is outside its allowed range.
    #[error("length {0} out of range")]
    LengthOutOfRange(u64),
    /// Zero bytes where a record frame should start.
    #[error("zero-filled region")]
    ZeroFill,
    /// A record's offset is not the one its position implies.
    #[error("expected offset {expected}, found {found}")]
    OffsetMismatch {
        /// The offset the record should have.
        expected: u64,
        /// The offset stored in the record.
        found: u64,
    },
    /// A sealed segment does not end where the next segment begins: a
    /// segment was deleted, or one was cut (even at a frame boundary).
    #[error(
        "offset gap: the segment ends at offset {found}, but the next segment, {}, begins at offset {expected}",
        next_segment.display()
    )]
    OffsetGap {
        /// The next segment's base offset, where this one should end.
        expected: u64,
        /// One past the last offset this segment holds.
        found: u64,
        /// The next segment's data file.
        next_segment: PathBuf,
    },
    /// Fields inside a checksummed structure are inconsistent.
    #[error("malformed: {0}")]
    Malformed(&'static str),
}
