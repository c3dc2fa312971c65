//! The actual LRP lifecycle (bbs-reference §3.3-3.5) as pure functions over one instance's
//! rows (ordinary, evacuating, suspect). Each returns the instance's next rows, or `None` when
//! nothing changes (the rep's periodic re-assertion of a running instance is such a case).

use bbs_models as m;
use bbs_models::actual_lrp::{OptionalRoutable, Presence};

use crate::clock::{Nanos, NANOS_PER_SECOND};
use crate::error::BbsError;
use crate::rules::tasks::truncate;

pub const UNCLAIMED: &str = "UNCLAIMED";
pub const CLAIMED: &str = "CLAIMED";
pub const RUNNING: &str = "RUNNING";
pub const CRASHED: &str = "CRASHED";

/// Upstream truncates crash reasons and placement errors at this many bytes.
pub const MAX_REASON_BYTES: usize = 1024;

/// The rows of one (process guid, index).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Instance {
    pub ordinary: Option<m::ActualLrp>,
    pub evacuating: Option<m::ActualLrp>,
    pub suspect: Option<m::ActualLrp>,
}

impl Instance {
    pub fn is_empty(&self) -> bool {
        self.ordinary.is_none() && self.evacuating.is_none() && self.suspect.is_none()
    }

    pub fn rows(&self) -> impl Iterator<Item = &m::ActualLrp> {
        self.ordinary
            .iter()
            .chain(self.evacuating.iter())
            .chain(self.suspect.iter())
    }

    pub fn slot(&self, presence: Presence) -> &Option<m::ActualLrp> {
        match presence {
            Presence::Ordinary => &self.ordinary,
            Presence::Evacuating => &self.evacuating,
            Presence::Suspect => &self.suspect,
        }
    }

    pub fn slot_mut(&mut self, presence: Presence) -> &mut Option<m::ActualLrp> {
        match presence {
            Presence::Ordinary => &mut self.ordinary,
            Presence::Evacuating => &mut self.evacuating,
            Presence::Suspect => &mut self.suspect,
        }
    }

    /// The row whose instance key matches, searching ordinary, evacuating, suspect.
    pub fn matching(&self, instance_key: &m::ActualLrpInstanceKey) -> Option<&m::ActualLrp> {
        // Borrowed: every start and claim looks its row up here.
        self.rows().find(|row| {
            row.actual_lrp_instance_key
                .as_ref()
                .map_or(*instance_key == m::ActualLrpInstanceKey::default(), |k| {
                    k == instance_key
                })
        })
    }
}

pub fn key_of(lrp: &m::ActualLrp) -> m::ActualLrpKey {
    lrp.actual_lrp_key.clone().unwrap_or_default()
}

pub fn instance_key_of(lrp: &m::ActualLrp) -> m::ActualLrpInstanceKey {
    lrp.actual_lrp_instance_key.clone().unwrap_or_default()
}

pub fn presence_of(lrp: &m::ActualLrp) -> Presence {
    Presence::try_from(lrp.presence).unwrap_or(Presence::Ordinary)
}

pub fn routable_of(lrp: &m::ActualLrp) -> bool {
    matches!(
        lrp.optional_routable,
        Some(OptionalRoutable::Routable(true))
    )
}

pub(crate) fn is_empty_instance_key(key: &m::ActualLrpInstanceKey) -> bool {
    key.instance_guid.is_empty() && key.cell_id.is_empty()
}

pub(crate) fn bump(lrp: &mut m::ActualLrp) {
    let tag = lrp.modification_tag.get_or_insert_with(Default::default);
    tag.index = tag.index.wrapping_add(1);
}

