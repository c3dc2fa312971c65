//! Runs the SQL schema migrations at start-up (see migrations/README.md).

use diesel_async::pooled_connection::PoolableConnection;
use diesel_async::SimpleAsyncConnection;

use super::upgrade::UpgradeCodec;
use super::SqlStore;
use crate::error::{StoreError, StoreResult};
use crate::migrate::{
    check_existing, encode_version, existing_version, plan, recorded_version, MigrationPlan,
    SchemaUse, SCHEMA_VERSION,
};
use crate::records::configuration_ids;
use crate::store::{Backend, Store};

pub(crate) const CONFIGURATIONS_DDL: &str =
    "CREATE TABLE IF NOT EXISTS configurations (id VARCHAR(255) PRIMARY KEY, value VARCHAR(255))";

/// Cell presences are this BBS's own table (upstream keeps them in locket). Like
/// `configurations`, it is created outside the versioned schema, so the recorded version stays
/// upstream's and a Go BBS still accepts the database.
const CELL_PRESENCES_DDL: &str = "CREATE TABLE IF NOT EXISTS cell_presences \
     (cell_id VARCHAR(255) PRIMARY KEY, presence TEXT NOT NULL, expire_time BIGINT NOT NULL)";

/// Upstream locket's table, exactly as locket creates it, so a database its locket wrote is
/// read as is and ours is readable by it. Like `configurations`, outside the versioned schema.
const LOCKS_DDL: &str = "CREATE TABLE IF NOT EXISTS locks (path VARCHAR(255) PRIMARY KEY, \
     owner VARCHAR(255), value VARCHAR(4096), type VARCHAR(255) DEFAULT '', \
     modified_index BIGINT DEFAULT 0, modified_id varchar(255) DEFAULT '', ttl BIGINT DEFAULT 0)";

/// Brings a database that earlier versions of this BBS created to upstream's exact final
/// schema (a Go BBS must be able to take it back as it is): `actual_lrps.evacuating` is NOT
/// NULL upstream (a primary-key column until upstream re-keyed the table), and PostgreSQL's
/// `desired_lrps.rootfs` has no default. Each statement changes nothing on a database already
/// in upstream's shape, so it runs at every start; nothing here ever wrote a NULL there.
fn conform_statements(backend: Backend) -> &'static [&'static str] {
    match backend {
        Backend::Mysql => &[
            "SET @bbs_conform = IF((SELECT IS_NULLABLE FROM information_schema.COLUMNS \
             WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'actual_lrps' \
             AND COLUMN_NAME = 'evacuating') = 'YES', \
             'ALTER TABLE actual_lrps MODIFY evacuating BOOL NOT NULL DEFAULT false', 'DO 0')",
            "PREPARE bbs_conform FROM @bbs_conform",
            "EXECUTE bbs_conform",
            "DEALLOCATE PREPARE bbs_conform",
            "SET @bbs_conform = NULL",
        ],
        // Checked first: an ALTER takes an exclusive lock even when it changes nothing.
        Backend::Postgres => &["DO $$ BEGIN \
             IF EXISTS (SELECT 1 FROM information_schema.columns \
               WHERE table_schema = current_schema() AND table_name = 'actual_lrps' \
               AND column_name = 'evacuating' AND is_nullable = 'YES') THEN \
               ALTER TABLE actual_lrps ALTER COLUMN evacuating SET NOT NULL; \
             END IF; \
             IF EXISTS (SELECT 1 FROM information_schema.columns \
               WHERE table_schema = current_schema() AND table_name = 'desired_lrps' \
               AND column_name = 'rootfs' AND column_default IS NOT NULL) THEN \
               ALTER TABLE desired_lrps ALTER COLUMN rootfs DROP DEFAULT; \
             END IF; \
             END $$"],
        _ => &[],
    }
}

fn initial_schema(backend: Backend) -> &'static str {
    match backend {
        Backend::Mysql => include_str!("../../../migrations/1772581987_initial_schema/mysql.sql"),
        Backend::Postgres => {
            include_str!("../../../migrations/1772581987_initial_schema/postgres.sql")
        }
        _ => include_str!("../../../migrations/1772581987_initial_schema/sqlite.sql"),
    }
}

/// Splits a migration file into statements, comment lines dropped; the files hold no `;`
/// inside literals.
pub(crate) fn statements(sql: &str) -> Vec<String> {
    let code: Vec<&str> = sql
        .lines()
        .filter(|line| !line.trim_start().starts_with("--"))
        .collect();
    code.join("\n")
        .split(';')
        .filter(|s| !s.trim().is_empty())
        .map(str::to_owned)
        .collect()
}

