//! The auctioneer client: asks it to place tasks and LRP instances (bbs-reference §11).
//! Failures are the caller's to log; the work stays pending and convergence asks again.

use std::time::Duration;

use serde::Serialize;

use bbs_models::Task;

/// One task to place, in the JSON shape the auctioneer decodes.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct TaskStartRequest {
    #[serde(rename = "TaskGuid")]
    pub task_guid: String,
    #[serde(rename = "Domain")]
    pub domain: String,
    #[serde(rename = "PlacementTags")]
    pub placement_tags: Vec<String>,
    #[serde(rename = "VolumeDrivers")]
    pub volume_drivers: Vec<String>,
    #[serde(rename = "RootFs")]
    pub root_fs: String,
    #[serde(rename = "MemoryMB")]
    pub memory_mb: i32,
    #[serde(rename = "DiskMB")]
    pub disk_mb: i32,
    #[serde(rename = "MaxPids")]
    pub max_pids: i32,
    pub state: &'static str,
    pub failed: bool,
}

impl TaskStartRequest {
    pub fn for_task(task: &Task) -> Self {
        let definition = task.task_definition.clone().unwrap_or_default();
        TaskStartRequest {
            task_guid: task.task_guid.clone(),
            domain: task.domain.clone(),
            placement_tags: definition.placement_tags.clone(),
            volume_drivers: definition
                .volume_mounts
                .iter()
                .map(|m| m.driver.clone())
                .collect(),
            root_fs: definition.root_fs.clone(),
            memory_mb: definition.memory_mb,
            disk_mb: definition.disk_mb,
            max_pids: definition.max_pids,
            state: "Invalid",
            failed: false,
        }
    }
}

/// Instances of one LRP to place, in the JSON shape the auctioneer decodes.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct LrpStartRequest {
    pub process_guid: String,
    pub domain: String,
    pub indices: Vec<i32>,
    #[serde(rename = "PlacementTags")]
    pub placement_tags: Vec<String>,
    #[serde(rename = "VolumeDrivers")]
    pub volume_drivers: Vec<String>,
    #[serde(rename = "RootFs")]
    pub root_fs: String,
    #[serde(rename = "MemoryMB")]
    pub memory_mb: i32,
    #[serde(rename = "DiskMB")]
    pub disk_mb: i32,
    #[serde(rename = "MaxPids")]
    pub max_pids: i32,
}

impl LrpStartRequest {
    pub fn new(scheduling: &bbs_models::DesiredLrpSchedulingInfo, indices: Vec<i32>) -> Self {
        let key = scheduling.desired_lrp_key.clone().unwrap_or_default();
        let resource = scheduling.desired_lrp_resource.clone().unwrap_or_default();
        LrpStartRequest {
            process_guid: key.process_guid,
            domain: key.domain,
            indices,
            placement_tags: scheduling.placement_tags.clone(),
            volume_drivers: scheduling
                .volume_placement
                .as_ref()
                .map(|v| v.driver_names.clone())
                .unwrap_or_default(),
            root_fs: resource.root_fs,
            memory_mb: resource.memory_mb,
            disk_mb: resource.disk_mb,
            max_pids: resource.max_pids,
        }
    }
}

/// Why an auction request did not go through.
#[derive(Debug, thiserror::Error)]
pub enum AuctioneerError {
    #[error("no auctioneer_address is configured")]
    NotConfigured,
    #[error("auctioneer unreachable: {0}")]
    Transport(String),
    #[error("auctioneer answered {0}")]
    Status(u16),
}

#[derive(Clone)]
pub struct AuctioneerClient {
    base: Option<String>,
    http: reqwest::Client,
    /// With TLS configured and not required: the plain client a failed TLS call falls back
    /// to, as upstream's auctioneer client does.
    fallback: Option<reqwest::Client>,
}

impl AuctioneerClient {
    pub fn new(
        address: Option<String>,
        timeout: Duration,
        tls: &crate::outbound::OutboundTls,
    ) -> Result<Self, crate::BbsError> {
        const KEYS: &str = "auctioneer_ca_cert";
        let http = crate::outbound::http_client(timeout, tls.auctioneer.as_ref(), KEYS)?;
        let fallback = if tls.auctioneer.is_some() && !tls.auctioneer_require_tls {
            Some(crate::outbound::http_client(timeout, None, KEYS)?)
        } else {
            None
        };
        Ok(AuctioneerClient {
            base: address.map(|a| a.trim_end_matches('/').to_owned()),
            http,
            fallback,
        })
    }

    pub async fn request_task_auctions(
        &self,
        requests: &[TaskStartRequest],
        trace_id: &str,
    ) -> Result<(), AuctioneerError> {
        self.post("/v1/tasks", requests, trace_id).await
    }

    pub async fn request_lrp_auctions(
        &self,
        requests: &[LrpStartRequest],
        trace_id: &str,
    ) -> Result<(), AuctioneerError> {
        self.post("/v1/lrps", requests, trace_id).await
    }

    async fn post<T: Serialize + ?Sized>(
        &self,
        path: &str,
        body: &T,
        trace_id: &str,
    ) -> Result<(), AuctioneerError> {
        let base = self.base.as_ref().ok_or(AuctioneerError::NotConfigured)?;
        let send = |http: &reqwest::Client, url: String| {
            http.post(url)
                .header("X-Vcap-Request-Id", trace_id)
                .json(body)
                .send()
        };
        let response = match send(&self.http, format!("{base}{path}")).await {
            Ok(response) => response,
            // Upstream tries once more over plain HTTP on any error (never on a status).
            Err(e) => match &self.fallback {
                Some(plain) => {
                    let host = base
                        .strip_prefix("https://")
                        .or_else(|| base.strip_prefix("http://"))
                        .unwrap_or(base);
                    send(plain, format!("http://{host}{path}"))
                        .await
                        .map_err(|e| AuctioneerError::Transport(e.to_string()))?
                }
                None => return Err(AuctioneerError::Transport(e.to_string())),
            },
        };
        match response.status().as_u16() {
            200..=299 => Ok(()),
            status => Err(AuctioneerError::Status(status)),
        }
    }
}
