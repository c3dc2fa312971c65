//! Which events an LRP change emits (bbs-reference §5.4), as pure functions of the rows before
//! and after it. Upstream's event calculator is followed step for step, because clients key
//! off exact event kinds (the route emitter drops an app's routes on a removal):
//!
//! * the rows before and after are paired position by position, as upstream's controllers
//!   record them (`Emitter` says how a change pairs them);
//! * the instance stream reports each pair by the after-row's state;
//! * the deprecated group stream compares the resolved instance slot and the evacuating slot
//!   separately, each reported as a one-slot group;
//! * within one change, crashes come first, then events that leave an instance RUNNING, then
//!   the rest, so routes stay available while an instance is replaced.

use bbs_models as m;
use bbs_models::actual_lrp::Presence;

use crate::events::Event;
use crate::rules::actual_lrps::{
    group_slots, instance_key_of, is_empty_instance_key as is_empty_key, presence_of, resolve,
    Instance, CLAIMED, CRASHED, RUNNING, UNCLAIMED,
};

/// How upstream reports a change: which of its emitters runs, and how the rows before and
/// after pair up.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Emitter {
    /// Upstream's general emitter, rows paired by presence: claim, start, fail, remove,
    /// retire, and the evacuation routes other than the two below.
    #[default]
    Lifecycle,
    /// CrashActualLRP's emitter: every changed row is reported as a crash.
    Crash,
    /// The evacuation of a running instance: the row of this presence became the evacuating
    /// row (one instance, changed), and a new ordinary row, if any, was created.
    Evacuated(Presence),
    /// Evacuate-running created or rewrote the evacuating row; upstream records it as a new
    /// row, so it is reported as created even when it replaced an evacuating row.
    EvacuatingRecorded,
    /// Events upstream emits by hand rather than through its calculator (convergence, the
    /// removal of unstarted instances on scale-down).
    Direct(Direct),
}

/// The changes whose events upstream emits by hand, each its own way.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direct {
    /// A missing instance created: group and instance created.
    Created,
    /// A stale claimed instance (or crashed one past its back-off) back to UNCLAIMED: group
    /// changed, instance created and removed.
    Unclaimed,
    /// An instance on a missing cell kept as SUSPECT and replaced: on the instance stream
    /// the ordinary row changed to suspect and the replacement created; nothing on the group
    /// stream.
    Suspected,
    /// A suspect promoted back to ordinary: the replacement (if any) removed on both streams,
    /// the suspect changed to ordinary on the instance stream.
    Promoted,
    /// Rows removed (an unstarted instance on scale-down, a suspect retired): group and
    /// instance removed, row by row.
    Removed,
}

type Row<'a> = Option<&'a m::ActualLrp>;

const PRESENCES: [Presence; 3] = [Presence::Ordinary, Presence::Evacuating, Presence::Suspect];

/// The mutable part of an instance, as instance-changed events carry it.
pub fn info(lrp: &m::ActualLrp) -> m::ActualLrpInfo {
    m::ActualLrpInfo {
        actual_lrp_net_info: lrp.actual_lrp_net_info.clone(),
        crash_count: lrp.crash_count,
        crash_reason: lrp.crash_reason.clone(),
        state: lrp.state.clone(),
        placement_error: lrp.placement_error.clone(),
        since: lrp.since,
        modification_tag: lrp.modification_tag.clone(),
        presence: lrp.presence,
        availability_zone: lrp.availability_zone.clone(),
        optional_routable: lrp.optional_routable.map(
            |m::actual_lrp::OptionalRoutable::Routable(r)| {
                m::actual_lrp_info::OptionalRoutable::Routable(r)
            },
        ),
    }
}

/// The rows before and after, position by position: the rows that existed first (in
/// presence order), then the rows the change added, as upstream's RecordChange lays them out.
fn paired<'a>(
    before: &'a Instance,
    after: &'a Instance,
    emitter: Emitter,
) -> Vec<(Row<'a>, Row<'a>)> {
    let mut pairs: Vec<(Row<'a>, Row<'a>)> = Vec::new();
    let mut added: Vec<Row<'a>> = Vec::new();
    for presence in PRESENCES {
        let b = before.slot(presence).as_ref();
        let a = after.slot(presence).as_ref();
        let a = match emitter {
            // The evacuated row's position now holds the evacuating copy; a new ordinary row
            // is added below, as a creation.
            Emitter::Evacuated(from) if presence == from => after.evacuating.as_ref(),
            // Any other evacuating row stays as upstream's set had it.
            Emitter::Evacuated(_) | Emitter::EvacuatingRecorded
                if presence == Presence::Evacuating =>
            {
                b
            }
            _ => a,
        };
        match b {
            Some(_) => pairs.push((b, a)),
            None => added.push(a),
        }
    }
    match emitter {
        Emitter::Evacuated(Presence::Ordinary) => added.push(after.ordinary.as_ref()),
        Emitter::EvacuatingRecorded => added.push(after.evacuating.as_ref()),
        _ => {}
    }
    pairs.extend(added.into_iter().flatten().map(|a| (None, Some(a))));
    pairs
}