/// Upstream's `AllowsTransitionTo`: the key must match in full, then the state table.
pub fn allows_transition(
    current: &m::ActualLrp,
    key: &m::ActualLrpKey,
    instance_key: &m::ActualLrpInstanceKey,
    to: &str,
) -> bool {
    if key_of(current) != *key {
        return false;
    }
    let same = instance_key_of(current) == *instance_key;
    match (current.state.as_str(), to) {
        (UNCLAIMED, UNCLAIMED | CLAIMED | RUNNING) => true,
        (UNCLAIMED, _) => false,
        (CLAIMED, UNCLAIMED) => is_empty_instance_key(instance_key),
        (CLAIMED, RUNNING) => true,
        (CLAIMED, CLAIMED | CRASHED) => same,
        (RUNNING, UNCLAIMED) => is_empty_instance_key(instance_key),
        (RUNNING, CLAIMED | RUNNING | CRASHED) => same,
        (CRASHED, UNCLAIMED) => is_empty_instance_key(instance_key),
        (CRASHED, CLAIMED | RUNNING) => same,
        _ => false,
    }
}

/// A new row: UNCLAIMED with a fresh modification epoch, empty net info, no routes or tags.
pub fn new_unclaimed(key: m::ActualLrpKey, now: Nanos, epoch: String) -> m::ActualLrp {
    m::ActualLrp {
        actual_lrp_key: Some(key),
        actual_lrp_instance_key: Some(Default::default()),
        actual_lrp_net_info: Some(Default::default()),
        state: UNCLAIMED.into(),
        since: now,
        modification_tag: Some(m::ModificationTag { epoch, index: 0 }),
        presence: Presence::Ordinary as i32,
        optional_routable: Some(OptionalRoutable::Routable(false)),
        ..Default::default()
    }
}

/// ClaimActualLRP. `Ok(None)` means nothing to write.
pub fn claim(
    instance: &Instance,
    instance_key: &m::ActualLrpInstanceKey,
    now: Nanos,
) -> Result<Option<Instance>, BbsError> {
    if instance
        .matching(instance_key)
        .is_some_and(|row| presence_of(row) == Presence::Suspect)
    {
        return Ok(None);
    }
    let ordinary = instance.ordinary.as_ref().ok_or(BbsError::NotFound)?;
    if !allows_transition(ordinary, &key_of(ordinary), instance_key, CLAIMED) {
        return Err(BbsError::CannotClaim);
    }
    if ordinary.state == CLAIMED && instance_key_of(ordinary) == *instance_key {
        return Ok(None);
    }
    let mut next = ordinary.clone();
    next.state = CLAIMED.into();
    next.actual_lrp_instance_key = Some(instance_key.clone());
    next.placement_error = String::new();
    next.actual_lrp_net_info = Some(Default::default());
    next.since = now;
    bump(&mut next);
    let mut after = instance.clone();
    after.ordinary = Some(next);
    Ok(Some(after))
}

/// What a rep reports when it starts (or re-asserts) an instance.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Running {
    pub key: m::ActualLrpKey,
    pub instance_key: m::ActualLrpInstanceKey,
    pub net_info: m::ActualLrpNetInfo,
    pub internal_routes: Vec<m::ActualLrpInternalRoute>,
    pub metric_tags: std::collections::BTreeMap<String, String>,
    pub routable: bool,
    pub availability_zone: String,
}

/// StartActualLRP. A missing ordinary row is created RUNNING; a re-assertion of exactly what
/// is stored changes nothing; a successful start clears the evacuating and suspect copies.
pub fn start(
    instance: &Instance,
    running: &Running,
    now: Nanos,
    new_epoch: impl FnOnce() -> String,
) -> Result<Option<Instance>, BbsError> {
    if instance
        .matching(&running.instance_key)
        .is_some_and(|row| presence_of(row) == Presence::Suspect)
    {
        return Ok(None);
    }
    let next = match &instance.ordinary {
        None => {
            let mut row = new_unclaimed(running.key.clone(), now, new_epoch());
            fill_running(&mut row, running, now);
            row
        }
        Some(current) => {
            // Compared in place: most starts are a rep's re-assertions, which change nothing.
            let unchanged = current.state == RUNNING
                && current.actual_lrp_key.as_ref() == Some(&running.key)
                && current.actual_lrp_instance_key.as_ref() == Some(&running.instance_key)
                && current
                    .actual_lrp_net_info
                    .as_ref()
                    .map_or(running.net_info == m::ActualLrpNetInfo::default(), |n| {
                        *n == running.net_info
                    })
                && current.actual_lrp_internal_routes == running.internal_routes
                && current.metric_tags == running.metric_tags
                && routable_of(current) == running.routable
                && current.availability_zone == running.availability_zone;
            if unchanged {
                if instance.evacuating.is_none() && instance.suspect.is_none() {
                    return Ok(None);
                }
                current.clone()
            } else {
                if !allows_transition(current, &running.key, &running.instance_key, RUNNING) {
                    return Err(BbsError::CannotStart);
                }
                let mut row = current.clone();
                fill_running(&mut row, running, now);
                bump(&mut row);
                row
            }
        }
    };
    Ok(Some(Instance {
        ordinary: Some(next),
        evacuating: None,
        suspect: None,
    }))
}

