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
}
