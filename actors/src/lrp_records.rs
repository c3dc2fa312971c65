//! Conversions between the LRP models and the store's records, with every blob column
//! encoded by the codec (bbs-reference §6.3: routes and metric tags as JSON, the rest as
//! enveloped protobuf).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use bbs_models as m;
use bbs_store::{ActualLrpRecord, DesiredLrpRecord, DesiredLrpSchedulingRecord, Presence};

use crate::codec::Codec;
use crate::error::{BbsError, BbsResult};
use crate::rules::actual_lrps::{presence_of, routable_of};
use crate::rules::desired_lrps::{DesiredEntry, PackedRunInfo};
use serde_json::value::RawValue;

/// A metric tag value as upstream's JSON column holds it.
#[derive(Serialize, Deserialize, Default)]
struct MetricTagJson {
    #[serde(rename = "static", skip_serializing_if = "String::is_empty", default)]
    static_value: String,
    #[serde(skip_serializing_if = "String::is_empty", default)]
    dynamic: String,
}

fn dynamic_name(dynamic: i32) -> &'static str {
    match dynamic {
        1 => "INDEX",
        2 => "INSTANCE_GUID",
        _ => "",
    }
}

fn dynamic_value(name: &str) -> i32 {
    match name {
        "INDEX" => 1,
        "INSTANCE_GUID" => 2,
        _ => 0,
    }
}

/// Routes become one JSON object with each router's value inline, as upstream's
/// `json.Marshal` writes them; the entry holds them already in that form (`rules::routes`),
/// so they go in as they are. A value that is not JSON is refused, as upstream's insert
/// refuses it.
fn routes_json(routes: Option<&m::ProtoRoutes>) -> BbsResult<BTreeMap<&str, Box<RawValue>>> {
    routes
        .map(|r| &r.routes)
        .into_iter()
        .flatten()
        .map(|(router, raw)| {
            let value = String::from_utf8(raw.clone())
                .ok()
                .and_then(|json| RawValue::from_string(json).ok())
                .ok_or_else(|| {
                    BbsError::InvalidRequest("the request received is invalid".into())
                })?;
            Ok((router.as_str(), value))
        })
        .collect()
}

/// The routes column read back: each router's value exactly as stored, as upstream reads
/// it into a `json.RawMessage`. A column holding JSON of another shape reads as no routes.
fn routes_from_json(payload: &[u8]) -> BbsResult<m::ProtoRoutes> {
    let routes = match serde_json::from_slice::<Option<BTreeMap<String, Box<RawValue>>>>(payload) {
        Ok(routes) => routes.unwrap_or_default(),
        Err(e) if serde_json::from_slice::<serde::de::IgnoredAny>(payload).is_err() => {
            return Err(BbsError::Deserialize(format!("bad JSON: {e}")));
        }
        Err(_) => BTreeMap::new(),
    };
    Ok(m::ProtoRoutes {
        routes: routes
            .into_iter()
            .map(|(router, value)| (router, value.get().as_bytes().to_vec()))
            .collect(),
    })
}

/// A desired LRP's metric tags column: upstream's JSON (`{"name":{"static":"v"}}`, or
/// `{"dynamic":"INDEX"}`), encoded.
pub fn encode_metric_tags(codec: &Codec, tags: &BTreeMap<String, m::MetricTagValue>) -> String {
    let tags: BTreeMap<&String, MetricTagJson> = tags
        .iter()
        .map(|(k, v)| {
            (
                k,
                MetricTagJson {
                    static_value: v.r#static.clone(),
                    dynamic: dynamic_name(v.dynamic).to_owned(),
                },
            )
        })
        .collect();
    codec.encode_json(&tags)
}

pub fn desired_to_record(codec: &Codec, entry: &DesiredEntry) -> BbsResult<DesiredLrpRecord> {
    let s = &entry.scheduling;
    let key = s.desired_lrp_key.clone().unwrap_or_default();
    let resource = s.desired_lrp_resource.clone().unwrap_or_default();
    let tag = s.modification_tag.clone().unwrap_or_default();
    Ok(DesiredLrpRecord {
        scheduling: DesiredLrpSchedulingRecord {
            process_guid: key.process_guid,
            domain: key.domain,
            log_guid: key.log_guid,
            annotation: s.annotation.clone(),
            instances: s.instances,
            memory_mb: resource.memory_mb,
            disk_mb: resource.disk_mb,
            rootfs: resource.root_fs,
            routes: codec.encode_json(&routes_json(s.routes.as_ref())?),
            volume_placement: codec.encode_model(&s.volume_placement.clone().unwrap_or_default()),
            modification_tag_epoch: tag.epoch,
            modification_tag_index: tag.index as i32,
            placement_tags: (!s.placement_tags.is_empty())
                .then(|| serde_json::to_string(&s.placement_tags).unwrap_or_default()),
            max_pids: resource.max_pids,
            metric_tags: Some(encode_metric_tags(codec, &entry.metric_tags)),
            update_strategy: entry.update_strategy,
        },
        run_info: codec.encode_proto_body(entry.run_info.as_bytes()),
    })
}