fn fill_running(row: &mut m::ActualLrp, running: &Running, now: Nanos) {
    row.state = RUNNING.into();
    row.actual_lrp_key = Some(running.key.clone());
    row.actual_lrp_instance_key = Some(running.instance_key.clone());
    row.actual_lrp_net_info = Some(running.net_info.clone());
    row.actual_lrp_internal_routes = running.internal_routes.clone();
    row.metric_tags = running.metric_tags.clone();
    row.optional_routable = Some(OptionalRoutable::Routable(running.routable));
    row.availability_zone = running.availability_zone.clone();
    row.placement_error = String::new();
    row.since = now;
}

/// Crash restart policy constants (bbs-reference §3.4).
pub const IMMEDIATE_RESTARTS: i32 = 3;
pub const MAX_RESTART_ATTEMPTS: i32 = 200;
pub const CRASH_RESET_NANOS: Nanos = 5 * 60 * NANOS_PER_SECOND;
const MIN_BACKOFF_NANOS: Nanos = 30 * NANOS_PER_SECOND;
const MAX_BACKOFF_NANOS: Nanos = 16 * 60 * NANOS_PER_SECOND;
const MAX_BACKOFF_EXPONENT: i32 = 5;

/// Whether a crashed instance with `crash_count` crashes, crashed at `since`, is due a restart.
pub fn should_restart(now: Nanos, since: Nanos, crash_count: i32) -> bool {
    if crash_count < IMMEDIATE_RESTARTS {
        return true;
    }
    if crash_count >= MAX_RESTART_ATTEMPTS {
        return false;
    }
    let exponent = (crash_count - IMMEDIATE_RESTARTS).min(MAX_BACKOFF_EXPONENT);
    let backoff = (MIN_BACKOFF_NANOS << exponent).min(MAX_BACKOFF_NANOS);
    now >= since.saturating_add(backoff)
}

/// What CrashActualLRP did.
#[derive(Clone, Debug, PartialEq)]
pub struct Crash {
    pub after: Instance,
    /// The instance went straight back to UNCLAIMED and needs an auction now.
    pub restart_now: bool,
}

pub fn crash(
    instance: &Instance,
    key: &m::ActualLrpKey,
    instance_key: &m::ActualLrpInstanceKey,
    reason: &str,
    now: Nanos,
) -> Result<Option<Crash>, BbsError> {
    if instance
        .matching(instance_key)
        .is_some_and(|row| presence_of(row) == Presence::Suspect)
    {
        let mut after = instance.clone();
        after.suspect = None;
        return Ok(Some(Crash {
            after,
            restart_now: false,
        }));
    }
    let current = instance.ordinary.as_ref().ok_or(BbsError::NotFound)?;
    if !allows_transition(current, key, instance_key, CRASHED) {
        return Err(BbsError::CannotCrash);
    }
    let crash_count = if current.state == RUNNING && now - current.since > CRASH_RESET_NANOS {
        1
    } else {
        current.crash_count.saturating_add(1)
    };
    let restart_now = crash_count < IMMEDIATE_RESTARTS;
    let mut next = current.clone();
    next.crash_count = crash_count;
    next.crash_reason = truncate(reason, MAX_REASON_BYTES);
    next.actual_lrp_instance_key = Some(Default::default());
    next.actual_lrp_net_info = Some(Default::default());
    next.since = now;
    next.state = if restart_now { UNCLAIMED } else { CRASHED }.into();
    bump(&mut next);
    let mut after = instance.clone();
    after.ordinary = Some(next);
    Ok(Some(Crash { after, restart_now }))
}

