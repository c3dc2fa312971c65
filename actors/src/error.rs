//! The one error type of the domain layer, mapped once onto the wire `Error`.

use bbs_models::error::Type;
use bbs_store::StoreError;
use thiserror::Error;

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum BbsError {
    /// Validation failed; the message names the fields, upstream style
    /// (`Invalid field: process_guid, Invalid field: index`).
    #[error("{0}")]
    InvalidRequest(String),
    #[error("the requested resource could not be found")]
    NotFound,
    #[error("the requested resource already exists")]
    Exists,
    #[error("the requested resource is in a conflicting state")]
    Conflict,
    #[error("Cannot transition from {from} to {to}")]
    InvalidStateTransition { from: String, to: String },
    #[error("Running on cell {actual} not {requested}")]
    RunningOnDifferentCell { actual: String, requested: String },
    #[error("cannot claim actual LRP")]
    CannotClaim,
    #[error("cannot start actual LRP")]
    CannotStart,
    #[error("cannot crash actual LRP")]
    CannotCrash,
    #[error("cannot fail actual LRP")]
    CannotFail,
    #[error("cannot remove actual LRP")]
    CannotRemove,
    #[error("cannot unclaim actual LRP")]
    CannotUnclaim,
    #[error("could not deserialize record: {0}")]
    Deserialize(String),
    #[error("the request failed due to deadlock")]
    Deadlock,
    /// A record is sealed with a key that is not configured: nothing can read it.
    #[error("Key with label {0:?} was not found")]
    UnknownKeyLabel(String),
    #[error("Unrecoverable Error: {0}")]
    Unrecoverable(String),
    /// The server is overloaded or shutting down: an actor's mailbox is closed.
    #[error("service unavailable: {0}")]
    Unavailable(String),
    #[error("{0}")]
    Unknown(String),
}

impl BbsError {
    /// Upstream's field error: `Invalid field: <name>`.
    pub fn invalid_fields<I, S>(fields: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let message = fields
            .into_iter()
            .map(|f| format!("Invalid field: {}", f.as_ref()))
            .collect::<Vec<_>>()
            .join(", ");
        BbsError::InvalidRequest(message)
    }

    pub fn wire_type(&self) -> Type {
        match self {
            BbsError::InvalidRequest(_) => Type::InvalidRequest,
            BbsError::NotFound => Type::ResourceNotFound,
            BbsError::Exists => Type::ResourceExists,
            BbsError::Conflict => Type::ResourceConflict,
            BbsError::InvalidStateTransition { .. } => Type::InvalidStateTransition,
            BbsError::RunningOnDifferentCell { .. } => Type::RunningOnDifferentCell,
            BbsError::CannotClaim => Type::ActualLrpCannotBeClaimed,
            BbsError::CannotStart => Type::ActualLrpCannotBeStarted,
            BbsError::CannotCrash => Type::ActualLrpCannotBeCrashed,
            BbsError::CannotFail => Type::ActualLrpCannotBeFailed,
            BbsError::CannotRemove => Type::ActualLrpCannotBeRemoved,
            BbsError::CannotUnclaim => Type::ActualLrpCannotBeUnclaimed,
            BbsError::Deserialize(_) => Type::Deserialize,
            BbsError::Deadlock => Type::Deadlock,
            BbsError::Unrecoverable(_) => Type::Unrecoverable,
            BbsError::UnknownKeyLabel(_) => Type::FailedToOpenEnvelope,
            BbsError::Unavailable(_) | BbsError::Unknown(_) => Type::UnknownError,
        }
    }

    pub fn to_wire(&self) -> bbs_models::Error {
        bbs_models::Error::new(self.wire_type(), self.to_string())
    }
}

impl From<StoreError> for BbsError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::NotFound => BbsError::NotFound,
            StoreError::Exists => BbsError::Exists,
            StoreError::ValueTooLong(m) => BbsError::InvalidRequest(m),
            StoreError::Deadlock => BbsError::Deadlock,
            StoreError::Unrecoverable(m) => BbsError::Unrecoverable(m),
            StoreError::Corrupt(m) => BbsError::Deserialize(m),
            StoreError::Rejected(m) => BbsError::Unknown(m),
            StoreError::Contention | StoreError::Unavailable(_) | StoreError::Other(_) => {
                BbsError::Unknown(error.to_string())
            }
        }
    }
}

pub type BbsResult<T> = Result<T, BbsError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_to_upstream_types_and_messages() {
        let e = BbsError::invalid_fields(["process_guid", "index"]);
        assert_eq!(e.wire_type(), Type::InvalidRequest);
        assert_eq!(
            e.to_string(),
            "Invalid field: process_guid, Invalid field: index"
        );
        let e = BbsError::InvalidStateTransition {
            from: "Pending".into(),
            to: "Completed".into(),
        };
        assert_eq!(
            e.to_wire().message,
            "Cannot transition from Pending to Completed"
        );
        assert_eq!(e.to_wire().r#type, Type::InvalidStateTransition as i32);
        assert_eq!(BbsError::from(StoreError::Exists), BbsError::Exists);
        assert_eq!(
            BbsError::from(StoreError::Unrecoverable("table gone".into())).to_string(),
            "Unrecoverable Error: table gone"
        );
        assert_eq!(
            BbsError::from(StoreError::Deadlock).wire_type(),
            Type::Deadlock
        );
    }
}
