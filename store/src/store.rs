//! The one storage interface every backend implements and the conformance suite checks.

use async_trait::async_trait;

use crate::error::StoreResult;
use crate::records::*;

/// Which backend a store talks to; also the `database_driver` config value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Backend {
    Sqlite,
    Mysql,
    Postgres,
    Etcd,
}

impl Backend {
    pub fn name(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Mysql => "mysql",
            Backend::Postgres => "postgres",
            Backend::Etcd => "etcd",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "sqlite" | "sqlite3" => Some(Backend::Sqlite),
            "mysql" => Some(Backend::Mysql),
            "postgres" | "postgresql" => Some(Backend::Postgres),
            "etcd" => Some(Backend::Etcd),
            _ => None,
        }
    }

    pub const ALL: [Backend; 4] = [
        Backend::Sqlite,
        Backend::Mysql,
        Backend::Postgres,
        Backend::Etcd,
    ];
}

impl std::fmt::Display for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A read-modify-write step applied atomically to one record. It may run more than once (etcd
/// retries a lost compare-and-swap), so it must be a pure function of its input.
pub type Mutation<'a, T> = dyn Fn(T) -> StoreResult<T> + Send + Sync + 'a;

/// A connection pool's state and its cumulative waits since start.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PoolStats {
    pub open: u32,
    pub idle: u32,
    /// Connection checkouts that had to wait for one.
    pub waited: u64,
    pub wait_time: std::time::Duration,
    pub timed_out: u64,
}

/// Persistence for every BBS record kind.
///
/// Writes are durable when they return. `insert_*` fails with `Exists` on a duplicate key;
/// `update_*` and `delete_*` fail with `NotFound` when the record is missing; `modify_*` reads,
/// applies the mutation and writes back with no lost update under concurrent writers.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    fn backend(&self) -> Backend;

    /// The connection pool's state, for upstream's DB metrics; `None` where the backend
    /// keeps no pool (etcd multiplexes one channel).
    fn pool_stats(&self) -> Option<PoolStats> {
        None
    }

    /// Reads a `configurations` value (`version`, `encryption_key_label`, ...).
    async fn configuration(&self, id: &str) -> StoreResult<Option<String>>;
    async fn set_configuration(&self, id: &str, value: &str) -> StoreResult<()>;

    async fn upsert_domain(&self, domain: &DomainRecord) -> StoreResult<()>;
    /// Every domain row, fresh or not: freshness is the caller's rule.
    async fn domains(&self) -> StoreResult<Vec<DomainRecord>>;
    async fn delete_domain(&self, domain: &str) -> StoreResult<()>;

    async fn insert_task(&self, task: &TaskRecord) -> StoreResult<()>;
    async fn task(&self, guid: &str) -> StoreResult<Option<TaskRecord>>;
    async fn tasks(&self, filter: &TaskFilter) -> StoreResult<Vec<TaskRecord>>;
    async fn update_task(&self, task: &TaskRecord) -> StoreResult<()>;
    async fn modify_task(
        &self,
        guid: &str,
        mutation: &Mutation<'_, TaskRecord>,
    ) -> StoreResult<TaskRecord>;
    async fn delete_task(&self, guid: &str) -> StoreResult<()>;

    async fn insert_desired_lrp(&self, lrp: &DesiredLrpRecord) -> StoreResult<()>;
    async fn desired_lrp(&self, process_guid: &str) -> StoreResult<Option<DesiredLrpRecord>>;
    async fn desired_lrps(&self, filter: &DesiredLrpFilter) -> StoreResult<Vec<DesiredLrpRecord>>;
    /// The scheduling halves only; run infos are not read.
    async fn desired_lrp_scheduling_infos(
        &self,
        filter: &DesiredLrpFilter,
    ) -> StoreResult<Vec<DesiredLrpSchedulingRecord>>;
    async fn update_desired_lrp(&self, lrp: &DesiredLrpRecord) -> StoreResult<()>;
    async fn modify_desired_lrp(
        &self,
        process_guid: &str,
        mutation: &Mutation<'_, DesiredLrpRecord>,
    ) -> StoreResult<DesiredLrpRecord>;
    async fn delete_desired_lrp(&self, process_guid: &str) -> StoreResult<()>;

    async fn insert_actual_lrp(&self, lrp: &ActualLrpRecord) -> StoreResult<()>;
    async fn actual_lrp(&self, key: &ActualLrpKey) -> StoreResult<Option<ActualLrpRecord>>;
    async fn actual_lrps(&self, filter: &ActualLrpFilter) -> StoreResult<Vec<ActualLrpRecord>>;
    async fn update_actual_lrp(&self, lrp: &ActualLrpRecord) -> StoreResult<()>;
    async fn modify_actual_lrp(
        &self,
        key: &ActualLrpKey,
        mutation: &Mutation<'_, ActualLrpRecord>,
    ) -> StoreResult<ActualLrpRecord>;
    async fn delete_actual_lrp(&self, key: &ActualLrpKey) -> StoreResult<()>;
    /// Applies the writes in order, all or none.
    async fn write_actual_lrps(&self, writes: &[ActualLrpWrite]) -> StoreResult<()>;
    /// Applies writes of any record kind in order, all or none, in one transaction (one etcd
    /// txn): the group commit of independent requests' writes. Each write fails the whole
    /// batch as its single-record form would (`Exists`, `NotFound`).
    async fn write_records(&self, writes: &[RecordWrite]) -> StoreResult<()>;

    async fn upsert_cell(&self, cell: &CellRecord) -> StoreResult<()>;
    /// Every cell row, expired or not: freshness is the caller's rule.
    async fn cells(&self) -> StoreResult<Vec<CellRecord>>;
    async fn delete_cell(&self, cell_id: &str) -> StoreResult<()>;

    /// Every record's version. This default reads the records whole (etcd has no narrower
    /// read); the SQL stores read only the version columns.
    async fn record_versions(&self) -> StoreResult<RecordVersions> {
        let tasks = self.tasks(&TaskFilter::default()).await?;
        let desired = self
            .desired_lrp_scheduling_infos(&DesiredLrpFilter::default())
            .await?;
        let actual = self.actual_lrps(&ActualLrpFilter::default()).await?;
        Ok(RecordVersions {
            tasks: tasks
                .iter()
                .map(|t| (t.guid.clone(), t.version()))
                .collect(),
            desired_lrps: desired
                .iter()
                .map(|d| (d.process_guid.clone(), d.version()))
                .collect(),
            actual_lrps: actual.iter().map(|a| (a.key(), a.version())).collect(),
        })
    }

    /// How the live schema departs from upstream's final one, line by line (empty when it is
    /// upstream's exactly); `None` where upstream has no SQL schema (SQLite, etcd). What an
    /// operator checks before handing a database back to the Go BBS.
    async fn upstream_schema_differences(&self) -> StoreResult<Option<Vec<String>>> {
        Ok(None)
    }

    /// One row of locket's `locks` table, whoever owns it (an empty owner included).
    async fn lock(&self, key: &str) -> StoreResult<Option<LockRecord>>;
    /// Every row of locket's `locks` table, or those of one `type`, sorted by key.
    async fn locks(&self, lock_type: Option<&str>) -> StoreResult<Vec<LockRecord>>;
    /// Reads the row (absent is `None`), applies the mutation and writes the result back
    /// atomically: `Some` inserts or updates, `None` deletes. The mutation decides collisions,
    /// so locket's rules stay in one pure function for every backend.
    async fn modify_lock(
        &self,
        key: &str,
        mutation: &Mutation<'_, Option<LockRecord>>,
    ) -> StoreResult<Option<LockRecord>>;
}
