//! The API in-process: real actors on a real store, requests through actix-web's test
//! service, plus fake collaborators (auctioneer, callback receiver) on loopback.

#![allow(dead_code)]

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_web::dev::{Service, ServiceResponse};
use actix_web::{test, web, App, HttpRequest, HttpResponse, HttpServer};
use bbs::http::{api_app, ApiState};
use bbs_actors::{ActorSettings, Bbs};
use bbs_store::testing::TestStore;
use bbs_store::Backend;
use prost::Message;

/// One request a fake collaborator received.
#[derive(Clone, Debug)]
pub struct Received {
    pub method: String,
    pub path: String,
    pub body: serde_json::Value,
}

/// A loopback HTTP server that records JSON requests and answers with scripted statuses.
pub struct FakeServer {
    pub url: String,
    pub received: Arc<Mutex<Vec<Received>>>,
    /// Statuses to answer with, in order; once used up, `default_status`.
    pub script: Arc<Mutex<Vec<u16>>>,
    handle: actix_web::dev::ServerHandle,
}

impl FakeServer {
    /// Over HTTPS with client-certificate checks when the suite runs with TLS, else HTTP.
    pub async fn start(default_status: u16) -> FakeServer {
        match super::tls() {
            Some(pki) => {
                FakeServer::start_tls(default_status, pki.server_config(&pki.server)).await
            }
            None => FakeServer::start_plain(default_status).await,
        }
    }

    /// HTTPS with `tls` (which may require client certificates).
    pub async fn start_tls(
        default_status: u16,
        tls: std::sync::Arc<bbs_tls::rustls::ServerConfig>,
    ) -> FakeServer {
        FakeServer::start_on(default_status, Some(tls)).await
    }

    pub async fn start_plain(default_status: u16) -> FakeServer {
        FakeServer::start_on(default_status, None).await
    }

    async fn start_on(
        default_status: u16,
        tls: Option<std::sync::Arc<bbs_tls::rustls::ServerConfig>>,
    ) -> FakeServer {
        let received = Arc::new(Mutex::new(Vec::new()));
        let script = Arc::new(Mutex::new(Vec::<u16>::new()));
        let (r, s) = (received.clone(), script.clone());
        let server = HttpServer::new(move || {
            let (r, s) = (r.clone(), s.clone());
            App::new().default_service(web::to(move |req: HttpRequest, body: web::Bytes| {
                let (r, s) = (r.clone(), s.clone());
                async move {
                    let body = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
                    r.lock().unwrap().push(Received {
                        method: req.method().to_string(),
                        path: req.path().to_owned(),
                        body,
                    });
                    let status = {
                        let mut script = s.lock().unwrap();
                        if script.is_empty() {
                            default_status
                        } else {
                            script.remove(0)
                        }
                    };
                    HttpResponse::build(actix_web::http::StatusCode::from_u16(status).unwrap())
                        .finish()
                }
            }))
        })
        .workers(2)
        .disable_signals();
        let (server, scheme) = match tls {
            Some(tls) => (
                server
                    .bind_rustls_0_23("127.0.0.1:0", (*tls).clone())
                    .unwrap(),
                "https",
            ),
            None => (server.bind("127.0.0.1:0").unwrap(), "http"),
        };
        let url = format!("{scheme}://{}", server.addrs()[0]);
        let server = server.run();
        let handle = server.handle();
        actix_web::rt::spawn(server);
        FakeServer {
            url,
            received,
            script,
            handle,
        }
    }

    pub fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    pub async fn stop(&self) {
        self.handle.stop(false).await;
    }
}

/// Waits up to `timeout` for `condition`.
pub async fn eventually(timeout: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if condition() {
            return true;
        }
        actix_web::rt::time::sleep(Duration::from_millis(20)).await;
    }
    condition()
}

pub type ApiService = Box<
    dyn Service<
        actix_http::Request,
        Response = ServiceResponse,
        Error = actix_web::Error,
        Future = futures::future::LocalBoxFuture<
            'static,
            Result<ServiceResponse, actix_web::Error>,
        >,
    >,
>;

/// A running BBS over a fresh store of one backend.
pub struct TestBbs {
    pub store: TestStore,
    pub bbs: Bbs,
    service: ApiService,
}

/// A key ring of one key, `test-key`.
pub fn test_keys() -> std::sync::Arc<bbs_actors::keyring::KeyRing> {
    keys(&[("test-key", "a test passphrase")], "test-key")
}