impl<C: PoolableConnection + super::upgrade::UpgradeRows + 'static> SqlStore<C>
where
    SqlStore<C>: Store,
    diesel_async::pooled_connection::AsyncDieselConnectionManager<C>: bb8::ManageConnection<Connection = C>,
    <diesel_async::pooled_connection::AsyncDieselConnectionManager<C> as bb8::ManageConnection>::Error:
        std::error::Error + 'static,
{
    /// Brings the schema to `SCHEMA_VERSION` as `schema` allows, or refuses with
    /// `Unrecoverable`.
    pub async fn migrate(&self, schema: SchemaUse<'_>) -> StoreResult<()> {
        let codec = match schema {
            SchemaUse::ReadOnly => {
                return check_existing(existing_version(self).await?, true);
            }
            SchemaUse::Existing(codec) => {
                check_existing(existing_version(self).await?, false)?;
                codec
            }
            SchemaUse::Migrate(codec) => codec,
        };
        let mut conn = self.conn().await?;
        conn.batch_execute(CONFIGURATIONS_DDL)
            .await
            .map_err(StoreError::from)?;
        conn.batch_execute(CELL_PRESENCES_DDL)
            .await
            .map_err(StoreError::from)?;
        conn.batch_execute(LOCKS_DDL)
            .await
            .map_err(StoreError::from)?;
        drop(conn);
        match plan(recorded_version(self).await?)? {
            MigrationPlan::UpToDate => self.conform().await,
            MigrationPlan::Upgrade(from) => {
                if !matches!(self.backend, Backend::Mysql | Backend::Postgres) {
                    return Err(StoreError::Unrecoverable(format!(
                        "Existing DB version ({from}) predates this bbs's schema \
                         ({SCHEMA_VERSION}), and upstream never wrote a {} database",
                        self.backend
                    )));
                }
                self.upgrade(codec).await?;
                self.conform().await
            }
            MigrationPlan::CreateSchema => {
                let mut conn = self.conn().await?;
                for statement in statements(initial_schema(self.backend)) {
                    conn.batch_execute(&statement)
                        .await
                        .map_err(StoreError::from)?;
                }
                drop(conn);
                self.set_configuration(configuration_ids::VERSION, &encode_version(SCHEMA_VERSION))
                    .await
            }
        }
    }
}

impl<C: PoolableConnection + 'static> SqlStore<C>
where
    diesel_async::pooled_connection::AsyncDieselConnectionManager<C>: bb8::ManageConnection<Connection = C>,
    <diesel_async::pooled_connection::AsyncDieselConnectionManager<C> as bb8::ManageConnection>::Error:
        std::error::Error + 'static,
{
    /// Runs upstream's remaining migrations under a database-wide lock, re-reading the version
    /// once it is held: two servers starting together on an older database must not both
    /// replay a migration (a second encrypt_routes would seal the routes twice).
    async fn upgrade(&self, codec: Option<&dyn UpgradeCodec>) -> StoreResult<()>
    where
        C: super::upgrade::UpgradeRows,
        SqlStore<C>: Store,
    {
        let (lock, unlock) = match self.backend {
            Backend::Mysql => (
                "SELECT GET_LOCK('bbs_schema_upgrade', 3600)",
                "SELECT RELEASE_LOCK('bbs_schema_upgrade')",
            ),
            _ => (
                "SELECT pg_advisory_lock(1772581987)",
                "SELECT pg_advisory_unlock(1772581987)",
            ),
        };
        let mut conn = self.conn().await?;
        conn.batch_execute(lock).await.map_err(StoreError::from)?;
        let result = async {
            let Some(from) = recorded_version(self).await? else {
                return Ok(());
            };
            for step in super::upgrade::remaining(from) {
                super::upgrade::apply(&mut *conn, self.backend, step, codec).await?;
            }
            Ok(())
        }
        .await;
        let released = conn.batch_execute(unlock).await.map_err(StoreError::from);
        result.and(released)
    }

    async fn conform(&self) -> StoreResult<()> {
        let mut conn = self.conn().await?;
        for statement in conform_statements(self.backend) {
            conn.batch_execute(statement)
                .await
                .map_err(StoreError::from)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_schema_splits_into_the_same_statements() {
        let count = |b| statements(initial_schema(b)).len();
        assert_eq!(count(Backend::Mysql), 22);
        assert_eq!(count(Backend::Mysql), count(Backend::Postgres));
        assert_eq!(count(Backend::Mysql), count(Backend::Sqlite));
    }
}
