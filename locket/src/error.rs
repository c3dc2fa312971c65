//! Locket's errors, with upstream's gRPC codes and messages (locket models/models.go), so a
//! Go client tells them apart exactly as it does upstream's.

use bbs_store::StoreError;
use thiserror::Error;
use tonic::{Code, Status};

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum LocketError {
    /// Someone else holds the lock.
    #[error("lock-collision")]
    LockCollision,
    #[error("invalid-ttl")]
    InvalidTtl,
    #[error("invalid-owner")]
    InvalidOwner,
    #[error("resource-not-found")]
    ResourceNotFound,
    /// The type code is missing or unknown. Upstream answers NotFound for it.
    #[error("invalid-type")]
    InvalidType,
    /// The store failed; the message is its own.
    #[error("{0}")]
    Store(StoreError),
    /// A gRPC failure other than locket's own errors: unreachable, timed out, refused TLS.
    #[error("{message}")]
    Transport { code: Code, message: String },
}

pub type LocketResult<T> = Result<T, LocketError>;

impl From<StoreError> for LocketError {
    fn from(error: StoreError) -> Self {
        LocketError::Store(error)
    }
}

impl From<LocketError> for Status {
    fn from(error: LocketError) -> Status {
        let message = error.to_string();
        match error {
            LocketError::LockCollision => Status::already_exists(message),
            LocketError::InvalidTtl | LocketError::InvalidOwner => {
                Status::invalid_argument(message)
            }
            LocketError::ResourceNotFound | LocketError::InvalidType => Status::not_found(message),
            LocketError::Store(StoreError::Unavailable(_)) => Status::unavailable(message),
            LocketError::Store(_) => Status::internal(message),
            LocketError::Transport { code, .. } => Status::new(code, message),
        }
    }
}

impl From<Status> for LocketError {
    /// Locket's own errors by code and message; anything else keeps gRPC's words.
    fn from(status: Status) -> Self {
        match (status.code(), status.message()) {
            (Code::AlreadyExists, "lock-collision") => LocketError::LockCollision,
            (Code::InvalidArgument, "invalid-ttl") => LocketError::InvalidTtl,
            (Code::InvalidArgument, "invalid-owner") => LocketError::InvalidOwner,
            (Code::NotFound, "resource-not-found") => LocketError::ResourceNotFound,
            (Code::NotFound, "invalid-type") => LocketError::InvalidType,
            (code, message) => LocketError::Transport {
                code,
                message: format!("rpc error: code = {code:?} desc = {message}"),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lockets_errors_cross_the_wire_unchanged() {
        for error in [
            LocketError::LockCollision,
            LocketError::InvalidTtl,
            LocketError::InvalidOwner,
            LocketError::ResourceNotFound,
            LocketError::InvalidType,
        ] {
            assert_eq!(LocketError::from(Status::from(error.clone())), error);
        }
        let status = Status::from(LocketError::LockCollision);
        assert_eq!(
            (status.code(), status.message()),
            (Code::AlreadyExists, "lock-collision")
        );
        let status = Status::from(LocketError::InvalidType);
        assert_eq!(
            (status.code(), status.message()),
            (Code::NotFound, "invalid-type")
        );
        let status = Status::from(LocketError::InvalidOwner);
        assert_eq!(status.code(), Code::InvalidArgument);
    }

    #[test]
    fn other_grpc_failures_keep_their_words() {
        let error = LocketError::from(Status::unavailable("connection refused"));
        assert_eq!(
            error.to_string(),
            "rpc error: code = Unavailable desc = connection refused"
        );
    }
}