fn crashed_event(before: &m::ActualLrp, after: &m::ActualLrp) -> m::ActualLrpCrashedEvent {
    m::ActualLrpCrashedEvent {
        actual_lrp_key: after.actual_lrp_key.clone(),
        actual_lrp_instance_key: before.actual_lrp_instance_key.clone(),
        crash_count: after.crash_count,
        crash_reason: after.crash_reason.clone(),
        since: after.since,
    }
}

fn instance_crashed(before: &m::ActualLrp, after: &m::ActualLrp) -> Event {
    Event::ActualLrpCrashed(Box::new(crashed_event(before, after)))
}

fn group_crashed(before: &m::ActualLrp, after: &m::ActualLrp) -> Event {
    Event::ActualLrpGroupCrashed(Box::new(crashed_event(before, after)))
}

/// Upstream's instance-changed event: the keys from the after-row unless empty.
fn changed(before: &m::ActualLrp, after: &m::ActualLrp) -> Event {
    let pick = |b: &Option<m::ActualLrpKey>, a: &Option<m::ActualLrpKey>| {
        a.clone()
            .filter(|k| *k != m::ActualLrpKey::default())
            .or_else(|| b.clone())
    };
    let instance_key = {
        let ak = instance_key_of(after);
        if is_empty_key(&ak) {
            instance_key_of(before)
        } else {
            ak
        }
    };
    Event::ActualLrpInstanceChanged(Box::new(m::ActualLrpInstanceChangedEvent {
        actual_lrp_key: pick(&before.actual_lrp_key, &after.actual_lrp_key),
        actual_lrp_instance_key: Some(instance_key),
        before: Some(info(before)),
        after: Some(info(after)),
        trace_id: String::new(),
    }))
}

fn created(lrp: &m::ActualLrp) -> Event {
    Event::ActualLrpInstanceCreated(Box::new(lrp.clone()))
}

fn removed(lrp: &m::ActualLrp) -> Event {
    Event::ActualLrpInstanceRemoved(Box::new(lrp.clone()))
}

/// A row as a group of its own: evacuating rows in the evacuating slot, others in the
/// instance slot.
fn one_slot_group(lrp: &m::ActualLrp) -> m::ActualLrpGroup {
    if presence_of(lrp) == Presence::Evacuating {
        m::ActualLrpGroup {
            instance: None,
            evacuating: Some(lrp.clone()),
        }
    } else {
        m::ActualLrpGroup {
            instance: Some(lrp.clone()),
            evacuating: None,
        }
    }
}

fn group_created(lrp: &m::ActualLrp) -> Event {
    Event::ActualLrpGroupCreated(Box::new(one_slot_group(lrp)))
}

fn group_removed(lrp: &m::ActualLrp) -> Event {
    Event::ActualLrpGroupRemoved(Box::new(one_slot_group(lrp)))
}

fn group_changed(before: &m::ActualLrp, after: &m::ActualLrp) -> Event {
    Event::ActualLrpGroupChanged(
        Box::new(one_slot_group(before)),
        Box::new(one_slot_group(after)),
    )
}

/// Crashes first, then events that leave an instance RUNNING, then the rest.
fn score(event: &Event) -> u8 {
    let running = |lrp: Option<&m::ActualLrp>| lrp.is_some_and(|l| l.state == RUNNING);
    match event {
        Event::ActualLrpCrashed(_) | Event::ActualLrpGroupCrashed(_) => 2,
        Event::ActualLrpInstanceCreated(l) if l.state == RUNNING => 1,
        Event::ActualLrpInstanceChanged(e)
            if e.after.as_ref().is_some_and(|a| a.state == RUNNING) =>
        {
            1
        }
        Event::ActualLrpGroupCreated(g) | Event::ActualLrpGroupChanged(_, g)
            if running(resolve(g)) =>
        {
            1
        }
        _ => 0,
    }
}

/// Orders one change's events by score; the sort is stable, as upstream's is for so few.
fn order(mut events: Vec<Event>) -> Vec<Event> {
    events.sort_by_key(|e| std::cmp::Reverse(score(e)));
    events
}

/// One pair's instance events under the general emitter.
fn lifecycle_instance(before: Row, after: Row) -> Vec<Event> {
    match (before, after) {
        (b, a) if b == a => vec![],
        (Some(b), None) => vec![removed(b)],
        (None, Some(a)) => vec![created(a)],
        (Some(b), Some(a)) => match a.state.as_str() {
            // A placement failure leaves the instance UNCLAIMED: still the same instance.
            UNCLAIMED if b.state == UNCLAIMED => vec![changed(b, a)],
            UNCLAIMED => vec![created(a), removed(b)],
            CLAIMED | RUNNING => vec![changed(b, a)],
            CRASHED => vec![instance_crashed(b, a), changed(b, a)],
            _ => vec![],
        },
        (None, None) => vec![],
    }
}

