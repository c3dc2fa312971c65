//! The event streams (bbs-reference §5): server-sent events whose data is the base64 of the
//! protobuf event, upstream's type names, and ids that count up across the whole BBS. A
//! client that reconnects with `Last-Event-ID` inside the retention window gets exactly the
//! events it missed; one further back gets a `relist` event telling it to list afresh.

use actix_web::{web, HttpRequest, HttpResponse};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use bbs_actors::events::{Delivery, Event, Stream};
use bbs_actors::rules::{desired_lrps, downgrade};
use bbs_models as m;
use bytes::Bytes;
use prost::Message;

use super::proto::parse;
use super::ApiState;

/// Which payload shapes a route serves: r1 is current; r0 downgrades for old clients.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Version {
    Current,
    Legacy,
}

fn desired(lrp: &m::DesiredLrp, version: Version) -> m::DesiredLrp {
    match version {
        Version::Current => lrp.clone(),
        Version::Legacy => downgrade::desired_v2_to_v0(desired_lrps::to_v2(lrp.clone())),
    }
}

fn task(task: &m::Task, version: Version) -> m::Task {
    match version {
        Version::Current => task.clone(),
        Version::Legacy => downgrade::task_to_v2(task.clone()),
    }
}

/// The SSE event type and protobuf payload of an event; `trace_id` goes into the payloads
/// that have the field.
fn encode(event: &Event, trace_id: &str, version: Version) -> (&'static str, Vec<u8>) {
    match event {
        Event::DesiredLrpCreated(l) => (
            "desired_lrp_created",
            m::DesiredLrpCreatedEvent {
                desired_lrp: Some(desired(l, version)),
                trace_id: trace_id.to_owned(),
            }
            .encode_to_vec(),
        ),
        Event::DesiredLrpChanged(b, a) => (
            "desired_lrp_changed",
            m::DesiredLrpChangedEvent {
                before: Some(desired(b, version)),
                after: Some(desired(a, version)),
                trace_id: trace_id.to_owned(),
            }
            .encode_to_vec(),
        ),
        Event::DesiredLrpRemoved(l) => (
            "desired_lrp_removed",
            m::DesiredLrpRemovedEvent {
                desired_lrp: Some(desired(l, version)),
                trace_id: trace_id.to_owned(),
            }
            .encode_to_vec(),
        ),
        Event::ActualLrpInstanceCreated(l) => (
            "actual_lrp_instance_created",
            m::ActualLrpInstanceCreatedEvent {
                actual_lrp: Some((**l).clone()),
                trace_id: trace_id.to_owned(),
            }
            .encode_to_vec(),
        ),
        // Its trace id was filled in when it was published.
        Event::ActualLrpInstanceChanged(e) => ("actual_lrp_instance_changed", e.encode_to_vec()),
        Event::ActualLrpInstanceRemoved(l) => (
            "actual_lrp_instance_removed",
            m::ActualLrpInstanceRemovedEvent {
                actual_lrp: Some((**l).clone()),
                trace_id: trace_id.to_owned(),
            }
            .encode_to_vec(),
        ),
        Event::ActualLrpCrashed(e) | Event::ActualLrpGroupCrashed(e) => {
            ("actual_lrp_crashed", e.encode_to_vec())
        }
        Event::ActualLrpGroupCreated(g) => (
            "actual_lrp_created",
            m::ActualLrpCreatedEvent {
                actual_lrp_group: Some((**g).clone()),
            }
            .encode_to_vec(),
        ),
        Event::ActualLrpGroupChanged(b, a) => (
            "actual_lrp_changed",
            m::ActualLrpChangedEvent {
                before: Some((**b).clone()),
                after: Some((**a).clone()),
            }
            .encode_to_vec(),
        ),
        Event::ActualLrpGroupRemoved(g) => (
            "actual_lrp_removed",
            m::ActualLrpRemovedEvent {
                actual_lrp_group: Some((**g).clone()),
            }
            .encode_to_vec(),
        ),
        Event::TaskCreated(t) => (
            "task_created",
            m::TaskCreatedEvent {
                task: Some(task(t, version)),
            }
            .encode_to_vec(),
        ),
        Event::TaskChanged(b, a) => (
            "task_changed",
            m::TaskChangedEvent {
                before: Some(task(b, version)),
                after: Some(task(a, version)),
            }
            .encode_to_vec(),
        ),
        Event::TaskRemoved(t) => (
            "task_removed",
            m::TaskRemovedEvent {
                task: Some(task(t, version)),
            }
            .encode_to_vec(),
        ),
    }
}

