//! Evacuation (bbs-reference §3.6): a draining cell's rep hands its instances over. Each
//! function takes the instance's rows and the request and answers the next rows (or none to
//! keep them), whether the rep should keep its container running, and whether the instance
//! needs an auction.

use bbs_models as m;
use bbs_models::actual_lrp::{OptionalRoutable, Presence};

use crate::clock::Nanos;
use crate::error::BbsError;
use crate::rules::actual_lrps::{
    bump, crash, instance_key_of, presence_of, Instance, Running, CLAIMED, CRASHED, RUNNING,
    UNCLAIMED,
};
use crate::rules::lrp_events::Emitter;

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Evacuated {
    pub after: Option<Instance>,
    pub keep_container: bool,
    pub auction: bool,
    /// How upstream reports the change (its general emitter unless said otherwise).
    pub emitter: Emitter,
}

fn without(instance: &Instance, presence: Presence) -> Instance {
    let mut next = instance.clone();
    *next.slot_mut(presence) = None;
    next
}

/// Upstream's unclaim: back to UNCLAIMED with no instance key or net info.
fn unclaim(lrp: &m::ActualLrp, now: Nanos) -> Result<m::ActualLrp, BbsError> {
    if lrp.state == UNCLAIMED {
        return Err(BbsError::CannotUnclaim);
    }
    let mut next = lrp.clone();
    next.state = UNCLAIMED.into();
    next.actual_lrp_instance_key = Some(Default::default());
    next.actual_lrp_net_info = Some(Default::default());
    next.since = now;
    bump(&mut next);
    Ok(next)
}

fn target(instance: &Instance, ik: &m::ActualLrpInstanceKey) -> Option<(Presence, m::ActualLrp)> {
    instance
        .matching(ik)
        .map(|row| (presence_of(row), row.clone()))
}

pub fn remove_evacuating(
    instance: &Instance,
    ik: &m::ActualLrpInstanceKey,
) -> Result<Instance, BbsError> {
    match target(instance, ik) {
        Some((Presence::Evacuating, _)) => Ok(without(instance, Presence::Evacuating)),
        _ => Err(BbsError::NotFound),
    }
}

pub fn evacuate_claimed(
    instance: &Instance,
    ik: &m::ActualLrpInstanceKey,
    now: Nanos,
) -> Result<Evacuated, (bool, BbsError)> {
    match target(instance, ik) {
        None => Err((false, BbsError::NotFound)),
        Some((Presence::Ordinary, row)) => {
            let next = unclaim(&row, now).map_err(|e| (true, e))?;
            let mut after = instance.clone();
            after.ordinary = Some(next);
            Ok(Evacuated {
                after: Some(after),
                keep_container: false,
                auction: true,
                ..Default::default()
            })
        }
        Some((presence, _)) => Ok(Evacuated {
            after: Some(without(instance, presence)),
            ..Default::default()
        }),
    }
}

pub fn evacuate_crashed(
    instance: &Instance,
    key: &m::ActualLrpKey,
    ik: &m::ActualLrpInstanceKey,
    reason: &str,
    now: Nanos,
) -> Result<Evacuated, BbsError> {
    match target(instance, ik) {
        None => Err(BbsError::NotFound),
        Some((Presence::Ordinary, _)) => {
            // The crash rules apply, but upstream asks for no auction here.
            let crashed = crash(instance, key, ik, reason, now)?;
            Ok(Evacuated {
                after: crashed.map(|c| c.after),
                ..Default::default()
            })
        }
        Some((presence, _)) => Ok(Evacuated {
            after: Some(without(instance, presence)),
            ..Default::default()
        }),
    }
}

pub fn evacuate_stopped(
    instance: &Instance,
    ik: &m::ActualLrpInstanceKey,
) -> Result<Evacuated, BbsError> {
    match target(instance, ik) {
        None => Err(BbsError::NotFound),
        Some((presence, _)) => Ok(Evacuated {
            after: Some(without(instance, presence)),
            ..Default::default()
        }),
    }
}

/// What evacuate-running needs to know of the desired LRP.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DesiredForEvacuation {
    /// 0 rolling, 1 recreate.
    pub update_strategy: i32,
    pub instances: i32,
    /// Ordinary RUNNING instances of the LRP right now.
    pub running: i32,
}

fn evacuating_copy(from: &m::ActualLrp, now: Nanos, epoch: Option<String>) -> m::ActualLrp {
    let mut copy = from.clone();
    copy.presence = Presence::Evacuating as i32;
    copy.state = RUNNING.into();
    copy.since = now;
    if let Some(epoch) = epoch {
        copy.modification_tag = Some(m::ModificationTag { epoch, index: 0 });
    }
    copy
}

