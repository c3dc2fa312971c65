//! The desired and actual LRP routes: decode, validate with upstream's rules, ask the actors,
//! encode. Full DesiredLRPs are rebuilt here, off the actors' threads.

use actix_web::{web, HttpRequest, HttpResponse};
use bbs_actors::actual_lrps::{self as actual, group};
use bbs_actors::rules::actual_lrps::Running;
use bbs_actors::rules::desired_lrps::{populate_metrics_guid, rebuild, routing_info, to_v2};
use bbs_actors::{BbsError, BbsResult};
use bbs_models as m;
use bbs_store::{ActualLrpFilter, DesiredLrpFilter};

use super::proto::{parse, reply, respond_error, respond_list, trace_id};
use super::ApiState;

fn desired_lifecycle(result: BbsResult<()>) -> HttpResponse {
    reply(result.map(|()| m::DesiredLrpLifecycleResponse::default()))
}

fn actual_lifecycle(result: BbsResult<()>) -> HttpResponse {
    reply(result.map(|()| m::ActualLrpLifecycleResponse::default()))
}

fn guids(list: Vec<String>) -> Option<Vec<String>> {
    (!list.is_empty()).then_some(list)
}

fn non_empty(value: String) -> Option<String> {
    (!value.is_empty()).then_some(value)
}

// ---- desired LRPs ------------------------------------------------------------------------

pub async fn desire(
    state: web::Data<ApiState>,
    http: HttpRequest,
    body: web::Bytes,
) -> HttpResponse {
    desired_lifecycle(
        async {
            let request: m::DesireLrpRequest = parse(&body)?;
            let lrp = request.desired_lrp.unwrap_or_default();
            state.bbs()?.lrps.desire(lrp, &trace_id(&http)).await
        }
        .await,
    )
}

pub async fn update(
    state: web::Data<ApiState>,
    http: HttpRequest,
    body: web::Bytes,
) -> HttpResponse {
    desired_lifecycle(
        async {
            let request: m::UpdateDesiredLrpRequest = parse(&body)?;
            let update = request.update.unwrap_or_default();
            state
                .bbs()?
                .lrps
                .update(request.process_guid, update, &trace_id(&http))
                .await
        }
        .await,
    )
}

pub async fn remove(
    state: web::Data<ApiState>,
    http: HttpRequest,
    body: web::Bytes,
) -> HttpResponse {
    desired_lifecycle(
        async {
            let request: m::RemoveDesiredLrpRequest = parse(&body)?;
            let trace_id = trace_id(&http);
            state
                .bbs()?
                .lrps
                .remove(request.process_guid, &trace_id)
                .await
        }
        .await,
    )
}

async fn list_entries(
    state: &ApiState,
    body: &[u8],
    with_app_guids: bool,
) -> BbsResult<Vec<bbs_actors::rules::desired_lrps::DesiredEntry>> {
    let request: m::DesiredLrpsRequest = parse(body)?;
    let filter = DesiredLrpFilter {
        domain: non_empty(request.domain),
        process_guids: guids(request.process_guids),
    };
    let app_guids = if with_app_guids {
        request.app_guids
    } else {
        Vec::new()
    };
    Ok(state.bbs()?.lrps.desired_table.list(&filter, &app_guids))
}

async fn get_entry(
    state: &ApiState,
    body: &[u8],
) -> BbsResult<bbs_actors::rules::desired_lrps::DesiredEntry> {
    let request: m::DesiredLrpByProcessGuidRequest = parse(body)?;
    let table = &state.bbs()?.lrps.desired_table;
    table.get(&request.process_guid).ok_or(BbsError::NotFound)
}

pub async fn list(state: web::Data<ApiState>, body: web::Bytes) -> HttpResponse {
    reply(list_entries(&state, &body, true).await.map(|entries| {
        m::DesiredLrpsResponse {
            error: None,
            desired_lrps: entries
                .iter()
                .map(|e| populate_metrics_guid(rebuild(e)))
                .collect(),
        }
    }))
}

pub async fn list_r2(state: web::Data<ApiState>, body: web::Bytes) -> HttpResponse {
    reply(list_entries(&state, &body, true).await.map(|entries| {
        m::DesiredLrpsResponse {
            error: None,
            desired_lrps: entries
                .iter()
                .map(|e| populate_metrics_guid(to_v2(rebuild(e))))
                .collect(),
        }
    }))
}

pub async fn get(state: web::Data<ApiState>, body: web::Bytes) -> HttpResponse {
    reply(
        get_entry(&state, &body)
            .await
            .map(|e| m::DesiredLrpResponse {
                error: None,
                desired_lrp: Some(populate_metrics_guid(rebuild(&e))),
            }),
    )
}

pub async fn get_r2(state: web::Data<ApiState>, body: web::Bytes) -> HttpResponse {
    reply(
        get_entry(&state, &body)
            .await
            .map(|e| m::DesiredLrpResponse {
                error: None,
                desired_lrp: Some(populate_metrics_guid(to_v2(rebuild(&e)))),
            }),
    )
}

