//! The rep client: how the BBS asks a cell to stop an LRP instance, update a running one's
//! internal routes and metric tags, or cancel a task (bbs-reference §11), at the cell's
//! registered `rep_url`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bbs_tls::rustls::ClientConfig;

use serde::Serialize;

#[derive(Debug, thiserror::Error)]
pub enum RepError {
    #[error("cell {0} has no rep_url")]
    NoUrl(String),
    #[error("cell {0} has no https rep_url, and rep TLS is configured")]
    NoHttpsUrl(String),
    #[error("rep unreachable: {0}")]
    Transport(String),
    #[error("rep answered {0}")]
    Status(u16),
}

#[derive(Clone)]
pub struct RepClient {
    http: reqwest::Client,
    /// Upstream's RequireTLS: with rep certificates configured, only https rep URLs.
    require_tls: bool,
}

impl RepClient {
    pub fn new(timeout: Duration, tls: Option<Arc<ClientConfig>>) -> Result<Self, crate::BbsError> {
        Ok(RepClient {
            http: crate::outbound::http_client(timeout, tls.as_ref(), "rep_ca_cert")?,
            require_tls: tls.is_some(),
        })
    }

    /// The cell's rep URL this client may call.
    fn base<'a>(&self, presence: &'a bbs_models::CellPresence) -> Result<&'a str, RepError> {
        if presence.rep_url.is_empty() {
            return Err(RepError::NoUrl(presence.cell_id.clone()));
        }
        if self.require_tls && !presence.rep_url.starts_with("https://") {
            return Err(RepError::NoHttpsUrl(presence.cell_id.clone()));
        }
        Ok(presence.rep_url.trim_end_matches('/'))
    }

    async fn post(&self, presence: &bbs_models::CellPresence, path: &str) -> Result<(), RepError> {
        let url = format!("{}{path}", self.base(presence)?);
        let response = self
            .http
            .post(url)
            .header("Content-Type", "application/json")
            .send()
            .await
            .map_err(|e| RepError::Transport(e.to_string()))?;
        match response.status().as_u16() {
            202 => Ok(()),
            status => Err(RepError::Status(status)),
        }
    }

    pub async fn stop_lrp_instance(
        &self,
        presence: &bbs_models::CellPresence,
        process_guid: &str,
        instance_guid: &str,
    ) -> Result<(), RepError> {
        self.post(
            presence,
            &format!("/v1/lrps/{process_guid}/instances/{instance_guid}/stop"),
        )
        .await
    }

    /// The rep's UpdateLRPInstance. A field left `None` is sent as null, as upstream does
    /// when only the other one drifted. Reps older than the v2 route answer 404 and are sent
    /// the internal routes on the v1 route instead, as upstream's client does.
    pub async fn update_lrp_instance(
        &self,
        presence: &bbs_models::CellPresence,
        update: &LrpInstanceUpdate,
    ) -> Result<(), RepError> {
        let base = self.base(presence)?;
        let path = format!(
            "lrps/{}/instances/{}",
            update.process_guid, update.instance_guid
        );
        let status = self.put(&format!("{base}/v2/{path}"), update).await?;
        let status = if status == 404 {
            let v1 = LrpInstanceUpdate {
                metric_tags: None,
                ..update.clone()
            };
            self.put(&format!("{base}/v1/{path}"), &v1).await?
        } else {
            status
        };
        match status {
            202 => Ok(()),
            status => Err(RepError::Status(status)),
        }
    }

    async fn put(&self, url: &str, body: &LrpInstanceUpdate) -> Result<u16, RepError> {
        let response = self
            .http
            .put(url)
            .json(body)
            .send()
            .await
            .map_err(|e| RepError::Transport(e.to_string()))?;
        Ok(response.status().as_u16())
    }

    pub async fn cancel_task(
        &self,
        presence: &bbs_models::CellPresence,
        task_guid: &str,
    ) -> Result<(), RepError> {
        self.post(presence, &format!("/v1/tasks/{task_guid}/cancel"))
            .await
    }
}

/// The rep's LRPUpdate body.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct LrpInstanceUpdate {
    pub instance_guid: String,
    pub process_guid: String,
    pub index: i32,
    pub domain: String,
    pub internal_routes: Option<Vec<InternalRoute>>,
    pub metric_tags: Option<BTreeMap<String, String>>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct InternalRoute {
    pub hostname: String,
}
