//! The seeded world, derived from (LRP count, cell count) alone so that every worker process,
//! and every later run, agrees on which instance lives on which cell without a manifest.
//! Payloads follow upstream's benchmark generator: about 2 KB per desired LRP, with routes
//! carrying an SSH key, an egress rule and a nested monitor action.

use std::collections::BTreeMap;

use bbs_models as m;

pub const DOMAIN: &str = "benchmark-bbs";

#[derive(Clone, Copy, Debug)]
pub struct World {
    pub lrps: usize,
    pub cells: usize,
}

/// One simulated process: its desired LRP, single instance and the cell it runs on.
#[derive(Clone, Debug)]
pub struct Slot {
    pub process_guid: String,
    pub instance_guid: String,
    pub cell: usize,
}

impl World {
    pub fn cell_id(cell: usize) -> String {
        format!("cell-{cell}")
    }

    pub fn process_guid(i: usize) -> String {
        format!("BENCHMARK-BBS-GUID-{i:06}")
    }

    /// Uniform, reproducible placement: a hash of the index (binomial spread per cell, as
    /// upstream's random placement gives).
    pub fn cell_of(&self, i: usize) -> usize {
        (mix(i as u64) % self.cells as u64) as usize
    }

    pub fn slot(&self, i: usize) -> Slot {
        let process_guid = Self::process_guid(i);
        Slot {
            instance_guid: format!("{process_guid}-i"),
            process_guid,
            cell: self.cell_of(i),
        }
    }

    /// Every slot, grouped by cell.
    pub fn slots_by_cell(&self) -> Vec<Vec<Slot>> {
        let mut cells = vec![Vec::new(); self.cells];
        for i in 0..self.lrps {
            let slot = self.slot(i);
            cells[slot.cell].push(slot);
        }
        cells
    }
}

pub fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

