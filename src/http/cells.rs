//! Cell presences: upstream's list route, and this BBS's registration route (docs/cells.md).

use actix_web::{web, HttpResponse};
use bbs_actors::cells::RegisterCell;
use bbs_actors::{BbsError, BbsResult};
use bbs_models as m;

use super::proto::{parse, reply};
use super::ApiState;

pub async fn list(state: web::Data<ApiState>) -> HttpResponse {
    let result: BbsResult<Vec<m::CellPresence>> =
        async { state.bbs()?.directory.cells().await }.await;
    reply(result.map(|cells| m::CellsResponse { error: None, cells }))
}

pub async fn register(state: web::Data<ApiState>, body: web::Bytes) -> HttpResponse {
    let result: BbsResult<()> = async {
        let request: m::RegisterCellRequest = parse(&body)?;
        let bbs = state.bbs()?;
        if !bbs.registers_cells {
            return Err(BbsError::InvalidRequest(
                "cells register in locket: this server reads presences from locket_address".into(),
            ));
        }
        let message = RegisterCell {
            presence: request.cell_presence.unwrap_or_default(),
            ttl_seconds: request.ttl_seconds,
        };
        bbs.cells.call(message).await?
    }
    .await;
    reply(result.map(|()| m::RegisterCellResponse::default()))
}
