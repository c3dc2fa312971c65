//! Convergence decisions (bbs-reference §4) as pure functions of the records, the present
//! cells and the time. The ConvergerActor gathers the inputs and the owning actors apply each
//! decision through their write-through path, re-checking it against the record then.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::Arc;

use bbs_models as m;
use bbs_models::task::State;

use crate::clock::{Nanos, NANOS_PER_SECOND};
use crate::rules::actual_lrps::{
    instance_key_of, should_restart, Instance, CLAIMED, CRASHED, RUNNING, UNCLAIMED,
};
use crate::rules::tasks::state;

/// An UNCLAIMED instance older than this is auctioned again.
pub const STALE_UNCLAIMED_NANOS: Nanos = 30 * NANOS_PER_SECOND;

pub const NOT_STARTED_IN_TIME: &str = "not started within time limit";
pub const CELL_DISAPPEARED: &str = "cell disappeared before completion";

/// Task convergence timing, from the configuration.
#[derive(Clone, Copy, Debug)]
pub struct TaskTiming {
    pub kick: Nanos,
    pub expire_pending: Nanos,
    pub expire_completed: Nanos,
}

/// What convergence does to one task.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TaskAction {
    /// Pending too long: completed as failed.
    ExpirePending,
    /// Still pending: ask the auctioneer again.
    Kick,
    /// Running on a cell that is gone: completed as failed.
    FailCellGone,
    /// Resolving too long (its callback died): back to Completed.
    DemoteResolving,
    /// Completed long ago: deleted.
    Delete,
}

/// The decision for one task. `cells` empty means no cell is present.
pub fn task_action(
    task: &m::Task,
    cells: &HashSet<String>,
    now: Nanos,
    t: TaskTiming,
) -> Option<TaskAction> {
    match state(task) {
        State::Pending if task.created_at < now.saturating_sub(t.expire_pending) => {
            Some(TaskAction::ExpirePending)
        }
        State::Pending => Some(TaskAction::Kick),
        State::Running if !cells.contains(&task.cell_id) => Some(TaskAction::FailCellGone),
        State::Resolving if task.updated_at < now.saturating_sub(t.kick) => {
            Some(TaskAction::DemoteResolving)
        }
        State::Completed if task.first_completed_at < now.saturating_sub(t.expire_completed) => {
            Some(TaskAction::Delete)
        }
        _ => None,
    }
}

/// Applies a task action to the task as it is now; `None` if it no longer applies.
pub fn apply_task_action(
    task: &m::Task,
    action: &TaskAction,
    cells: &HashSet<String>,
    now: Nanos,
    t: TaskTiming,
) -> Option<Option<m::Task>> {
    if task_action(task, cells, now, t).as_ref() != Some(action) {
        return None;
    }
    let failed = |reason: &str| {
        let mut next = task.clone();
        next.state = State::Completed as i32;
        next.failed = true;
        next.failure_reason = reason.to_owned();
        next.result = String::new();
        next.first_completed_at = now;
        next.updated_at = now;
        Some(Some(next))
    };
    match action {
        TaskAction::ExpirePending => failed(NOT_STARTED_IN_TIME),
        TaskAction::FailCellGone => failed(CELL_DISAPPEARED),
        TaskAction::DemoteResolving => {
            let mut next = task.clone();
            next.state = State::Completed as i32;
            Some(Some(next))
        }
        TaskAction::Delete => Some(None),
        TaskAction::Kick => None,
    }
}

/// What the LRP convergence reads of every desired LRP, by process guid. The desired actor
/// keeps it up to date as LRPs change, so a pass takes it as it stands instead of building
/// it from every LRP; entries are shared, so a copy (when the actor writes while a pass holds
/// the view) costs a pointer per LRP.
pub type DesiredView = BTreeMap<String, Arc<Desired>>;

/// What the LRP convergence knows of one desired LRP.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Desired {
    pub domain: String,
    pub instances: i32,
    /// Hostnames of the `internal-router` routes.
    pub internal_routes: BTreeSet<String>,
    /// Shared with the owner's copy: a pass reads every LRP's tags.
    pub metric_tags: Arc<BTreeMap<String, m::MetricTagValue>>,
}

