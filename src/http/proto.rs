//! Protobuf in, protobuf out: upstream's conventions for every API route (bbs-reference §1.2).

use actix_web::HttpResponse;
use bbs_actors::BbsError;
use bbs_models::WithError;
use prost::Message;

pub const CONTENT_TYPE: &str = "application/x-protobuf";

/// Upstream's trace header (`X-Vcap-Request-Id`), forwarded to collaborators.
pub fn trace_id(request: &actix_web::HttpRequest) -> String {
    request
        .headers()
        .get("X-Vcap-Request-Id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

/// HTTP 200 with the encoded message: business errors travel inside it.
pub fn respond<M: Message>(message: &M) -> HttpResponse {
    HttpResponse::Ok()
        .content_type(CONTENT_TYPE)
        .body(message.encode_to_vec())
}

/// Records per chunk of a streamed list answer.
const LIST_CHUNK: usize = 512;

/// A list answer whose only set field is the repeated `field` of records, as the bulk reads
/// (nsync, route emitters) get it. Large lists are encoded as the socket drains, a chunk at
/// a time, so 250,000 records never sit in memory encoded whole next to their copies; a
/// protobuf message is the concatenation of its fields, so the client sees the same bytes.
pub fn respond_list<T, I>(field: u32, items: Vec<I>) -> HttpResponse
where
    T: Message + 'static,
    I: std::borrow::Borrow<T> + 'static,
{
    let encode = move |chunk: &mut dyn Iterator<Item = I>| {
        let mut buffer = Vec::new();
        for item in chunk {
            prost::encoding::message::encode(field, item.borrow(), &mut buffer);
        }
        buffer
    };
    if items.len() <= LIST_CHUNK {
        return HttpResponse::Ok()
            .content_type(CONTENT_TYPE)
            .body(encode(&mut items.into_iter()));
    }
    let mut items = items.into_iter();
    let chunks = std::iter::from_fn(move || {
        let buffer = encode(&mut items.by_ref().take(LIST_CHUNK));
        (!buffer.is_empty()).then(|| Ok::<_, std::convert::Infallible>(bytes::Bytes::from(buffer)))
    });
    HttpResponse::Ok()
        .content_type(CONTENT_TYPE)
        .streaming(futures::stream::iter(chunks))
}

/// The route's response type carrying `error`. An Unrecoverable error also marks the
/// response, so the server shuts down after sending it.
pub fn respond_error<R: WithError>(error: &BbsError) -> HttpResponse {
    let mut response = respond(&R::from_error(error.to_wire()));
    if matches!(error, BbsError::Unrecoverable(_)) {
        response.extensions_mut().insert(super::UnrecoverableMarker);
    }
    response
}

/// Just upstream's `error` field (field 1 of every response but PingResponse), for answers
/// given before the route's own response type is known.
#[derive(Clone, PartialEq, Message)]
pub struct ErrorOnly {
    #[prost(message, optional, tag = "1")]
    pub error: Option<bbs_models::Error>,
}

/// The response on success, or the same response type carrying the error.
pub fn reply<R: WithError>(result: Result<R, BbsError>) -> HttpResponse {
    match result {
        Ok(response) => respond(&response),
        Err(e) => respond_error::<R>(&e),
    }
}

/// Every route reads its body through this: decoded and checked as upstream checks it.
pub use bbs_actors::rules::requests::parse;