pub async fn scheduling_infos(state: web::Data<ApiState>, body: web::Bytes) -> HttpResponse {
    let result: BbsResult<Vec<std::sync::Arc<m::DesiredLrpSchedulingInfo>>> = async {
        let request: m::DesiredLrpsRequest = parse(&body)?;
        let filter = DesiredLrpFilter {
            domain: non_empty(request.domain),
            process_guids: guids(request.process_guids),
        };
        Ok(state.bbs()?.lrps.desired_table.scheduling_infos(&filter))
    }
    .await;
    match result {
        // Field 2: DesiredLRPSchedulingInfosResponse.desired_lrp_scheduling_infos.
        Ok(infos) => respond_list::<m::DesiredLrpSchedulingInfo, _>(2, infos),
        Err(e) => respond_error::<m::DesiredLrpSchedulingInfosResponse>(&e),
    }
}

pub async fn scheduling_info(state: web::Data<ApiState>, body: web::Bytes) -> HttpResponse {
    reply(get_entry(&state, &body).await.map(|e| {
        m::DesiredLrpSchedulingInfoByProcessGuidResponse {
            error: None,
            desired_lrp_scheduling_info: Some((*e.scheduling).clone()),
        }
    }))
}

pub async fn routing_infos(state: web::Data<ApiState>, body: web::Bytes) -> HttpResponse {
    let result: BbsResult<Vec<m::DesiredLrp>> = async {
        let request: m::DesiredLrpsRequest = parse(&body)?;
        let filter = DesiredLrpFilter {
            domain: None,
            process_guids: guids(request.process_guids),
        };
        let entries = state.bbs()?.lrps.desired_table.list(&filter, &[]);
        Ok(entries.iter().map(routing_info).collect())
    }
    .await;
    reply(result.map(|desired_lrps| m::DesiredLrpsResponse {
        error: None,
        desired_lrps,
    }))
}

// ---- actual LRPs -------------------------------------------------------------------------

pub async fn list_actual(state: web::Data<ApiState>, body: web::Bytes) -> HttpResponse {
    let result: BbsResult<Vec<m::ActualLrp>> = async {
        let request: m::ActualLrpsRequest = parse(&body)?;
        let filter = ActualLrpFilter {
            domain: non_empty(request.domain),
            cell_id: non_empty(request.cell_id),
            process_guids: non_empty(request.process_guid).map(|g| vec![g]),
            index: request
                .optional_index
                .map(|m::actual_lr_ps_request::OptionalIndex::Index(i)| i),
        };
        state.bbs()?.lrps.actual.list(filter).await
    }
    .await;
    match result {
        // Field 2: ActualLRPsResponse.actual_lrps.
        Ok(lrps) => respond_list::<m::ActualLrp, _>(2, lrps),
        Err(e) => respond_error::<m::ActualLrpsResponse>(&e),
    }
}

pub async fn list_actual_by_process_guids(
    state: web::Data<ApiState>,
    body: web::Bytes,
) -> HttpResponse {
    let result: BbsResult<Vec<m::ActualLrp>> = async {
        let request: m::ActualLrpsByProcessGuidsRequest = parse(&body)?;
        let filter = ActualLrpFilter {
            process_guids: Some(request.process_guids),
            ..Default::default()
        };
        state.bbs()?.lrps.actual.list(filter).await
    }
    .await;
    reply(
        result.map(|actual_lrps| m::ActualLrpsByProcessGuidsResponse {
            error: None,
            actual_lrps,
        }),
    )
}

pub async fn groups(state: web::Data<ApiState>, body: web::Bytes) -> HttpResponse {
    let result: BbsResult<Vec<m::ActualLrpGroup>> = async {
        let request: m::ActualLrpGroupsRequest = parse(&body)?;
        let filter = ActualLrpFilter {
            domain: non_empty(request.domain),
            cell_id: non_empty(request.cell_id),
            ..Default::default()
        };
        Ok(group(&state.bbs()?.lrps.actual.list(filter).await?))
    }
    .await;
    reply(result.map(|actual_lrp_groups| m::ActualLrpGroupsResponse {
        error: None,
        actual_lrp_groups,
    }))
}

pub async fn groups_by_process_guid(state: web::Data<ApiState>, body: web::Bytes) -> HttpResponse {
    let result: BbsResult<Vec<m::ActualLrpGroup>> = async {
        let request: m::ActualLrpGroupsByProcessGuidRequest = parse(&body)?;
        let filter = ActualLrpFilter {
            process_guids: Some(vec![request.process_guid]),
            ..Default::default()
        };
        Ok(group(&state.bbs()?.lrps.actual.list(filter).await?))
    }
    .await;
    reply(result.map(|actual_lrp_groups| m::ActualLrpGroupsResponse {
        error: None,
        actual_lrp_groups,
    }))
}

