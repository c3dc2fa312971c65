//! Payload downgrades for deprecated routes (bbs-reference §2.11): older clients do not know
//! image layers, so they get them as cached dependencies and download actions.

// The downgraded shapes are made of fields upstream has deprecated.
#![allow(deprecated)]

use bbs_models as m;
use bbs_models::image_layer::{DigestAlgorithm, Type};

fn algorithm_name(algorithm: i32) -> &'static str {
    match DigestAlgorithm::try_from(algorithm) {
        Ok(DigestAlgorithm::Sha256) => "sha256",
        Ok(DigestAlgorithm::Sha512) => "sha512",
        _ => "",
    }
}

fn cache_key(layer: &m::ImageLayer) -> String {
    format!(
        "{}:{}",
        algorithm_name(layer.digest_algorithm),
        layer.digest_value
    )
}

fn shared_as_dependency(layer: &m::ImageLayer) -> m::CachedDependency {
    m::CachedDependency {
        name: layer.name.clone(),
        from: layer.url.clone(),
        to: layer.destination_path.clone(),
        cache_key: if layer.digest_value.is_empty() {
            layer.url.clone()
        } else {
            cache_key(layer)
        },
        log_source: String::new(),
        checksum_algorithm: algorithm_name(layer.digest_algorithm).to_owned(),
        checksum_value: layer.digest_value.clone(),
    }
}

fn exclusive_as_download(layer: &m::ImageLayer, user: &str) -> m::Action {
    m::Action {
        download_action: Some(m::DownloadAction {
            artifact: layer.name.clone(),
            from: layer.url.clone(),
            to: layer.destination_path.clone(),
            cache_key: cache_key(layer),
            log_source: String::new(),
            user: user.to_owned(),
            checksum_algorithm: algorithm_name(layer.digest_algorithm).to_owned(),
            checksum_value: layer.digest_value.clone(),
        }),
        ..Default::default()
    }
}

/// Image layers become cached dependencies (shared) and downloads run before `action`
/// (exclusive); returns the new action.
pub fn image_layers(
    layers: &mut Vec<m::ImageLayer>,
    cached_dependencies: &mut Vec<m::CachedDependency>,
    action: Option<m::Action>,
    legacy_download_user: &str,
) -> Option<m::Action> {
    if layers.is_empty() {
        return action;
    }
    let layers = std::mem::take(layers);
    let shared: Vec<m::CachedDependency> = layers
        .iter()
        .filter(|l| l.layer_type == Type::Shared as i32)
        .map(shared_as_dependency)
        .collect();
    cached_dependencies.splice(0..0, shared);
    let downloads: Vec<m::Action> = layers
        .iter()
        .filter(|l| l.layer_type == Type::Exclusive as i32)
        .map(|l| exclusive_as_download(l, legacy_download_user))
        .collect();
    if downloads.is_empty() {
        return action;
    }
    let parallel = m::Action {
        parallel_action: Some(m::ParallelAction {
            actions: downloads,
            log_source: String::new(),
        }),
        ..Default::default()
    };
    Some(match action {
        None => parallel,
        Some(original) => m::Action {
            serial_action: Some(m::SerialAction {
                actions: vec![parallel, original],
                log_source: String::new(),
            }),
            ..Default::default()
        },
    })
}

/// A task as the r2 routes and the r0 task stream present it.
pub fn task_to_v2(mut task: m::Task) -> m::Task {
    if let Some(d) = task.task_definition.as_mut() {
        let action = d.action.take();
        d.action = image_layers(
            &mut d.image_layers,
            &mut d.cached_dependencies,
            action,
            &d.legacy_download_user.clone(),
        );
    }
    task
}

