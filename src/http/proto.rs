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

/// Decodes a request body; a malformed one is upstream's InvalidRequest.
pub fn decode<M: Message + Default>(body: &[u8]) -> Result<M, BbsError> {
    M::decode(body).map_err(|_| BbsError::InvalidRequest("the request received is invalid".into()))
}