/// FailActualLRP: records a placement error on an UNCLAIMED instance.
pub fn fail(
    instance: &Instance,
    key: &m::ActualLrpKey,
    placement_error: &str,
    now: Nanos,
) -> Result<Option<Instance>, BbsError> {
    let Some(current) = &instance.ordinary else {
        return Err(BbsError::NotFound);
    };
    if key_of(current) != *key || current.state != UNCLAIMED {
        return Err(BbsError::CannotFail);
    }
    let mut next = current.clone();
    next.placement_error = truncate(placement_error, MAX_REASON_BYTES);
    next.since = now;
    bump(&mut next);
    let mut after = instance.clone();
    after.ordinary = Some(next);
    Ok(Some(after))
}

/// RemoveActualLRP: deletes the ordinary row (matching the instance key when one is given).
pub fn remove(
    instance: &Instance,
    instance_key: Option<&m::ActualLrpInstanceKey>,
) -> Result<Instance, BbsError> {
    let current = instance.ordinary.as_ref().ok_or(BbsError::NotFound)?;
    if instance_key.is_some_and(|k| instance_key_of(current) != *k) {
        return Err(BbsError::NotFound);
    }
    let mut after = instance.clone();
    after.ordinary = None;
    Ok(after)
}

/// What retiring an instance takes.
#[derive(Clone, Debug, PartialEq)]
pub enum Retire {
    /// Not running anywhere: delete the row now.
    Delete(Box<Instance>),
    /// Running or claimed on a cell: ask that cell's rep to stop it; the rep removes it.
    StopOnCell {
        cell_id: String,
        instance_key: m::ActualLrpInstanceKey,
    },
}

pub fn retire(instance: &Instance) -> Result<Retire, BbsError> {
    let current = instance.ordinary.as_ref().ok_or(BbsError::NotFound)?;
    match current.state.as_str() {
        CLAIMED | RUNNING => Ok(Retire::StopOnCell {
            cell_id: instance_key_of(current).cell_id,
            instance_key: instance_key_of(current),
        }),
        _ => {
            let mut after = instance.clone();
            after.ordinary = None;
            Ok(Retire::Delete(Box::new(after)))
        }
    }
}

/// Upstream's hasHigherPriority: whether `row` (ordinary or suspect) takes the group's
/// instance slot from `holder`.
fn outranks(row: &m::ActualLrp, holder: Option<&m::ActualLrp>) -> bool {
    let Some(holder) = holder else {
        return true;
    };
    let (holder_running, holder_claimed) = (holder.state == RUNNING, holder.state == CLAIMED);
    match (presence_of(row), row.state.as_str()) {
        (Presence::Ordinary, RUNNING) => true,
        (Presence::Ordinary, CLAIMED) => !holder_running && !holder_claimed,
        (Presence::Suspect, RUNNING | CLAIMED) => !holder_running,
        _ => false,
    }
}

/// The rows an instance's group holds, borrowed: (instance slot, evacuating slot).
pub fn group_slots(instance: &Instance) -> (Option<&m::ActualLrp>, Option<&m::ActualLrp>) {
    let mut slot = None;
    for row in instance.ordinary.iter().chain(instance.suspect.iter()) {
        if outranks(row, slot) {
            slot = Some(row);
        }
    }
    (slot, instance.evacuating.as_ref())
}

/// Upstream's resolution of a group to one LRP: the instance when running or crashed, else
/// the evacuating copy if any.
pub fn resolve(group: &m::ActualLrpGroup) -> Option<&m::ActualLrp> {
    match (&group.instance, &group.evacuating) {
        (Some(i), None) => Some(i),
        (None, Some(e)) => Some(e),
        (Some(i), Some(_)) if i.state == RUNNING || i.state == CRASHED => Some(i),
        (Some(_), Some(e)) => Some(e),
        (None, None) => None,
    }
}

