//! The record kinds `bbs migrate` moves, each described once: how to read them all, how to
//! name one, which of its fields are sealed blobs, how the server would open it, and how to
//! write it. The copy and the verification are written once over this trait.

use std::future::Future;

use serde::Serialize;

use bbs_actors::codec::Codec;
use bbs_actors::lrp_records::{actual_from_record, desired_from_record};
use bbs_actors::BbsResult;
use bbs_store::{
    ActualLrpFilter, ActualLrpRecord, ActualLrpWrite, CellRecord, DesiredLrpFilter,
    DesiredLrpRecord, DomainRecord, Store, StoreResult, TaskFilter, TaskRecord,
};

use super::etcd_v2::Snapshot;

pub trait RecordKind {
    /// The plural noun the report and the progress bar use.
    const NAME: &'static str;
    /// Batches written at once. Kinds written by upsert take one writer: on MySQL, concurrent
    /// upserts of new keys deadlock on the index gap they both lock.
    const WRITERS: usize = 8;
    type Record: Clone + Serialize + Send + Sync + 'static;

    fn read(store: &dyn Store) -> impl Future<Output = StoreResult<Vec<Self::Record>>> + Send;
    /// The records of this kind read from upstream's etcd-era store.
    fn from_etcd_v2(snapshot: &Snapshot) -> Vec<Self::Record>;
    /// The record's key, as the report names it.
    fn key(record: &Self::Record) -> String;
    /// Opens the record exactly as the server does when it loads it, so a record that passes
    /// is one the server on the target will serve.
    fn check(codec: &Codec, record: &Self::Record) -> BbsResult<()>;
    /// The sealed blob fields, always in the same order.
    fn blobs(record: &mut Self::Record) -> Vec<&mut String>;
    /// Writes records that the target does not hold (one transaction per batch where the
    /// store allows it).
    fn insert(
        store: &dyn Store,
        records: &[Self::Record],
    ) -> impl Future<Output = StoreResult<()>> + Send;
    /// Overwrites a record the target holds with different content.
    fn replace(
        store: &dyn Store,
        record: &Self::Record,
    ) -> impl Future<Output = StoreResult<()>> + Send;
}

pub struct Domains;
pub struct DesiredLrps;
pub struct ActualLrps;
pub struct Tasks;
pub struct Cells;

impl RecordKind for Domains {
    const NAME: &'static str = "domains";
    const WRITERS: usize = 1;
    type Record = DomainRecord;

    async fn read(store: &dyn Store) -> StoreResult<Vec<DomainRecord>> {
        store.domains().await
    }
    fn from_etcd_v2(snapshot: &Snapshot) -> Vec<DomainRecord> {
        snapshot.domains.clone()
    }
    fn key(record: &DomainRecord) -> String {
        record.domain.clone()
    }
    fn check(_: &Codec, _: &DomainRecord) -> BbsResult<()> {
        Ok(())
    }
    fn blobs(_: &mut DomainRecord) -> Vec<&mut String> {
        Vec::new()
    }
    async fn insert(store: &dyn Store, records: &[DomainRecord]) -> StoreResult<()> {
        for record in records {
            store.upsert_domain(record).await?;
        }
        Ok(())
    }
    async fn replace(store: &dyn Store, record: &DomainRecord) -> StoreResult<()> {
        store.upsert_domain(record).await
    }
}

impl RecordKind for DesiredLrps {
    const NAME: &'static str = "desired LRPs";
    type Record = DesiredLrpRecord;

    async fn read(store: &dyn Store) -> StoreResult<Vec<DesiredLrpRecord>> {
        store.desired_lrps(&DesiredLrpFilter::default()).await
    }
    fn from_etcd_v2(snapshot: &Snapshot) -> Vec<DesiredLrpRecord> {
        snapshot.desired.clone()
    }
    fn key(record: &DesiredLrpRecord) -> String {
        record.scheduling.process_guid.clone()
    }
    fn check(codec: &Codec, record: &DesiredLrpRecord) -> BbsResult<()> {
        desired_from_record(codec, record).map(drop)
    }
    fn blobs(record: &mut DesiredLrpRecord) -> Vec<&mut String> {
        let s = &mut record.scheduling;
        let mut blobs = vec![&mut s.routes, &mut s.volume_placement];
        blobs.extend(s.metric_tags.as_mut());
        blobs.push(&mut record.run_info);
        blobs
    }
    async fn insert(store: &dyn Store, records: &[DesiredLrpRecord]) -> StoreResult<()> {
        for record in records {
            store.insert_desired_lrp(record).await?;
        }
        Ok(())
    }
    async fn replace(store: &dyn Store, record: &DesiredLrpRecord) -> StoreResult<()> {
        store.update_desired_lrp(record).await
    }
}

