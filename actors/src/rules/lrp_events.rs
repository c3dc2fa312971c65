//! Which events an LRP change emits (bbs-reference §5.4), as pure functions of the rows before
//! and after it.

use bbs_models as m;
use bbs_models::actual_lrp::Presence;

use crate::events::Event;
use crate::rules::actual_lrps::{group, instance_key_of, key_of, Instance, RUNNING};

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

fn is_empty_key(key: &m::ActualLrpInstanceKey) -> bool {
    key.instance_guid.is_empty() && key.cell_id.is_empty()
}

fn resulting_state(event: &Event) -> Option<&str> {
    match event {
        Event::ActualLrpInstanceCreated(l) => Some(&l.state),
        Event::ActualLrpInstanceChanged(e) => e.after.as_ref().map(|a| a.state.as_str()),
        Event::ActualLrpGroupCreated(g) | Event::ActualLrpGroupChanged(_, g) => {
            g.instance.as_ref().map(|i| i.state.as_str())
        }
        _ => None,
    }
}

/// Crashes first, then changes that leave an instance running, then the rest: routes stay
/// available while an instance is replaced.
fn order(mut events: Vec<Event>) -> Vec<Event> {
    events.sort_by_key(|e| match e {
        Event::ActualLrpCrashed(_) => 0,
        _ if resulting_state(e) == Some(RUNNING) => 1,
        _ => 2,
    });
    events
}

fn crashed(before: &Instance, after: &Instance) -> Option<Event> {
    let (b, a) = (before.ordinary.as_ref()?, after.ordinary.as_ref()?);
    (a.crash_count > b.crash_count).then(|| {
        Event::ActualLrpCrashed(Box::new(m::ActualLrpCrashedEvent {
            actual_lrp_key: Some(key_of(a)),
            actual_lrp_instance_key: Some(instance_key_of(b)),
            crash_count: a.crash_count,
            crash_reason: a.crash_reason.clone(),
            since: a.since,
        }))
    })
}

/// The instance-stream events for one instance's change.
pub fn instance_events(before: &Instance, after: &Instance) -> Vec<Event> {
    let mut events: Vec<Event> = crashed(before, after).into_iter().collect();
    for presence in [Presence::Ordinary, Presence::Evacuating, Presence::Suspect] {
        match (before.slot(presence), after.slot(presence)) {
            (None, Some(a)) => events.push(Event::ActualLrpInstanceCreated(Box::new(a.clone()))),
            (Some(b), None) => events.push(Event::ActualLrpInstanceRemoved(Box::new(b.clone()))),
            (Some(b), Some(a)) if b != a => {
                let (bk, ak) = (instance_key_of(b), instance_key_of(a));
                if bk == ak || is_empty_key(&bk) {
                    let key = if is_empty_key(&ak) { bk } else { ak };
                    events.push(Event::ActualLrpInstanceChanged(Box::new(
                        m::ActualLrpInstanceChangedEvent {
                            actual_lrp_key: Some(key_of(a)),
                            actual_lrp_instance_key: Some(key),
                            before: Some(info(b)),
                            after: Some(info(a)),
                            trace_id: String::new(),
                        },
                    )));
                } else {
                    events.push(Event::ActualLrpInstanceCreated(Box::new(a.clone())));
                    events.push(Event::ActualLrpInstanceRemoved(Box::new(b.clone())));
                }
            }
            _ => {}
        }
    }
    order(events)
}

/// The deprecated group-stream events for one instance's change.
pub fn group_events(before: &Instance, after: &Instance) -> Vec<Event> {
    let rows = |i: &Instance| i.rows().cloned().collect::<Vec<_>>();
    let before_group = group(&rows(before)).into_iter().next();
    let after_group = group(&rows(after)).into_iter().next();
    let mut events: Vec<Event> = crashed(before, after).into_iter().collect();
    match (before_group, after_group) {
        (None, Some(a)) => events.push(Event::ActualLrpGroupCreated(Box::new(a))),
        (Some(b), None) => events.push(Event::ActualLrpGroupRemoved(Box::new(b))),
        (Some(b), Some(a)) if b != a => {
            let key = |g: &m::ActualLrpGroup| {
                g.instance.as_ref().map(instance_key_of).unwrap_or_default()
            };
            let (bk, ak) = (key(&b), key(&a));
            if !is_empty_key(&bk) && !is_empty_key(&ak) && bk != ak {
                events.push(Event::ActualLrpGroupCreated(Box::new(a)));
                events.push(Event::ActualLrpGroupRemoved(Box::new(b)));
            } else {
                events.push(Event::ActualLrpGroupChanged(Box::new(b), Box::new(a)));
            }
        }
        _ => {}
    }
    order(events)
}

