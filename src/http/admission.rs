//! The bound on requests handled at once (`max_pending_requests`, ours; docs/reliability.md,
//! "Overload"). Upstream's server queues without bound; past ours a request is answered 503
//! at once, the status upstream answers before its migrations finish, which Go clients retry
//! (three attempts, 500 ms apart).

use std::sync::Arc;

use actix_web::dev::{Payload, ServiceRequest};
use actix_web::http::header::CONTENT_LENGTH;
use actix_web::HttpMessage;
use futures::StreamExt;
use metrics::{Counter, Gauge};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Event streams live as long as their subscribers: they are never counted.
pub(super) const EVENT_STREAMS: &str = "/v1/events";

/// The largest request body, for the admission step's read (the extractors have their own).
#[derive(Clone, Copy)]
pub struct BodyLimit(pub usize);

pub struct Admission {
    permits: Arc<Semaphore>,
    pending: Gauge,
    shed: Counter,
}

/// Holds one place while a request is handled.
pub struct Admitted {
    _permit: OwnedSemaphorePermit,
    pending: Gauge,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        self.pending.decrement(1.0);
    }
}

/// No place was free: the request is answered 503 at once.
pub struct Refused;

impl Admission {
    /// `None` for 0: no bound.
    pub fn new(max_pending: usize) -> Option<Admission> {
        (max_pending > 0).then(|| Admission {
            permits: Arc::new(Semaphore::new(max_pending)),
            pending: metrics::gauge!("bbs_requests_pending"),
            shed: metrics::counter!("bbs_requests_shed_total"),
        })
    }

    /// Whether the request counts against the bound.
    pub fn counts(request: &ServiceRequest) -> bool {
        !request.path().starts_with(EVENT_STREAMS)
    }

    /// Reads the request's body, then takes a place or refuses. The body comes first so
    /// that a client sending it slowly holds its own connection and nothing shared. The
    /// chunks read are handed on as they came, with whatever was not read: a body past the
    /// limit, or one that fails to arrive, reaches the route to be answered as it always
    /// has been (most refuse it; Ping and the lists ignore their body).
    pub async fn admit(&self, request: &mut ServiceRequest) -> Result<Admitted, Refused> {
        let limit = request
            .app_data::<BodyLimit>()
            .map_or(usize::MAX, |limit| limit.0);
        let announced = request
            .headers()
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<usize>().ok());
        // A body announced past the limit is refused by the route's extractor on its length
        // alone, unread.
        if announced.is_none_or(|length| length <= limit) {
            let mut payload = request.take_payload();
            let (mut chunks, mut read) = (Vec::new(), 0);
            while let Some(chunk) = payload.next().await {
                let within = chunk.as_ref().is_ok_and(|c| read + c.len() <= limit);
                read += chunk.as_ref().map_or(0, |c| c.len());
                chunks.push(chunk);
                if !within {
                    break;
                }
            }
            let replay = futures::stream::iter(chunks).chain(payload);
            request.set_payload(Payload::Stream {
                payload: Box::pin(replay),
            });
        }
        match Arc::clone(&self.permits).try_acquire_owned() {
            Ok(permit) => {
                self.pending.increment(1.0);
                Ok(Admitted {
                    _permit: permit,
                    pending: self.pending.clone(),
                })
            }
            Err(_) => {
                self.shed.increment(1);
                Err(Refused)
            }
        }
    }
}
