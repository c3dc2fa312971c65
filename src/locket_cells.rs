//! Cells as the reps register them upstream: presences in locket (bbs-reference §3.9, §10).

use std::sync::Arc;

use async_trait::async_trait;
use bbs_actors::cells::{presence_from_json, CellDirectory};
use bbs_actors::{BbsError, BbsResult};
use bbs_locket::{Locket, LocketError, Resource, TypeCode};
use bbs_models as m;
use slog::Logger;

pub struct LocketCells {
    pub locket: Arc<dyn Locket>,
    pub log: Logger,
}

impl LocketCells {
    /// A presence whose value does not parse is skipped with a log line naming the cell, so
    /// one bad rep cannot empty the cell list.
    fn presence(&self, resource: &Resource) -> Option<m::CellPresence> {
        match presence_from_json(&resource.value) {
            Ok(presence) => Some(presence),
            Err(e) => {
                slog::warn!(self.log, "cell-presence-undecodable-skipped"; "cell_id" => &resource.key, "error" => %e);
                None
            }
        }
    }
}

/// A locket failure as upstream's BBS reports it: UnknownError with gRPC's text.
fn unknown(error: LocketError) -> BbsError {
    BbsError::Unknown(error.to_string())
}

#[async_trait]
impl CellDirectory for LocketCells {
    async fn cell(&self, cell_id: &str) -> BbsResult<Option<m::CellPresence>> {
        match self.locket.fetch(cell_id).await {
            // Upstream's CellById fails here; "not present" would let a retire delete an
            // instance its cell may still run.
            Ok(resource) => presence_from_json(&resource.value).map(Some),
            Err(LocketError::ResourceNotFound) => Ok(None),
            Err(e) => Err(unknown(e)),
        }
    }

    async fn cells(&self) -> BbsResult<Vec<m::CellPresence>> {
        let resources = match self.locket.fetch_all(TypeCode::Presence).await {
            Ok(resources) => resources,
            Err(LocketError::ResourceNotFound) => Vec::new(),
            Err(e) => return Err(unknown(e)),
        };
        metrics::gauge!("bbs_locket_presences").set(resources.len() as f64);
        let mut cells: Vec<m::CellPresence> =
            resources.iter().filter_map(|r| self.presence(r)).collect();
        cells.sort_by(|a, b| a.cell_id.cmp(&b.cell_id));
        Ok(cells)
    }
}