impl RecordKind for ActualLrps {
    const NAME: &'static str = "actual LRPs";
    type Record = ActualLrpRecord;

    async fn read(store: &dyn Store) -> StoreResult<Vec<ActualLrpRecord>> {
        store.actual_lrps(&ActualLrpFilter::default()).await
    }
    fn from_etcd_v2(snapshot: &Snapshot) -> Vec<ActualLrpRecord> {
        snapshot.actual.clone()
    }
    fn key(record: &ActualLrpRecord) -> String {
        format!(
            "{}/{}/{}",
            record.process_guid,
            record.index,
            record.presence.key_leaf()
        )
    }
    fn check(codec: &Codec, record: &ActualLrpRecord) -> BbsResult<()> {
        actual_from_record(codec, record).map(drop)
    }
    fn blobs(record: &mut ActualLrpRecord) -> Vec<&mut String> {
        let mut blobs = vec![&mut record.net_info];
        blobs.extend(record.internal_routes.as_mut());
        blobs.extend(record.metric_tags.as_mut());
        blobs
    }
    async fn insert(store: &dyn Store, records: &[ActualLrpRecord]) -> StoreResult<()> {
        let writes: Vec<ActualLrpWrite> = records
            .iter()
            .cloned()
            .map(ActualLrpWrite::Insert)
            .collect();
        store.write_actual_lrps(&writes).await
    }
    async fn replace(store: &dyn Store, record: &ActualLrpRecord) -> StoreResult<()> {
        store
            .write_actual_lrps(&[ActualLrpWrite::Update(record.clone())])
            .await
    }
}

impl RecordKind for Tasks {
    const NAME: &'static str = "tasks";
    type Record = TaskRecord;

    async fn read(store: &dyn Store) -> StoreResult<Vec<TaskRecord>> {
        store.tasks(&TaskFilter::default()).await
    }
    fn from_etcd_v2(snapshot: &Snapshot) -> Vec<TaskRecord> {
        snapshot.tasks.clone()
    }
    fn key(record: &TaskRecord) -> String {
        record.guid.clone()
    }
    fn check(codec: &Codec, record: &TaskRecord) -> BbsResult<()> {
        bbs_actors::tasks::from_record(codec, record.clone()).map(drop)
    }
    fn blobs(record: &mut TaskRecord) -> Vec<&mut String> {
        vec![&mut record.task_definition]
    }
    async fn insert(store: &dyn Store, records: &[TaskRecord]) -> StoreResult<()> {
        for record in records {
            store.insert_task(record).await?;
        }
        Ok(())
    }
    async fn replace(store: &dyn Store, record: &TaskRecord) -> StoreResult<()> {
        store.update_task(record).await
    }
}

impl RecordKind for Cells {
    const NAME: &'static str = "cell presences";
    const WRITERS: usize = 1;
    type Record = CellRecord;

    /// A database only the Go BBS used has no `cell_presences` table (its reps register in
    /// locket): no cells.
    async fn read(store: &dyn Store) -> StoreResult<Vec<CellRecord>> {
        match store.cells().await {
            Err(e) if e.is_missing_table() => Ok(Vec::new()),
            other => other,
        }
    }
    /// The etcd-era store kept no cell presences (the reps registered in consul then).
    fn from_etcd_v2(_: &Snapshot) -> Vec<CellRecord> {
        Vec::new()
    }
    fn key(record: &CellRecord) -> String {
        record.cell_id.clone()
    }
    /// A presence is plaintext JSON in locket's shape, checked as the cell list reads it.
    fn check(_: &Codec, record: &CellRecord) -> BbsResult<()> {
        bbs_actors::cells::presence_from_json(&record.presence).map(drop)
    }
    fn blobs(_: &mut CellRecord) -> Vec<&mut String> {
        Vec::new()
    }
    async fn insert(store: &dyn Store, records: &[CellRecord]) -> StoreResult<()> {
        for record in records {
            store.upsert_cell(record).await?;
        }
        Ok(())
    }
    async fn replace(store: &dyn Store, record: &CellRecord) -> StoreResult<()> {
        store.upsert_cell(record).await
    }
}
