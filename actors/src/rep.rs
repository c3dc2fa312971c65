//! The rep client: how the BBS asks a cell to stop an LRP instance or cancel a task
//! (bbs-reference §11), at the cell's registered `rep_url`.

use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum RepError {
    #[error("cell {0} has no rep_url")]
    NoUrl(String),
    #[error("rep unreachable: {0}")]
    Transport(String),
    #[error("rep answered {0}")]
    Status(u16),
}

#[derive(Clone)]
pub struct RepClient {
    http: reqwest::Client,
}

impl RepClient {
    pub fn new(timeout: Duration) -> Self {
        let mut builder = reqwest::Client::builder();
        if !timeout.is_zero() {
            builder = builder.timeout(timeout);
        }
        RepClient {
            http: builder.build().unwrap_or_else(|_| reqwest::Client::new()),
        }
    }

    async fn post(&self, presence: &bbs_models::CellPresence, path: &str) -> Result<(), RepError> {
        if presence.rep_url.is_empty() {
            return Err(RepError::NoUrl(presence.cell_id.clone()));
        }
        let url = format!("{}{path}", presence.rep_url.trim_end_matches('/'));
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

    pub async fn cancel_task(
        &self,
        presence: &bbs_models::CellPresence,
        task_guid: &str,
    ) -> Result<(), RepError> {
        self.post(presence, &format!("/v1/tasks/{task_guid}/cancel"))
            .await
    }
}