/// A running instance's rep is asked to change what drifted (§4.3 #14-15); the BBS records
/// change when the rep re-asserts the instance with the new values.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RepUpdate {
    pub cell_id: String,
    pub instance_guid: String,
    /// The desired hostnames, when the internal routes drifted.
    pub internal_routes: Option<Vec<String>>,
    /// The desired tags resolved for the instance, when the metric tags drifted.
    pub metric_tags: Option<BTreeMap<String, String>>,
}

/// What convergence does to one instance (process guid, index).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LrpAction {
    /// No ordinary row for a desired index: create it UNCLAIMED and auction it.
    CreateMissing,
    /// UNCLAIMED for too long, or CRASHED and due a restart: unclaim and auction.
    Restart,
    /// Running or claimed on a cell that is gone: keep it as a suspect, replace it.
    SuspectAndReplace,
    /// Beyond the desired count, or with no desired LRP, in a fresh domain: retire it.
    Retire,
    /// An evacuating copy on a cell that is gone: delete it.
    PruneEvacuating,
    /// A suspect no longer needed (its replacement runs, or nothing is desired): delete it.
    DeleteSuspect,
    /// A suspect whose cell came back: it is the instance again.
    PromoteSuspect,
    /// Running with other internal routes or metric tags than desired: tell its rep. One
    /// action per drift, as upstream sends one rep call for each.
    UpdateRep(RepUpdate),
}

/// The drift rules (§4.3 #14-15) for a running instance of a desired LRP.
fn drift(wanted: &Desired, index: i32, running: &m::ActualLrp) -> Vec<LrpAction> {
    let mut actions = Vec::new();
    if running.actual_lrp_internal_routes.is_empty()
        && wanted.internal_routes.is_empty()
        && running.metric_tags.is_empty()
    {
        return actions;
    }
    let instance_key = instance_key_of(running);
    let routes_drifted = if running.actual_lrp_internal_routes.is_empty() {
        !wanted.internal_routes.is_empty()
    } else {
        let actual: BTreeSet<&str> = running
            .actual_lrp_internal_routes
            .iter()
            .map(|r| r.hostname.as_str())
            .collect();
        actual != wanted.internal_routes.iter().map(String::as_str).collect()
    };
    if routes_drifted {
        actions.push(LrpAction::UpdateRep(RepUpdate {
            cell_id: instance_key.cell_id.clone(),
            instance_guid: instance_key.instance_guid.clone(),
            internal_routes: Some(wanted.internal_routes.iter().cloned().collect()),
            metric_tags: None,
        }));
    }
    // A row without tags is what a rep that sends none leaves (null upstream): not a drift.
    if !running.metric_tags.is_empty() {
        let resolved = crate::rules::desired_lrps::resolve_metric_tags(
            &wanted.metric_tags,
            index,
            &instance_key.instance_guid,
        );
        if resolved != running.metric_tags {
            actions.push(LrpAction::UpdateRep(RepUpdate {
                cell_id: instance_key.cell_id,
                instance_guid: instance_key.instance_guid,
                internal_routes: None,
                metric_tags: Some(resolved),
            }));
        }
    }
    actions
}

fn cell_of(lrp: &m::ActualLrp) -> &str {
    lrp.actual_lrp_instance_key
        .as_ref()
        .map_or("", |k| k.cell_id.as_str())
}

fn on_missing_cell(lrp: &m::ActualLrp, cells: &HashSet<String>) -> bool {
    let cell = cell_of(lrp);
    !cell.is_empty() && !cells.contains(cell)
}

/// The instances a convergence pass reads: the owning actor's own table, read in place (a
/// copy of 250K instances per pass would cost more than the pass), or a map in tests.
pub trait InstanceTable {
    fn each(&self) -> Box<dyn Iterator<Item = (&(String, i32), &Instance)> + '_>;
    fn instance(&self, key: &(String, i32)) -> Option<&Instance>;
}

