//! One actual LRP shard's instances and their indexes, shared between the shard (the only
//! writer) and readers on any thread. Lists and a rep's bulk fetch read it under a short read
//! lock instead of queueing in the shard's mailbox behind re-asserts: under the lock a read
//! only collects the matching instances' pointers (each instance is an `Arc` the shard
//! replaces, never changes in place), so it holds the shard's writes up for no longer than
//! that; the rows are copied after the lock is released.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use parking_lot::RwLock;

use bbs_models as m;
use bbs_store::ActualLrpFilter;

use crate::rules::actual_lrps::Instance;

/// (process guid, index): one instance and its lock.
pub type InstanceId = (String, i32);

#[derive(Default)]
pub struct Table {
    instances: HashMap<InstanceId, Arc<Instance>>,
    /// The instances with a row on each cell, for the reps' bulk fetches.
    by_cell: HashMap<String, HashSet<InstanceId>>,
    /// The indices of each process guid, so per-LRP lookups do not scan the shard.
    by_guid: HashMap<String, BTreeSet<i32>>,
}

fn cells_of(instance: &Instance) -> impl Iterator<Item = &str> + '_ {
    instance.rows().map(cell_of).filter(|cell| !cell.is_empty())
}

/// The cell a row is on (empty when unclaimed), borrowed: lists test it for every row.
fn cell_of(row: &m::ActualLrp) -> &str {
    row.actual_lrp_instance_key
        .as_ref()
        .map_or("", |k| k.cell_id.as_str())
}

/// What a list is ordered by, (process guid, index, presence), borrowed rather than copied:
/// a 250K-row sort compares millions of times.
pub fn order_key(row: &m::ActualLrp) -> (&str, i32, i32) {
    let key = row.actual_lrp_key.as_ref();
    (
        key.map_or("", |k| k.process_guid.as_str()),
        key.map_or(0, |k| k.index),
        row.presence,
    )
}

impl Table {
    pub fn len(&self) -> usize {
        self.instances.len()
    }

    pub fn get(&self, id: &InstanceId) -> Option<&Arc<Instance>> {
        self.instances.get(id)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&InstanceId, &Arc<Instance>)> {
        self.instances.iter()
    }

    pub fn instances(&self) -> &HashMap<InstanceId, Arc<Instance>> {
        &self.instances
    }

    /// The indices held for `process_guid`, ascending.
    pub fn indices_of(&self, process_guid: &str) -> impl Iterator<Item = i32> + '_ {
        self.by_guid
            .get(process_guid)
            .into_iter()
            .flatten()
            .copied()
    }

    /// Takes an instance and its index entries out.
    pub fn take(&mut self, id: &InstanceId) -> Option<Arc<Instance>> {
        let old = self.instances.remove(id)?;
        self.reindex(id, &old, false);
        Some(old)
    }

    /// Puts an instance in, answering the one it replaces; an empty one is only removed.
    pub fn put(&mut self, id: InstanceId, instance: Arc<Instance>) -> Option<Arc<Instance>> {
        let old = self.take(&id);
        if !instance.is_empty() {
            self.reindex(&id, &instance, true);
            self.instances.insert(id, instance);
        }
        old
    }

    fn reindex(&mut self, id: &InstanceId, instance: &Instance, add: bool) {
        if add {
            self.by_guid.entry(id.0.clone()).or_default().insert(id.1);
        } else if let Some(indices) = self.by_guid.get_mut(&id.0) {
            indices.remove(&id.1);
            if indices.is_empty() {
                self.by_guid.remove(&id.0);
            }
        }
        for cell in cells_of(instance) {
            if add {
                let ids = match self.by_cell.get_mut(cell) {
                    Some(ids) => ids,
                    None => self.by_cell.entry(cell.to_owned()).or_default(),
                };
                ids.insert(id.clone());
            } else if let Some(ids) = self.by_cell.get_mut(cell) {
                ids.remove(id);
                if ids.is_empty() {
                    self.by_cell.remove(cell);
                }
            }
        }
    }

    /// The instances that may hold rows matching `filter`, through the narrowest index.
    fn candidates(&self, filter: &ActualLrpFilter) -> Vec<Arc<Instance>> {
        let get = |id: &InstanceId| self.instances.get(id).cloned();
        match (&filter.cell_id, &filter.process_guids) {
            (Some(cell), _) => self
                .by_cell
                .get(cell)
                .into_iter()
                .flatten()
                .filter_map(get)
                .collect(),
            (None, Some(guids)) => guids
                .iter()
                .flat_map(|guid| {
                    let indices: Vec<i32> = match filter.index {
                        Some(index) => vec![index],
                        None => self.indices_of(guid).collect(),
                    };
                    indices.into_iter().map(move |index| (guid.clone(), index))
                })
                .filter_map(|id| get(&id))
                .collect(),
            _ => self.instances.values().cloned().collect(),
        }
    }
}

