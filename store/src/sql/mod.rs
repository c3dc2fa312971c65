//! The SQL backends: SQLite (embedded), MySQL/MariaDB and PostgreSQL through diesel-async.
//!
//! The three share one implementation, generated per connection type by `sql_store!`, because
//! diesel's query types are backend-specific and generic bounds over all three are unreadable.
//! The only differences are how rows are locked for a read-modify-write (SQLite takes the
//! database write lock with `BEGIN IMMEDIATE`; the servers use `SELECT ... FOR UPDATE`) and how
//! a connection is established.

mod connect;
mod errors;
pub(crate) mod migrate;
mod rows;
mod schema;
pub(crate) mod upgrade;
mod upstream_schema;

pub use connect::{connect_mysql, connect_postgres, connect_sqlite, mysql_url_from_dsn};
pub use upgrade::{SharedUpgradeCodec, UpgradeCodec};

use diesel_async::pooled_connection::bb8::Pool;
use diesel_async::pooled_connection::AsyncDieselConnectionManager;
use diesel_async::pooled_connection::PoolableConnection;

use crate::error::{StoreError, StoreResult};
use crate::store::Backend;

/// How many times a transaction is retried after a deadlock, as upstream does.
const DEADLOCK_ATTEMPTS: usize = 3;

/// A pooled SQL store over one diesel-async connection type.
pub struct SqlStore<C: PoolableConnection + 'static>
where
    AsyncDieselConnectionManager<C>: bb8::ManageConnection,
{
    pool: Pool<C>,
    backend: Backend,
}

impl<C: PoolableConnection + 'static> SqlStore<C>
where
    AsyncDieselConnectionManager<C>: bb8::ManageConnection,
    <AsyncDieselConnectionManager<C> as bb8::ManageConnection>::Error: std::error::Error + 'static,
{
    async fn conn(
        &self,
    ) -> StoreResult<bb8::PooledConnection<'_, AsyncDieselConnectionManager<C>>> {
        self.pool
            .get()
            .await
            .map_err(|e| StoreError::Unavailable(e.to_string()))
    }
}

/// Retries an operation that failed with a deadlock, like upstream's transaction helper.
async fn with_deadlock_retry<T, F, Fut>(mut op: F) -> StoreResult<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = StoreResult<T>>,
{
    let mut attempt = 1;
    loop {
        match op().await {
            Err(StoreError::Deadlock) if attempt < DEADLOCK_ATTEMPTS => {
                attempt += 1;
                tokio::time::sleep(std::time::Duration::from_millis(50 * attempt as u64)).await;
            }
            other => return other,
        }
    }
}

/// Adds the row lock a read-modify-write needs; SQLite has none (its transaction holds the
/// database write lock instead).
macro_rules! locked {
    (sqlite, $query:expr) => {
        $query
    };
    ($other:ident, $query:expr) => {
        $query.for_update()
    };
}

/// Inserts a batch's rows into one table: multi-row statements on the servers (one round trip
/// per chunk instead of per row); row by row on SQLite, where a statement costs no round trip
/// and diesel's multi-row form does not take these rows' nullable columns.
macro_rules! insert_rows {
    (sqlite, $conn:expr, $table:expr, $rows:expr) => {
        for row in &$rows {
            diesel::insert_into($table)
                .values(row)
                .execute($conn)
                .await?;
        }
    };
    ($other:ident, $conn:expr, $table:expr, $rows:expr) => {
        for rows in $rows.chunks(INSERT_ROWS) {
            diesel::insert_into($table)
                .values(rows)
                .execute($conn)
                .await?;
        }
    };
}

