//! The evacuation routes a draining cell's rep calls (bbs-reference §3.6).

use actix_web::{web, HttpResponse};
use bbs_actors::actual_lrps::{EvacuationAnswer, EvacuationRequest};
use bbs_actors::rules::actual_lrps::Running;
use bbs_actors::{BbsError, BbsResult};
use bbs_models as m;

use super::proto::{parse, respond};
use super::ApiState;

/// An EvacuationResponse; when the request could not be read, `keep_if_unread` decides (the
/// claimed and running routes tell the rep to keep its container, as upstream does).
fn evacuation_reply(result: BbsResult<EvacuationAnswer>, keep_if_unread: bool) -> HttpResponse {
    let response = match result {
        Ok(answer) => m::EvacuationResponse {
            error: answer.error.map(|e| e.to_wire()),
            keep_container: answer.keep_container,
        },
        Err(e) => m::EvacuationResponse {
            keep_container: keep_if_unread && matches!(e, BbsError::InvalidRequest(_)),
            error: Some(e.to_wire()),
        },
    };
    respond(&response)
}

async fn run(
    state: &ApiState,
    key: m::ActualLrpKey,
    request: EvacuationRequest,
) -> BbsResult<EvacuationAnswer> {
    state
        .bbs()?
        .lrps
        .evacuate(key.process_guid, key.index, request)
        .await
}

pub async fn remove_evacuating(state: web::Data<ApiState>, body: web::Bytes) -> HttpResponse {
    let result: BbsResult<()> = async {
        let r: m::RemoveEvacuatingActualLrpRequest = parse(&body)?;
        let request =
            EvacuationRequest::RemoveEvacuating(r.actual_lrp_instance_key.unwrap_or_default());
        run(&state, r.actual_lrp_key.unwrap_or_default(), request)
            .await
            .map(drop)
    }
    .await;
    respond(&m::RemoveEvacuatingActualLrpResponse {
        error: result.err().map(|e| e.to_wire()),
    })
}

pub async fn claimed(state: web::Data<ApiState>, body: web::Bytes) -> HttpResponse {
    let result = async {
        let r: m::EvacuateClaimedActualLrpRequest = parse(&body)?;
        let request = EvacuationRequest::Claimed(r.actual_lrp_instance_key.unwrap_or_default());
        run(&state, r.actual_lrp_key.unwrap_or_default(), request).await
    }
    .await;
    evacuation_reply(result, true)
}

pub async fn crashed(state: web::Data<ApiState>, body: web::Bytes) -> HttpResponse {
    let result = async {
        let r: m::EvacuateCrashedActualLrpRequest = parse(&body)?;
        let key = r.actual_lrp_key.unwrap_or_default();
        let request = EvacuationRequest::Crashed {
            key: key.clone(),
            instance_key: r.actual_lrp_instance_key.unwrap_or_default(),
            reason: r.error_message,
        };
        run(&state, key, request).await.map(|a| EvacuationAnswer {
            keep_container: false,
            ..a
        })
    }
    .await;
    evacuation_reply(result, false)
}

pub async fn stopped(state: web::Data<ApiState>, body: web::Bytes) -> HttpResponse {
    let result = async {
        let r: m::EvacuateStoppedActualLrpRequest = parse(&body)?;
        let request = EvacuationRequest::Stopped(r.actual_lrp_instance_key.unwrap_or_default());
        run(&state, r.actual_lrp_key.unwrap_or_default(), request).await
    }
    .await;
    evacuation_reply(result, false)
}

async fn running_with(
    state: &ApiState,
    body: &[u8],
    keep_routes_and_tags: bool,
) -> BbsResult<EvacuationAnswer> {
    let r: m::EvacuateRunningActualLrpRequest = parse(body)?;
    let key = r.actual_lrp_key.unwrap_or_default();
    let desired = state
        .bbs()?
        .lrps
        .evacuation_target(&key.process_guid)
        .await?;
    let running = Running {
        key: key.clone(),
        instance_key: r.actual_lrp_instance_key.unwrap_or_default(),
        net_info: r.actual_lrp_net_info.unwrap_or_default(),
        internal_routes: if keep_routes_and_tags {
            r.actual_lrp_internal_routes
        } else {
            Vec::new()
        },
        metric_tags: if keep_routes_and_tags {
            r.metric_tags
        } else {
            Default::default()
        },
        routable: r
            .optional_routable
            .map(|m::evacuate_running_actual_lrp_request::OptionalRoutable::Routable(x)| x)
            .unwrap_or(true),
        availability_zone: r.availability_zone,
    };
    run(state, key, EvacuationRequest::Running { running, desired }).await
}

pub async fn running(state: web::Data<ApiState>, body: web::Bytes) -> HttpResponse {
    evacuation_reply(running_with(&state, &body, true).await, true)
}

/// The deprecated route ignores internal routes and metric tags.
pub async fn running_r0(state: web::Data<ApiState>, body: web::Bytes) -> HttpResponse {
    evacuation_reply(running_with(&state, &body, false).await, true)
}
