//! Upstream's migrations, replayed on a MySQL or PostgreSQL database that the Go BBS left at
//! an earlier schema version (bbs-reference §7.3), so it is brought forward at start instead
//! of refused. The SQL is upstream's, per flavor, in `migrations/upstream/`; two migrations
//! also rewrite data, which needs the encryption keys the store never holds, so the server
//! lends an [`UpgradeCodec`] for them.
//!
//! Each migration runs in one transaction with the write of its version, as upstream's do (on
//! MySQL each DDL statement commits on its own, so an interrupted migration is re-run next
//! start; its ADD COLUMN statements tolerate a column already there, as upstream's do).

use std::sync::Arc;

use diesel::sql_types::{Nullable, Text};
use diesel_async::{AsyncConnection, RunQueryDsl, SimpleAsyncConnection};
use futures::future::BoxFuture;

use crate::error::{StoreError, StoreResult};
use crate::store::Backend;

/// What two of upstream's migrations need from the keys.
pub trait UpgradeCodec: Send + Sync {
    /// encrypt_routes (1474993971): a routes column value, plaintext JSON until then, sealed
    /// as an encoded blob.
    fn seal(&self, plaintext: &[u8]) -> String;
    /// split_metric_tags (1722634733): the metric tags of a run info blob (field 25) as the
    /// encoded JSON blob the column holds; `None` when the run info cannot be opened
    /// (upstream leaves such a row's column NULL).
    fn metric_tags_of_run_info(&self, run_info: &str) -> Option<String>;
}

pub type SharedUpgradeCodec = Arc<dyn UpgradeCodec>;

/// A migration's data rewrite, done in code after its SQL.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Rewrite {
    None,
    EncryptRoutes,
    SplitMetricTags,
}

pub(crate) struct Step {
    pub version: i64,
    pub name: &'static str,
    mysql: &'static str,
    postgres: &'static str,
    rewrite: Rewrite,
}

macro_rules! step {
    ($version:literal, $name:literal, $rewrite:ident) => {
        Step {
            version: $version,
            name: $name,
            mysql: include_str!(concat!(
                "../../../migrations/upstream/",
                stringify!($version),
                "_",
                $name,
                "/mysql.sql"
            )),
            postgres: include_str!(concat!(
                "../../../migrations/upstream/",
                stringify!($version),
                "_",
                $name,
                "/postgres.sql"
            )),
            rewrite: Rewrite::$rewrite,
        }
    };
}

/// Upstream's migrations in order; the last one's version is [`crate::SCHEMA_VERSION`].
pub(crate) const STEPS: &[Step] = &[
    step!(1461790966, "init_sql", None),
    step!(1471030898, "increase_run_info_column", None),
    step!(1472757022, "add_placement_tags_to_desired_lrp", None),
    step!(1474908092, "increase_error_columns", None),
    step!(1474993971, "encrypt_routes", EncryptRoutes),
    step!(1481761088, "add_max_pid_limit", None),
    step!(1502289152, "increase_rootfs_column", None),
    step!(1522700600, "add_task_rejection_count", None),
    step!(1523050077, "add_rejection_reason_to_task", None),
    step!(1528928964, "increase_task_error_columns", None),
    step!(1529530809, "add_presence_to_actual_lrp", None),
    step!(1643660541, "add_internal_routes_to_actual_lrp", None),
    step!(1674146125, "set_run_info_longtext", None),
    step!(1676360874, "add_metric_tags_to_actual_lrp", None),
    step!(1686692176, "add_routable_to_actual_lrps", None),
    step!(1698182853, "add_availability_zone_to_actual_lrps", None),
    step!(1722634733, "split_metric_tags", SplitMetricTags),
    step!(1764949919, "health_check", None),
    step!(1772581987, "add_update_strategy_to_desired_lrp", None),
];

/// The migrations a database at `from` still needs.
pub(crate) fn remaining(from: i64) -> impl Iterator<Item = &'static Step> {
    STEPS.iter().filter(move |step| step.version > from)
}

/// Upstream tolerates an existing column only for its ADD COLUMN statements (MySQL 1060;
/// PostgreSQL's use IF NOT EXISTS).
fn tolerates_existing_column(statement: &str) -> bool {
    statement.contains("ADD COLUMN")
}

fn is_duplicate_column(error: &diesel::result::Error) -> bool {
    error.to_string().contains("Duplicate column name")
}

/// `(process_guid, column)` pairs of the desired LRPs.
type GuidColumn = Vec<(String, Option<String>)>;

/// The two row operations the data rewrites need, per connection type.
pub(crate) trait UpgradeRows: AsyncConnection + SimpleAsyncConnection + Send {
    /// `(process_guid, <column>)` of every desired LRP.
    fn desired_column<'a>(
        &'a mut self,
        column: &'static str,
    ) -> BoxFuture<'a, StoreResult<GuidColumn>>;
    fn set_desired_column<'a>(
        &'a mut self,
        column: &'static str,
        value: &'a str,
        process_guid: &'a str,
    ) -> BoxFuture<'a, StoreResult<()>>;
}

#[derive(diesel::QueryableByName)]
struct GuidAndText {
    #[diesel(sql_type = Text)]
    process_guid: String,
    #[diesel(sql_type = Nullable<Text>)]
    value: Option<String>,
}