pub fn evacuate_running(
    instance: &Instance,
    running: &Running,
    desired: Option<DesiredForEvacuation>,
    now: Nanos,
    new_epoch: impl FnOnce() -> String,
) -> Evacuated {
    let keep = |keep_container: bool| Evacuated {
        keep_container,
        ..Default::default()
    };
    if instance.is_empty() {
        return keep(false);
    }
    let target = target(instance, &running.instance_key);
    let drop_target_evacuating = || {
        let after = match &target {
            Some((Presence::Evacuating, _)) => Some(without(instance, Presence::Evacuating)),
            _ => None,
        };
        Evacuated {
            after,
            ..Default::default()
        }
    };
    let replaced = instance.ordinary.as_ref().is_some_and(|o| {
        instance_key_of(o) != running.instance_key && (o.state == RUNNING || o.state == CRASHED)
    });
    let Some(desired) = desired.filter(|_| instance.ordinary.is_some() && !replaced) else {
        return drop_target_evacuating();
    };
    if desired.update_strategy == 1 {
        return match target {
            None => keep(false),
            Some((Presence::Evacuating, _)) => drop_target_evacuating(),
            Some((Presence::Suspect, _)) => Evacuated {
                after: Some(without(instance, Presence::Suspect)),
                ..Default::default()
            },
            Some((Presence::Ordinary, row)) if row.state == RUNNING || row.state == CLAIMED => {
                if desired.running < desired.instances {
                    return keep(true);
                }
                match unclaim(&row, now) {
                    Ok(next) => {
                        let mut after = instance.clone();
                        after.ordinary = Some(next);
                        Evacuated {
                            after: Some(after),
                            keep_container: false,
                            auction: true,
                            ..Default::default()
                        }
                    }
                    Err(_) => keep(false),
                }
            }
            Some(_) => keep(false),
        };
    }
    match target {
        None | Some((Presence::Evacuating, _)) => {
            if instance
                .evacuating
                .as_ref()
                .is_some_and(|e| instance_key_of(e) != running.instance_key)
            {
                return keep(false);
            }
            let mut row = instance.evacuating.clone().unwrap_or_else(|| {
                let base = instance.ordinary.clone().unwrap_or_default();
                evacuating_copy(&base, now, Some(new_epoch()))
            });
            let before = row.clone();
            row.actual_lrp_key = Some(running.key.clone());
            row.actual_lrp_instance_key = Some(running.instance_key.clone());
            row.actual_lrp_net_info = Some(running.net_info.clone());
            row.actual_lrp_internal_routes = running.internal_routes.clone();
            row.metric_tags = running.metric_tags.clone();
            row.optional_routable = Some(OptionalRoutable::Routable(running.routable));
            row.availability_zone = running.availability_zone.clone();
            row.state = RUNNING.into();
            row.presence = Presence::Evacuating as i32;
            if instance.evacuating.is_some() {
                if row == before {
                    return keep(true);
                }
                bump(&mut row);
            }
            let mut after = instance.clone();
            after.evacuating = Some(row);
            Evacuated {
                after: Some(after),
                keep_container: true,
                auction: false,
                emitter: Emitter::EvacuatingRecorded,
            }
        }
        Some((presence, row)) if row.state == RUNNING || row.state == CLAIMED => {
            let mut after = instance.clone();
            after.evacuating = Some(evacuating_copy(&row, now, Some(new_epoch())));
            if presence == Presence::Suspect {
                after.suspect = None;
                return Evacuated {
                    after: Some(after),
                    keep_container: true,
                    auction: false,
                    emitter: Emitter::Evacuated(Presence::Suspect),
                };
            }
            match unclaim(&row, now) {
                Ok(next) => {
                    after.ordinary = Some(next);
                    Evacuated {
                        after: Some(after),
                        keep_container: true,
                        auction: true,
                        emitter: Emitter::Evacuated(Presence::Ordinary),
                    }
                }
                Err(_) => keep(false),
            }
        }
        Some(_) => keep(false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::actual_lrps::new_unclaimed;

    fn k() -> m::ActualLrpKey {
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

    fn running_row(g: &str, c: &str) -> m::ActualLrp {
        let mut row = new_unclaimed(k(), 1, "e".into());
        row.state = RUNNING.into();
        row.actual_lrp_instance_key = Some(ik(g, c));
        row.actual_lrp_net_info = Some(m::ActualLrpNetInfo {
            address: "10.0.0.1".into(),
            ..Default::default()
        });
        row.optional_routable = Some(OptionalRoutable::Routable(true));
        row
    }

    fn request(g: &str, c: &str) -> Running {
        Running {
            key: k(),
            instance_key: ik(g, c),
            net_info: m::ActualLrpNetInfo {
                address: "10.0.0.1".into(),
                ..Default::default()
            },
            routable: true,
            ..Default::default()
        }
    }

    const ROLLING: Option<DesiredForEvacuation> = Some(DesiredForEvacuation {
        update_strategy: 0,
        instances: 1,
        running: 1,
    });

    #[test]
    fn rolling_evacuation_copies_the_instance_and_replaces_it() {
        let instance = Instance {
            ordinary: Some(running_row("a", "draining")),
            ..Default::default()
        };
        let out = evacuate_running(&instance, &request("a", "draining"), ROLLING, 5, || {
            "new".into()
        });
        assert!(out.keep_container && out.auction);
        let after = out.after.unwrap();
        assert_eq!(after.ordinary.as_ref().unwrap().state, UNCLAIMED);
        let evac = after.evacuating.unwrap();
        assert_eq!(
            (evac.state.as_str(), instance_key_of(&evac)),
            (RUNNING, ik("a", "draining"))
        );
        // Asked again with the same details: keep the container, change nothing.
        let again = evacuate_running(
            &Instance {
                evacuating: Some(evac.clone()),
                ordinary: after.ordinary.clone(),
                ..Default::default()
            },
            &request("a", "draining"),
            ROLLING,
            6,
            || unreachable!(),
        );
        assert_eq!((again.after.is_none(), again.keep_container), (true, true));
    }

    #[test]
    fn once_the_replacement_runs_the_evacuating_copy_goes() {
        let mut evac = running_row("a", "draining");
        evac.presence = Presence::Evacuating as i32;
        let instance = Instance {
            ordinary: Some(running_row("b", "fresh")),
            evacuating: Some(evac),
            ..Default::default()
        };
        let out = evacuate_running(
            &instance,
            &request("a", "draining"),
            ROLLING,
            5,
            || unreachable!(),
        );
        assert!(!out.keep_container);
        assert!(out.after.unwrap().evacuating.is_none());
    }

    #[test]
    fn recreate_waits_until_all_instances_run() {
        let instance = Instance {
            ordinary: Some(running_row("a", "draining")),
            ..Default::default()
        };
        let waiting = Some(DesiredForEvacuation {
            update_strategy: 1,
            instances: 2,
            running: 1,
        });
        let out = evacuate_running(
            &instance,
            &request("a", "draining"),
            waiting,
            5,
            || unreachable!(),
        );
        assert_eq!((out.keep_container, out.after.is_none()), (true, true));
        let ready = Some(DesiredForEvacuation {
            update_strategy: 1,
            instances: 1,
            running: 1,
        });
        let out = evacuate_running(
            &instance,
            &request("a", "draining"),
            ready,
            5,
            || unreachable!(),
        );
        assert!(!out.keep_container && out.auction);
        assert!(
            out.after.unwrap().evacuating.is_none(),
            "recreate never makes an evacuating copy"
        );
    }

    #[test]
    fn with_no_desired_lrp_or_no_rows_nothing_is_kept() {
        let instance = Instance {
            ordinary: Some(running_row("a", "c")),
            ..Default::default()
        };
        assert!(
            !evacuate_running(&instance, &request("a", "c"), None, 5, || unreachable!())
                .keep_container
        );
        assert!(
            !evacuate_running(
                &Instance::default(),
                &request("a", "c"),
                ROLLING,
                5,
                || unreachable!()
            )
            .keep_container
        );
    }

    #[test]
    fn claimed_crashed_stopped_and_remove() {
        let mut claimed = running_row("a", "c");
        claimed.state = CLAIMED.into();
        let instance = Instance {
            ordinary: Some(claimed),
            ..Default::default()
        };
        let out = evacuate_claimed(&instance, &ik("a", "c"), 5).unwrap();
        assert!(out.auction && !out.keep_container);
        assert_eq!(
            evacuate_claimed(&instance, &ik("z", "c"), 5).unwrap_err().1,
            BbsError::NotFound
        );
        let running = Instance {
            ordinary: Some(running_row("a", "c")),
            ..Default::default()
        };
        let crashed = evacuate_crashed(&running, &k(), &ik("a", "c"), "oom", 5).unwrap();
        assert!(!crashed.auction, "no auction on evacuate-crashed");
        assert_eq!(crashed.after.unwrap().ordinary.unwrap().crash_count, 1);
        assert!(evacuate_stopped(&running, &ik("a", "c"))
            .unwrap()
            .after
            .unwrap()
            .is_empty());
        let mut evac = running_row("a", "c");
        evac.presence = Presence::Evacuating as i32;
        let with_evac = Instance {
            evacuating: Some(evac),
            ..Default::default()
        };
        assert!(remove_evacuating(&with_evac, &ik("a", "c"))
            .unwrap()
            .is_empty());
        assert_eq!(
            remove_evacuating(&running, &ik("a", "c")).unwrap_err(),
            BbsError::NotFound
        );
    }
}
