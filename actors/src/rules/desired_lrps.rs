//! Desired LRP shapes (bbs-reference §2.5, §3.7): the API's DesiredLRP split into the
//! scheduling info (read in bulk) and the run info (read rarely, stored apart), rebuilt for
//! reads, updated field by field, and presented to older clients.

// The split and downgrade carry upstream's deprecated fields through.
#![allow(deprecated)]

use std::collections::BTreeMap;
use std::sync::Arc;

use bbs_models as m;
use bbs_models::desired_lrp_update as upd;
use prost::Message;

use crate::clock::Nanos;
use crate::rules::downgrade;

/// One desired LRP as the DesiredLRPActor holds it: the scheduling info decoded (bulk reads
/// want it), the run info as protobuf bytes (decoded only for full reads).
#[derive(Clone, Debug, PartialEq)]
pub struct DesiredEntry {
    /// Shared: the bulk reads (nsync, route emitters, convergence) hand out every LRP's
    /// scheduling info, and a shared one costs them a pointer rather than a deep copy.
    pub scheduling: Arc<m::DesiredLrpSchedulingInfo>,
    pub run_info: PackedRunInfo,
    /// Shared with convergence's view of the LRP (actors/src/desired_lrps.rs).
    pub metric_tags: Arc<BTreeMap<String, m::MetricTagValue>>,
    pub update_strategy: i32,
}

/// A run info kept as its protobuf encoding. The BBS holds one per LRP but reads it only for
/// full desired LRP reads and events; decoded, the nested actions cost about 9 KB per LRP
/// against about 1 KB packed (measured with massif on the benchmark's payload).
#[derive(Clone, Debug, PartialEq, Default)]
pub struct PackedRunInfo(Arc<[u8]>);

impl PackedRunInfo {
    pub fn pack(info: &m::DesiredLrpRunInfo) -> Self {
        PackedRunInfo(info.encode_to_vec().into())
    }

    /// The bytes come only from `pack`, so they always decode; a default is the unreachable
    /// fallback rather than a panic on a request path.
    pub fn unpack(&self) -> m::DesiredLrpRunInfo {
        m::DesiredLrpRunInfo::decode(&*self.0).unwrap_or_default()
    }

    /// The protobuf encoding, as stored.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// Changes the run info in place (a rare path: image credential updates).
    pub fn modify(&mut self, change: impl FnOnce(&mut m::DesiredLrpRunInfo)) {
        let mut info = self.unpack();
        change(&mut info);
        *self = Self::pack(&info);
    }
}

impl DesiredEntry {
    pub fn process_guid(&self) -> &str {
        self.scheduling
            .desired_lrp_key
            .as_ref()
            .map(|k| k.process_guid.as_str())
            .unwrap_or_default()
    }

    pub fn domain(&self) -> &str {
        self.scheduling
            .desired_lrp_key
            .as_ref()
            .map(|k| k.domain.as_str())
            .unwrap_or_default()
    }

    pub fn instances(&self) -> i32 {
        self.scheduling.instances
    }
}

/// Splits a newly desired LRP; the modification tag starts at `epoch`/0 and the run info
/// records `now` as its creation time.
pub fn split(lrp: &m::DesiredLrp, epoch: String, now: Nanos) -> DesiredEntry {
    let key = m::DesiredLrpKey {
        process_guid: lrp.process_guid.clone(),
        domain: lrp.domain.clone(),
        log_guid: lrp.log_guid.clone(),
    };
    let scheduling = m::DesiredLrpSchedulingInfo {
        desired_lrp_key: Some(key.clone()),
        annotation: lrp.annotation.clone(),
        instances: lrp.instances,
        desired_lrp_resource: Some(m::DesiredLrpResource {
            memory_mb: lrp.memory_mb,
            disk_mb: lrp.disk_mb,
            root_fs: lrp.root_fs.clone(),
            max_pids: lrp.max_pids,
        }),
        routes: Some(
            lrp.routes
                .as_ref()
                .map(super::routes::as_stored)
                .unwrap_or_default(),
        ),
        modification_tag: Some(m::ModificationTag { epoch, index: 0 }),
        volume_placement: Some(m::VolumePlacement {
            driver_names: lrp.volume_mounts.iter().map(|v| v.driver.clone()).collect(),
        }),
        placement_tags: lrp.placement_tags.clone(),
    };
    let run_info = m::DesiredLrpRunInfo {
        desired_lrp_key: Some(key),
        environment_variables: lrp.environment_variables.clone(),
        setup: lrp.setup.clone(),
        action: lrp.action.clone(),
        monitor: lrp.monitor.clone(),
        deprecated_start_timeout_s: 0,
        privileged: lrp.privileged,
        cpu_weight: lrp.cpu_weight,
        ports: lrp.ports.clone(),
        egress_rules: lrp.egress_rules.clone(),
        log_source: lrp.log_source.clone(),
        metrics_guid: lrp.metrics_guid.clone(),
        created_at: now,
        cached_dependencies: lrp.cached_dependencies.clone(),
        legacy_download_user: lrp.legacy_download_user.clone(),
        trusted_system_certificates_path: lrp.trusted_system_certificates_path.clone(),
        volume_mounts: lrp.volume_mounts.clone(),
        network: lrp.network.clone(),
        start_timeout_ms: lrp.start_timeout_ms,
        certificate_properties: lrp.certificate_properties.clone(),
        image_username: lrp.image_username.clone(),
        image_password: lrp.image_password.clone(),
        check_definition: lrp.check_definition.clone(),
        image_layers: lrp.image_layers.clone(),
        metric_tags: BTreeMap::new(),
        sidecars: lrp.sidecars.clone(),
        log_rate_limit: lrp.log_rate_limit,
        volume_mounted_files: lrp.volume_mounted_files.clone(),
    };
    DesiredEntry {
        scheduling: Arc::new(scheduling),
        run_info: PackedRunInfo::pack(&run_info),
        metric_tags: Arc::new(lrp.metric_tags.clone()),
        update_strategy: lrp.update_strategy,
    }
}

