//! Upstream's event sequences, one table row per operation (bbs-reference §5.4 and upstream's
//! event calculator). Each event is written as `kind shape`, so a row reads like a stream.

use super::*;
use crate::rules::actual_lrps::{claim, crash, new_unclaimed, start, Running};
use crate::rules::evacuation::{evacuate_crashed, evacuate_running, DesiredForEvacuation};

fn key() -> m::ActualLrpKey {
    m::ActualLrpKey {
        process_guid: "web".into(),
        index: 0,
        domain: "d".into(),
    }
}

fn ik(guid: &str, cell: &str) -> m::ActualLrpInstanceKey {
    m::ActualLrpInstanceKey {
        instance_guid: guid.into(),
        cell_id: cell.into(),
    }
}

fn unclaimed_row() -> m::ActualLrp {
    new_unclaimed(key(), 1, "e".into())
}

fn running(guid: &str, cell: &str) -> Running {
    Running {
        key: key(),
        instance_key: ik(guid, cell),
        net_info: m::ActualLrpNetInfo {
            address: format!("{cell}.addr"),
            ..Default::default()
        },
        routable: true,
        ..Default::default()
    }
}

fn ordinary(row: m::ActualLrp) -> Instance {
    Instance {
        ordinary: Some(row),
        ..Default::default()
    }
}

fn started(instance: &Instance, guid: &str, cell: &str) -> Instance {
    start(instance, &running(guid, cell), 2, || "e2".into())
        .unwrap()
        .unwrap()
}

fn running_on(guid: &str, cell: &str) -> Instance {
    started(&ordinary(unclaimed_row()), guid, cell)
}

fn row(lrp: &m::ActualLrp) -> String {
    let presence = match presence_of(lrp) {
        Presence::Ordinary => "ORDINARY",
        Presence::Evacuating => "EVACUATING",
        Presence::Suspect => "SUSPECT",
    };
    let guid = &instance_key_of(lrp).instance_guid;
    if guid.is_empty() {
        format!("{presence}/{}", lrp.state)
    } else {
        format!("{presence}/{}({guid})", lrp.state)
    }
}

fn group_shape(g: &m::ActualLrpGroup) -> String {
    let slot = |l: &Option<m::ActualLrp>| l.as_ref().map_or("-".to_owned(), row);
    format!("{{{},{}}}", slot(&g.instance), slot(&g.evacuating))
}

fn info_shape(i: &Option<m::ActualLrpInfo>) -> String {
    let i = i.as_ref().unwrap();
    let presence = match Presence::try_from(i.presence).unwrap() {
        Presence::Ordinary => "ORDINARY",
        Presence::Evacuating => "EVACUATING",
        Presence::Suspect => "SUSPECT",
    };
    format!("{presence}/{}", i.state)
}

fn describe(events: &[Event]) -> Vec<String> {
    events
        .iter()
        .map(|e| match e {
            Event::ActualLrpInstanceCreated(l) => format!("instance_created {}", row(l)),
            Event::ActualLrpInstanceRemoved(l) => format!("instance_removed {}", row(l)),
            Event::ActualLrpInstanceChanged(c) => format!(
                "instance_changed({}) {} -> {}",
                c.actual_lrp_instance_key.as_ref().unwrap().instance_guid,
                info_shape(&c.before),
                info_shape(&c.after)
            ),
            Event::ActualLrpCrashed(c) => format!(
                "crashed({}) count {}",
                c.actual_lrp_instance_key.as_ref().unwrap().instance_guid,
                c.crash_count
            ),
            Event::ActualLrpGroupCrashed(c) => format!(
                "group_crashed({}) count {}",
                c.actual_lrp_instance_key.as_ref().unwrap().instance_guid,
                c.crash_count
            ),
            Event::ActualLrpGroupCreated(g) => format!("group_created {}", group_shape(g)),
            Event::ActualLrpGroupRemoved(g) => format!("group_removed {}", group_shape(g)),
            Event::ActualLrpGroupChanged(b, a) => {
                format!("group_changed {} -> {}", group_shape(b), group_shape(a))
            }
            other => format!("{other:?}"),
        })
        .collect()
}

const ROLLING: Option<DesiredForEvacuation> = Some(DesiredForEvacuation {
    update_strategy: 0,
    instances: 1,
    running: 1,
});

/// The instance after the rolling evacuation of `guid` on `cell`, and how it is reported.
fn evacuated(guid: &str, cell: &str) -> (Instance, Instance, Emitter) {
    let before = running_on(guid, cell);
    let out = evacuate_running(&before, &running(guid, cell), ROLLING, 3, || "e3".into());
    (before, out.after.unwrap(), out.emitter)
}