/// An action tree as upstream's V0 downgrade leaves it: every TimeoutAction also carries its
/// timeout as `deprecated_timeout_ns`. Upstream's quirks are kept, since V0 clients were built
/// against them: an EmitProgressAction or TryAction is replaced by its (downgraded) inner
/// action, and the action inside a TimeoutAction is left as it was.
pub fn action_to_v0(action: m::Action) -> Option<m::Action> {
    // Upstream reads the first set field, in field order.
    if action.download_action.is_some()
        || action.upload_action.is_some()
        || action.run_action.is_some()
    {
        return Some(action);
    }
    if let Some(mut timeout) = action.timeout_action {
        timeout.deprecated_timeout_ns = timeout.timeout_ms.saturating_mul(1_000_000);
        return Some(m::Action {
            timeout_action: Some(timeout),
            ..Default::default()
        });
    }
    if let Some(progress) = action.emit_progress_action {
        return progress.action.and_then(|inner| action_to_v0(*inner));
    }
    if let Some(attempt) = action.try_action {
        return attempt.action.and_then(|inner| action_to_v0(*inner));
    }
    let each = |actions: Vec<m::Action>| -> Vec<m::Action> {
        actions.into_iter().filter_map(action_to_v0).collect()
    };
    if let Some(mut parallel) = action.parallel_action {
        parallel.actions = each(parallel.actions);
        return Some(m::Action {
            parallel_action: Some(parallel),
            ..Default::default()
        });
    }
    if let Some(mut serial) = action.serial_action {
        serial.actions = each(serial.actions);
        return Some(m::Action {
            serial_action: Some(serial),
            ..Default::default()
        });
    }
    if let Some(mut codependent) = action.codependent_action {
        codependent.actions = each(codependent.actions);
        return Some(m::Action {
            codependent_action: Some(codependent),
            ..Default::default()
        });
    }
    Some(action)
}

/// A V2 desired LRP as the r0 event streams present it (V1 to V0): timeouts also in their
/// deprecated units, and cached dependencies as parallel downloads run before `setup`.
pub fn desired_v2_to_v0(mut lrp: m::DesiredLrp) -> m::DesiredLrp {
    lrp.action = lrp.action.take().and_then(action_to_v0);
    lrp.setup = lrp.setup.take().and_then(action_to_v0);
    lrp.monitor = lrp.monitor.take().and_then(action_to_v0);
    // Upstream converts through uint32 before dividing.
    lrp.deprecated_start_timeout_s = (lrp.start_timeout_ms as u32) / 1000;
    if !lrp.cached_dependencies.is_empty() {
        let user = lrp.legacy_download_user.clone();
        let downloads = std::mem::take(&mut lrp.cached_dependencies)
            .into_iter()
            .map(|dependency| m::Action {
                download_action: Some(m::DownloadAction {
                    artifact: dependency.name,
                    from: dependency.from,
                    to: dependency.to,
                    cache_key: dependency.cache_key,
                    log_source: dependency.log_source,
                    user: user.clone(),
                    ..Default::default()
                }),
                ..Default::default()
            })
            .collect();
        let parallel = m::Action {
            parallel_action: Some(m::ParallelAction {
                actions: downloads,
                log_source: String::new(),
            }),
            ..Default::default()
        };
        let mut actions = vec![parallel];
        actions.extend(lrp.setup.take());
        lrp.setup = Some(m::Action {
            serial_action: Some(m::SerialAction {
                actions,
                log_source: String::new(),
            }),
            ..Default::default()
        });
    }
    lrp
}

#[cfg(test)]
mod tests {
    use super::*;
    use bbs_models::image_layer::MediaType;

    fn layer(name: &str, kind: Type, digest: &str) -> m::ImageLayer {
        m::ImageLayer {
            name: name.into(),
            url: format!("http://x/{name}"),
            destination_path: format!("/{name}"),
            layer_type: kind as i32,
            media_type: MediaType::Tgz as i32,
            digest_algorithm: if digest.is_empty() {
                0
            } else {
                DigestAlgorithm::Sha256 as i32
            },
            digest_value: digest.into(),
        }
    }

