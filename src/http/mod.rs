//! The HTTP front doors: the API (upstream's routes), the plain health server, and the debug
//! server with `/metrics`.

mod cells;
mod evacuation;
mod events;
pub use events::parse_event_id;
mod handlers;
mod lrps;
pub mod proto;
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
    admission: Option<Arc<tokio::sync::Semaphore>>,
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
    /// are being handled (0: no bound). Not upstream's (its server queues without bound);
    /// the status is the one upstream answers before its migrations finish, which Go clients
    /// retry (three attempts, 500 ms apart).
    pub fn new(max_pending: usize) -> ApiState {
        ApiState {
            admission: (max_pending > 0)
                .then(|| Arc::new(tokio::sync::Semaphore::new(max_pending))),
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
    metrics::counter!("bbs_requests_total").increment(1);
    let state = request.app_data::<web::Data<ApiState>>().cloned();
    let in_flight = state.clone().map(InFlight::new);
    let admission = match state.as_ref().and_then(|s| s.admission.clone()) {
        Some(permits) if !request.path().starts_with(EVENT_STREAMS) => {
            admit(&mut request, &permits).await
        }
        _ => Ok(None),
    };
    let response = match admission {
        Ok(admitted) => {
            let response = answer(next.call(request).await?, state.as_ref());
            drop(admitted);
            response.map_into_boxed_body()
        }
        Err(Refused) => request
            .into_response(HttpResponse::ServiceUnavailable().finish())
            .map_into_boxed_body(),
    };
    let mut response = response;
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

/// Event streams live as long as their subscribers: they are never counted as pending.
const EVENT_STREAMS: &str = "/v1/events";

/// No admission was free: the request is answered 503 at once.
struct Refused;

/// Holds one admission while a request is handled.
struct Admitted {
    _permit: tokio::sync::OwnedSemaphorePermit,
    pending: metrics::Gauge,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        self.pending.decrement(1.0);
    }
}

/// Reads the request's body, then takes an admission or refuses with 503. The body comes
/// first so that a client sending it slowly holds its own connection and nothing shared. A
/// body past the limit, or one that fails to arrive, is handed on as it came for the route
/// to answer as it always has (most refuse it; Ping and the lists ignore their body).
async fn admit(
    request: &mut ServiceRequest,
    permits: &Arc<tokio::sync::Semaphore>,
) -> Result<Option<Admitted>, Refused> {
    use actix_web::HttpMessage;
    use futures::StreamExt;
    let limit = request
        .app_data::<BodyLimit>()
        .map_or(usize::MAX, |limit| limit.0);
    let announced = request
        .headers()
        .get(actix_web::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<usize>().ok());
    let mut payload = request.take_payload();
    let mut body = web::BytesMut::new();
    let mut rest = None;
    if announced.is_some_and(|length| length > limit) {
        // Refused by the route's extractor on its length alone, unread.
        request.set_payload(payload);
        return admission(permits);
    }
    while let Some(chunk) = payload.next().await {
        match chunk {
            Ok(chunk) if body.len() + chunk.len() <= limit => body.extend_from_slice(&chunk),
            unread => {
                rest = Some(unread);
                break;
            }
        }
    }
    match rest {
        None => {
            let (_, mut replay) = actix_http::h1::Payload::create(true);
            replay.unread_data(body.freeze());
            request.set_payload(replay.into());
        }
        Some(unread) => {
            let replay = futures::stream::iter([Ok(body.freeze()), unread]).chain(payload);
            request.set_payload(actix_web::dev::Payload::Stream {
                payload: Box::pin(replay),
            });
        }
    }
    admission(permits)
}

fn admission(permits: &Arc<tokio::sync::Semaphore>) -> Result<Option<Admitted>, Refused> {
    match Arc::clone(permits).try_acquire_owned() {
        Ok(permit) => {
            let pending = metrics::gauge!("bbs_requests_pending");
            pending.increment(1.0);
            Ok(Some(Admitted {
                _permit: permit,
                pending,
            }))
        }
        Err(_) => {
            metrics::counter!("bbs_requests_shed_total").increment(1);
            Err(Refused)
        }
    }
}

/// The largest request body, for the admission step's read (the extractors have their own).
#[derive(Clone, Copy)]
struct BodyLimit(usize);

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
        .app_data(BodyLimit(max_body_bytes))
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