macro_rules! upgrade_rows {
    ($conn:ty, $first:literal, $second:literal) => {
        impl UpgradeRows for $conn {
            fn desired_column<'a>(
                &'a mut self,
                column: &'static str,
            ) -> BoxFuture<'a, StoreResult<GuidColumn>> {
                Box::pin(async move {
                    let rows: Vec<GuidAndText> = diesel::sql_query(format!(
                        "SELECT process_guid, {column} AS value FROM desired_lrps"
                    ))
                    .load(self)
                    .await?;
                    Ok(rows
                        .into_iter()
                        .map(|r| (r.process_guid, r.value))
                        .collect())
                })
            }

            fn set_desired_column<'a>(
                &'a mut self,
                column: &'static str,
                value: &'a str,
                process_guid: &'a str,
            ) -> BoxFuture<'a, StoreResult<()>> {
                Box::pin(async move {
                    diesel::sql_query(format!(
                        "UPDATE desired_lrps SET {column} = {} WHERE process_guid = {}",
                        $first, $second
                    ))
                    .bind::<Text, _>(value)
                    .bind::<Text, _>(process_guid)
                    .execute(self)
                    .await?;
                    Ok(())
                })
            }
        }
    };
}

upgrade_rows!(diesel_async::AsyncMysqlConnection, "?", "?");
upgrade_rows!(diesel_async::AsyncPgConnection, "$1", "$2");
upgrade_rows!(super::SqliteConn, "?", "?");

async fn rewrite<C: UpgradeRows>(
    conn: &mut C,
    step: &Step,
    codec: Option<&dyn UpgradeCodec>,
) -> StoreResult<()> {
    let (rewrite, name) = (step.rewrite, format!("{}_{}", step.version, step.name));
    let column = match rewrite {
        Rewrite::None => return Ok(()),
        Rewrite::EncryptRoutes => "routes",
        Rewrite::SplitMetricTags => "run_info",
    };
    let rows = conn.desired_column(column).await?;
    let codec = match codec {
        Some(codec) => codec,
        None if rows.is_empty() => return Ok(()),
        None => {
            return Err(StoreError::Unrecoverable(format!(
                "upstream migration {name} rewrites records and needs the encryption keys"
            )))
        }
    };
    for (process_guid, value) in rows {
        let value = value.unwrap_or_default();
        let (target, sealed) = match rewrite {
            Rewrite::EncryptRoutes => ("routes", Some(codec.seal(value.as_bytes()))),
            Rewrite::SplitMetricTags => ("metric_tags", codec.metric_tags_of_run_info(&value)),
            Rewrite::None => return Ok(()),
        };
        if let Some(sealed) = sealed {
            conn.set_desired_column(target, &sealed, &process_guid)
                .await?;
        }
    }
    Ok(())
}

/// Runs one migration and records its version, in one transaction.
pub(crate) async fn apply<C: UpgradeRows>(
    conn: &mut C,
    backend: Backend,
    step: &Step,
    codec: Option<&dyn UpgradeCodec>,
) -> StoreResult<()> {
    let sql = match backend {
        Backend::Mysql => step.mysql,
        Backend::Postgres => step.postgres,
        other => {
            return Err(StoreError::Unrecoverable(format!(
                "upstream has no {other} schema to migrate"
            )))
        }
    };
    let record_version = match backend {
        Backend::Mysql => format!(
            "INSERT INTO configurations (id, value) VALUES ('version', '{{\"CurrentVersion\":{v}}}') \
             ON DUPLICATE KEY UPDATE value = VALUES(value)",
            v = step.version
        ),
        _ => format!(
            "INSERT INTO configurations (id, value) VALUES ('version', '{{\"CurrentVersion\":{v}}}') \
             ON CONFLICT (id) DO UPDATE SET value = EXCLUDED.value",
            v = step.version
        ),
    };
    conn.batch_execute("BEGIN").await?;
    let result = async {
        for statement in super::migrate::statements(sql) {
            match conn.batch_execute(&statement).await {
                Ok(()) => {}
                Err(e) if tolerates_existing_column(&statement) && is_duplicate_column(&e) => {}
                Err(e) => {
                    return Err(StoreError::Unrecoverable(format!(
                        "upstream migration {}_{}: {e}",
                        step.version, step.name
                    )))
                }
            }
        }
        rewrite(conn, step, codec).await?;
        conn.batch_execute(&record_version).await?;
        Ok(())
    }
    .await;
    match result {
        Ok(()) => conn.batch_execute("COMMIT").await.map_err(StoreError::from),
        Err(e) => match conn.batch_execute("ROLLBACK").await {
            Ok(()) => Err(e),
            Err(rollback) => Err(StoreError::Unrecoverable(format!(
                "{e}; the rollback failed too: {rollback}"
            ))),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_steps_end_at_the_schema_version_in_order() {
        assert_eq!(STEPS.last().map(|s| s.version), Some(crate::SCHEMA_VERSION));
        assert!(STEPS.windows(2).all(|w| w[0].version < w[1].version));
        assert_eq!(remaining(1_722_634_733).count(), 2);
        assert_eq!(remaining(0).count(), STEPS.len());
    }

    #[test]
    fn only_add_column_statements_tolerate_an_existing_column() {
        assert!(tolerates_existing_column(
            "ALTER TABLE tasks ADD COLUMN rejection_count INTEGER NOT NULL DEFAULT 0"
        ));
        assert!(!tolerates_existing_column(
            "ALTER TABLE actual_lrps DROP primary key, ADD PRIMARY KEY (process_guid)"
        ));
    }
}
