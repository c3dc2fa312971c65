//! The task routes: decode, validate with upstream's rules, ask the TaskActor, encode.

use actix_web::{web, HttpRequest, HttpResponse};
use bbs_actors::rules::downgrade;
use bbs_actors::tasks as t;
use bbs_actors::BbsResult;
use bbs_models as m;
use bbs_store::TaskFilter;

use super::proto::{parse, reply, trace_id};
use super::ApiState;

fn lifecycle(result: BbsResult<()>) -> HttpResponse {
    reply(result.map(|()| m::TaskLifecycleResponse::default()))
}

pub async fn desire(
    state: web::Data<ApiState>,
    http: HttpRequest,
    body: web::Bytes,
) -> HttpResponse {
    lifecycle(
        async {
            let request: m::DesireTaskRequest = parse(&body)?;
            let message = t::DesireTask {
                guid: request.task_guid,
                domain: request.domain,
                definition: request.task_definition.unwrap_or_default(),
                trace_id: trace_id(&http),
            };
            state.bbs()?.tasks.call(message).await?
        }
        .await,
    )
}

pub async fn start(state: web::Data<ApiState>, body: web::Bytes) -> HttpResponse {
    let result: BbsResult<bool> = async {
        let request: m::StartTaskRequest = parse(&body)?;
        let message = t::StartTask {
            guid: request.task_guid,
            cell_id: request.cell_id,
        };
        state.bbs()?.tasks.call(message).await?
    }
    .await;
    reply(result.map(|should_start| m::StartTaskResponse {
        error: None,
        should_start,
    }))
}

pub async fn cancel(state: web::Data<ApiState>, body: web::Bytes) -> HttpResponse {
    lifecycle(
        async {
            let request: m::TaskGuidRequest = parse(&body)?;
            let message = t::CancelTask {
                guid: request.task_guid,
            };
            state.bbs()?.tasks.call(message).await?
        }
        .await,
    )
}

pub async fn fail(state: web::Data<ApiState>, body: web::Bytes) -> HttpResponse {
    lifecycle(
        async {
            let request: m::FailTaskRequest = parse(&body)?;
            let message = t::FailTask {
                guid: request.task_guid,
                reason: request.failure_reason,
            };
            state.bbs()?.tasks.call(message).await?
        }
        .await,
    )
}

pub async fn reject(state: web::Data<ApiState>, body: web::Bytes) -> HttpResponse {
    lifecycle(
        async {
            let request: m::RejectTaskRequest = parse(&body)?;
            let message = t::RejectTask {
                guid: request.task_guid,
                reason: request.rejection_reason,
            };
            state.bbs()?.tasks.call(message).await?
        }
        .await,
    )
}

pub async fn complete(state: web::Data<ApiState>, body: web::Bytes) -> HttpResponse {
    lifecycle(
        async {
            let request: m::CompleteTaskRequest = parse(&body)?;
            let message = t::CompleteTask {
                guid: request.task_guid,
                cell_id: request.cell_id,
                failed: request.failed,
                failure_reason: request.failure_reason,
                result: request.result,
            };
            state.bbs()?.tasks.call(message).await?
        }
        .await,
    )
}

pub async fn resolving(state: web::Data<ApiState>, body: web::Bytes) -> HttpResponse {
    lifecycle(
        async {
            let request: m::TaskGuidRequest = parse(&body)?;
            let message = t::ResolvingTask {
                guid: request.task_guid,
            };
            state.bbs()?.tasks.call(message).await?.map(|_| ())
        }
        .await,
    )
}

pub async fn delete(state: web::Data<ApiState>, body: web::Bytes) -> HttpResponse {
    lifecycle(
        async {
            let request: m::TaskGuidRequest = parse(&body)?;
            let message = t::DeleteTask {
                guid: request.task_guid,
            };
            state.bbs()?.tasks.call(message).await?
        }
        .await,
    )
}

async fn list_tasks(state: &ApiState, body: &[u8]) -> BbsResult<Vec<m::Task>> {
    let request: m::TasksRequest = parse(body)?;
    let filter = TaskFilter {
        domain: Some(request.domain).filter(|d| !d.is_empty()),
        cell_id: Some(request.cell_id).filter(|c| !c.is_empty()),
    };
    Ok(state.bbs()?.task_table.list(&filter))
}

async fn get_task(state: &ApiState, body: &[u8]) -> BbsResult<m::Task> {
    let request: m::TaskByGuidRequest = parse(body)?;
    state.bbs()?.task_table.task(&request.task_guid)
}

pub async fn list(state: web::Data<ApiState>, body: web::Bytes) -> HttpResponse {
    reply(
        list_tasks(&state, &body)
            .await
            .map(|tasks| m::TasksResponse { error: None, tasks }),
    )
}

pub async fn list_r2(state: web::Data<ApiState>, body: web::Bytes) -> HttpResponse {
    reply(
        list_tasks(&state, &body)
            .await
            .map(|tasks| m::TasksResponse {
                error: None,
                tasks: tasks.into_iter().map(downgrade::task_to_v2).collect(),
            }),
    )
}

pub async fn get(state: web::Data<ApiState>, body: web::Bytes) -> HttpResponse {
    reply(get_task(&state, &body).await.map(|task| m::TaskResponse {
        error: None,
        task: Some(task),
    }))
}

pub async fn get_r2(state: web::Data<ApiState>, body: web::Bytes) -> HttpResponse {
    reply(get_task(&state, &body).await.map(|task| m::TaskResponse {
        error: None,
        task: Some(downgrade::task_to_v2(task)),
    }))
}