fn run(path: &str) -> m::Action {
    m::Action {
        run_action: Some(m::RunAction {
            path: path.into(),
            user: "vcap".into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A fixed, fake key of upstream's size: routes carry about 1 KB of SSH material.
const FAKE_PRIVATE_KEY: &str = concat!(
    "-----BEGIN RSA PRIVATE KEY-----\n",
    "MIICXAIBAAKBgQC7benchmarkbenchmarkbenchmarkbenchmarkbenchmarkbenchmarkbench\n",
    "markbenchmarkbenchmarkbenchmarkbenchmarkbenchmarkbenchmarkbenchmarkbenchmark\n",
    "benchmarkbenchmarkbenchmarkbenchmarkbenchmarkbenchmarkbenchmarkbenchmarkbenc\n",
    "hmarkbenchmarkbenchmarkbenchmarkbenchmarkbenchmarkbenchmarkbenchmarkbenchma\n",
    "rkbenchmarkbenchmarkbenchmarkbenchmarkbenchmarkbenchmarkbenchmarkbenchmarkb\n",
    "enchmarkbenchmarkbenchmarkbenchmarkbenchmarkbenchmarkbenchmarkbenchmarkbenc\n",
    "hmarkbenchmarkbenchmarkbenchmarkbenchmarkbenchmarkbenchmarkbenchmarkbenchma\n",
    "rkbenchmarkbenchmarkbenchmarkbenchmarkbenchmarkbenchmarkbenchmarkbenchmarkb\n",
    "enchmarkbenchmarkbenchmarkbenchmarkbenchmarkbenchmarkbenchmarkbenchmarkbenc\n",
    "hmarkbenchmarkbenchmarkbenchmarkbenchmarkbenchmarkbenchmarkbenchmarkbenchma\n",
    "rkbenchmarkbenchmarkbenchmarkbenchmarkbenchmarkbenchmarkbenchmarkbenchmarkb\n",
    "enchmarkbenchmarkbenchmarkbenchmarkbenchmarkbenchmarkbenchmarkbenchmarkbenc\n",
    "-----END RSA PRIVATE KEY-----\n",
);

pub fn desired_lrp(process_guid: &str) -> m::DesiredLrp {
    let mut routes = BTreeMap::new();
    routes.insert(
        "cf-router".to_owned(),
        serde_json::json!([{ "hostnames": [format!("{}.example.com", process_guid.to_lowercase())], "port": 8080 }])
            .to_string()
            .into_bytes(),
    );
    routes.insert(
        "diego-ssh".to_owned(),
        serde_json::json!({
            "container_port": 2222,
            "host_fingerprint": "44:00:2b:21:19:1a:42:ab:54:2f:c3:9d:97:d6:c8:0f",
            "private_key": FAKE_PRIVATE_KEY,
        })
        .to_string()
        .into_bytes(),
    );
    let mut metric_tags = BTreeMap::new();
    metric_tags.insert(
        "source_id".to_owned(),
        m::MetricTagValue {
            r#static: process_guid.to_owned(),
            dynamic: 0,
        },
    );
    let monitor = m::Action {
        emit_progress_action: Some(Box::new(m::EmitProgressAction {
            action: Some(Box::new(m::Action {
                timeout_action: Some(Box::new(m::TimeoutAction {
                    timeout_ms: 10_000,
                    action: Some(Box::new(m::Action {
                        try_action: Some(Box::new(m::TryAction {
                            action: Some(Box::new(m::Action {
                                parallel_action: Some(m::ParallelAction {
                                    actions: vec![m::Action {
                                        serial_action: Some(m::SerialAction {
                                            actions: vec![run("ls")],
                                            ..Default::default()
                                        }),
                                        ..Default::default()
                                    }],
                                    ..Default::default()
                                }),
                                ..Default::default()
                            })),
                            ..Default::default()
                        })),
                        ..Default::default()
                    })),
                    ..Default::default()
                })),
                ..Default::default()
            })),
            start_message: "starting health monitor".into(),
            success_message: "healthy".into(),
            failure_message_prefix: "unhealthy".into(),
            ..Default::default()
        })),
        ..Default::default()
    };
    m::DesiredLrp {
        process_guid: process_guid.to_owned(),
        domain: DOMAIN.into(),
        root_fs: "some:rootfs".into(),
        instances: 1,
        environment_variables: vec![m::EnvironmentVariable {
            name: "FOO".into(),
            value: "BAR".into(),
        }],
        setup: Some(run("ls")),
        action: Some(run("ls")),
        start_timeout_ms: 15_000,
        monitor: Some(monitor),
        disk_mb: 512,
        memory_mb: 1024,
        cpu_weight: 42,
        ports: vec![8080],
        routes: Some(m::ProtoRoutes { routes }),
        log_source: "APP".into(),
        log_guid: process_guid.to_owned(),
        annotation: "benchmark-bbs created-at 2026-11-25".into(),
        egress_rules: vec![m::SecurityGroupRule {
            protocol: "tcp".into(),
            destinations: vec!["10.0.0.1/32".into(), "10.0.0.2/32".into()],
            port_range: Some(m::PortRange {
                start: 10,
                end: 16_000,
            }),
            ..Default::default()
        }],
        metric_tags,
        ..Default::default()
    }
}

pub fn actual_key(slot: &Slot) -> m::ActualLrpKey {
    m::ActualLrpKey {
        process_guid: slot.process_guid.clone(),
        index: 0,
        domain: DOMAIN.into(),
    }
}

pub fn instance_key(slot: &Slot) -> m::ActualLrpInstanceKey {
    m::ActualLrpInstanceKey {
        instance_guid: slot.instance_guid.clone(),
        cell_id: World::cell_id(slot.cell),
    }
}

/// The rep's StartActualLRP for a running container: the same every time, so the BBS can
/// treat a repeat as a heartbeat.
pub fn start_request(slot: &Slot) -> m::StartActualLrpRequest {
    m::StartActualLrpRequest {
        actual_lrp_key: Some(actual_key(slot)),
        actual_lrp_instance_key: Some(instance_key(slot)),
        actual_lrp_net_info: Some(m::ActualLrpNetInfo {
            address: "1.2.3.4".into(),
            ports: vec![m::PortMapping {
                container_port: 8080,
                host_port: 61999,
                ..Default::default()
            }],
            instance_address: "2.2.2.2".into(),
            preferred_address: m::actual_lrp_net_info::PreferredAddress::Host as i32,
            ..Default::default()
        }),
        ..Default::default()
    }
}

pub fn claim_request(slot: &Slot) -> m::ClaimActualLrpRequest {
    m::ClaimActualLrpRequest {
        process_guid: slot.process_guid.clone(),
        index: 0,
        actual_lrp_instance_key: Some(instance_key(slot)),
    }
}

pub fn cell_presence(cell: usize) -> m::CellPresence {
    let id = World::cell_id(cell);
    m::CellPresence {
        rep_address: format!("http://{id}.address"),
        rep_url: format!("http://{id}.url"),
        zone: "z1".into(),
        capacity: Some(m::CellCapacity {
            memory_mb: 1000,
            disk_mb: 2000,
            containers: 300,
        }),
        rootfs_providers: vec![m::Provider {
            name: "preloaded".into(),
            properties: vec!["cflinuxfs9".into()],
        }],
        cell_id: id,
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placement_is_reproducible_and_spread() {
        let world = World {
            lrps: 10_000,
            cells: 100,
        };
        let by_cell = world.slots_by_cell();
        assert_eq!(by_cell.iter().map(Vec::len).sum::<usize>(), 10_000);
        assert!(by_cell.iter().all(|c| (50..=150).contains(&c.len())));
        assert_eq!(world.cell_of(1234), world.cell_of(1234));
    }

    #[test]
    fn payload_is_upstream_sized() {
        use prost::Message;
        let size = desired_lrp(&World::process_guid(7)).encoded_len();
        assert!((1_500..4_000).contains(&size), "{size} bytes");
    }
}