/// Rows of one instance as the deprecated group view folds them (bbs-reference §3.3).
pub fn group(rows: &[m::ActualLrp]) -> Vec<m::ActualLrpGroup> {
    let mut groups: std::collections::BTreeMap<(String, i32, String), m::ActualLrpGroup> =
        std::collections::BTreeMap::new();
    let mut order: Vec<(String, i32, String)> = Vec::new();
    for row in rows {
        let key = key_of(row);
        let id = (key.process_guid, key.index, key.domain);
        let group = groups.entry(id.clone()).or_insert_with(|| {
            order.push(id.clone());
            m::ActualLrpGroup::default()
        });
        match presence_of(row) {
            Presence::Evacuating => group.evacuating = Some(row.clone()),
            _ if outranks(row, group.instance.as_ref()) => group.instance = Some(row.clone()),
            _ => {}
        }
    }
    order
        .into_iter()
        .filter_map(|id| groups.remove(&id))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: Nanos = 1_000 * NANOS_PER_SECOND;
    const T1: Nanos = T0 + NANOS_PER_SECOND;

    fn key() -> m::ActualLrpKey {
        m::ActualLrpKey {
            process_guid: "web".into(),
            index: 0,
            domain: "cf-apps".into(),
        }
    }

    fn ik(guid: &str, cell: &str) -> m::ActualLrpInstanceKey {
        m::ActualLrpInstanceKey {
            instance_guid: guid.into(),
            cell_id: cell.into(),
        }
    }

    fn row(state: &str, instance: m::ActualLrpInstanceKey) -> m::ActualLrp {
        let mut lrp = new_unclaimed(key(), T0, "epoch".into());
        lrp.state = state.into();
        lrp.actual_lrp_instance_key = Some(instance);
        lrp
    }

    fn only(lrp: m::ActualLrp) -> Instance {
        Instance {
            ordinary: Some(lrp),
            ..Default::default()
        }
    }

    fn running(instance: m::ActualLrpInstanceKey) -> Running {
        Running {
            key: key(),
            instance_key: instance,
            net_info: m::ActualLrpNetInfo {
                address: "10.0.0.1".into(),
                ..Default::default()
            },
            routable: true,
            ..Default::default()
        }
    }

    #[test]
    fn the_transition_table() {
        let a = ik("a", "cell-1");
        let b = ik("b", "cell-2");
        let none = ik("", "");
        let cases = [
            (UNCLAIMED, &none, UNCLAIMED, &none, true),
            (UNCLAIMED, &none, CLAIMED, &a, true),
            (UNCLAIMED, &none, RUNNING, &a, true),
            (UNCLAIMED, &none, CRASHED, &a, false),
            (CLAIMED, &a, UNCLAIMED, &none, true),
            (CLAIMED, &a, UNCLAIMED, &a, false),
            (CLAIMED, &a, CLAIMED, &a, true),
            (CLAIMED, &a, CLAIMED, &b, false),
            (CLAIMED, &a, RUNNING, &b, true),
            (CLAIMED, &a, CRASHED, &a, true),
            (CLAIMED, &a, CRASHED, &b, false),
            (RUNNING, &a, UNCLAIMED, &none, true),
            (RUNNING, &a, CLAIMED, &a, true),
            (RUNNING, &a, CLAIMED, &b, false),
            (RUNNING, &a, RUNNING, &a, true),
            (RUNNING, &a, RUNNING, &b, false),
            (RUNNING, &a, CRASHED, &a, true),
            (RUNNING, &a, CRASHED, &b, false),
            (CRASHED, &none, UNCLAIMED, &none, true),
            (CRASHED, &none, CLAIMED, &none, true),
            (CRASHED, &none, CLAIMED, &a, false),
            (CRASHED, &none, RUNNING, &a, false),
            (CRASHED, &none, CRASHED, &none, false),
        ];
        for (from, current_key, to, request_key, allowed) in cases {
            let current = row(from, current_key.clone());
            assert_eq!(
                allows_transition(&current, &key(), request_key, to),
                allowed,
                "{from} ({current_key:?}) -> {to} ({request_key:?})"
            );
        }
        let mut other = key();
        other.domain = "other".into();
        assert!(!allows_transition(
            &row(UNCLAIMED, none.clone()),
            &other,
            &a,
            CLAIMED
        ));
    }

    #[test]
    fn claim_sets_the_instance_key_and_bumps_the_tag() {
        let after = claim(&only(row(UNCLAIMED, ik("", ""))), &ik("a", "cell-1"), T1)
            .unwrap()
            .unwrap();
        let lrp = after.ordinary.unwrap();
        assert_eq!((lrp.state.as_str(), lrp.since), (CLAIMED, T1));
        assert_eq!(instance_key_of(&lrp), ik("a", "cell-1"));
        assert_eq!(lrp.modification_tag.unwrap().index, 1);
    }

    #[test]
    fn claim_again_with_the_same_key_changes_nothing() {
        let claimed = only(row(CLAIMED, ik("a", "cell-1")));
        assert_eq!(claim(&claimed, &ik("a", "cell-1"), T1).unwrap(), None);
        assert_eq!(
            claim(&claimed, &ik("b", "cell-2"), T1).unwrap_err(),
            BbsError::CannotClaim
        );
    }

    #[test]
    fn claim_of_a_suspect_instance_is_ignored() {
        let mut suspect = row(RUNNING, ik("a", "cell-1"));
        suspect.presence = Presence::Suspect as i32;
        let instance = Instance {
            ordinary: Some(row(UNCLAIMED, ik("", ""))),
            suspect: Some(suspect),
            ..Default::default()
        };
        assert_eq!(claim(&instance, &ik("a", "cell-1"), T1).unwrap(), None);
    }

    #[test]
    fn start_creates_a_missing_instance() {
        let after = start(&Instance::default(), &running(ik("a", "c")), T1, || {
            "new".into()
        })
        .unwrap()
        .unwrap();
        let lrp = after.ordinary.unwrap();
        assert_eq!(lrp.state, RUNNING);
        assert_eq!(lrp.modification_tag.as_ref().unwrap().epoch, "new");
        assert!(routable_of(&lrp));
    }

    #[test]
    fn start_from_claimed_accepts_any_instance_key() {
        let claimed = only(row(CLAIMED, ik("a", "cell-1")));
        let after = start(&claimed, &running(ik("b", "cell-2")), T1, || unreachable!())
            .unwrap()
            .unwrap();
        assert_eq!(
            instance_key_of(after.ordinary.as_ref().unwrap()),
            ik("b", "cell-2")
        );
    }

    #[test]
    fn a_re_asserted_start_writes_nothing() {
        let started = start(
            &only(row(CLAIMED, ik("a", "c"))),
            &running(ik("a", "c")),
            T1,
            || unreachable!(),
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            start(&started, &running(ik("a", "c")), T1 + 5, || unreachable!()).unwrap(),
            None
        );
        // A changed detail is a real change.
        let mut moved = running(ik("a", "c"));
        moved.net_info.address = "10.0.0.2".into();
        assert!(start(&started, &moved, T1, || unreachable!())
            .unwrap()
            .is_some());
    }

    #[test]
    fn start_of_running_with_another_key_is_refused() {
        let lrp = only(row(RUNNING, ik("a", "c")));
        assert_eq!(
            start(&lrp, &running(ik("b", "d")), T1, || unreachable!()).unwrap_err(),
            BbsError::CannotStart
        );
    }

    #[test]
    fn start_clears_evacuating_and_suspect_copies() {
        let mut evacuating = row(RUNNING, ik("old", "cell-0"));
        evacuating.presence = Presence::Evacuating as i32;
        let instance = Instance {
            ordinary: Some(row(CLAIMED, ik("a", "c"))),
            evacuating: Some(evacuating),
            suspect: None,
        };
        let after = start(&instance, &running(ik("a", "c")), T1, || unreachable!())
            .unwrap()
            .unwrap();
        assert!(after.evacuating.is_none() && after.suspect.is_none());
    }

    #[test]
    fn the_first_crashes_restart_at_once() {
        let mut lrp = row(RUNNING, ik("a", "c"));
        lrp.since = T0;
        let outcome = crash(&only(lrp), &key(), &ik("a", "c"), "oom", T1)
            .unwrap()
            .unwrap();
        assert!(outcome.restart_now);
        let after = outcome.after.ordinary.unwrap();
        assert_eq!((after.state.as_str(), after.crash_count), (UNCLAIMED, 1));
        assert_eq!(after.crash_reason, "oom");
        assert_eq!(instance_key_of(&after), ik("", ""));
    }

    #[test]
    fn the_third_crash_stays_crashed() {
        let mut lrp = row(RUNNING, ik("a", "c"));
        lrp.crash_count = 2;
        let outcome = crash(&only(lrp), &key(), &ik("a", "c"), "oom", T1)
            .unwrap()
            .unwrap();
        assert!(!outcome.restart_now);
        assert_eq!(outcome.after.ordinary.unwrap().state, CRASHED);
    }

    #[test]
    fn running_five_minutes_resets_the_crash_count() {
        let mut lrp = row(RUNNING, ik("a", "c"));
        lrp.crash_count = 50;
        lrp.since = T0;
        let later = T0 + CRASH_RESET_NANOS + 1;
        let outcome = crash(&only(lrp), &key(), &ik("a", "c"), "x", later)
            .unwrap()
            .unwrap();
        assert_eq!(outcome.after.ordinary.unwrap().crash_count, 1);
    }

    #[test]
    fn crash_of_a_suspect_deletes_it() {
        let mut suspect = row(RUNNING, ik("a", "c"));
        suspect.presence = Presence::Suspect as i32;
        let instance = Instance {
            ordinary: Some(row(UNCLAIMED, ik("", ""))),
            suspect: Some(suspect),
            ..Default::default()
        };
        let outcome = crash(&instance, &key(), &ik("a", "c"), "x", T1)
            .unwrap()
            .unwrap();
        assert!(outcome.after.suspect.is_none());
        assert_eq!(outcome.after.ordinary, instance.ordinary);
    }

    #[test]
    fn crash_refusals() {
        assert_eq!(
            crash(
                &only(row(UNCLAIMED, ik("", ""))),
                &key(),
                &ik("a", "c"),
                "x",
                T1
            )
            .unwrap_err(),
            BbsError::CannotCrash
        );
        assert_eq!(
            crash(
                &only(row(RUNNING, ik("a", "c"))),
                &key(),
                &ik("b", "c"),
                "x",
                T1
            )
            .unwrap_err(),
            BbsError::CannotCrash
        );
    }

    #[test]
    fn restart_backoff() {
        let s = NANOS_PER_SECOND;
        assert!(should_restart(T0, T0, 2));
        for (count, wait) in [
            (3, 30),
            (4, 60),
            (5, 120),
            (6, 240),
            (7, 480),
            (8, 960),
            (100, 960),
        ] {
            assert!(
                !should_restart(T0 + (wait - 1) * s, T0, count),
                "count {count}"
            );
            assert!(should_restart(T0 + wait * s, T0, count), "count {count}");
        }
        assert!(!should_restart(T0 + 100_000 * s, T0, 200));
    }

    #[test]
    fn fail_needs_unclaimed() {
        let after = fail(&only(row(UNCLAIMED, ik("", ""))), &key(), "no room", T1)
            .unwrap()
            .unwrap();
        assert_eq!(after.ordinary.unwrap().placement_error, "no room");
        assert_eq!(
            fail(&only(row(RUNNING, ik("a", "c"))), &key(), "x", T1).unwrap_err(),
            BbsError::CannotFail
        );
    }

    #[test]
    fn remove_and_retire() {
        let lrp = only(row(RUNNING, ik("a", "c")));
        assert!(remove(&lrp, Some(&ik("a", "c")))
            .unwrap()
            .ordinary
            .is_none());
        assert_eq!(
            remove(&lrp, Some(&ik("b", "c"))).unwrap_err(),
            BbsError::NotFound
        );
        assert_eq!(
            remove(&Instance::default(), None).unwrap_err(),
            BbsError::NotFound
        );
        assert!(
            matches!(retire(&lrp).unwrap(), Retire::StopOnCell { cell_id, .. } if cell_id == "c")
        );
        assert!(
            matches!(retire(&only(row(CRASHED, ik("", "")))).unwrap(), Retire::Delete(i) if i.is_empty())
        );
    }
}