/// A shard's table as the shard and its readers share it.
pub type SharedTable = Arc<RwLock<Table>>;

/// The rows of `table` matching `filter`, as the table stood when the read lock was taken.
pub fn list(table: &RwLock<Table>, filter: &ActualLrpFilter) -> Vec<m::ActualLrp> {
    let candidates = table.read().candidates(filter);
    candidates
        .iter()
        .flat_map(|instance| instance.rows())
        .filter(|row| row_matches(row, filter))
        .cloned()
        .collect()
}

fn row_matches(row: &m::ActualLrp, filter: &ActualLrpFilter) -> bool {
    let key = row.actual_lrp_key.as_ref();
    let (domain, guid, index) = (
        key.map_or("", |k| k.domain.as_str()),
        key.map_or("", |k| k.process_guid.as_str()),
        key.map_or(0, |k| k.index),
    );
    filter.domain.as_ref().is_none_or(|d| d == domain)
        && filter.cell_id.as_ref().is_none_or(|c| c == cell_of(row))
        && filter.index.is_none_or(|i| i == index)
        && filter
            .process_guids
            .as_ref()
            .is_none_or(|g| g.iter().any(|g| g == guid))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::actual_lrps as rules;

    fn row(guid: &str, index: i32, cell: &str, domain: &str) -> m::ActualLrp {
        m::ActualLrp {
            actual_lrp_key: Some(m::ActualLrpKey {
                process_guid: guid.into(),
                index,
                domain: domain.into(),
            }),
            actual_lrp_instance_key: Some(m::ActualLrpInstanceKey {
                instance_guid: format!("{guid}-{index}"),
                cell_id: cell.into(),
            }),
            state: rules::RUNNING.into(),
            ..Default::default()
        }
    }

    fn instance(guid: &str, index: i32, cell: &str) -> Arc<Instance> {
        Arc::new(Instance {
            ordinary: Some(row(guid, index, cell, "d")),
            ..Default::default()
        })
    }

    fn guids(rows: &[m::ActualLrp]) -> Vec<(String, i32)> {
        let mut out: Vec<_> = rows
            .iter()
            .map(|r| (order_key(r).0.to_owned(), order_key(r).1))
            .collect();
        out.sort();
        out
    }

    #[test]
    fn lists_follow_puts_and_takes_through_every_index() {
        let table = RwLock::new(Table::default());
        table
            .write()
            .put(("a".into(), 0), instance("a", 0, "cell-1"));
        table
            .write()
            .put(("a".into(), 1), instance("a", 1, "cell-2"));
        table
            .write()
            .put(("b".into(), 0), instance("b", 0, "cell-1"));

        let on_cell_1 = ActualLrpFilter {
            cell_id: Some("cell-1".into()),
            ..Default::default()
        };
        assert_eq!(
            guids(&list(&table, &on_cell_1)),
            [("a".into(), 0), ("b".into(), 0)]
        );
        let of_a = ActualLrpFilter {
            process_guids: Some(vec!["a".into()]),
            ..Default::default()
        };
        assert_eq!(
            guids(&list(&table, &of_a)),
            [("a".into(), 0), ("a".into(), 1)]
        );
        let a_1 = ActualLrpFilter {
            index: Some(1),
            ..of_a.clone()
        };
        assert_eq!(guids(&list(&table, &a_1)), [("a".into(), 1)]);
        assert_eq!(list(&table, &ActualLrpFilter::default()).len(), 3);

        // Moving a to cell-2 leaves cell-1's index with b only.
        table
            .write()
            .put(("a".into(), 0), instance("a", 0, "cell-2"));
        assert_eq!(guids(&list(&table, &on_cell_1)), [("b".into(), 0)]);
        // An emptied instance is gone from every index.
        table
            .write()
            .put(("b".into(), 0), Arc::new(Instance::default()));
        assert!(list(&table, &on_cell_1).is_empty());
        assert!(table.write().take(&("b".into(), 0)).is_none());
        assert_eq!(table.read().indices_of("b").count(), 0);
        assert_eq!(table.read().len(), 2);
    }

    #[test]
    fn a_list_keeps_what_it_read_while_the_shard_replaces_instances() {
        let table = RwLock::new(Table::default());
        table
            .write()
            .put(("a".into(), 0), instance("a", 0, "cell-1"));
        let held = table.read().candidates(&ActualLrpFilter::default());
        table
            .write()
            .put(("a".into(), 0), instance("a", 0, "cell-9"));
        let cell = |i: &Instance| rules::instance_key_of(i.ordinary.as_ref().unwrap()).cell_id;
        assert_eq!(cell(&held[0]), "cell-1");
        assert_eq!(cell(table.read().get(&("a".into(), 0)).unwrap()), "cell-9");
    }
}
