//! Maps diesel errors onto `StoreError`, covering the codes upstream maps (§7.1).

use diesel::result::{DatabaseErrorKind, Error};

use crate::error::StoreError;

impl From<Error> for StoreError {
    fn from(error: Error) -> Self {
        match error {
            Error::NotFound => StoreError::NotFound,
            Error::DatabaseError(kind, info) => {
                let message = info.message().to_owned();
                match kind {
                    DatabaseErrorKind::UniqueViolation => StoreError::Exists,
                    DatabaseErrorKind::SerializationFailure => StoreError::Deadlock,
                    DatabaseErrorKind::ClosedConnection
                    | DatabaseErrorKind::UnableToSendCommand => StoreError::Unavailable(message),
                    _ => classify_message(message),
                }
            }
            Error::BrokenTransactionManager => {
                StoreError::Unavailable("broken transaction manager".into())
            }
            other => StoreError::Other(other.to_string()),
        }
    }
}

/// The drivers report these only as text (mysql_async leaves them `Unknown`).
fn classify_message(message: String) -> StoreError {
    let lower = message.to_ascii_lowercase();
    if lower.contains("deadlock") {
        StoreError::Deadlock
    } else if lower.contains("data too long") || lower.contains("value too long") {
        StoreError::ValueTooLong(message)
    } else if lost_connection(&lower) {
        StoreError::Unavailable(message)
    } else if lower.contains("no such table")
        || (lower.contains("table") && lower.contains("doesn't exist"))
        || (lower.contains("relation") && lower.contains("does not exist"))
    {
        StoreError::Unrecoverable(message)
    } else {
        StoreError::Other(message)
    }
}

/// A connection that dropped or could not be made, as mysql_async and tokio-postgres word it:
/// the store is away (bbs_store_available), not refusing the write.
fn lost_connection(lower: &str) -> bool {
    [
        "input/output error",
        "connection reset",
        "broken pipe",
        "connection refused",
        "connection closed",
        "connection to the server is closed",
        "server disconnected",
        "unexpected eof",
    ]
    .iter()
    .any(|phrase| lower.contains(phrase))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_driver_messages() {
        assert_eq!(
            classify_message("Deadlock found when trying to get lock".into()),
            StoreError::Deadlock
        );
        assert!(matches!(
            classify_message("Data too long for column 'state'".into()),
            StoreError::ValueTooLong(_)
        ));
        assert!(matches!(
            classify_message("value too long for type character varying(255)".into()),
            StoreError::ValueTooLong(_)
        ));
        assert!(matches!(
            classify_message("Table 'test.tasks' doesn't exist".into()),
            StoreError::Unrecoverable(_)
        ));
        assert!(matches!(
            classify_message("relation \"tasks\" does not exist".into()),
            StoreError::Unrecoverable(_)
        ));
        assert!(matches!(
            classify_message("something else".into()),
            StoreError::Other(_)
        ));
        for lost in [
            "Input/output error: Connection reset by peer (os error 104)",
            "Input/output error: Broken pipe (os error 32)",
            "Connection to the server is closed.",
            "connection closed",
        ] {
            assert!(
                matches!(classify_message(lost.into()), StoreError::Unavailable(_)),
                "{lost}"
            );
        }
    }
}
