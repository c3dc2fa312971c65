//! A BBS API client as the Go one talks: protobuf bodies POSTed over HTTP/1.1 keep-alive
//! connections, business errors in each response's `error` field.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bbs_models as m;
use prost::Message;

#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error("transport: {0}")]
    Transport(#[from] reqwest::Error),
    #[error("HTTP {status} from {route}")]
    Status { route: &'static str, status: u16 },
    #[error("undecodable response from {route}: {source}")]
    Decode {
        route: &'static str,
        source: prost::DecodeError,
    },
    #[error("{route}: {kind:?}: {message}")]
    Bbs {
        route: &'static str,
        kind: m::error::Type,
        message: String,
    },
}

impl CallError {
    pub fn is_resource_exists(&self) -> bool {
        matches!(
            self,
            CallError::Bbs {
                kind: m::error::Type::ResourceExists,
                ..
            }
        )
    }
}

/// Responses whose field 1 is upstream's `Error`.
pub trait Answer: Message + Default {
    fn error(&self) -> Option<&m::Error>;
}

macro_rules! answers {
    ($($t:ty),+ $(,)?) => { $( impl Answer for $t { fn error(&self) -> Option<&m::Error> { self.error.as_ref() } } )+ };
}

answers!(
    m::ActualLrpLifecycleResponse,
    m::ActualLrpsResponse,
    m::DesiredLrpLifecycleResponse,
    m::DesiredLrpSchedulingInfosResponse,
    m::DesiredLrpSchedulingInfoByProcessGuidResponse,
    m::CellsResponse,
    m::RegisterCellResponse,
    m::TasksResponse,
    m::TaskLifecycleResponse,
    m::UpsertDomainResponse,
);

#[derive(Clone)]
pub struct BbsClient {
    http: reqwest::Client,
    /// One or more BBS addresses (comma-separated `--bbs-url`): active and passive nodes.
    bases: Arc<[String]>,
    /// The address last seen to take connections; a refused connection moves to the next,
    /// as a Diego client pointed at several BBS nodes does.
    current: Arc<AtomicUsize>,
    tls: Option<bbs_tls::rustls::ClientConfig>,
    /// Answers that were not protobuf (a 503 from a server past `max_pending_requests`),
    /// each retried as the Go client retries them.
    refused: Arc<std::sync::atomic::AtomicU64>,
}

/// The Go BBS client's retry of an answer that is not protobuf: three attempts in all,
/// 500 ms apart.
const GO_CLIENT_ATTEMPTS: usize = 3;
const GO_CLIENT_RETRY_PAUSE: Duration = Duration::from_millis(500);

impl BbsClient {
    pub fn new(
        base: &str,
        timeout: Duration,
        max_idle: usize,
        tls: Option<bbs_tls::rustls::ClientConfig>,
    ) -> Result<Self, reqwest::Error> {
        let mut builder = reqwest::Client::builder();
        if let Some(tls) = &tls {
            builder = builder.use_preconfigured_tls(tls.clone());
        }
        let http = builder
            .timeout(timeout)
            .pool_max_idle_per_host(max_idle)
            // Below the server's keep-alive, so an idle connection is never reused just as
            // the server closes it.
            .pool_idle_timeout(Duration::from_secs(50))
            .tcp_nodelay(true)
            .http1_only()
            .build()?;
        let bases: Vec<String> = base
            .split(',')
            .map(|b| b.trim().trim_end_matches('/').to_owned())
            .filter(|b| !b.is_empty())
            .collect();
        Ok(BbsClient {
            http,
            bases: bases.into(),
            current: Arc::default(),
            tls,
            refused: Arc::default(),
        })
    }

    /// A client with no overall timeout (for event streams), with this client's TLS.
    pub fn streaming_client(&self) -> Result<reqwest::Client, reqwest::Error> {
        let mut builder = reqwest::Client::builder().http1_only();
        if let Some(tls) = &self.tls {
            builder = builder.use_preconfigured_tls(tls.clone());
        }
        builder.build()
    }

    pub fn url(&self, path: &str) -> String {
        let at = self.current.load(Ordering::Relaxed) % self.bases.len().max(1);
        format!(
            "{}{}",
            self.bases.get(at).map(String::as_str).unwrap_or(""),
            path
        )
    }

    /// Moves to the next address after a refused connection.
    fn next_address(&self, failed: &str) {
        let at = self.current.load(Ordering::Relaxed);
        if self.url("") == failed {
            let _ = self.current.compare_exchange(
                at,
                at.wrapping_add(1),
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
        }
    }

    /// Answers that were not protobuf and were retried, so far.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    pub async fn call<Req: Message, Resp: Answer>(
        &self,
        route: &'static str,
        request: &Req,
    ) -> Result<Resp, CallError> {
        let body = request.encode_to_vec();
        let mut attempt = 1;
        loop {
            match self.call_once(route, body.clone()).await {
                Err(CallError::Status { status, .. })
                    if status > 299 && attempt < GO_CLIENT_ATTEMPTS =>
                {
                    self.refused.fetch_add(1, Ordering::Relaxed);
                    attempt += 1;
                    tokio::time::sleep(GO_CLIENT_RETRY_PAUSE).await;
                }
                other => return other,
            }
        }
    }

    /// One attempt, as `call` makes it: no retry of a refusal (the open-loop flood counts
    /// them).
    pub async fn call_once<Resp: Answer>(
        &self,
        route: &'static str,
        body: Vec<u8>,
    ) -> Result<Resp, CallError> {
        let mut tries = self.bases.len().max(1);
        let response = loop {
            let base = self.url("");
            let sent = self
                .http
                .post(format!("{base}{route}"))
                .header("Content-Type", "application/x-protobuf")
                .body(body.clone())
                .send()
                .await;
            match sent {
                Err(e) if e.is_connect() && tries > 1 => {
                    tries -= 1;
                    self.next_address(&base);
                }
                Err(e) if e.is_connect() => {
                    self.next_address(&base);
                    return Err(e.into());
                }
                other => break other?,
            }
        };
        let status = response.status().as_u16();
        if status != 200 {
            return Err(CallError::Status { route, status });
        }
        let body = response.bytes().await?;
        let answer = Resp::decode(body).map_err(|source| CallError::Decode { route, source })?;
        if let Some(e) = answer.error() {
            return Err(CallError::Bbs {
                route,
                kind: e.kind(),
                message: e.message.clone(),
            });
        }
        Ok(answer)
    }
}

pub mod routes {
    pub const PING: &str = "/v1/ping";
    pub const DESIRE_LRP: &str = "/v1/desired_lrp/desire.r2";
    pub const START: &str = "/v1/actual_lrps/start.r1";
    pub const CLAIM: &str = "/v1/actual_lrps/claim";
    pub const ACTUAL_LRPS: &str = "/v1/actual_lrps/list";
    pub const SCHEDULING_INFOS: &str = "/v1/desired_lrp_scheduling_infos/list";
    pub const SCHEDULING_INFO: &str = "/v1/desired_lrp_scheduling_infos/get_by_process_guid";
    pub const TASKS: &str = "/v1/tasks/list.r3";
    pub const CELLS: &str = "/v1/cells/list.r1";
    pub const REGISTER_CELL: &str = "/v1/cells/register";
    pub const UPSERT_DOMAIN: &str = "/v1/domains/upsert";
    pub const INSTANCE_EVENTS: &str = "/v1/events/lrp_instances.r1";
    pub const DESIRE_TASK: &str = "/v1/tasks/desire.r2";
    pub const CANCEL_TASK: &str = "/v1/tasks/cancel";
    pub const REMOVE_DESIRED_LRP: &str = "/v1/desired_lrp/remove";
}