pub fn scheduling_from_record(
    codec: &Codec,
    r: &DesiredLrpSchedulingRecord,
) -> BbsResult<(
    m::DesiredLrpSchedulingInfo,
    BTreeMap<String, m::MetricTagValue>,
)> {
    let routes = routes_from_json(&codec.open(&r.routes)?)?;
    let volume_placement: m::VolumePlacement = codec.decode_model(&r.volume_placement)?;
    let placement_tags: Vec<String> = match &r.placement_tags {
        Some(json) => serde_json::from_str::<Option<Vec<String>>>(json)
            .map_err(|e| BbsError::Deserialize(format!("placement tags: {e}")))?
            .unwrap_or_default(),
        None => Vec::new(),
    };
    let metric_tags = match &r.metric_tags {
        Some(blob) => codec
            .decode_json::<Option<BTreeMap<String, MetricTagJson>>>(blob)?
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| {
                (
                    k,
                    m::MetricTagValue {
                        r#static: v.static_value,
                        dynamic: dynamic_value(&v.dynamic),
                    },
                )
            })
            .collect(),
        None => BTreeMap::new(),
    };
    let scheduling = m::DesiredLrpSchedulingInfo {
        desired_lrp_key: Some(m::DesiredLrpKey {
            process_guid: r.process_guid.clone(),
            domain: r.domain.clone(),
            log_guid: r.log_guid.clone(),
        }),
        annotation: r.annotation.clone(),
        instances: r.instances,
        desired_lrp_resource: Some(m::DesiredLrpResource {
            memory_mb: r.memory_mb,
            disk_mb: r.disk_mb,
            root_fs: r.rootfs.clone(),
            max_pids: r.max_pids,
        }),
        routes: Some(routes),
        modification_tag: Some(m::ModificationTag {
            epoch: r.modification_tag_epoch.clone(),
            index: r.modification_tag_index as u32,
        }),
        volume_placement: Some(volume_placement),
        placement_tags,
    };
    Ok((scheduling, metric_tags))
}

pub fn desired_from_record(codec: &Codec, r: &DesiredLrpRecord) -> BbsResult<DesiredEntry> {
    let (scheduling, metric_tags) = scheduling_from_record(codec, &r.scheduling)?;
    Ok(DesiredEntry {
        scheduling: std::sync::Arc::new(scheduling),
        run_info: PackedRunInfo::pack(&codec.decode_model(&r.run_info)?),
        metric_tags: std::sync::Arc::new(metric_tags),
        update_strategy: r.scheduling.update_strategy,
    })
}

pub fn actual_to_record(codec: &Codec, lrp: &m::ActualLrp) -> ActualLrpRecord {
    let key = lrp.actual_lrp_key.clone().unwrap_or_default();
    let instance = lrp.actual_lrp_instance_key.clone().unwrap_or_default();
    let tag = lrp.modification_tag.clone().unwrap_or_default();
    #[derive(Serialize)]
    struct Hostname<'a> {
        hostname: &'a str,
    }
    let routes: Vec<Hostname> = lrp
        .actual_lrp_internal_routes
        .iter()
        .map(|r| Hostname {
            hostname: &r.hostname,
        })
        .collect();
    ActualLrpRecord {
        process_guid: key.process_guid,
        index: key.index,
        presence: match presence_of(lrp) {
            m::actual_lrp::Presence::Ordinary => Presence::Ordinary,
            m::actual_lrp::Presence::Evacuating => Presence::Evacuating,
            m::actual_lrp::Presence::Suspect => Presence::Suspect,
        },
        domain: key.domain,
        state: lrp.state.clone(),
        instance_guid: instance.instance_guid,
        cell_id: instance.cell_id,
        placement_error: lrp.placement_error.clone(),
        since: lrp.since,
        net_info: codec.encode_model(&lrp.actual_lrp_net_info.clone().unwrap_or_default()),
        modification_tag_epoch: tag.epoch,
        modification_tag_index: tag.index as i32,
        crash_count: lrp.crash_count,
        crash_reason: lrp.crash_reason.clone(),
        internal_routes: Some(codec.encode_json(&routes)),
        metric_tags: Some(codec.encode_json(&lrp.metric_tags)),
        routable: routable_of(lrp),
        availability_zone: lrp.availability_zone.clone(),
    }
}

