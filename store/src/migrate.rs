//! Schema versions, shared by every backend: upstream's `{"CurrentVersion":N}` record.

use serde::{Deserialize, Serialize};

use crate::error::{StoreError, StoreResult};
use crate::records::configuration_ids;
use crate::store::Store;

/// The newest upstream schema version this binary creates and understands.
pub const SCHEMA_VERSION: i64 = 1_772_581_987;

#[derive(Serialize, Deserialize)]
struct VersionRecord {
    #[serde(rename = "CurrentVersion")]
    current_version: i64,
}

pub fn encode_version(version: i64) -> String {
    serde_json::to_string(&VersionRecord {
        current_version: version,
    })
    .unwrap_or_default()
}

/// Reads the recorded schema version; `None` on a new database.
pub async fn recorded_version(store: &dyn Store) -> StoreResult<Option<i64>> {
    match store.configuration(configuration_ids::VERSION).await? {
        None => Ok(None),
        Some(text) => serde_json::from_str::<VersionRecord>(&text)
            .map(|v| Some(v.current_version))
            .map_err(|e| StoreError::Corrupt(format!("version record {text:?}: {e}"))),
    }
}

/// How opening a store treats its schema.
#[derive(Clone, Copy)]
pub enum SchemaUse<'a> {
    /// A server's start: a new store gets the schema, an older upstream one is brought forward
    /// (the keys lent to upstream's record-rewriting migrations), the current one made exact.
    Migrate(Option<&'a dyn crate::UpgradeCodec>),
    /// A migration's source: an older upstream schema is brought forward, but a store holding
    /// no BBS schema is refused rather than given one.
    Existing(Option<&'a dyn crate::UpgradeCodec>),
    /// Reading only: nothing is changed, and the schema must be this binary's.
    ReadOnly,
}

/// The recorded version, where a missing `configurations` table (a database no BBS used)
/// reads as none.
pub async fn existing_version(store: &dyn Store) -> StoreResult<Option<i64>> {
    match recorded_version(store).await {
        Err(e) if e.is_missing_table() => Ok(None),
        other => other,
    }
}

/// The refusals of [`SchemaUse::Existing`] and [`SchemaUse::ReadOnly`] before anything is
/// written: a store with no BBS schema, and (read-only) one at another version.
pub fn check_existing(recorded: Option<i64>, read_only: bool) -> StoreResult<()> {
    match recorded {
        None | Some(0) => Err(StoreError::Unrecoverable(
            "the store holds no BBS schema (no version recorded): is this the right database?"
                .into(),
        )),
        Some(v) if read_only && v != SCHEMA_VERSION => Err(StoreError::Unrecoverable(format!(
            "the store is at schema version {v}, not {SCHEMA_VERSION}; a check reads only, \
             so start a server on it (or copy it) first"
        ))),
        _ => Ok(()),
    }
}

/// What start-up must do about the recorded version.
#[derive(Debug, PartialEq, Eq)]
pub enum MigrationPlan {
    CreateSchema,
    UpToDate,
    /// A database the Go BBS left at an earlier upstream version: upstream's remaining
    /// migrations bring it forward (SQL only; store/src/sql/upgrade.rs).
    Upgrade(i64),
}

pub fn plan(recorded: Option<i64>) -> StoreResult<MigrationPlan> {
    match recorded {
        None | Some(0) => Ok(MigrationPlan::CreateSchema),
        Some(SCHEMA_VERSION) => Ok(MigrationPlan::UpToDate),
        Some(v) if v > SCHEMA_VERSION => Err(StoreError::Unrecoverable(format!(
            "Existing DB version ({v}) exceeds bbs version ({SCHEMA_VERSION})"
        ))),
        Some(v) => Ok(MigrationPlan::Upgrade(v)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plans_by_recorded_version() {
        assert_eq!(plan(None).unwrap(), MigrationPlan::CreateSchema);
        assert_eq!(plan(Some(0)).unwrap(), MigrationPlan::CreateSchema);
        assert_eq!(plan(Some(SCHEMA_VERSION)).unwrap(), MigrationPlan::UpToDate);
        assert!(matches!(
            plan(Some(SCHEMA_VERSION + 1)),
            Err(StoreError::Unrecoverable(m)) if m.contains("exceeds")
        ));
        assert_eq!(
            plan(Some(1_461_790_966)).unwrap(),
            MigrationPlan::Upgrade(1_461_790_966)
        );
    }

    #[test]
    fn version_record_matches_upstream_json() {
        assert_eq!(encode_version(5), r#"{"CurrentVersion":5}"#);
    }
}