    fn run() -> m::Action {
        m::Action {
            run_action: Some(m::RunAction {
                path: "/bin/app".into(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn a_task_without_layers_is_unchanged() {
        let task = m::Task {
            task_definition: Some(m::TaskDefinition {
                action: Some(run()),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(task_to_v2(task.clone()), task);
    }

    #[test]
    fn shared_layers_become_leading_cached_dependencies() {
        let task = m::Task {
            task_definition: Some(m::TaskDefinition {
                action: Some(run()),
                image_layers: vec![layer("a", Type::Shared, "d1"), layer("b", Type::Shared, "")],
                cached_dependencies: vec![m::CachedDependency {
                    name: "old".into(),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..Default::default()
        };
        let d = task_to_v2(task).task_definition.unwrap();
        assert!(d.image_layers.is_empty());
        assert_eq!(d.action, Some(run()));
        let names: Vec<&str> = d
            .cached_dependencies
            .iter()
            .map(|c| c.name.as_str())
            .collect();
        assert_eq!(names, ["a", "b", "old"]);
        assert_eq!(d.cached_dependencies[0].cache_key, "sha256:d1");
        assert_eq!(d.cached_dependencies[0].checksum_algorithm, "sha256");
        assert_eq!(d.cached_dependencies[1].cache_key, "http://x/b");
        assert_eq!(d.cached_dependencies[1].checksum_algorithm, "");
    }

    #[test]
    fn exclusive_layers_download_before_the_action() {
        let task = m::Task {
            task_definition: Some(m::TaskDefinition {
                action: Some(run()),
                legacy_download_user: "vcap".into(),
                image_layers: vec![layer("e", Type::Exclusive, "d2")],
                ..Default::default()
            }),
            ..Default::default()
        };
        let d = task_to_v2(task).task_definition.unwrap();
        let serial = d.action.unwrap().serial_action.unwrap();
        assert_eq!(serial.actions[1], run());
        let parallel = serial.actions[0].parallel_action.as_ref().unwrap();
        let download = parallel.actions[0].download_action.as_ref().unwrap();
        assert_eq!(
            (
                download.artifact.as_str(),
                download.user.as_str(),
                download.cache_key.as_str()
            ),
            ("e", "vcap", "sha256:d2")
        );
    }

    fn timeout(ms: i64, inner: m::Action) -> m::Action {
        m::Action {
            timeout_action: Some(Box::new(m::TimeoutAction {
                action: Some(Box::new(inner)),
                timeout_ms: ms,
                ..Default::default()
            })),
            ..Default::default()
        }
    }

    #[test]
    fn v0_timeouts_carry_nanoseconds_and_wrappers_unwrap_as_upstream() {
        let inner_timeout = timeout(5, run());
        let monitor = m::Action {
            emit_progress_action: Some(Box::new(m::EmitProgressAction {
                action: Some(Box::new(m::Action {
                    try_action: Some(Box::new(m::TryAction {
                        action: Some(Box::new(m::Action {
                            serial_action: Some(m::SerialAction {
                                actions: vec![timeout(10_000, inner_timeout.clone()), run()],
                                log_source: String::new(),
                            }),
                            ..Default::default()
                        })),
                        ..Default::default()
                    })),
                    ..Default::default()
                })),
                start_message: "s".into(),
                ..Default::default()
            })),
            ..Default::default()
        };
        let lrp = desired_v2_to_v0(m::DesiredLrp {
            monitor: Some(monitor),
            start_timeout_ms: 61_999,
            ..Default::default()
        });
        assert_eq!(lrp.deprecated_start_timeout_s, 61);
        let monitor = lrp.monitor.unwrap();
        // Emit-progress and try are gone; the serial is what is left.
        assert!(monitor.emit_progress_action.is_none() && monitor.try_action.is_none());
        let serial = monitor.serial_action.unwrap();
        let outer = serial.actions[0].timeout_action.as_ref().unwrap();
        assert_eq!(outer.deprecated_timeout_ns, 10_000_000_000);
        // The action inside a timeout is left as it was (upstream does not recurse there).
        let nested = outer
            .action
            .as_ref()
            .unwrap()
            .timeout_action
            .as_ref()
            .unwrap();
        assert_eq!(nested.deprecated_timeout_ns, 0);
        assert_eq!(serial.actions[1], run());
    }

    #[test]
    fn v0_cached_dependencies_download_before_setup() {
        let dependency = m::CachedDependency {
            name: "buildpack".into(),
            from: "http://x/bp.tgz".into(),
            to: "/tmp/bp".into(),
            cache_key: "bp".into(),
            log_source: "LOG".into(),
            checksum_algorithm: "sha256".into(),
            checksum_value: "abc".into(),
        };
        let lrp = desired_v2_to_v0(m::DesiredLrp {
            cached_dependencies: vec![dependency],
            setup: Some(run()),
            legacy_download_user: "vcap".into(),
            ..Default::default()
        });
        assert!(lrp.cached_dependencies.is_empty());
        let serial = lrp.setup.unwrap().serial_action.unwrap();
        assert_eq!(serial.actions.len(), 2);
        let download = serial.actions[0].parallel_action.as_ref().unwrap().actions[0]
            .download_action
            .clone()
            .unwrap();
        assert_eq!(
            (
                download.artifact.as_str(),
                download.user.as_str(),
                download.cache_key.as_str()
            ),
            ("buildpack", "vcap", "bp")
        );
        // Upstream's V0 download carries no checksum.
        assert!(download.checksum_value.is_empty());
        assert_eq!(serial.actions[1], run());
        // Without dependencies, setup is untouched.
        let plain = desired_v2_to_v0(m::DesiredLrp {
            setup: Some(run()),
            ..Default::default()
        });
        assert_eq!(plain.setup, Some(run()));
    }
}