#[test]
fn upstream_sequences() {
    let unclaimed = ordinary(unclaimed_row());
    let claimed = claim(&unclaimed, &ik("a", "c1"), 2).unwrap().unwrap();
    let running_a = running_on("a", "c1");
    let crash_of = |instance: &Instance| {
        crash(instance, &key(), &ik("a", "c1"), "oom", 9)
            .unwrap()
            .unwrap()
            .after
    };
    let restarted = crash_of(&running_a);
    let mut crashing = running_a.clone();
    crashing.ordinary.as_mut().unwrap().crash_count = 3;
    let crashed_for_good = crash_of(&crashing);
    let (evac_before, evac_after, evac_emitter) = evacuated("a", "c1");
    let replacement_running = started(&evac_after, "b", "c2");
    let mut removed_evacuating = evac_after.clone();
    removed_evacuating.evacuating = None;
    let mut desired_removed = evac_after.clone();
    desired_removed.ordinary = None;
    let claimed_by_b = claim(&unclaimed, &ik("b", "c2"), 2).unwrap().unwrap();
    let fresh_evacuating =
        evacuate_running(&unclaimed, &running("z", "c9"), ROLLING, 3, || "e4".into());
    let evacuated_crash = evacuate_crashed(&running_a, &key(), &ik("a", "c1"), "oom", 9).unwrap();
    let nothing = Instance::default();

    let rows: Vec<(&str, &Instance, &Instance, Emitter, Vec<&str>)> = vec![
        (
            "desire creates an instance",
            &nothing,
            &unclaimed,
            Emitter::Lifecycle,
            vec![
                "group_created {ORDINARY/UNCLAIMED,-}",
                "instance_created ORDINARY/UNCLAIMED",
            ],
        ),
        (
            "claim",
            &unclaimed,
            &claimed,
            Emitter::Lifecycle,
            vec![
                "group_changed {ORDINARY/UNCLAIMED,-} -> {ORDINARY/CLAIMED(a),-}",
                "instance_changed(a) ORDINARY/UNCLAIMED -> ORDINARY/CLAIMED",
            ],
        ),
        (
            "start of a claimed instance",
            &claimed,
            &running_a,
            Emitter::Lifecycle,
            vec![
                "group_changed {ORDINARY/CLAIMED(a),-} -> {ORDINARY/RUNNING(a),-}",
                "instance_changed(a) ORDINARY/CLAIMED -> ORDINARY/RUNNING",
            ],
        ),
        (
            "start by another cell than the claim's: one instance changed, a new group",
            &claimed_by_b,
            &running_a,
            Emitter::Lifecycle,
            vec![
                "group_created {ORDINARY/RUNNING(a),-}",
                "group_removed {ORDINARY/CLAIMED(b),-}",
                "instance_changed(a) ORDINARY/CLAIMED -> ORDINARY/RUNNING",
            ],
        ),
        (
            "crash with an immediate restart",
            &running_a,
            &restarted,
            Emitter::Crash,
            vec![
                "group_crashed(a) count 1",
                "group_changed {ORDINARY/RUNNING(a),-} -> {ORDINARY/UNCLAIMED,-}",
                "crashed(a) count 1",
                "instance_created ORDINARY/UNCLAIMED",
                "instance_removed ORDINARY/RUNNING(a)",
            ],
        ),
        (
            "crash to CRASHED: the same row changed",
            &crashing,
            &crashed_for_good,
            Emitter::Crash,
            vec![
                "group_crashed(a) count 4",
                "group_changed {ORDINARY/RUNNING(a),-} -> {ORDINARY/CRASHED,-}",
                "crashed(a) count 4",
                "instance_changed(a) ORDINARY/RUNNING -> ORDINARY/CRASHED",
            ],
        ),
        (
            "rolling evacuation: the instance moves to the evacuating slot",
            &evac_before,
            &evac_after,
            evac_emitter,
            vec![
                "group_created {-,EVACUATING/RUNNING(a)}",
                "group_changed {ORDINARY/RUNNING(a),-} -> {ORDINARY/UNCLAIMED,-}",
                "instance_changed(a) ORDINARY/RUNNING -> EVACUATING/RUNNING",
                "instance_created ORDINARY/UNCLAIMED",
            ],
        ),
        (
            "remove evacuating",
            &evac_after,
            &removed_evacuating,
            Emitter::Lifecycle,
            vec![
                "group_removed {-,EVACUATING/RUNNING(a)}",
                "instance_removed EVACUATING/RUNNING(a)",
            ],
        ),
        (
            "the replacement starts: the evacuating row goes",
            &evac_after,
            &replacement_running,
            Emitter::Lifecycle,
            vec![
                "group_changed {ORDINARY/UNCLAIMED,-} -> {ORDINARY/RUNNING(b),-}",
                "group_removed {-,EVACUATING/RUNNING(a)}",
                "instance_changed(b) ORDINARY/UNCLAIMED -> ORDINARY/RUNNING",
                "instance_removed EVACUATING/RUNNING(a)",
            ],
        ),
        (
            "an unstarted instance deleted while an evacuating row exists",
            &evac_after,
            &desired_removed,
            Emitter::Direct(Direct::Removed),
            vec![
                "group_removed {ORDINARY/UNCLAIMED,-}",
                "instance_removed ORDINARY/UNCLAIMED",
            ],
        ),
        (
            "evacuate-running creates an evacuating row for an instance it does not hold",
            &unclaimed,
            fresh_evacuating.after.as_ref().unwrap(),
            fresh_evacuating.emitter,
            vec![
                "group_created {-,EVACUATING/RUNNING(z)}",
                "instance_created EVACUATING/RUNNING(z)",
            ],
        ),
        (
            "evacuate-crashed with a restart: no crash event",
            &running_a,
            evacuated_crash.after.as_ref().unwrap(),
            evacuated_crash.emitter,
            vec![
                "group_changed {ORDINARY/RUNNING(a),-} -> {ORDINARY/UNCLAIMED,-}",
                "instance_created ORDINARY/UNCLAIMED",
                "instance_removed ORDINARY/RUNNING(a)",
            ],
        ),
        (
            "removal",
            &unclaimed,
            &nothing,
            Emitter::Lifecycle,
            vec![
                "group_removed {ORDINARY/UNCLAIMED,-}",
                "instance_removed ORDINARY/UNCLAIMED",
            ],
        ),
    ];
    for (name, before, after, emitter, want) in rows {
        assert_eq!(describe(&events(before, after, emitter)), want, "{name}");
    }
}