/// Expands to `impl Store for SqlStore<$conn>`.
/// `$flavor` picks the locking rule; `$txn` is the transaction method used for writes that
/// read first (`immediate_transaction` on SQLite so the write lock is taken up front).
macro_rules! sql_store {
    ($conn:ty, $flavor:ident, $txn:ident) => {
        #[async_trait::async_trait]
        impl $crate::store::Store for $crate::sql::SqlStore<$conn> {
            fn backend(&self) -> $crate::store::Backend {
                self.backend
            }

            fn pool_stats(&self) -> Option<$crate::store::PoolStats> {
                let state = self.pool.state();
                Some($crate::store::PoolStats {
                    open: state.connections,
                    idle: state.idle_connections,
                    waited: state.statistics.get_waited,
                    wait_time: state.statistics.get_wait_time,
                    timed_out: state.statistics.get_timed_out,
                })
            }

            async fn configuration(&self, id: &str) -> StoreResult<Option<String>> {
                use $crate::sql::schema::configurations::dsl as c;
                let mut conn = self.conn().await?;
                let value: Option<Option<String>> = c::configurations
                    .filter(c::id.eq(id))
                    .select(c::value)
                    .first(&mut *conn)
                    .await
                    .optional()?;
                Ok(value.flatten())
            }

            async fn set_configuration(&self, id: &str, value: &str) -> StoreResult<()> {
                use $crate::sql::schema::configurations::dsl as c;
                with_deadlock_retry(|| async {
                    let mut conn = self.conn().await?;
                    let (id, value) = (id.to_owned(), value.to_owned());
                    conn.$txn(async |conn| {
                        let updated = diesel::update(c::configurations.filter(c::id.eq(&id)))
                            .set(c::value.eq(Some(&value)))
                            .execute(conn)
                            .await?;
                        if updated == 0 {
                            diesel::insert_into(c::configurations)
                                .values((c::id.eq(&id), c::value.eq(Some(&value))))
                                .execute(conn)
                                .await?;
                        }
                        Ok::<_, StoreError>(())
                    })
                    .await
                })
                .await
            }

            async fn upsert_domain(&self, domain: &DomainRecord) -> StoreResult<()> {
                use $crate::sql::schema::domains::dsl as d;
                with_deadlock_retry(|| async {
                    let mut conn = self.conn().await?;
                    conn.$txn(async |conn| {
                        let updated =
                            diesel::update(d::domains.filter(d::domain.eq(&domain.domain)))
                                .set(d::expire_time.eq(Some(domain.expire_time)))
                                .execute(conn)
                                .await?;
                        if updated == 0 {
                            diesel::insert_into(d::domains)
                                .values((
                                    d::domain.eq(&domain.domain),
                                    d::expire_time.eq(Some(domain.expire_time)),
                                ))
                                .execute(conn)
                                .await?;
                        }
                        Ok::<_, StoreError>(())
                    })
                    .await
                })
                .await
            }

            async fn domains(&self) -> StoreResult<Vec<DomainRecord>> {
                use $crate::sql::schema::domains::dsl as d;
                let mut conn = self.conn().await?;
                let rows: Vec<(String, Option<i64>)> = d::domains
                    .select((d::domain, d::expire_time))
                    .order(d::domain)
                    .load(&mut *conn)
                    .await?;
                Ok(rows
                    .into_iter()
                    .map(|(domain, expire_time)| DomainRecord {
                        domain,
                        expire_time: expire_time.unwrap_or_default(),
                    })
                    .collect())
            }

            async fn delete_domain(&self, domain: &str) -> StoreResult<()> {
                use $crate::sql::schema::domains::dsl as d;
                let mut conn = self.conn().await?;
                let deleted = diesel::delete(d::domains.filter(d::domain.eq(domain)))
                    .execute(&mut *conn)
                    .await?;
                expect_one(deleted)
            }

            async fn insert_task(&self, task: &TaskRecord) -> StoreResult<()> {
                use $crate::sql::schema::tasks::dsl as t;
                with_deadlock_retry(|| async {
                    let mut conn = self.conn().await?;
                    diesel::insert_into(t::tasks)
                        .values(TaskRow::from(task))
                        .execute(&mut *conn)
                        .await?;
                    Ok(())
                })
                .await
            }

            async fn task(&self, guid: &str) -> StoreResult<Option<TaskRecord>> {
                use $crate::sql::schema::tasks::dsl as t;
                let mut conn = self.conn().await?;
                let row: Option<TaskRow> = t::tasks
                    .filter(t::guid.eq(guid))
                    .select(TaskRow::as_select())
                    .first(&mut *conn)
                    .await
                    .optional()?;
                Ok(row.map(TaskRecord::from))
            }

            async fn tasks(&self, filter: &TaskFilter) -> StoreResult<Vec<TaskRecord>> {
                use $crate::sql::schema::tasks::dsl as t;
                let mut conn = self.conn().await?;
                let mut query = t::tasks.select(TaskRow::as_select()).into_boxed();
                if let Some(domain) = &filter.domain {
                    query = query.filter(t::domain.eq(domain));
                }
                if let Some(cell_id) = &filter.cell_id {
                    query = query.filter(t::cell_id.eq(cell_id));
                }
                let rows: Vec<TaskRow> = query.order(t::guid).load(&mut *conn).await?;
                Ok(rows.into_iter().map(TaskRecord::from).collect())
            }

            async fn update_task(&self, task: &TaskRecord) -> StoreResult<()> {
                use $crate::sql::schema::tasks::dsl as t;
                with_deadlock_retry(|| async {
                    let mut conn = self.conn().await?;
                    let updated = diesel::update(t::tasks.filter(t::guid.eq(&task.guid)))
                        .set(TaskRow::from(task))
                        .execute(&mut *conn)
                        .await?;
                    expect_one(updated)
                })
                .await
            }

            async fn modify_task(
                &self,
                guid: &str,
                mutation: &Mutation<'_, TaskRecord>,
            ) -> StoreResult<TaskRecord> {
                use $crate::sql::schema::tasks::dsl as t;
                with_deadlock_retry(|| async {
                    let mut conn = self.conn().await?;
                    conn.$txn(async |conn| {
                        let row: TaskRow = locked!(
                            $flavor,
                            t::tasks
                                .filter(t::guid.eq(guid))
                                .select(TaskRow::as_select())
                        )
                        .first(conn)
                        .await?;
                        let next = mutation(TaskRecord::from(row))?;
                        if next.guid != guid {
                            return Err(StoreError::Rejected(
                                "a mutation may not change the task guid".into(),
                            ));
                        }
                        diesel::update(t::tasks.filter(t::guid.eq(guid)))
                            .set(TaskRow::from(&next))
                            .execute(conn)
                            .await?;
                        Ok::<_, StoreError>(next)
                    })
                    .await
                })
                .await
            }

            async fn delete_task(&self, guid: &str) -> StoreResult<()> {
                use $crate::sql::schema::tasks::dsl as t;
                with_deadlock_retry(|| async {
                    let mut conn = self.conn().await?;
                    let deleted = diesel::delete(t::tasks.filter(t::guid.eq(guid)))
                        .execute(&mut *conn)
                        .await?;
                    expect_one(deleted)
                })
                .await
            }

            async fn insert_desired_lrp(&self, lrp: &DesiredLrpRecord) -> StoreResult<()> {
                use $crate::sql::schema::desired_lrps::dsl as d;
                with_deadlock_retry(|| async {
                    let mut conn = self.conn().await?;
                    diesel::insert_into(d::desired_lrps)
                        .values(DesiredLrpRow::from(lrp))
                        .execute(&mut *conn)
                        .await?;
                    Ok(())
                })
                .await
            }

            async fn desired_lrp(
                &self,
                process_guid: &str,
            ) -> StoreResult<Option<DesiredLrpRecord>> {
                use $crate::sql::schema::desired_lrps::dsl as d;
                let mut conn = self.conn().await?;
                let row: Option<DesiredLrpRow> = d::desired_lrps
                    .filter(d::process_guid.eq(process_guid))
                    .select(DesiredLrpRow::as_select())
                    .first(&mut *conn)
                    .await
                    .optional()?;
                Ok(row.map(DesiredLrpRecord::from))
            }

            async fn desired_lrps(
                &self,
                filter: &DesiredLrpFilter,
            ) -> StoreResult<Vec<DesiredLrpRecord>> {
                use $crate::sql::schema::desired_lrps::dsl as d;
                if filter.process_guids.as_ref().is_some_and(|g| g.is_empty()) {
                    return Ok(Vec::new());
                }
                let mut conn = self.conn().await?;
                let mut query = d::desired_lrps
                    .select(DesiredLrpRow::as_select())
                    .into_boxed();
                if let Some(domain) = &filter.domain {
                    query = query.filter(d::domain.eq(domain));
                }
                if let Some(guids) = &filter.process_guids {
                    query = query.filter(d::process_guid.eq_any(guids));
                }
                let rows: Vec<DesiredLrpRow> =
                    query.order(d::process_guid).load(&mut *conn).await?;
                Ok(rows.into_iter().map(DesiredLrpRecord::from).collect())
            }

            async fn desired_lrp_scheduling_infos(
                &self,
                filter: &DesiredLrpFilter,
            ) -> StoreResult<Vec<DesiredLrpSchedulingRecord>> {
                use $crate::sql::schema::desired_lrps::dsl as d;
                if filter.process_guids.as_ref().is_some_and(|g| g.is_empty()) {
                    return Ok(Vec::new());
                }
                let mut conn = self.conn().await?;
                let mut query = d::desired_lrps
                    .select(SchedulingRow::as_select())
                    .into_boxed();
                if let Some(domain) = &filter.domain {
                    query = query.filter(d::domain.eq(domain));
                }
                if let Some(guids) = &filter.process_guids {
                    query = query.filter(d::process_guid.eq_any(guids));
                }
                let rows: Vec<SchedulingRow> =
                    query.order(d::process_guid).load(&mut *conn).await?;
                Ok(rows
                    .into_iter()
                    .map(DesiredLrpSchedulingRecord::from)
                    .collect())
            }

            async fn update_desired_lrp(&self, lrp: &DesiredLrpRecord) -> StoreResult<()> {
                use $crate::sql::schema::desired_lrps::dsl as d;
                with_deadlock_retry(|| async {
                    let mut conn = self.conn().await?;
                    let updated = diesel::update(
                        d::desired_lrps.filter(d::process_guid.eq(&lrp.scheduling.process_guid)),
                    )
                    .set(DesiredLrpRow::from(lrp))
                    .execute(&mut *conn)
                    .await?;
                    expect_one(updated)
                })
                .await
            }

            async fn modify_desired_lrp(
                &self,
                process_guid: &str,
                mutation: &Mutation<'_, DesiredLrpRecord>,
            ) -> StoreResult<DesiredLrpRecord> {
                use $crate::sql::schema::desired_lrps::dsl as d;
                with_deadlock_retry(|| async {
                    let mut conn = self.conn().await?;
                    conn.$txn(async |conn| {
                        let row: DesiredLrpRow = locked!(
                            $flavor,
                            d::desired_lrps
                                .filter(d::process_guid.eq(process_guid))
                                .select(DesiredLrpRow::as_select())
                        )
                        .first(conn)
                        .await?;
                        let next = mutation(DesiredLrpRecord::from(row))?;
                        if next.scheduling.process_guid != process_guid {
                            return Err(StoreError::Rejected(
                                "a mutation may not change the process guid".into(),
                            ));
                        }
                        diesel::update(d::desired_lrps.filter(d::process_guid.eq(process_guid)))
                            .set(DesiredLrpRow::from(&next))
                            .execute(conn)
                            .await?;
                        Ok::<_, StoreError>(next)
                    })
                    .await
                })
                .await
            }

            async fn delete_desired_lrp(&self, process_guid: &str) -> StoreResult<()> {
                use $crate::sql::schema::desired_lrps::dsl as d;
                with_deadlock_retry(|| async {
                    let mut conn = self.conn().await?;
                    let deleted =
                        diesel::delete(d::desired_lrps.filter(d::process_guid.eq(process_guid)))
                            .execute(&mut *conn)
                            .await?;
                    expect_one(deleted)
                })
                .await
            }

            async fn insert_actual_lrp(&self, lrp: &ActualLrpRecord) -> StoreResult<()> {
                use $crate::sql::schema::actual_lrps::dsl as a;
                with_deadlock_retry(|| async {
                    let mut conn = self.conn().await?;
                    diesel::insert_into(a::actual_lrps)
                        .values(ActualLrpRow::from(lrp))
                        .execute(&mut *conn)
                        .await?;
                    Ok(())
                })
                .await
            }

            async fn actual_lrp(&self, key: &ActualLrpKey) -> StoreResult<Option<ActualLrpRecord>> {
                use $crate::sql::schema::actual_lrps::dsl as a;
                let mut conn = self.conn().await?;
                let row: Option<ActualLrpRow> = a::actual_lrps
                    .filter(a::process_guid.eq(&key.process_guid))
                    .filter(a::instance_index.eq(key.index))
                    .filter(a::presence.eq(key.presence.as_i32()))
                    .select(ActualLrpRow::as_select())
                    .first(&mut *conn)
                    .await
                    .optional()?;
                row.map(ActualLrpRecord::try_from).transpose()
            }

            async fn actual_lrps(
                &self,
                filter: &ActualLrpFilter,
            ) -> StoreResult<Vec<ActualLrpRecord>> {
                use $crate::sql::schema::actual_lrps::dsl as a;
                if filter.process_guids.as_ref().is_some_and(|g| g.is_empty()) {
                    return Ok(Vec::new());
                }
                let mut conn = self.conn().await?;
                let mut query = a::actual_lrps
                    .select(ActualLrpRow::as_select())
                    .into_boxed();
                if let Some(domain) = &filter.domain {
                    query = query.filter(a::domain.eq(domain));
                }
                if let Some(cell_id) = &filter.cell_id {
                    query = query.filter(a::cell_id.eq(cell_id));
                }
                if let Some(guids) = &filter.process_guids {
                    query = query.filter(a::process_guid.eq_any(guids));
                }
                if let Some(index) = filter.index {
                    query = query.filter(a::instance_index.eq(index));
                }
                let rows: Vec<ActualLrpRow> = query
                    .order((a::process_guid, a::instance_index, a::presence))
                    .load(&mut *conn)
                    .await?;
                rows.into_iter().map(ActualLrpRecord::try_from).collect()
            }

            async fn update_actual_lrp(&self, lrp: &ActualLrpRecord) -> StoreResult<()> {
                use $crate::sql::schema::actual_lrps::dsl as a;
                with_deadlock_retry(|| async {
                    let mut conn = self.conn().await?;
                    let updated = diesel::update(
                        a::actual_lrps
                            .filter(a::process_guid.eq(&lrp.process_guid))
                            .filter(a::instance_index.eq(lrp.index))
                            .filter(a::presence.eq(lrp.presence.as_i32())),
                    )
                    .set(ActualLrpRow::from(lrp))
                    .execute(&mut *conn)
                    .await?;
                    expect_one(updated)
                })
                .await
            }

            async fn modify_actual_lrp(
                &self,
                key: &ActualLrpKey,
                mutation: &Mutation<'_, ActualLrpRecord>,
            ) -> StoreResult<ActualLrpRecord> {
                use $crate::sql::schema::actual_lrps::dsl as a;
                with_deadlock_retry(|| async {
                    let mut conn = self.conn().await?;
                    conn.$txn(async |conn| {
                        let row: ActualLrpRow = locked!(
                            $flavor,
                            a::actual_lrps
                                .filter(a::process_guid.eq(&key.process_guid))
                                .filter(a::instance_index.eq(key.index))
                                .filter(a::presence.eq(key.presence.as_i32()))
                                .select(ActualLrpRow::as_select())
                        )
                        .first(conn)
                        .await?;
                        let next = mutation(ActualLrpRecord::try_from(row)?)?;
                        if next.key() != *key {
                            return Err(StoreError::Rejected(
                                "a mutation may not change an actual LRP's key".into(),
                            ));
                        }
                        diesel::update(
                            a::actual_lrps
                                .filter(a::process_guid.eq(&key.process_guid))
                                .filter(a::instance_index.eq(key.index))
                                .filter(a::presence.eq(key.presence.as_i32())),
                        )
                        .set(ActualLrpRow::from(&next))
                        .execute(conn)
                        .await?;
                        Ok::<_, StoreError>(next)
                    })
                    .await
                })
                .await
            }

            async fn write_actual_lrps(&self, writes: &[ActualLrpWrite]) -> StoreResult<()> {
                if writes.is_empty() {
                    return Ok(());
                }
                with_deadlock_retry(|| async {
                    let mut conn = self.conn().await?;
                    conn.$txn(async |conn| {
                        for write in writes {
                            Self::write_actual(conn, write).await?;
                        }
                        Ok::<_, StoreError>(())
                    })
                    .await
                })
                .await
            }

            async fn write_records(&self, writes: &[RecordWrite]) -> StoreResult<()> {
                use $crate::sql::schema::actual_lrps::dsl as a;
                use $crate::sql::schema::desired_lrps::dsl as d;
                use $crate::sql::schema::tasks::dsl as t;
                if writes.is_empty() {
                    return Ok(());
                }
                // Inserts go in as multi-row statements, after the deletes and updates: the
                // writes of one batch touch distinct records, and one request's deletes
                // already come before its inserts.
                let inserts = InsertRows::of(writes);
                with_deadlock_retry(|| async {
                    let mut conn = self.conn().await?;
                    conn.$txn(async |conn| {
                        for write in writes.iter().filter(|w| !w.is_insert()) {
                            Self::write_record(conn, write).await?;
                        }
                        insert_rows!($flavor, conn, a::actual_lrps, inserts.actual);
                        insert_rows!($flavor, conn, d::desired_lrps, inserts.desired);
                        insert_rows!($flavor, conn, t::tasks, inserts.tasks);
                        Ok::<_, StoreError>(())
                    })
                    .await
                })
                .await
            }

            async fn upsert_cell(&self, cell: &CellRecord) -> StoreResult<()> {
                use $crate::sql::schema::cell_presences::dsl as c;
                with_deadlock_retry(|| async {
                    let mut conn = self.conn().await?;
                    conn.$txn(async |conn| {
                        let updated =
                            diesel::update(c::cell_presences.filter(c::cell_id.eq(&cell.cell_id)))
                                .set((
                                    c::presence.eq(&cell.presence),
                                    c::expire_time.eq(cell.expire_time),
                                ))
                                .execute(conn)
                                .await?;
                        if updated == 0 {
                            diesel::insert_into(c::cell_presences)
                                .values((
                                    c::cell_id.eq(&cell.cell_id),
                                    c::presence.eq(&cell.presence),
                                    c::expire_time.eq(cell.expire_time),
                                ))
                                .execute(conn)
                                .await?;
                        }
                        Ok::<_, StoreError>(())
                    })
                    .await
                })
                .await
            }

            async fn cells(&self) -> StoreResult<Vec<CellRecord>> {
                use $crate::sql::schema::cell_presences::dsl as c;
                let mut conn = self.conn().await?;
                let rows: Vec<(String, String, i64)> = c::cell_presences
                    .select((c::cell_id, c::presence, c::expire_time))
                    .order(c::cell_id)
                    .load(&mut *conn)
                    .await?;
                Ok(rows
                    .into_iter()
                    .map(|(cell_id, presence, expire_time)| CellRecord {
                        cell_id,
                        presence,
                        expire_time,
                    })
                    .collect())
            }

            async fn delete_cell(&self, cell_id: &str) -> StoreResult<()> {
                use $crate::sql::schema::cell_presences::dsl as c;
                let mut conn = self.conn().await?;
                let deleted = diesel::delete(c::cell_presences.filter(c::cell_id.eq(cell_id)))
                    .execute(&mut *conn)
                    .await?;
                expect_one(deleted)
            }

            async fn upstream_schema_differences(&self) -> StoreResult<Option<Vec<String>>> {
                use $crate::sql::upstream_schema as upstream;
                let Some((columns_sql, indexes_sql)) = upstream::catalogue_queries(self.backend)
                else {
                    return Ok(None);
                };
                let mut conn = self.conn().await?;
                let columns: Vec<upstream::CatalogueRow> =
                    diesel::sql_query(columns_sql).load(&mut *conn).await?;
                let indexes: Vec<upstream::CatalogueRow> =
                    diesel::sql_query(indexes_sql).load(&mut *conn).await?;
                Ok(Some(upstream::differences(
                    self.backend,
                    &upstream::live_columns(self.backend, columns),
                    &upstream::live_indexes(indexes),
                )))
            }

            async fn record_versions(&self) -> StoreResult<RecordVersions> {
                use $crate::sql::schema::actual_lrps::dsl as a;
                use $crate::sql::schema::desired_lrps::dsl as d;
                use $crate::sql::schema::tasks::dsl as t;
                // Three reads on three connections at once: at 250,000 rows each, the
                // database and this process share the work.
                let tasks = async {
                    let mut conn = self.conn().await?;
                    let rows: Vec<(String, Option<i64>, Option<i32>, i32)> = t::tasks
                        .select((t::guid, t::updated_at, t::state, t::rejection_count))
                        .load(&mut *conn)
                        .await?;
                    Ok::<_, StoreError>(rows)
                };
                let desired = async {
                    let mut conn = self.conn().await?;
                    let rows: Vec<(String, String, Option<i32>, i32)> = d::desired_lrps
                        .select((
                            d::process_guid,
                            d::modification_tag_epoch,
                            d::modification_tag_index,
                            d::instances,
                        ))
                        .load(&mut *conn)
                        .await?;
                    Ok::<_, StoreError>(rows)
                };
                let actual = async {
                    let mut conn = self.conn().await?;
                    let rows: Vec<(String, i32, i32, String, Option<i32>, String, Option<i64>)> =
                        a::actual_lrps
                            .select((
                                a::process_guid,
                                a::instance_index,
                                a::presence,
                                a::modification_tag_epoch,
                                a::modification_tag_index,
                                a::state,
                                a::since,
                            ))
                            .load(&mut *conn)
                            .await?;
                    Ok::<_, StoreError>(rows)
                };
                let (tasks, desired, actual) = futures::join!(tasks, desired, actual);
                let (tasks, desired, actual) = (tasks?, desired?, actual?);
                let mut versions = RecordVersions::default();
                versions.tasks = tasks
                    .into_iter()
                    .map(|(guid, updated_at, state, rejection_count)| {
                        let version = TaskVersion {
                            updated_at: updated_at.unwrap_or_default(),
                            state: state.unwrap_or_default(),
                            rejection_count,
                        };
                        (guid, version)
                    })
                    .collect();
                versions.desired_lrps = desired
                    .into_iter()
                    .map(|(guid, epoch, index, instances)| {
                        let version = DesiredLrpVersion {
                            modification_tag_epoch: epoch,
                            modification_tag_index: index.unwrap_or_default(),
                            instances,
                        };
                        (guid, version)
                    })
                    .collect();
                for (guid, index, presence, epoch, tag_index, state, since) in actual {
                    // A presence this version does not know is left to the full load's
                    // judgement (which skips it too).
                    let Some(presence) = Presence::from_i32(presence) else {
                        continue;
                    };
                    let key = ActualLrpKey {
                        process_guid: guid,
                        index,
                        presence,
                    };
                    let version = ActualLrpVersion {
                        modification_tag_epoch: epoch,
                        modification_tag_index: tag_index.unwrap_or_default(),
                        state,
                        since: since.unwrap_or_default(),
                    };
                    versions.actual_lrps.push((key, version));
                }
                Ok(versions)
            }

            async fn lock(&self, key: &str) -> StoreResult<Option<LockRecord>> {
                use $crate::sql::schema::locks::dsl as l;
                let mut conn = self.conn().await?;
                let row: Option<LockRow> = l::locks
                    .filter(l::path.eq(key))
                    .select(LockRow::as_select())
                    .first(&mut *conn)
                    .await
                    .optional()?;
                Ok(row.map(LockRecord::from))
            }

            async fn locks(&self, lock_type: Option<&str>) -> StoreResult<Vec<LockRecord>> {
                use $crate::sql::schema::locks::dsl as l;
                let mut conn = self.conn().await?;
                let mut query = l::locks.select(LockRow::as_select()).into_boxed();
                if let Some(lock_type) = lock_type {
                    query = query.filter(l::lock_type.eq(lock_type));
                }
                let rows: Vec<LockRow> = query.order(l::path).load(&mut *conn).await?;
                Ok(rows.into_iter().map(LockRecord::from).collect())
            }

            async fn modify_lock(
                &self,
                key: &str,
                mutation: &Mutation<'_, Option<LockRecord>>,
            ) -> StoreResult<Option<LockRecord>> {
                use $crate::sql::schema::locks::dsl as l;
                // Two first lockers both find no row; the one whose insert loses reads again.
                let mut attempt = 0;
                loop {
                    attempt += 1;
                    let result = with_deadlock_retry(|| async {
                        let mut conn = self.conn().await?;
                        conn.$txn(async |conn| {
                            let row: Option<LockRow> = locked!(
                                $flavor,
                                l::locks
                                    .filter(l::path.eq(key))
                                    .select(LockRow::as_select())
                            )
                            .first(conn)
                            .await
                            .optional()?;
                            let current = row.map(LockRecord::from);
                            let next = mutation(current.clone())?;
                            match (&current, &next) {
                                (_, Some(next)) if next.key != key => {
                                    return Err(StoreError::Rejected(
                                        "a mutation may not change the lock key".into(),
                                    ))
                                }
                                (None, None) => {}
                                (Some(before), Some(after)) if before == after => {}
                                (None, Some(after)) => {
                                    diesel::insert_into(l::locks)
                                        .values(LockRow::from(after))
                                        .execute(conn)
                                        .await?;
                                }
                                (Some(_), Some(after)) => {
                                    diesel::update(l::locks.filter(l::path.eq(key)))
                                        .set(LockRow::from(after))
                                        .execute(conn)
                                        .await?;
                                }
                                (Some(_), None) => {
                                    diesel::delete(l::locks.filter(l::path.eq(key)))
                                        .execute(conn)
                                        .await?;
                                }
                            }
                            Ok::<_, StoreError>(next)
                        })
                        .await
                    })
                    .await;
                    match result {
                        Err(StoreError::Exists) if attempt < 3 => continue,
                        other => return other,
                    }
                }
            }

            async fn delete_actual_lrp(&self, key: &ActualLrpKey) -> StoreResult<()> {
                use $crate::sql::schema::actual_lrps::dsl as a;
                with_deadlock_retry(|| async {
                    let mut conn = self.conn().await?;
                    let deleted = diesel::delete(
                        a::actual_lrps
                            .filter(a::process_guid.eq(&key.process_guid))
                            .filter(a::instance_index.eq(key.index))
                            .filter(a::presence.eq(key.presence.as_i32())),
                    )
                    .execute(&mut *conn)
                    .await?;
                    expect_one(deleted)
                })
                .await
            }
        }

        impl $crate::sql::SqlStore<$conn> {
            /// One actual LRP row write inside the caller's transaction.
            async fn write_actual(conn: &mut $conn, write: &ActualLrpWrite) -> StoreResult<()> {
                use $crate::sql::schema::actual_lrps::dsl as a;
                match write {
                    Write::Insert(lrp) => {
                        diesel::insert_into(a::actual_lrps)
                            .values(ActualLrpRow::from(lrp))
                            .execute(conn)
                            .await?;
                        Ok(())
                    }
                    Write::Update(lrp) => {
                        let updated = diesel::update(
                            a::actual_lrps
                                .filter(a::process_guid.eq(&lrp.process_guid))
                                .filter(a::instance_index.eq(lrp.index))
                                .filter(a::presence.eq(lrp.presence.as_i32())),
                        )
                        .set(ActualLrpRow::from(lrp))
                        .execute(conn)
                        .await?;
                        expect_one(updated)
                    }
                    Write::Delete(key) => {
                        let deleted = diesel::delete(
                            a::actual_lrps
                                .filter(a::process_guid.eq(&key.process_guid))
                                .filter(a::instance_index.eq(key.index))
                                .filter(a::presence.eq(key.presence.as_i32())),
                        )
                        .execute(conn)
                        .await?;
                        expect_one(deleted)
                    }
                }
            }

            /// One update or delete of a group commit inside the caller's transaction.
            async fn write_record(conn: &mut $conn, write: &RecordWrite) -> StoreResult<()> {
                use $crate::sql::schema::desired_lrps::dsl as d;
                use $crate::sql::schema::tasks::dsl as t;
                let affected = match write {
                    RecordWrite::Actual(write) => return Self::write_actual(conn, write).await,
                    RecordWrite::Desired(Write::Update(lrp)) => {
                        diesel::update(
                            d::desired_lrps
                                .filter(d::process_guid.eq(&lrp.scheduling.process_guid)),
                        )
                        .set(DesiredLrpRow::from(lrp))
                        .execute(conn)
                        .await?
                    }
                    RecordWrite::Desired(Write::Delete(guid)) => {
                        diesel::delete(d::desired_lrps.filter(d::process_guid.eq(guid)))
                            .execute(conn)
                            .await?
                    }
                    // Inserts go in by table, as multi-row statements (`InsertRows`).
                    RecordWrite::Desired(Write::Insert(_))
                    | RecordWrite::Task(Write::Insert(_)) => {
                        return Err(StoreError::Other(
                            "an insert reached the row-by-row write path".into(),
                        ))
                    }
                    RecordWrite::Task(Write::Update(task)) => {
                        diesel::update(t::tasks.filter(t::guid.eq(&task.guid)))
                            .set(TaskRow::from(task))
                            .execute(conn)
                            .await?
                    }
                    RecordWrite::Task(Write::Delete(guid)) => {
                        diesel::delete(t::tasks.filter(t::guid.eq(guid)))
                            .execute(conn)
                            .await?
                    }
                };
                expect_one(affected)
            }
        }
    };
}