/// The API's DesiredLRP from the stored halves. Duplicate ports are dropped, as upstream does.
pub fn rebuild(entry: &DesiredEntry) -> m::DesiredLrp {
    let s = &entry.scheduling;
    let r = &entry.run_info.unpack();
    let key = s.desired_lrp_key.clone().unwrap_or_default();
    let resource = s.desired_lrp_resource.clone().unwrap_or_default();
    let mut ports = Vec::with_capacity(r.ports.len());
    for port in &r.ports {
        if !ports.contains(port) {
            ports.push(*port);
        }
    }
    m::DesiredLrp {
        process_guid: key.process_guid,
        domain: key.domain,
        root_fs: resource.root_fs,
        instances: s.instances,
        environment_variables: r.environment_variables.clone(),
        setup: r.setup.clone(),
        action: r.action.clone(),
        start_timeout_ms: r.start_timeout_ms,
        deprecated_start_timeout_s: 0,
        monitor: r.monitor.clone(),
        disk_mb: resource.disk_mb,
        memory_mb: resource.memory_mb,
        cpu_weight: r.cpu_weight,
        privileged: r.privileged,
        ports,
        routes: Some(s.routes.clone().unwrap_or_default()),
        log_source: r.log_source.clone(),
        log_guid: key.log_guid,
        metrics_guid: r.metrics_guid.clone(),
        annotation: s.annotation.clone(),
        egress_rules: r.egress_rules.clone(),
        modification_tag: s.modification_tag.clone(),
        cached_dependencies: r.cached_dependencies.clone(),
        legacy_download_user: r.legacy_download_user.clone(),
        trusted_system_certificates_path: r.trusted_system_certificates_path.clone(),
        volume_mounts: r.volume_mounts.clone(),
        network: r.network.clone(),
        placement_tags: s.placement_tags.clone(),
        max_pids: resource.max_pids,
        certificate_properties: r.certificate_properties.clone(),
        image_username: r.image_username.clone(),
        image_password: r.image_password.clone(),
        check_definition: r.check_definition.clone(),
        image_layers: r.image_layers.clone(),
        metric_tags: (*entry.metric_tags).clone(),
        sidecars: r.sidecars.clone(),
        log_rate_limit: r.log_rate_limit,
        volume_mounted_files: r.volume_mounted_files.clone(),
        update_strategy: entry.update_strategy,
    }
}

/// Upstream's "populate metrics guid", applied to every full read.
pub fn populate_metrics_guid(mut lrp: m::DesiredLrp) -> m::DesiredLrp {
    match lrp.metric_tags.get("source_id") {
        Some(source) if lrp.metrics_guid.is_empty() => lrp.metrics_guid = source.r#static.clone(),
        None if !lrp.metrics_guid.is_empty() => {
            lrp.metric_tags.insert(
                "source_id".into(),
                m::MetricTagValue {
                    r#static: lrp.metrics_guid.clone(),
                    dynamic: 0,
                },
            );
        }
        _ => {}
    }
    lrp
}