pub fn keys(labels: &[(&str, &str)], active: &str) -> std::sync::Arc<bbs_actors::keyring::KeyRing> {
    let map = labels
        .iter()
        .map(|(l, p)| (l.to_string(), p.to_string()))
        .collect();
    std::sync::Arc::new(
        bbs_actors::keyring::KeyRing::new(
            &map,
            active,
            bbs_actors::keyring::WriteFormat::XChaCha20Poly1305,
        )
        .expect("test keys"),
    )
}

/// No log lines, unless TEST_LOG is set (then JSON lines on stdout, captured per test).
pub fn quiet_log() -> slog::Logger {
    if std::env::var_os("TEST_LOG").is_some() {
        use slog::Drain;
        let drain = bbs::logging::JsonLines::new(std::io::stdout(), "test").ignore_res();
        return slog::Logger::root(drain, slog::o!());
    }
    slog::Logger::root(slog::Discard, slog::o!())
}

impl TestBbs {
    pub async fn start(backend: Backend, settings: ActorSettings) -> Option<TestBbs> {
        if !bbs_store::testing::enabled(backend) {
            return None;
        }
        let store = TestStore::new(backend).await;
        Some(TestBbs::on(store, settings).await)
    }

    /// A BBS on an existing store, as after a restart. Without keys in `settings` it uses
    /// [`test_keys`], so every test stores records encrypted as production does.
    pub async fn on(store: TestStore, settings: ActorSettings) -> TestBbs {
        match TestBbs::try_on(store, settings).await {
            Ok(b) => b,
            Err((_, e)) => panic!("actors did not start: {e}"),
        }
    }

    pub async fn try_on(
        store: TestStore,
        mut settings: ActorSettings,
    ) -> Result<TestBbs, (TestStore, bbs_actors::BbsError)> {
        if settings.encryption.is_none() {
            settings.encryption = Some(test_keys());
        }
        if let Some(pki) = super::tls() {
            if settings.outbound_tls.rep.is_none() {
                settings.outbound_tls = pki.outbound();
            }
        }
        // Tests converge when they ask to (bbs.converger), never on a timer behind their back.
        settings.converge_repeat_interval = std::time::Duration::from_secs(3600);
        let bbs =
            match Bbs::start(store.reopen().await.unwrap(), &settings, &[], &quiet_log()).await {
                Ok(bbs) => bbs,
                Err(e) => return Err((store, e)),
            };
        let state = web::Data::new(ApiState::default());
        state.set_ready(bbs.clone());
        let service = test::init_service(api_app(state, 8 * 1024 * 1024)).await;
        Ok(TestBbs {
            store,
            bbs,
            service: Box::new(service.map_into_boxed_body_service()),
        })
    }

    pub async fn post_raw(&self, path: &str, body: Vec<u8>) -> ServiceResponse {
        let request = test::TestRequest::post()
            .uri(path)
            .set_payload(body)
            .to_request();
        self.service.call(request).await.expect("a response")
    }

    pub async fn call<Req: Message, Resp: Message + Default>(
        &self,
        path: &str,
        request: &Req,
    ) -> Resp {
        let response = self.post_raw(path, request.encode_to_vec()).await;
        assert_eq!(response.status(), 200, "{path}");
        let body = test::read_body(response).await;
        Resp::decode(body).expect("a protobuf response")
    }
}

/// Boxes any API service with a boxed body, so `TestBbs` can name its type.
trait BoxBodyService {
    fn map_into_boxed_body_service(self) -> BoxedBodyService<Self>
    where
        Self: Sized;
}

pub struct BoxedBodyService<S> {
    inner: S,
}

impl<S, B> BoxBodyService for S
where
    S: Service<actix_http::Request, Response = ServiceResponse<B>, Error = actix_web::Error>,
    B: actix_web::body::MessageBody + 'static,
{
    fn map_into_boxed_body_service(self) -> BoxedBodyService<Self> {
        BoxedBodyService { inner: self }
    }
}

impl<S, B> Service<actix_http::Request> for BoxedBodyService<S>
where
    S: Service<actix_http::Request, Response = ServiceResponse<B>, Error = actix_web::Error>,
    S::Future: 'static,
    B: actix_web::body::MessageBody + 'static,
{
    type Response = ServiceResponse;
    type Error = actix_web::Error;
    type Future =
        futures::future::LocalBoxFuture<'static, Result<ServiceResponse, actix_web::Error>>;

    actix_web::dev::forward_ready!(inner);

    fn call(&self, request: actix_http::Request) -> Self::Future {
        let future = self.inner.call(request);
        Box::pin(async move { future.await.map(|r| r.map_into_boxed_body()) })
    }
}