/// Both streams' events for one instance's change (subscribers pick theirs).
pub fn events(before: &Instance, after: &Instance) -> Vec<Event> {
    let mut all = instance_events(before, after);
    for event in group_events(before, after) {
        if !matches!(event, Event::ActualLrpCrashed(_)) {
            all.push(event);
        }
    }
    all
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::actual_lrps::{claim, crash, new_unclaimed, start, Running};

    fn key() -> m::ActualLrpKey {
        m::ActualLrpKey {
            process_guid: "web".into(),
            index: 0,
            domain: "d".into(),
        }
    }

    fn ik(g: &str, c: &str) -> m::ActualLrpInstanceKey {
        m::ActualLrpInstanceKey {
            instance_guid: g.into(),
            cell_id: c.into(),
        }
    }

    fn unclaimed() -> Instance {
        Instance {
            ordinary: Some(new_unclaimed(key(), 1, "e".into())),
            ..Default::default()
        }
    }

    fn names(events: &[Event]) -> Vec<&'static str> {
        events
            .iter()
            .map(|e| match e {
                Event::ActualLrpInstanceCreated(_) => "created",
                Event::ActualLrpInstanceChanged(_) => "changed",
                Event::ActualLrpInstanceRemoved(_) => "removed",
                Event::ActualLrpCrashed(_) => "crashed",
                Event::ActualLrpGroupCreated(_) => "group_created",
                Event::ActualLrpGroupChanged(..) => "group_changed",
                Event::ActualLrpGroupRemoved(_) => "group_removed",
                _ => "other",
            })
            .collect()
    }

    #[test]
    fn creation_claim_and_start() {
        assert_eq!(
            names(&instance_events(&Instance::default(), &unclaimed())),
            ["created"]
        );
        let claimed = claim(&unclaimed(), &ik("a", "c"), 2).unwrap().unwrap();
        let events = instance_events(&unclaimed(), &claimed);
        assert_eq!(names(&events), ["changed"]);
        let Event::ActualLrpInstanceChanged(e) = &events[0] else {
            unreachable!()
        };
        assert_eq!(e.actual_lrp_instance_key, Some(ik("a", "c")));
        let running = Running {
            key: key(),
            instance_key: ik("a", "c"),
            net_info: m::ActualLrpNetInfo {
                address: "x".into(),
                ..Default::default()
            },
            ..Default::default()
        };
        let started = start(&claimed, &running, 3, || unreachable!())
            .unwrap()
            .unwrap();
        assert_eq!(names(&instance_events(&claimed, &started)), ["changed"]);
        assert_eq!(names(&group_events(&claimed, &started)), ["group_changed"]);
    }

    #[test]
    fn a_crash_with_restart_is_crashed_then_created_and_removed() {
        let running = Running {
            key: key(),
            instance_key: ik("a", "c"),
            net_info: m::ActualLrpNetInfo {
                address: "x".into(),
                ..Default::default()
            },
            ..Default::default()
        };
        let started = start(&unclaimed(), &running, 3, || unreachable!())
            .unwrap()
            .unwrap();
        let crashed = crash(&started, &key(), &ik("a", "c"), "oom", 4)
            .unwrap()
            .unwrap()
            .after;
        let events = instance_events(&started, &crashed);
        assert_eq!(names(&events), ["crashed", "created", "removed"]);
        let Event::ActualLrpCrashed(c) = &events[0] else {
            unreachable!()
        };
        assert_eq!(
            c.actual_lrp_instance_key,
            Some(ik("a", "c")),
            "the instance that crashed"
        );
    }

    #[test]
    fn removal() {
        assert_eq!(
            names(&instance_events(&unclaimed(), &Instance::default())),
            ["removed"]
        );
        assert_eq!(
            names(&group_events(&unclaimed(), &Instance::default())),
            ["group_removed"]
        );
    }
}