fn frame(delivery: &Delivery, version: Version) -> Bytes {
    match delivery {
        Delivery::Event(numbered) => {
            let (name, payload) = encode(&numbered.event, &numbered.trace_id, version);
            Bytes::from(format!(
                "id: {}\nevent: {name}\ndata: {}\n\n",
                numbered.id,
                STANDARD.encode(payload)
            ))
        }
        Delivery::Relist { oldest } => Bytes::from(format!("event: relist\ndata: {oldest}\n\n")),
    }
}

fn last_event_id(request: &HttpRequest) -> Option<u64> {
    parse_event_id(request.headers().get("Last-Event-ID")?.as_bytes())
}

/// A `Last-Event-ID` value as this server numbers events; anything else (not ASCII, not a
/// number, out of range) is no id at all, and the subscriber starts from now.
pub fn parse_event_id(value: &[u8]) -> Option<u64> {
    std::str::from_utf8(value.trim_ascii()).ok()?.parse().ok()
}

fn subscribe(
    state: &ApiState,
    request: &HttpRequest,
    stream: Stream,
    cell: String,
    version: Version,
) -> HttpResponse {
    let Ok(bbs) = state.bbs() else {
        return HttpResponse::InternalServerError().finish();
    };
    let receiver = bbs.events.subscribe(stream, cell, last_event_id(request));
    let body = futures::stream::unfold(receiver, move |mut receiver| async move {
        let delivery = receiver.recv().await?;
        Some((
            Ok::<Bytes, actix_web::Error>(frame(&delivery, version)),
            receiver,
        ))
    });
    HttpResponse::Ok()
        .content_type("text/event-stream; charset=utf-8")
        .insert_header(("Cache-Control", "no-cache, no-store, must-revalidate"))
        .insert_header(("Connection", "keep-alive"))
        .streaming(body)
}

fn cell_filter(body: &[u8]) -> Option<String> {
    parse::<m::EventsByCellId>(body).ok().map(|f| f.cell_id)
}

async fn lrp_stream(
    state: web::Data<ApiState>,
    request: HttpRequest,
    body: web::Bytes,
    stream: Stream,
    version: Version,
) -> HttpResponse {
    match cell_filter(&body) {
        // Upstream answers a bad subscription body with a bare 500.
        None => HttpResponse::InternalServerError().finish(),
        Some(cell) => subscribe(&state, &request, stream, cell, version),
    }
}

pub async fn lrp_instances(
    state: web::Data<ApiState>,
    request: HttpRequest,
    body: web::Bytes,
) -> HttpResponse {
    lrp_stream(state, request, body, Stream::LrpInstances, Version::Current).await
}

pub async fn lrp_instances_r0(
    state: web::Data<ApiState>,
    request: HttpRequest,
    body: web::Bytes,
) -> HttpResponse {
    lrp_stream(state, request, body, Stream::LrpInstances, Version::Legacy).await
}

pub async fn lrp_groups(
    state: web::Data<ApiState>,
    request: HttpRequest,
    body: web::Bytes,
) -> HttpResponse {
    lrp_stream(state, request, body, Stream::LrpGroups, Version::Current).await
}

pub async fn lrp_groups_r0(
    state: web::Data<ApiState>,
    request: HttpRequest,
    body: web::Bytes,
) -> HttpResponse {
    lrp_stream(state, request, body, Stream::LrpGroups, Version::Legacy).await
}

/// The task streams take no request message; upstream ignores their body.
pub async fn tasks(state: web::Data<ApiState>, request: HttpRequest) -> HttpResponse {
    subscribe(
        &state,
        &request,
        Stream::Tasks,
        String::new(),
        Version::Current,
    )
}

pub async fn tasks_r0(state: web::Data<ApiState>, request: HttpRequest) -> HttpResponse {
    subscribe(
        &state,
        &request,
        Stream::Tasks,
        String::new(),
        Version::Legacy,
    )
}
