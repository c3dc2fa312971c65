//! The HTTP front doors: the API (upstream's routes), the plain health server, and the debug
//! server with `/metrics`.

mod admission;
mod cells;
mod evacuation;
mod events;
pub use events::parse_event_id;
mod handlers;
mod lrps;
pub mod proto;
mod request_metrics;
pub mod routes;
mod tasks;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::StatusCode;
use actix_web::middleware::{from_fn, Next};
use actix_web::{web, App, HttpResponse};
use admission::{Admission, Refused};
use bbs_actors::{Bbs, BbsError, BbsResult};
use metrics_exporter_prometheus::PrometheusHandle;

/// What every API handler can reach. The actors appear once the store is migrated; until
/// then every request gets 503, as upstream's server does.
#[derive(Default)]
pub struct ApiState {
    bbs: OnceLock<Bbs>,
    ready: AtomicBool,
    unrecoverable: tokio::sync::Notify,
    /// Requests whose response is not yet written (an event stream counts until it ends).
    in_flight: AtomicUsize,
    /// Set when the server stops: responses then close their connections.
    stopping: AtomicBool,
    /// Requests admitted past their body and not yet answered (event streams aside), at most
    /// `max_pending_requests`; `None` admits all.
    admission: Option<Admission>,
    /// Upstream's RequestCount and RequestLatency, per route.
    requests: request_metrics::RequestMetrics,
}

/// Counts one request as in flight for as long as it lives.
struct InFlight(web::Data<ApiState>);