/// The V2 shape for the deprecated r2 routes: image layers as cached dependencies and
/// downloads wrapped before `setup`.
pub fn to_v2(mut lrp: m::DesiredLrp) -> m::DesiredLrp {
    let setup = lrp.setup.take();
    let user = lrp.legacy_download_user.clone();
    lrp.setup = downgrade::image_layers(
        &mut lrp.image_layers,
        &mut lrp.cached_dependencies,
        setup,
        &user,
    );
    lrp
}

/// The routing-info projection: only what the route emitter needs.
pub fn routing_info(entry: &DesiredEntry) -> m::DesiredLrp {
    let key = entry.scheduling.desired_lrp_key.clone().unwrap_or_default();
    m::DesiredLrp {
        process_guid: key.process_guid,
        domain: key.domain,
        log_guid: key.log_guid,
        instances: entry.scheduling.instances,
        routes: Some(entry.scheduling.routes.clone().unwrap_or_default()),
        modification_tag: entry.scheduling.modification_tag.clone(),
        metric_tags: (*entry.metric_tags).clone(),
        ..Default::default()
    }
}

/// What an update changed, for the follow-up work (scaling, rep updates).
#[derive(Clone, Debug, PartialEq)]
pub struct Updated {
    pub before: DesiredEntry,
    pub after: DesiredEntry,
    pub instances_changed: bool,
    pub internal_routes_changed: bool,
    pub metric_tags_changed: bool,
}

pub const INTERNAL_ROUTER: &str = "internal-router";

/// UpdateDesiredLRP on the stored entry: only present fields change, and the modification
/// index always moves on.
pub fn update(entry: &DesiredEntry, update: &m::DesiredLrpUpdate) -> Updated {
    let mut after = entry.clone();
    let s = Arc::make_mut(&mut after.scheduling);
    let tag = s.modification_tag.get_or_insert_with(Default::default);
    tag.index = tag.index.wrapping_add(1);
    if let Some(upd::OptionalAnnotation::Annotation(annotation)) = &update.optional_annotation {
        s.annotation = annotation.clone();
    }
    let instances_changed = match update.optional_instances {
        Some(upd::OptionalInstances::Instances(n)) => {
            s.instances = n;
            true
        }
        None => false,
    };
    if let Some(routes) = &update.routes {
        s.routes = Some(super::routes::as_stored(routes));
    }
    let metric_tags_changed =
        !update.metric_tags.is_empty() && update.metric_tags != *entry.metric_tags;
    if !update.metric_tags.is_empty() {
        after.metric_tags = Arc::new(update.metric_tags.clone());
    }
    if let Some(upd::OptionalImageUsername::ImageUsername(username)) =
        &update.optional_image_username
    {
        after
            .run_info
            .modify(|r| r.image_username = username.clone());
    }
    if let Some(upd::OptionalImagePassword::ImagePassword(password)) =
        &update.optional_image_password
    {
        after
            .run_info
            .modify(|r| r.image_password = password.clone());
    }
    let internal_routes_changed = match &update.routes {
        None => false,
        Some(new_routes) => {
            let old = entry
                .scheduling
                .routes
                .as_ref()
                .and_then(|r| r.routes.get(INTERNAL_ROUTER));
            let new = new_routes.routes.get(INTERNAL_ROUTER);
            match (old, new) {
                // Upstream's quirk: a routes update with no internal routes on either side
                // still counts as a change.
                (None, None) => true,
                (Some(a), Some(b)) => a != b,
                _ => true,
            }
        }
    };
    Updated {
        before: entry.clone(),
        after,
        instances_changed,
        internal_routes_changed,
        metric_tags_changed,
    }
}

/// Internal routes in an `internal-router` route value: `[{"hostname": ...}]`.
pub fn internal_routes(routes: Option<&m::ProtoRoutes>) -> Option<Vec<m::ActualLrpInternalRoute>> {
    #[derive(serde::Deserialize)]
    struct Hostname {
        hostname: String,
    }
    let raw = routes?.routes.get(INTERNAL_ROUTER)?;
    let parsed: Vec<Hostname> = serde_json::from_slice(raw).ok()?;
    Some(
        parsed
            .into_iter()
            .map(|h| m::ActualLrpInternalRoute {
                hostname: h.hostname,
            })
            .collect(),
    )
}