pub async fn group_by_process_guid_and_index(
    state: web::Data<ApiState>,
    body: web::Bytes,
) -> HttpResponse {
    let result: BbsResult<m::ActualLrpGroup> = async {
        let request: m::ActualLrpGroupByProcessGuidAndIndexRequest = parse(&body)?;
        let filter = ActualLrpFilter {
            process_guids: Some(vec![request.process_guid]),
            index: Some(request.index),
            ..Default::default()
        };
        let rows = state.bbs()?.lrps.actual.list(filter).await?;
        group(&rows).into_iter().next().ok_or(BbsError::NotFound)
    }
    .await;
    reply(result.map(|g| m::ActualLrpGroupResponse {
        error: None,
        actual_lrp_group: Some(g),
    }))
}

pub async fn claim(state: web::Data<ApiState>, body: web::Bytes) -> HttpResponse {
    actual_lifecycle(
        async {
            let request: m::ClaimActualLrpRequest = parse(&body)?;
            let bbs = state.bbs()?;
            let message = actual::ClaimLrp {
                process_guid: request.process_guid.clone(),
                index: request.index,
                instance_key: request.actual_lrp_instance_key.unwrap_or_default(),
            };
            bbs.lrps
                .actual
                .shard(&request.process_guid)
                .call(message)
                .await?
        }
        .await,
    )
}

async fn start_with(state: &ApiState, body: &[u8], keep_routes_and_tags: bool) -> BbsResult<()> {
    let request: m::StartActualLrpRequest = parse(body)?;
    let running = Running {
        key: request.actual_lrp_key.unwrap_or_default(),
        instance_key: request.actual_lrp_instance_key.unwrap_or_default(),
        net_info: request.actual_lrp_net_info.unwrap_or_default(),
        internal_routes: if keep_routes_and_tags {
            request.actual_lrp_internal_routes
        } else {
            Vec::new()
        },
        metric_tags: if keep_routes_and_tags {
            request.metric_tags
        } else {
            Default::default()
        },
        // Absent means routable, as upstream reads it.
        routable: request
            .optional_routable
            .map(|m::start_actual_lrp_request::OptionalRoutable::Routable(r)| r)
            .unwrap_or(true),
        availability_zone: request.availability_zone,
    };
    let shard = state
        .bbs()?
        .lrps
        .actual
        .shard(&running.key.process_guid)
        .clone();
    shard.call(actual::StartLrp { running }).await?
}

pub async fn start(state: web::Data<ApiState>, body: web::Bytes) -> HttpResponse {
    actual_lifecycle(start_with(&state, &body, true).await)
}

/// The deprecated start ignores internal routes and metric tags.
pub async fn start_r0(state: web::Data<ApiState>, body: web::Bytes) -> HttpResponse {
    actual_lifecycle(start_with(&state, &body, false).await)
}

pub async fn crash(state: web::Data<ApiState>, body: web::Bytes) -> HttpResponse {
    actual_lifecycle(
        async {
            let request: m::CrashActualLrpRequest = parse(&body)?;
            let message = actual::CrashLrp {
                key: request.actual_lrp_key.unwrap_or_default(),
                instance_key: request.actual_lrp_instance_key.unwrap_or_default(),
                reason: request.error_message,
            };
            state.bbs()?.lrps.crash(message).await
        }
        .await,
    )
}

pub async fn fail(state: web::Data<ApiState>, body: web::Bytes) -> HttpResponse {
    actual_lifecycle(
        async {
            let request: m::FailActualLrpRequest = parse(&body)?;
            let key = request.actual_lrp_key.unwrap_or_default();
            let shard = state.bbs()?.lrps.actual.shard(&key.process_guid).clone();
            let message = actual::FailLrp {
                key,
                placement_error: request.error_message,
            };
            shard.call(message).await?
        }
        .await,
    )
}

pub async fn remove_actual(state: web::Data<ApiState>, body: web::Bytes) -> HttpResponse {
    actual_lifecycle(
        async {
            let request: m::RemoveActualLrpRequest = parse(&body)?;
            let shard = state
                .bbs()?
                .lrps
                .actual
                .shard(&request.process_guid)
                .clone();
            let message = actual::RemoveLrpInstance {
                process_guid: request.process_guid,
                index: request.index,
                instance_key: request.actual_lrp_instance_key,
            };
            shard.call(message).await?
        }
        .await,
    )
}

pub async fn retire(
    state: web::Data<ApiState>,
    http: HttpRequest,
    body: web::Bytes,
) -> HttpResponse {
    actual_lifecycle(
        async {
            let request: m::RetireActualLrpRequest = parse(&body)?;
            state
                .bbs()?
                .lrps
                .retire(request.actual_lrp_key.unwrap_or_default(), &trace_id(&http))
                .await
        }
        .await,
    )
}