pub fn actual_from_record(codec: &Codec, r: &ActualLrpRecord) -> BbsResult<m::ActualLrp> {
    #[derive(Deserialize)]
    struct Hostname {
        hostname: String,
    }
    let routes: Vec<Hostname> = match &r.internal_routes {
        Some(blob) => codec
            .decode_json::<Option<Vec<Hostname>>>(blob)?
            .unwrap_or_default(),
        None => Vec::new(),
    };
    let metric_tags: BTreeMap<String, String> = match &r.metric_tags {
        Some(blob) => codec
            .decode_json::<Option<BTreeMap<String, String>>>(blob)?
            .unwrap_or_default(),
        None => BTreeMap::new(),
    };
    Ok(m::ActualLrp {
        actual_lrp_key: Some(m::ActualLrpKey {
            process_guid: r.process_guid.clone(),
            index: r.index,
            domain: r.domain.clone(),
        }),
        actual_lrp_instance_key: Some(m::ActualLrpInstanceKey {
            instance_guid: r.instance_guid.clone(),
            cell_id: r.cell_id.clone(),
        }),
        actual_lrp_net_info: Some(codec.decode_model(&r.net_info)?),
        crash_count: r.crash_count,
        crash_reason: r.crash_reason.clone(),
        state: r.state.clone(),
        placement_error: r.placement_error.clone(),
        since: r.since,
        modification_tag: Some(m::ModificationTag {
            epoch: r.modification_tag_epoch.clone(),
            index: r.modification_tag_index as u32,
        }),
        presence: r.presence.as_i32(),
        actual_lrp_internal_routes: routes
            .into_iter()
            .map(|h| m::ActualLrpInternalRoute {
                hostname: h.hostname,
            })
            .collect(),
        metric_tags,
        optional_routable: Some(m::actual_lrp::OptionalRoutable::Routable(r.routable)),
        availability_zone: r.availability_zone.clone(),
    })
}

/// The keys lent to upstream's record-rewriting migrations when a database the Go BBS left at
/// an earlier schema version is brought forward.
impl bbs_store::UpgradeCodec for Codec {
    fn seal(&self, plaintext: &[u8]) -> String {
        Codec::seal(self, plaintext)
    }

    fn metric_tags_of_run_info(&self, run_info: &str) -> Option<String> {
        let run_info: m::DesiredLrpRunInfo = self.decode_model(run_info).ok()?;
        let tags: BTreeMap<String, m::MetricTagValue> = run_info.metric_tags.into_iter().collect();
        Some(encode_metric_tags(self, &tags))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::desired_lrps::split;

    #[test]
    fn desired_lrps_round_trip_through_records() {
        let codec = Codec::new();
        let mut routes = m::ProtoRoutes::default();
        routes.routes.insert(
            "cf-router".into(),
            br#"[{"hostnames":["a.example.com"],"port":8080}]"#.to_vec(),
        );
        let mut tags = BTreeMap::new();
        tags.insert(
            "source_id".to_owned(),
            m::MetricTagValue {
                r#static: "s".into(),
                dynamic: 0,
            },
        );
        tags.insert(
            "index".to_owned(),
            m::MetricTagValue {
                r#static: String::new(),
                dynamic: 1,
            },
        );
        let lrp = m::DesiredLrp {
            process_guid: "web".into(),
            domain: "d".into(),
            root_fs: "preloaded:x".into(),
            routes: Some(routes),
            metric_tags: tags,
            placement_tags: vec!["p".into()],
            instances: 2,
            ..Default::default()
        };
        let entry = split(&lrp, "epoch".into(), 7);
        let record = desired_to_record(&codec, &entry).unwrap();
        assert_eq!(
            record.scheduling.placement_tags.as_deref(),
            Some(r#"["p"]"#)
        );
        assert_eq!(desired_from_record(&codec, &record).unwrap(), entry);
    }

    #[test]
    fn routes_that_are_not_json_are_refused() {
        let mut routes = m::ProtoRoutes::default();
        routes
            .routes
            .insert("cf-router".into(), b"not json".to_vec());
        let entry = split(
            &m::DesiredLrp {
                routes: Some(routes),
                ..Default::default()
            },
            "e".into(),
            0,
        );
        assert!(matches!(
            desired_to_record(&Codec::new(), &entry),
            Err(BbsError::InvalidRequest(_))
        ));
    }

    #[test]
    fn actual_lrps_round_trip_through_records() {
        let codec = Codec::new();
        let mut lrp = crate::rules::actual_lrps::new_unclaimed(
            m::ActualLrpKey {
                process_guid: "web".into(),
                index: 3,
                domain: "d".into(),
            },
            9,
            "e".into(),
        );
        lrp.actual_lrp_internal_routes = vec![m::ActualLrpInternalRoute {
            hostname: "h".into(),
        }];
        lrp.metric_tags.insert("k".into(), "v".into());
        let record = actual_to_record(&codec, &lrp);
        assert_eq!(actual_from_record(&codec, &record).unwrap(), lrp);
    }
}