/// One pair's instance events under CrashActualLRP's emitter.
fn crash_instance(before: Row, after: Row) -> Vec<Event> {
    match (before, after) {
        (b, a) if b == a => vec![],
        (Some(b), None) => vec![removed(b)],
        (None, Some(a)) => vec![created(a)],
        (Some(b), Some(a)) if a.state == CRASHED => vec![instance_crashed(b, a), changed(b, a)],
        (Some(b), Some(a)) => vec![instance_crashed(b, a), created(a), removed(b)],
        (None, None) => vec![],
    }
}

/// One slot's group events under the general emitter.
fn lifecycle_group(before: Option<&m::ActualLrp>, after: Option<&m::ActualLrp>) -> Vec<Event> {
    match (before, after) {
        (b, a) if b == a => vec![],
        (Some(b), None) => vec![group_removed(b)],
        (None, Some(a)) => vec![group_created(a)],
        (Some(b), Some(a)) => match a.state.as_str() {
            UNCLAIMED => vec![group_changed(b, a)],
            CLAIMED | RUNNING => {
                let (bk, ak) = (instance_key_of(b), instance_key_of(a));
                if !is_empty_key(&bk) && ak != bk {
                    vec![group_created(a), group_removed(b)]
                } else {
                    vec![group_changed(b, a)]
                }
            }
            CRASHED => vec![group_crashed(b, a), group_changed(b, a)],
            _ => vec![],
        },
        (None, None) => vec![],
    }
}

/// Both streams' events for one change of one instance, reported as `emitter` says.
pub fn events(before: &Instance, after: &Instance, emitter: Emitter) -> Vec<Event> {
    if let Emitter::Direct(action) = emitter {
        return direct(before, after, action);
    }
    let (b_slots, a_slots) = (group_slots(before), group_slots(after));
    let slot_pairs = [(b_slots.0, a_slots.0), (b_slots.1, a_slots.1)];
    let mut group_events = Vec::new();
    let mut instance_events = Vec::new();
    let pairs = paired(before, after, emitter);
    if emitter == Emitter::Crash {
        // Upstream reports a crash's group change with both slots resolved.
        let whole = |(instance, evacuating): (Option<&m::ActualLrp>, Option<&m::ActualLrp>)| {
            Box::new(m::ActualLrpGroup {
                instance: instance.cloned(),
                evacuating: evacuating.cloned(),
            })
        };
        for (b, a) in slot_pairs {
            match (b, a) {
                (b, a) if b == a => {}
                (Some(b), None) => group_events.push(group_removed(b)),
                (None, Some(a)) => group_events.push(group_created(a)),
                (Some(b), Some(a)) => {
                    group_events.push(group_crashed(b, a));
                    group_events.push(Event::ActualLrpGroupChanged(whole(b_slots), whole(a_slots)));
                }
                (None, None) => {}
            }
        }
        for (b, a) in pairs {
            instance_events.extend(crash_instance(b, a));
        }
    } else {
        for (b, a) in slot_pairs {
            group_events.extend(lifecycle_group(b, a));
        }
        for (b, a) in pairs {
            instance_events.extend(lifecycle_instance(b, a));
        }
    }
    let mut all = order(group_events);
    all.extend(order(instance_events));
    all
}

/// The events upstream emits by hand, in the order it sends them (it does not sort them).
fn direct(before: &Instance, after: &Instance, action: Direct) -> Vec<Event> {
    let mut events = Vec::new();
    match action {
        Direct::Created => {
            if let Some(a) = after
                .ordinary
                .as_ref()
                .filter(|_| before.ordinary.is_none())
            {
                events.push(group_created(a));
                events.push(created(a));
            }
        }
        Direct::Unclaimed => {
            if let (Some(b), Some(a)) = (before.ordinary.as_ref(), after.ordinary.as_ref()) {
                if b != a {
                    events.push(group_changed(b, a));
                    events.push(created(a));
                    events.push(removed(b));
                }
            }
        }
        Direct::Suspected => {
            if let (Some(b), Some(s)) = (before.ordinary.as_ref(), after.suspect.as_ref()) {
                events.push(changed(b, s));
            }
            if let Some(a) = after.ordinary.as_ref() {
                events.push(created(a));
            }
        }
        Direct::Promoted => {
            if let Some(replacement) = before.ordinary.as_ref() {
                events.push(group_removed(replacement));
                events.push(removed(replacement));
            }
            if let (Some(b), Some(a)) = (before.suspect.as_ref(), after.ordinary.as_ref()) {
                events.push(changed(b, a));
            }
        }
        Direct::Removed => {
            for presence in PRESENCES {
                if let (Some(b), None) = (before.slot(presence), after.slot(presence)) {
                    events.push(group_removed(b));
                    events.push(removed(b));
                }
            }
        }
    }
    events
}

#[cfg(test)]
mod tests;