#[test]
fn a_crash_event_names_the_instance_that_crashed() {
    let running_a = running_on("a", "c1");
    let after = crash(&running_a, &key(), &ik("a", "c1"), "oom", 9)
        .unwrap()
        .unwrap()
        .after;
    let events = events(&running_a, &after, Emitter::Crash);
    let crashed: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            Event::ActualLrpCrashed(c) => Some(c),
            _ => None,
        })
        .collect();
    assert_eq!(crashed.len(), 1);
    assert_eq!(crashed[0].actual_lrp_instance_key, Some(ik("a", "c1")));
    assert_eq!(crashed[0].actual_lrp_key, Some(key()));
    assert_eq!(crashed[0].crash_reason, "oom");
}

#[test]
fn an_evacuation_change_keeps_the_instance_key() {
    let (before, after, emitter) = evacuated("a", "c1");
    let events = events(&before, &after, emitter);
    let Some(Event::ActualLrpInstanceChanged(changed)) = events
        .iter()
        .find(|e| matches!(e, Event::ActualLrpInstanceChanged(_)))
    else {
        panic!("no instance change in {events:?}");
    };
    assert_eq!(changed.actual_lrp_instance_key, Some(ik("a", "c1")));
    assert_eq!(changed.actual_lrp_key, Some(key()));
}

#[test]
fn convergence_emits_by_hand() {
    let running_a = running_on("a", "c1");
    let mut suspected = running_a.clone();
    let mut suspect = suspected.ordinary.take().unwrap();
    suspect.presence = Presence::Suspect as i32;
    suspected.suspect = Some(suspect);
    suspected.ordinary = Some(unclaimed_row());
    assert_eq!(
        describe(&events(
            &running_a,
            &suspected,
            Emitter::Direct(Direct::Suspected)
        )),
        [
            "instance_changed(a) ORDINARY/RUNNING -> SUSPECT/RUNNING",
            "instance_created ORDINARY/UNCLAIMED",
        ]
    );
    let mut promoted = suspected.clone();
    let mut back = promoted.suspect.take().unwrap();
    back.presence = Presence::Ordinary as i32;
    promoted.ordinary = Some(back);
    assert_eq!(
        describe(&events(
            &suspected,
            &promoted,
            Emitter::Direct(Direct::Promoted)
        )),
        [
            "group_removed {ORDINARY/UNCLAIMED,-}",
            "instance_removed ORDINARY/UNCLAIMED",
            "instance_changed(a) SUSPECT/RUNNING -> ORDINARY/RUNNING",
        ]
    );
}