/// Desired metric tags resolved for one instance: static values, or the index or instance
/// guid for dynamic ones.
pub fn resolve_metric_tags(
    tags: &BTreeMap<String, m::MetricTagValue>,
    index: i32,
    instance_guid: &str,
) -> BTreeMap<String, String> {
    tags.iter()
        .map(|(name, value)| {
            let resolved = match value.dynamic {
                1 => index.to_string(),
                2 => instance_guid.to_owned(),
                _ => value.r#static.clone(),
            };
            (name.clone(), resolved)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lrp() -> m::DesiredLrp {
        let mut tags = BTreeMap::new();
        tags.insert(
            "source_id".to_owned(),
            m::MetricTagValue {
                r#static: "app".into(),
                dynamic: 0,
            },
        );
        m::DesiredLrp {
            process_guid: "web".into(),
            domain: "cf-apps".into(),
            log_guid: "log".into(),
            root_fs: "preloaded:cflinuxfs4".into(),
            instances: 3,
            memory_mb: 256,
            disk_mb: 1024,
            max_pids: 100,
            ports: vec![8080, 8080, 9090],
            annotation: "a".into(),
            placement_tags: vec!["t".into()],
            metric_tags: tags,
            volume_mounts: vec![m::VolumeMount {
                driver: "nfs".into(),
                mode: "rw".into(),
                ..Default::default()
            }],
            start_timeout_ms: 60_000,
            update_strategy: 1,
            ..Default::default()
        }
    }

    #[test]
    fn split_and_rebuild_round_trip() {
        let entry = split(&lrp(), "epoch".into(), 42);
        assert_eq!(
            entry
                .scheduling
                .volume_placement
                .as_ref()
                .unwrap()
                .driver_names,
            ["nfs"]
        );
        assert_eq!(entry.run_info.unpack().created_at, 42);
        let rebuilt = rebuild(&entry);
        let mut expected = lrp();
        expected.ports = vec![8080, 9090];
        expected.routes = Some(Default::default());
        expected.modification_tag = Some(m::ModificationTag {
            epoch: "epoch".into(),
            index: 0,
        });
        assert_eq!(rebuilt, expected);
    }

    #[test]
    fn metrics_guid_is_filled_both_ways() {
        let from_tags = populate_metrics_guid(lrp());
        assert_eq!(from_tags.metrics_guid, "app");
        let mut from_guid = lrp();
        from_guid.metric_tags.clear();
        from_guid.metrics_guid = "mg".into();
        assert_eq!(
            populate_metrics_guid(from_guid).metric_tags["source_id"].r#static,
            "mg"
        );
    }

    #[test]
    fn an_empty_update_still_bumps_the_modification_index() {
        let entry = split(&lrp(), "e".into(), 0);
        let updated = update(&entry, &Default::default());
        assert_eq!(
            updated
                .after
                .scheduling
                .modification_tag
                .as_ref()
                .unwrap()
                .index,
            1
        );
        assert!(
            !updated.instances_changed
                && !updated.internal_routes_changed
                && !updated.metric_tags_changed
        );
    }

    #[test]
    fn updates_change_only_present_fields() {
        let entry = split(&lrp(), "e".into(), 0);
        let mut routes = m::ProtoRoutes::default();
        routes.routes.insert("cf-router".into(), b"[]".to_vec());
        let updated = update(
            &entry,
            &m::DesiredLrpUpdate {
                optional_instances: Some(upd::OptionalInstances::Instances(5)),
                routes: Some(routes.clone()),
                ..Default::default()
            },
        );
        assert_eq!(updated.after.scheduling.instances, 5);
        assert_eq!(updated.after.scheduling.routes, Some(routes));
        assert_eq!(updated.after.scheduling.annotation, "a");
        assert!(updated.instances_changed);
        assert!(
            updated.internal_routes_changed,
            "upstream's quirk: absent on both sides counts"
        );
    }

    #[test]
    fn internal_routes_and_metric_tags_resolve() {
        let mut routes = m::ProtoRoutes::default();
        routes.routes.insert(
            INTERNAL_ROUTER.into(),
            br#"[{"hostname":"a.apps.internal"}]"#.to_vec(),
        );
        assert_eq!(
            internal_routes(Some(&routes)).unwrap(),
            [m::ActualLrpInternalRoute {
                hostname: "a.apps.internal".into()
            }]
        );
        let mut tags = BTreeMap::new();
        tags.insert(
            "i".to_owned(),
            m::MetricTagValue {
                r#static: String::new(),
                dynamic: 1,
            },
        );
        tags.insert(
            "g".to_owned(),
            m::MetricTagValue {
                r#static: String::new(),
                dynamic: 2,
            },
        );
        tags.insert(
            "s".to_owned(),
            m::MetricTagValue {
                r#static: "x".into(),
                dynamic: 0,
            },
        );
        let resolved = resolve_metric_tags(&tags, 3, "ig");
        assert_eq!(
            (
                resolved["i"].as_str(),
                resolved["g"].as_str(),
                resolved["s"].as_str()
            ),
            ("3", "ig", "x")
        );
    }
}