/// Rows in one multi-row INSERT: well inside MySQL's and PostgreSQL's 65,535 bind parameters
/// (an actual LRP row binds 18) and a packet of a few megabytes.
const INSERT_ROWS: usize = 100;

/// A batch's inserts, as rows per table.
#[derive(Default)]
struct InsertRows {
    actual: Vec<rows::ActualLrpRow>,
    desired: Vec<rows::DesiredLrpRow>,
    tasks: Vec<rows::TaskRow>,
}

impl InsertRows {
    fn of(writes: &[crate::records::RecordWrite]) -> Self {
        use crate::records::{RecordWrite, Write};
        let mut rows = InsertRows::default();
        for write in writes {
            match write {
                RecordWrite::Actual(Write::Insert(lrp)) => rows.actual.push(lrp.into()),
                RecordWrite::Desired(Write::Insert(lrp)) => rows.desired.push(lrp.into()),
                RecordWrite::Task(Write::Insert(task)) => rows.tasks.push(task.into()),
                _ => {}
            }
        }
        rows
    }
}

/// A keyed write touched no row: the record was not there.
fn expect_one(affected: usize) -> StoreResult<()> {
    if affected == 0 {
        Err(StoreError::NotFound)
    } else {
        Ok(())
    }
}

mod impls {
    use diesel::prelude::*;
    use diesel_async::{AsyncConnection, AsyncMysqlConnection, AsyncPgConnection, RunQueryDsl};

    use super::rows::*;
    use super::{expect_one, with_deadlock_retry, InsertRows, SqliteConn, INSERT_ROWS};
    use crate::error::{StoreError, StoreResult};
    use crate::records::*;
    use crate::store::Mutation;

    sql_store!(SqliteConn, sqlite, immediate_transaction);
    sql_store!(AsyncPgConnection, postgres, transaction);
    sql_store!(AsyncMysqlConnection, mysql, transaction);
}

/// The SQLite connection type: diesel's synchronous SQLite driver run on tokio's blocking pool.
pub type SqliteConn =
    diesel_async::sync_connection_wrapper::SyncConnectionWrapper<diesel::SqliteConnection>;
