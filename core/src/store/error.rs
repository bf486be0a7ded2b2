//! The store layer's one error type.

use std::path::PathBuf;

use crate::event::{ExpectedVersion, Uuid, ValidationError};

/// Everything a store operation can fail with. Nothing is written when an append fails.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A draft broke a limit or a rule; the error names the field.
    #[error(transparent)]
    Invalid(#[from] ValidationError),
    /// The batch's records do not fit in one segment.
    #[error("batch of {bytes} bytes does not fit in a segment of {limit} bytes (store.segment_bytes)")]
    TooLarge { bytes: usize, limit: usize },
    /// `expected_version` did not hold.
    #[error("version conflict on `{aggregate_id}`: expected {expected}, current version is {current}")]
    VersionConflict { aggregate_id: String, expected: ExpectedVersion, current: u64 },
    /// Some ids are stored already (or stored with another type or aggregate), so the append is
    /// neither new nor an idempotent retry.
    #[error("event ids already stored differently or only partly: {ids:?}")]
    DuplicateId { ids: Vec<Uuid> },
    /// The aggregate has no events (saving a snapshot needs its stream).
    #[error("stream `{aggregate_id}` does not exist")]
    StreamNotFound { aggregate_id: String },
    /// The requested position was deleted by retention.
    #[error("position {requested} is before the first retained position {first_position}")]
    BeforeRetention { requested: u64, first_position: u64 },
    /// A complete record or file region failed its checksum or format check.
    #[error("corruption in {} at offset {offset}{}: {reason}", file.display(), position.map(|p| format!(" (position {p})")).unwrap_or_default())]
    Corruption { file: PathBuf, offset: u64, position: Option<u64>, reason: String },
    /// A file in the data directory that Herald did not write.
    #[error("foreign file in the data directory: {}: {reason}", path.display())]
    ForeignFile { path: PathBuf, reason: String },
    /// An earlier fsync failed; the log refuses writes until it is reopened.
    #[error("the log is read-only after an fsync failure: {cause}")]
    ReadOnly { cause: String },
    /// Another process holds the data directory.
    #[error("data directory {} is in use by another process", path.display())]
    Locked { path: PathBuf },
    /// The append was refused by its reservation hook (the dispatch ring is full).
    #[error("overloaded: {0}")]
    Overloaded(String),
    /// A setting is out of range.
    #[error("invalid store configuration: {0}")]
    Config(String),
    /// An operating-system call failed.
    #[error("{context}: {source}")]
    Io { context: String, source: std::io::Error },
}