impl InstanceTable for BTreeMap<(String, i32), Instance> {
    fn each(&self) -> Box<dyn Iterator<Item = (&(String, i32), &Instance)> + '_> {
        Box::new(self.iter())
    }
    fn instance(&self, key: &(String, i32)) -> Option<&Instance> {
        self.get(key)
    }
}

impl<S: std::hash::BuildHasher> InstanceTable
    for std::collections::HashMap<(String, i32), std::sync::Arc<Instance>, S>
{
    fn each(&self) -> Box<dyn Iterator<Item = (&(String, i32), &Instance)> + '_> {
        Box::new(self.iter().map(|(k, v)| (k, &**v)))
    }
    fn instance(&self, key: &(String, i32)) -> Option<&Instance> {
        self.get(key).map(|b| &**b)
    }
}

/// Every LRP action, per instance, for one convergence pass.
pub fn lrp_actions(
    desired: &DesiredView,
    instances: &impl InstanceTable,
    cells: &HashSet<String>,
    fresh_domains: &HashSet<String>,
    now: Nanos,
    owns: &dyn Fn(&str) -> bool,
) -> Vec<((String, i32), LrpAction)> {
    // A pass reads every instance: the checks below borrow rather than copy, and a key is
    // only copied for an instance that gets an action.
    let mut actions = Vec::new();
    for ((guid, index), instance) in instances.each() {
        let key = || (guid.clone(), *index);
        let wanted = desired.get(guid);
        let domain = instance
            .rows()
            .next()
            .and_then(|r| r.actual_lrp_key.as_ref())
            .map_or("", |k| k.domain.as_str());
        let fresh = fresh_domains.contains(domain);
        if let Some(evacuating) = &instance.evacuating {
            if cells.is_empty() || on_missing_cell(evacuating, cells) {
                actions.push((key(), LrpAction::PruneEvacuating));
            }
        }
        if let Some(suspect) = &instance.suspect {
            let replacement_running = instance
                .ordinary
                .as_ref()
                .is_some_and(|o| o.state == RUNNING)
                && suspect.state == RUNNING;
            if (wanted.is_none() && fresh) || replacement_running {
                actions.push((key(), LrpAction::DeleteSuspect));
            } else if !cells.is_empty() && !on_missing_cell(suspect, cells) {
                actions.push((key(), LrpAction::PromoteSuspect));
            }
        }
        let Some(ordinary) = &instance.ordinary else {
            continue;
        };
        let Some(wanted) = wanted else {
            if fresh {
                actions.push((key(), LrpAction::Retire));
            }
            continue;
        };
        if *index >= wanted.instances {
            if fresh {
                actions.push((key(), LrpAction::Retire));
            }
            continue;
        }
        let state = ordinary.state.as_str();
        if (state == RUNNING || state == CLAIMED)
            && (cells.is_empty() || on_missing_cell(ordinary, cells))
        {
            if instance.suspect.is_none() {
                actions.push((key(), LrpAction::SuspectAndReplace));
            }
        } else if (state == UNCLAIMED && ordinary.since < now.saturating_sub(STALE_UNCLAIMED_NANOS))
            || (state == CRASHED && should_restart(now, ordinary.since, ordinary.crash_count))
        {
            actions.push((key(), LrpAction::Restart));
        } else if state == RUNNING {
            actions.extend(
                drift(wanted, *index, ordinary)
                    .into_iter()
                    .map(|a| (key(), a)),
            );
        }
    }
    // Missing instances: only the caller's own (a shard creates its process guids' only).
    for (guid, wanted) in desired.iter().filter(|(guid, _)| owns(guid)) {
        for index in 0..wanted.instances {
            let present = instances
                .instance(&(guid.clone(), index))
                .is_some_and(|i| i.ordinary.is_some());
            if !present {
                actions.push(((guid.clone(), index), LrpAction::CreateMissing));
            }
        }
    }
    actions
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::actual_lrps::new_unclaimed;
    use bbs_models::actual_lrp::Presence;

    const NOW: Nanos = 10_000 * NANOS_PER_SECOND;
    const TIMING: TaskTiming = TaskTiming {
        kick: 30 * NANOS_PER_SECOND,
        expire_pending: 1800 * NANOS_PER_SECOND,
        expire_completed: 120 * NANOS_PER_SECOND,
    };

    fn task(state: State, cell: &str, created: Nanos, updated: Nanos, completed: Nanos) -> m::Task {
        m::Task {
            task_guid: "t".into(),
            state: state as i32,
            cell_id: cell.into(),
            created_at: created,
            updated_at: updated,
            first_completed_at: completed,
            ..Default::default()
        }
    }

    fn cells(ids: &[&str]) -> HashSet<String> {
        ids.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn task_rules_table() {
        let s = NANOS_PER_SECOND;
        let c = cells(&["cell-1"]);
        let cases = [
            (
                task(State::Pending, "", NOW - 1801 * s, NOW, 0),
                &c,
                Some(TaskAction::ExpirePending),
            ),
            (
                task(State::Pending, "", NOW - 10 * s, NOW, 0),
                &c,
                Some(TaskAction::Kick),
            ),
            (task(State::Running, "cell-1", NOW, NOW, 0), &c, None),
            (
                task(State::Running, "cell-2", NOW, NOW, 0),
                &c,
                Some(TaskAction::FailCellGone),
            ),
            (
                task(State::Resolving, "", NOW, NOW - 31 * s, NOW),
                &c,
                Some(TaskAction::DemoteResolving),
            ),
            (task(State::Resolving, "", NOW, NOW - 5 * s, NOW), &c, None),
            (
                task(State::Completed, "", NOW, NOW, NOW - 121 * s),
                &c,
                Some(TaskAction::Delete),
            ),
            (task(State::Completed, "", NOW, NOW, NOW - 60 * s), &c, None),
        ];
        for (t, cells, expected) in cases {
            assert_eq!(task_action(&t, cells, NOW, TIMING), expected, "{t:?}");
        }
        // With no cells at all, every running task has lost its cell.
        assert_eq!(
            task_action(
                &task(State::Running, "cell-1", NOW, NOW, 0),
                &cells(&[]),
                NOW,
                TIMING
            ),
            Some(TaskAction::FailCellGone)
        );
    }

    #[test]
    fn applying_a_task_action_rechecks_it() {
        let c = cells(&[]);
        let running = task(State::Running, "cell-1", NOW, NOW, 0);
        let failed = apply_task_action(&running, &TaskAction::FailCellGone, &c, NOW, TIMING)
            .unwrap()
            .unwrap();
        assert_eq!(
            (
                failed.state,
                failed.failure_reason.as_str(),
                failed.cell_id.as_str()
            ),
            (3, CELL_DISAPPEARED, "cell-1")
        );
        // It was started elsewhere meanwhile: the action no longer applies.
        let pending = task(State::Pending, "", NOW, NOW, 0);
        assert_eq!(
            apply_task_action(&pending, &TaskAction::FailCellGone, &c, NOW, TIMING),
            None
        );
        let done = task(State::Completed, "", NOW, NOW, 0);
        assert_eq!(
            apply_task_action(&done, &TaskAction::Delete, &c, NOW, TIMING),
            Some(None)
        );
    }

    fn row(
        guid: &str,
        index: i32,
        state: &str,
        cell: &str,
        since: Nanos,
        presence: Presence,
    ) -> m::ActualLrp {
        let mut lrp = new_unclaimed(
            m::ActualLrpKey {
                process_guid: guid.into(),
                index,
                domain: "d".into(),
            },
            since,
            "e".into(),
        );
        lrp.state = state.into();
        lrp.presence = presence as i32;
        lrp.actual_lrp_instance_key = Some(m::ActualLrpInstanceKey {
            instance_guid: if cell.is_empty() {
                String::new()
            } else {
                "ig".into()
            },
            cell_id: cell.into(),
        });
        lrp
    }

    fn lrp_case(
        rows: Vec<m::ActualLrp>,
        instances: i32,
        cell_set: &[&str],
        fresh: bool,
    ) -> Vec<LrpAction> {
        let mut map: BTreeMap<(String, i32), Instance> = BTreeMap::new();
        for r in rows {
            let k = r.actual_lrp_key.clone().unwrap();
            let slot = map.entry((k.process_guid, k.index)).or_default();
            let presence = Presence::try_from(r.presence).unwrap();
            *slot.slot_mut(presence) = Some(r);
        }
        let mut desired = BTreeMap::new();
        if instances >= 0 {
            desired.insert(
                "web".to_owned(),
                Arc::new(Desired {
                    domain: "d".into(),
                    instances,
                    ..Default::default()
                }),
            );
        }
        let domains = if fresh {
            cells_of(&["d"])
        } else {
            HashSet::new()
        };
        lrp_actions(&desired, &map, &cells(cell_set), &domains, NOW, &|_| true)
            .into_iter()
            .map(|(_, a)| a)
            .collect()
    }

    fn cells_of(ids: &[&str]) -> HashSet<String> {
        cells(ids)
    }

    #[test]
    fn lrp_rules_table() {
        let s = NANOS_PER_SECOND;
        let o = Presence::Ordinary;
        // Missing index.
        assert_eq!(
            lrp_case(vec![], 1, &["c1"], true),
            [LrpAction::CreateMissing]
        );
        // Healthy.
        assert!(lrp_case(vec![row("web", 0, RUNNING, "c1", NOW, o)], 1, &["c1"], true).is_empty());
        // Stale unclaimed is re-auctioned; a fresh one is not.
        assert_eq!(
            lrp_case(
                vec![row("web", 0, UNCLAIMED, "", NOW - 31 * s, o)],
                1,
                &["c1"],
                true
            ),
            [LrpAction::Restart]
        );
        assert!(lrp_case(
            vec![row("web", 0, UNCLAIMED, "", NOW - 5 * s, o)],
            1,
            &["c1"],
            true
        )
        .is_empty());
        // Crashed past its back-off restarts.
        let mut crashed = row("web", 0, CRASHED, "", NOW - 31 * s, o);
        crashed.crash_count = 3;
        assert_eq!(
            lrp_case(vec![crashed.clone()], 1, &["c1"], true),
            [LrpAction::Restart]
        );
        crashed.since = NOW - 10 * s;
        assert!(lrp_case(vec![crashed], 1, &["c1"], true).is_empty());
        // Cell gone: suspect and replace; with no cells at all, the same.
        assert_eq!(
            lrp_case(vec![row("web", 0, RUNNING, "c9", NOW, o)], 1, &["c1"], true),
            [LrpAction::SuspectAndReplace]
        );
        assert_eq!(
            lrp_case(vec![row("web", 0, CLAIMED, "c1", NOW, o)], 1, &[], true),
            [LrpAction::SuspectAndReplace]
        );
        // Extra index and orphan: retired only in a fresh domain.
        assert_eq!(
            lrp_case(vec![row("web", 1, RUNNING, "c1", NOW, o)], 1, &["c1"], true),
            [LrpAction::Retire, LrpAction::CreateMissing]
        );
        assert_eq!(
            lrp_case(
                vec![row("web", 1, RUNNING, "c1", NOW, o)],
                1,
                &["c1"],
                false
            ),
            [LrpAction::CreateMissing]
        );
        assert_eq!(
            lrp_case(
                vec![row("web", 0, RUNNING, "c1", NOW, o)],
                -1,
                &["c1"],
                true
            ),
            [LrpAction::Retire]
        );
        assert!(lrp_case(
            vec![row("web", 0, RUNNING, "c1", NOW, o)],
            -1,
            &["c1"],
            false
        )
        .is_empty());
        // Evacuating copy on a gone cell is pruned.
        assert_eq!(
            lrp_case(
                vec![
                    row("web", 0, RUNNING, "c1", NOW, o),
                    row("web", 0, RUNNING, "c9", NOW, Presence::Evacuating)
                ],
                1,
                &["c1"],
                true
            ),
            [LrpAction::PruneEvacuating]
        );
        // Suspect: deleted once its replacement runs, promoted when its cell is back.
        assert_eq!(
            lrp_case(
                vec![
                    row("web", 0, RUNNING, "c2", NOW, o),
                    row("web", 0, RUNNING, "c9", NOW, Presence::Suspect)
                ],
                1,
                &["c2"],
                true
            ),
            [LrpAction::DeleteSuspect]
        );
        assert_eq!(
            lrp_case(
                vec![
                    row("web", 0, UNCLAIMED, "", NOW, o),
                    row("web", 0, RUNNING, "c9", NOW, Presence::Suspect)
                ],
                1,
                &["c9"],
                true
            ),
            [LrpAction::PromoteSuspect]
        );
    }

    fn drift_case(desired: Desired, running: m::ActualLrp) -> Vec<LrpAction> {
        let mut map: BTreeMap<(String, i32), Instance> = BTreeMap::new();
        map.entry(("web".to_owned(), 0)).or_default().ordinary = Some(running);
        let desired = BTreeMap::from([("web".to_owned(), Arc::new(desired))]);
        lrp_actions(
            &desired,
            &map,
            &cells(&["c1"]),
            &HashSet::new(),
            NOW,
            &|_| true,
        )
        .into_iter()
        .map(|(_, a)| a)
        .collect()
    }

    #[test]
    fn drift_rules_table() {
        let o = Presence::Ordinary;
        let tags = Arc::new(BTreeMap::from([
            (
                "source".to_owned(),
                m::MetricTagValue {
                    r#static: "s".into(),
                    dynamic: 0,
                },
            ),
            (
                "index".to_owned(),
                m::MetricTagValue {
                    r#static: String::new(),
                    dynamic: 1,
                },
            ),
        ]));
        let wanted = Desired {
            domain: "d".into(),
            instances: 1,
            internal_routes: BTreeSet::from(["a.internal".to_owned()]),
            metric_tags: tags,
        };
        let resolved = BTreeMap::from([
            ("index".to_owned(), "0".to_owned()),
            ("source".to_owned(), "s".to_owned()),
        ]);
        let mut running = row("web", 0, RUNNING, "c1", NOW, o);
        running.actual_lrp_internal_routes = vec![m::ActualLrpInternalRoute {
            hostname: "a.internal".into(),
        }];
        running.metric_tags = resolved.clone();
        // In step: nothing to do.
        assert!(drift_case(wanted.clone(), running.clone()).is_empty());
        // Internal routes differ as hostname sets: the rep gets the desired routes only.
        let mut moved = running.clone();
        moved.actual_lrp_internal_routes = vec![m::ActualLrpInternalRoute {
            hostname: "b.internal".into(),
        }];
        assert_eq!(
            drift_case(wanted.clone(), moved),
            [LrpAction::UpdateRep(RepUpdate {
                cell_id: "c1".into(),
                instance_guid: "ig".into(),
                internal_routes: Some(vec!["a.internal".into()]),
                metric_tags: None,
            })]
        );
        // A resolved tag differs: the rep gets the resolved tags only.
        let mut retagged = running.clone();
        retagged.metric_tags.insert("index".into(), "7".into());
        assert_eq!(
            drift_case(wanted.clone(), retagged),
            [LrpAction::UpdateRep(RepUpdate {
                cell_id: "c1".into(),
                instance_guid: "ig".into(),
                internal_routes: None,
                metric_tags: Some(resolved),
            })]
        );
        // No tags on the row (a rep that sends none) is not a drift.
        let mut untagged = running.clone();
        untagged.metric_tags.clear();
        assert!(drift_case(wanted.clone(), untagged).is_empty());
        // Only running instances drift: a claimed one is left to its rep's start.
        let mut claimed = running;
        claimed.state = CLAIMED.into();
        claimed.actual_lrp_internal_routes.clear();
        assert!(drift_case(wanted, claimed).is_empty());
    }
}
