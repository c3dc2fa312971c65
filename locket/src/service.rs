//! Locket served: [`LocalLocket`] is locket's four calls over a store (with expiry), used
//! in-process by a BBS that has no locket to talk to, and behind the gRPC service of
//! `bbs locket`.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use slog::Logger;
use tonic::transport::{Server, ServerTlsConfig};
use tonic::{Request, Response, Status};

use crate::error::{LocketError, LocketResult};
use crate::expiry::Expirer;
use crate::models::locket_server::{Locket as LocketRpc, LocketServer};
use crate::models::*;
use crate::rules;
use crate::table::LockTable;
use crate::Locket;

/// How often stored rows are swept for expiry timers (upstream: locket.RetryInterval).
pub const SWEEP_INTERVAL: Duration = Duration::from_secs(5);

#[derive(Clone)]
pub struct LocalLocket {
    table: LockTable,
    expirer: Expirer,
}

impl LocalLocket {
    /// Starts the expiry sweep every `sweep` on the current runtime.
    pub fn start(table: LockTable, sweep: Duration, log: Logger) -> Self {
        let expirer = Expirer::new(table.clone(), log);
        tokio::spawn(expirer.clone().sweep(sweep));
        LocalLocket { table, expirer }
    }

    pub fn expirer(&self) -> &Expirer {
        &self.expirer
    }
}

#[async_trait]
impl Locket for LocalLocket {
    async fn lock(&self, resource: &Resource, ttl_seconds: i64) -> LocketResult<()> {
        let resource = rules::validate_lock(Some(resource), ttl_seconds)?;
        let row = self.table.lock(resource, ttl_seconds).await?;
        self.expirer.watch(row);
        Ok(())
    }

    async fn release(&self, resource: &Resource) -> LocketResult<()> {
        self.table.release(resource).await
    }

    async fn fetch(&self, key: &str) -> LocketResult<Resource> {
        self.table.fetch(key).await
    }

    async fn fetch_all(&self, type_code: TypeCode) -> LocketResult<Vec<Resource>> {
        let type_code = rules::validate_type_code(type_code as i32)?;
        self.table.fetch_all(type_code).await
    }
}

/// The gRPC face of a [`LocalLocket`].
struct Service {
    locket: LocalLocket,
    log: Logger,
}

impl Service {
    /// Counts and times a call, and logs failures other than collisions (which are routine
    /// for a passive node's retries).
    async fn observed<T>(
        &self,
        call: &'static str,
        key: &str,
        work: impl std::future::Future<Output = LocketResult<T>>,
    ) -> Result<Response<T>, Status> {
        let started = Instant::now();
        let result = work.await;
        let outcome = match &result {
            Ok(_) | Err(LocketError::LockCollision) => "succeeded",
            Err(_) => "failed",
        };
        metrics::counter!("locket_requests_total", "request" => call, "outcome" => outcome)
            .increment(1);
        metrics::histogram!("locket_request_duration_seconds", "request" => call)
            .record(started.elapsed().as_secs_f64());
        match result {
            Ok(value) => Ok(Response::new(value)),
            Err(e) => {
                if !matches!(e, LocketError::LockCollision) {
                    slog::info!(self.log, "request-failed"; "request" => call, "key" => key, "error" => %e);
                }
                Err(e.into())
            }
        }
    }
}

#[tonic::async_trait]
impl LocketRpc for Service {
    async fn lock(&self, request: Request<LockRequest>) -> Result<Response<LockResponse>, Status> {
        let request = request.into_inner();
        let key = request
            .resource
            .as_ref()
            .map(|r| r.key.clone())
            .unwrap_or_default();
        self.observed("Lock", &key, async {
            let resource = rules::validate_lock(request.resource.as_ref(), request.ttl_in_seconds)?;
            Locket::lock(&self.locket, resource, request.ttl_in_seconds).await?;
            Ok(LockResponse {})
        })
        .await
    }

    async fn fetch(
        &self,
        request: Request<FetchRequest>,
    ) -> Result<Response<FetchResponse>, Status> {
        let key = request.into_inner().key;
        self.observed("Fetch", &key, async {
            let resource = self.locket.fetch(&key).await?;
            Ok(FetchResponse {
                resource: Some(resource),
            })
        })
        .await
    }

    async fn release(
        &self,
        request: Request<ReleaseRequest>,
    ) -> Result<Response<ReleaseResponse>, Status> {
        let resource = request.into_inner().resource.unwrap_or_default();
        self.observed("Release", &resource.key.clone(), async {
            self.locket.release(&resource).await?;
            Ok(ReleaseResponse {})
        })
        .await
    }

    async fn fetch_all(
        &self,
        request: Request<FetchAllRequest>,
    ) -> Result<Response<FetchAllResponse>, Status> {
        let request = request.into_inner();
        self.observed("FetchAll", "", async {
            let type_code = rules::validate_type_code(request.type_code)?;
            let resources = self.locket.fetch_all(type_code).await?;
            Ok(FetchAllResponse { resources })
        })
        .await
    }
}

/// Serves locket's gRPC API with mutual TLS on `address` until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    tls: ServerTlsConfig,
    locket: LocalLocket,
    log: Logger,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> Result<(), tonic::transport::Error> {
    let service = Service { locket, log };
    let incoming = tonic::transport::server::TcpIncoming::from(listener);
    Server::builder()
        .tls_config(tls)?
        .add_service(LocketServer::new(service))
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await
}

/// Binds `address` so a taken port is an error at start-up, before anything is served.
pub async fn bind(address: &str) -> std::io::Result<tokio::net::TcpListener> {
    let address: SocketAddr = address.parse().map_err(|e| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("listen_address {address:?}: {e}"),
        )
    })?;
    tokio::net::TcpListener::bind(address).await
}
