//! A standby server: one waiting for the lock holds every record in memory already, so it
//! takes over without loading 250,000 records first. When it takes over, it catches up on
//! what the active server changed since it loaded: it reads every record's version (a few
//! columns per row), compares them with what it holds, and reads again only the records that
//! differ. Nothing it applies is written back or sent as an event: the store has it, and the
//! events went to the other server's subscribers.

use std::collections::HashMap;
use std::hash::Hash;

use futures::stream::{self, StreamExt};

use bbs_store::{ActualLrpKey, RecordVersions};

use crate::actual_lrps::{ActualVersions, RefreshActual};
use crate::cells::ReplaceCells;
use crate::desired_lrps::{DesiredVersions, RefreshDesired};
use crate::domains::ReplaceDomains;
use crate::error::BbsResult;
use crate::tasks::{RefreshTasks, TaskVersions};
use crate::Bbs;

/// Records read at once while catching up.
const CONCURRENT_READS: usize = 32;

/// What a catch-up changed in memory.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CatchUp {
    pub tasks: usize,
    pub desired_lrps: usize,
    pub actual_lrps: usize,
    /// Reading every record's version from the store (the fixed part of the cost).
    pub versions_read: std::time::Duration,
}

/// The keys whose version differs (or that only the store has), and those only memory has.
fn diff<K: Eq + Hash + Clone, V: PartialEq>(
    stored: &[(K, V)],
    held: &HashMap<K, V>,
) -> (Vec<K>, Vec<K>) {
    let mut changed = Vec::new();
    let mut in_store = std::collections::HashSet::with_capacity(stored.len());
    for (key, version) in stored {
        in_store.insert(key);
        if held.get(key) != Some(version) {
            changed.push(key.clone());
        }
    }
    let removed = held
        .keys()
        .filter(|k| !in_store.contains(k))
        .cloned()
        .collect();
    (changed, removed)
}

impl Bbs {
    /// Brings memory up to the store after another server's writes.
    pub async fn catch_up(&self, log: &slog::Logger) -> BbsResult<CatchUp> {
        let storage = &self.storage;
        let reading = std::time::Instant::now();
        let versions: RecordVersions = storage
            .load(|s| async move { s.record_versions().await })
            .await?;
        let versions_read = reading.elapsed();
        let domains = storage.run(|s| async move { s.domains().await }).await?;
        self.domains.call(ReplaceDomains(domains)).await?;
        if self.registers_cells {
            let records = storage.run(|s| async move { s.cells().await }).await?;
            let log = log.clone();
            self.cells.call(ReplaceCells { records, log }).await?;
        }
        let mut report = CatchUp {
            versions_read,
            ..CatchUp::default()
        };

        let held: HashMap<_, _> = self.tasks.call(TaskVersions).await?.into_iter().collect();
        let (changed, removed) = diff(&versions.tasks, &held);
        let (records, gone) = read_each(changed, |guid| {
            let storage = storage.clone();
            async move {
                storage
                    .run(move |s| async move { s.task(&guid).await })
                    .await
            }
        })
        .await?;
        let removed = removed.into_iter().chain(gone).collect();
        report.tasks = self.tasks.call(RefreshTasks { records, removed }).await?;

        let held: HashMap<_, _> = self
            .lrps
            .desired
            .call(DesiredVersions)
            .await?
            .into_iter()
            .collect();
        let (changed, removed) = diff(&versions.desired_lrps, &held);
        let (records, gone) = read_each(changed, |guid| {
            let storage = storage.clone();
            async move {
                storage
                    .run(move |s| async move { s.desired_lrp(&guid).await })
                    .await
            }
        })
        .await?;
        let removed = removed.into_iter().chain(gone).collect();
        report.desired_lrps = self
            .lrps
            .desired
            .call(RefreshDesired { records, removed })
            .await?;

        let mut held = HashMap::new();
        for shard in self.lrps.actual.shards() {
            held.extend(shard.call(ActualVersions).await?);
        }
        let (changed, removed) = diff(&versions.actual_lrps, &held);
        let (records, gone) = read_each(changed, |key: ActualLrpKey| {
            let storage = storage.clone();
            async move {
                storage
                    .run(move |s| async move { s.actual_lrp(&key).await })
                    .await
            }
        })
        .await?;
        let mut per_shard: HashMap<usize, RefreshActual> = HashMap::new();
        let shards = self.lrps.actual.shards();
        let shard_index = |guid: &str| self.lrps.actual.shard_index(guid);
        for record in records {
            per_shard
                .entry(shard_index(&record.process_guid))
                .or_insert_with(empty_refresh)
                .records
                .push(record);
        }
        for key in removed.into_iter().chain(gone) {
            per_shard
                .entry(shard_index(&key.process_guid))
                .or_insert_with(empty_refresh)
                .removed
                .push(key);
        }
        for (index, refresh) in per_shard {
            report.actual_lrps += shards[index].call(refresh).await?;
        }
        Ok(report)
    }
}

fn empty_refresh() -> RefreshActual {
    RefreshActual {
        records: Vec::new(),
        removed: Vec::new(),
    }
}

/// Reads each key's record; keys whose record is gone by now come back apart.
async fn read_each<K, R, F, Fut>(keys: Vec<K>, read: F) -> BbsResult<(Vec<R>, Vec<K>)>
where
    K: Clone,
    F: Fn(K) -> Fut,
    Fut: std::future::Future<Output = BbsResult<Option<R>>>,
{
    let results: Vec<(K, BbsResult<Option<R>>)> = stream::iter(keys)
        .map(|key| {
            let read = read(key.clone());
            async move { (key, read.await) }
        })
        .buffer_unordered(CONCURRENT_READS)
        .collect()
        .await;
    let mut records = Vec::new();
    let mut gone = Vec::new();
    for (key, result) in results {
        match result? {
            Some(record) => records.push(record),
            None => gone.push(key),
        }
    }
    Ok((records, gone))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diff_finds_changed_new_and_removed_keys() {
        let stored = vec![("a", 1), ("b", 2), ("c", 3)];
        let held: HashMap<&str, i32> = [("a", 1), ("b", 1), ("d", 4)].into_iter().collect();
        let (changed, removed) = diff(&stored, &held);
        assert_eq!(changed, vec!["b", "c"]);
        assert_eq!(removed, vec!["d"]);
    }
}