impl InFlight {
    fn new(state: web::Data<ApiState>) -> InFlight {
        state.in_flight.fetch_add(1, Ordering::AcqRel);
        InFlight(state)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

impl ApiState {
    /// A state that answers 503 at once to a request arriving while `max_pending` others
    /// are being handled (0: no bound; see `admission`).
    pub fn new(max_pending: usize) -> ApiState {
        ApiState {
            admission: Admission::new(max_pending),
            ..ApiState::default()
        }
    }

    pub fn bbs(&self) -> BbsResult<&Bbs> {
        self.bbs
            .get()
            .ok_or_else(|| BbsError::Unavailable("the server is starting".into()))
    }

    /// Opens the API: from now on requests reach the actors.
    pub fn set_ready(&self, bbs: Bbs) {
        let _ = self.bbs.set(bbs);
        self.ready.store(true, Ordering::Release);
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// Resolves once a request has met an unrecoverable store error (a missing table): like
    /// upstream, the server answers that request, then shuts down for its supervisor.
    pub async fn unrecoverable(&self) {
        self.unrecoverable.notified().await
    }

    /// From now on every response closes its connection, so keep-alive clients move to
    /// another server instead of holding this one open.
    pub fn begin_stopping(&self) {
        self.stopping.store(true, Ordering::Release);
    }

    /// Waits until every response has been written, at most `timeout`; answers whether all
    /// have.
    pub async fn drained(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while self.in_flight.load(Ordering::Acquire) > 0 {
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        true
    }
}

/// Marks a response that carried an Unrecoverable error.
#[derive(Clone, Copy)]
pub struct UnrecoverableMarker;

async fn gate(
    mut request: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let ready = request
        .app_data::<web::Data<ApiState>>()
        .is_some_and(|state| state.is_ready());
    if !ready {
        let response = HttpResponse::ServiceUnavailable().finish();
        return Ok(request
            .into_response(response)
            .map_into_boxed_body()
            .map_body(|_, body| Counted {
                body,
                _in_flight: None,
            }));
    }
    let state = request.app_data::<web::Data<ApiState>>().cloned();
    let arrived = Instant::now();
    let route = state
        .as_ref()
        .map(|state| state.requests.route(request.path()));
    if let Some(route) = route {
        route.arrived();
    }
    let in_flight = state.clone().map(InFlight::new);
    let admission = match state.as_ref().and_then(|s| s.admission.as_ref()) {
        Some(admission) if Admission::counts(&request) => {
            admission.admit(&mut request).await.map(Some)
        }
        _ => Ok(None),
    };
    let mut response = match admission {
        Ok(admitted) => {
            let response = answer(next.call(request).await?, state.as_ref());
            drop(admitted);
            response.map_into_boxed_body()
        }
        Err(Refused) => request
            .into_response(HttpResponse::ServiceUnavailable().finish())
            .map_into_boxed_body(),
    };
    if let Some(route) = route {
        route.answered(arrived.elapsed());
    }
    if state
        .as_ref()
        .is_some_and(|s| s.stopping.load(Ordering::Acquire))
    {
        response
            .response_mut()
            .head_mut()
            .set_connection_type(actix_web::http::ConnectionType::Close);
    }
    // Counted until the body is written: a stopping server waits for that, not just for the
    // handler, before it drops connections.
    Ok(response.map_body(|_, body| Counted {
        body,
        _in_flight: in_flight,
    }))
}

/// A response body that keeps its request counted in flight until it has been written.
struct Counted {
    body: actix_web::body::BoxBody,
    _in_flight: Option<InFlight>,
}

impl MessageBody for Counted {
    type Error = <actix_web::body::BoxBody as MessageBody>::Error;

    fn size(&self) -> actix_web::body::BodySize {
        self.body.size()
    }

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<bytes::Bytes, Self::Error>>> {
        std::pin::Pin::new(&mut self.body).poll_next(cx)
    }
}

/// The handler's response as upstream would answer: an oversized body is an InvalidRequest
/// error, and an unrecoverable store error stops the server after answering.
fn answer<B: MessageBody + 'static>(
    response: ServiceResponse<B>,
    state: Option<&web::Data<ApiState>>,
) -> ServiceResponse<actix_web::body::EitherBody<B>> {
    if response.status() == StatusCode::PAYLOAD_TOO_LARGE {
        let (request, _) = response.into_parts();
        return ServiceResponse::new(request, too_large()).map_into_right_body();
    }
    if response
        .response()
        .extensions()
        .contains::<UnrecoverableMarker>()
    {
        if let Some(state) = state {
            state.unrecoverable.notify_waiters();
            state.unrecoverable.notify_one();
        }
    }
    response.map_into_left_body()
}

/// Go clients parse protobuf whatever the status, and every response but Ping carries
/// `error` as field 1: a body over the limit is answered as upstream answers a request it
/// cannot accept.
fn too_large() -> HttpResponse {
    let error =
        BbsError::InvalidRequest("the request body is larger than max_request_body_bytes".into());
    proto::respond(&proto::ErrorOnly {
        error: Some(error.to_wire()),
    })
}

fn not_found() -> HttpResponse {
    HttpResponse::NotFound()
        .content_type("text/plain; charset=utf-8")
        .body("404 page not found\n")
}

/// The API application, for `HttpServer::new` (and for tests).
pub fn api_app(
    state: web::Data<ApiState>,
    max_body_bytes: usize,
) -> App<
    impl actix_web::dev::ServiceFactory<
        ServiceRequest,
        Config = (),
        Response = ServiceResponse<impl MessageBody>,
        Error = actix_web::Error,
        InitError = (),
    >,
> {
    App::new()
        .app_data(state)
        .app_data(web::PayloadConfig::new(max_body_bytes))
        .app_data(admission::BodyLimit(max_body_bytes))
        .wrap(from_fn(gate))
        .configure(routes::configure)
        .default_service(web::to(|| async { not_found() }))
}

/// Upstream's health server: any path, any method, 200 with an empty body.
pub fn health_app() -> App<
    impl actix_web::dev::ServiceFactory<
        ServiceRequest,
        Config = (),
        Response = ServiceResponse<impl MessageBody>,
        Error = actix_web::Error,
        InitError = (),
    >,
> {
    App::new().default_service(web::to(|| async { HttpResponse::Ok().finish() }))
}

/// The debug server: Prometheus metrics, including every actor's mailbox.
pub fn debug_app(
    metrics: Arc<PrometheusHandle>,
) -> App<
    impl actix_web::dev::ServiceFactory<
        ServiceRequest,
        Config = (),
        Response = ServiceResponse<impl MessageBody>,
        Error = actix_web::Error,
        InitError = (),
    >,
> {
    App::new()
        .app_data(web::Data::from(metrics))
        .route(
            "/metrics",
            web::get().to(|handle: web::Data<PrometheusHandle>| async move {
                HttpResponse::Ok()
                    .content_type("text/plain; version=0.0.4")
                    .body(handle.render())
            }),
        )
        .default_service(web::to(|| async { not_found() }))
}
