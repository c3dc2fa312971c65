//! Store errors. Each backend maps its native failures onto these once, so the layers above
//! never look at SQL error codes or etcd statuses.

use thiserror::Error;

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum StoreError {
    /// The record asked for does not exist.
    #[error("record not found")]
    NotFound,
    /// A record with the same key already exists (a unique key was violated).
    #[error("record already exists")]
    Exists,
    /// A value does not fit its column (MySQL 1406, PostgreSQL 22001).
    #[error("value too long: {0}")]
    ValueTooLong(String),
    /// The database kept deadlocking after retries (MySQL 1213).
    #[error("the request failed due to deadlock")]
    Deadlock,
    /// A compare-and-swap kept losing to other writers (etcd).
    #[error("too many concurrent writers for one record")]
    Contention,
    /// The schema is missing or newer than this binary: the process cannot go on.
    #[error("unrecoverable store error: {0}")]
    Unrecoverable(String),
    /// The backend could not be reached, or a pool connection could not be had.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// A stored value could not be decoded.
    #[error("could not deserialize record: {0}")]
    Corrupt(String),
    /// A mutation callback refused the change; the message is the caller's.
    #[error("{0}")]
    Rejected(String),
    /// Anything else, with the backend's own words.
    #[error("store error: {0}")]
    Other(String),
}

pub type StoreResult<T> = Result<T, StoreError>;

impl StoreError {
    /// A table the query needs is not there (`classify_message` makes it `Unrecoverable`): a
    /// database no BBS, or only the Go BBS, has used.
    pub fn is_missing_table(&self) -> bool {
        matches!(self, StoreError::Unrecoverable(m)
            if m.contains("doesn't exist") || m.contains("does not exist") || m.contains("no such table"))
    }

    /// A first connection that failed while TLS is on: says which config keys to check, since
    /// a refused handshake reads like any other connection failure.
    pub fn naming_tls_keys(self, tls_on: bool, keys: &str) -> StoreError {
        match self {
            StoreError::Unavailable(why) | StoreError::Other(why) if tls_on => {
                StoreError::Unavailable(format!("{why} (TLS to the store is on: check {keys})"))
            }
            other => other,
        }
    }
}
