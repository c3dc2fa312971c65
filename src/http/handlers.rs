//! Handlers for the routes that work end to end. Each decodes, validates, asks an actor, and
//! encodes; no business rule lives here.

use actix_web::{web, HttpResponse};
use bbs_actors::domains::{FreshDomains, UpsertDomain};
use bbs_actors::BbsResult;
use bbs_models::{DomainsResponse, PingResponse, UpsertDomainRequest, UpsertDomainResponse};

use super::proto::{parse, respond, respond_error};
use super::ApiState;

pub async fn ping() -> HttpResponse {
    respond(&PingResponse { available: true })
}

pub async fn domains(state: web::Data<ApiState>) -> HttpResponse {
    let result: BbsResult<Vec<String>> = async {
        let bbs = state.bbs()?;
        bbs.domains.call(FreshDomains).await
    }
    .await;
    match result {
        Ok(domains) => respond(&DomainsResponse {
            error: None,
            domains,
        }),
        Err(e) => respond_error::<DomainsResponse>(&e),
    }
}

pub async fn upsert_domain(state: web::Data<ApiState>, body: web::Bytes) -> HttpResponse {
    let result: BbsResult<()> = async {
        let request: UpsertDomainRequest = parse(&body)?;
        let bbs = state.bbs()?;
        bbs.domains
            .call(UpsertDomain {
                domain: request.domain,
                ttl_seconds: request.ttl,
            })
            .await?
    }
    .await;
    match result {
        Ok(()) => respond(&UpsertDomainResponse { error: None }),
        Err(e) => respond_error::<UpsertDomainResponse>(&e),
    }
}
