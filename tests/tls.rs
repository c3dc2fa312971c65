//! Mutual TLS as upstream's components speak it: the API refuses every client but those with
//! a certificate of the deployment's CA, offers TLS 1.2 (upstream's two ECDHE-RSA suites only)
//! and TLS 1.3, and the outbound calls (auctioneer, rep, task callbacks) go over HTTPS with
//! the configured certificates. Bad TLS configuration stops start-up naming the key.

#[macro_use]
mod support;

use std::process::{Command, Stdio};
use std::time::Duration;

use bbs_models as m;
use prost::Message;
use support::certs::Pki;
use support::inproc::{eventually, FakeServer};
use support::{config_json, Server};

/// A server on `store` with the API on mutual TLS from `pki`, plus `extra` keys.
async fn tls_server(pki: &Pki, store: &bbs_store::StoreConfig, extra: serde_json::Value) -> Server {
    let mut config = config_json(store, pki.server_keys());
    if let (Some(config), Some(extra)) = (config.as_object_mut(), extra.as_object()) {
        config.extend(extra.clone());
    }
    let server = Server::spawn_with(config, pki.http_client(Some(&pki.client)));
    server.wait_ready().await;
    server
}

async fn ping_with(client: &reqwest::Client, server: &Server) -> Result<bool, reqwest::Error> {
    let response = client
        .post(format!("{}/v1/ping", server.api))
        .send()
        .await?;
    let body = response.bytes().await?;
    Ok(m::PingResponse::decode(body).is_ok_and(|p| p.available))
}

/// `openssl s_client` against the server with `args`; its output and whether the TLS
/// session carried an HTTP request through.
fn s_client(pki: &Pki, server: &Server, args: &[&str]) -> (String, bool) {
    let address = server.api.trim_start_matches("https://");
    let mut child = Command::new("openssl")
        .args(["s_client", "-connect", address, "-CAfile"])
        .arg(&pki.ca)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("openssl is installed (scripts/test installs it)");
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        let request = format!(
            "POST /v1/ping HTTP/1.1\r\nHost: {address}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        );
        let _ = stdin.write_all(request.as_bytes());
        // Give the server time to answer before stdin closes the session.
        std::thread::sleep(Duration::from_millis(500));
    }
    let output = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let answered = text.contains("HTTP/1.1 200 OK");
    (text, answered)
}

fn client_cert_args(pki: &Pki) -> Vec<String> {
    vec![
        "-cert".into(),
        pki.client.cert.display().to_string(),
        "-key".into(),
        pki.client.key.display().to_string(),
    ]
}

#[actix_web::test]
async fn the_api_answers_only_clients_with_a_certificate_of_the_ca() {
    let Some(store) = support::test_store(bbs_store::Backend::Sqlite).await else {
        return;
    };
    let pki = Pki::new();
    let server = tls_server(&pki, &store.config, serde_json::json!({})).await;
    let good = pki.http_client(Some(&pki.client));
    assert!(ping_with(&good, &server).await.unwrap());
    let refused = [
        ("no client certificate", pki.http_client(None)),
        (
            "another CA's certificate",
            pki.http_client(Some(&pki.foreign_client)),
        ),
        (
            "an expired certificate",
            pki.http_client(Some(&pki.expired_client)),
        ),
    ];
    for (what, client) in refused {
        assert!(
            ping_with(&client, &server).await.is_err(),
            "{what} is refused at the handshake"
        );
    }
    // Plain HTTP to the TLS port gets no HTTP answer.
    let plain = reqwest::Client::new()
        .post(format!(
            "http://{}/v1/ping",
            server.api.trim_start_matches("https://")
        ))
        .send()
        .await;
    assert!(
        plain.as_ref().map_or(true, |r| r.status() != 200),
        "{plain:?}"
    );
    // And the server keeps serving the others.
    assert!(ping_with(&good, &server).await.unwrap());
    // The health server stays plain HTTP, as upstream's.
    let health = reqwest::Client::new()
        .get(format!("{}/ping", server.health))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
}

#[actix_web::test]
async fn go_clients_handshakes_succeed_and_others_fail() {
    let Some(store) = support::test_store(bbs_store::Backend::Sqlite).await else {
        return;
    };
    let pki = Pki::new();
    let server = tls_server(&pki, &store.config, serde_json::json!({})).await;
    let cert = client_cert_args(&pki);
    let with_cert = |extra: &[&str]| {
        let mut args: Vec<&str> = extra.to_vec();
        args.extend(cert.iter().map(String::as_str));
        s_client(&pki, &server, &args)
    };
    // What tlsconfig's internal-service defaults negotiate.
    let (out, answered) = with_cert(&["-tls1_2", "-cipher", "ECDHE-RSA-AES256-GCM-SHA384"]);
    assert!(answered, "{out}");
    assert!(out.contains("ECDHE-RSA-AES256-GCM-SHA384"), "{out}");
    let (out, answered) = with_cert(&["-tls1_2", "-cipher", "ECDHE-RSA-AES128-GCM-SHA256"]);
    assert!(answered, "{out}");
    let (out, answered) = with_cert(&["-tls1_3"]);
    assert!(answered, "{out}");
    assert!(out.contains("TLSv1.3"), "{out}");
    // TLS 1.2 suites other than upstream's two are refused.
    for cipher in ["ECDHE-RSA-CHACHA20-POLY1305", "AES256-GCM-SHA384"] {
        let (out, answered) = with_cert(&["-tls1_2", "-cipher", cipher]);
        assert!(!answered, "{cipher}: {out}");
    }
    // Without a client certificate nothing is answered, on either version.
    for version in ["-tls1_2", "-tls1_3"] {
        let (out, answered) = s_client(&pki, &server, &[version]);
        assert!(!answered, "{version} without a certificate: {out}");
    }
    // TLS 1.1 is refused.
    let (out, answered) = with_cert(&["-tls1_1"]);
    assert!(!answered, "{out}");
}

#[actix_web::test]
async fn an_ecdsa_server_key_serves_tls_1_3() {
    let Some(store) = support::test_store(bbs_store::Backend::Sqlite).await else {
        return;
    };
    let pki = Pki::new();
    let keys = serde_json::json!({
        "cert_file": pki.server_ecdsa.cert,
        "key_file": pki.server_ecdsa.key,
    });
    let server = tls_server(&pki, &store.config, keys).await;
    assert!(ping_with(&pki.http_client(Some(&pki.client)), &server)
        .await
        .unwrap());
    let cert = client_cert_args(&pki);
    let mut args = vec!["-tls1_3"];
    args.extend(cert.iter().map(String::as_str));
    let (out, answered) = s_client(&pki, &server, &args);
    assert!(answered, "{out}");
}

/// Starts a server with `keys` and expects it to refuse to start, naming `key`.
async fn refused_naming(store: &bbs_store::StoreConfig, keys: serde_json::Value, key: &str) {
    // Without the suite's own TLS keys (TEST_TLS), so only `keys` are set.
    let mut config = config_json(store, serde_json::json!({}));
    if let (Some(config), Some(keys)) = (config.as_object_mut(), keys.as_object()) {
        for key in ["ca_file", "cert_file", "key_file"] {
            config.remove(key);
        }
        config.extend(keys.clone());
    }
    let mut server = Server::spawn(config);
    assert_eq!(
        server.stop_when_exited(Duration::from_secs(20)),
        Some(2),
        "{}",
        server.log()
    );
    let log = server.log();
    assert!(log.contains(&format!("`{key}`")), "names {key}: {log}");
}

#[actix_web::test]
async fn bad_tls_settings_stop_start_up_naming_the_key() {
    let Some(store) = support::test_store(bbs_store::Backend::Sqlite).await else {
        return;
    };
    let pki = Pki::new();
    let c = &store.config;
    let garbage = pki.dir.path().join("garbage.pem");
    std::fs::write(&garbage, "not a PEM file").unwrap();
    let keys = |ca: &std::path::Path, cert: &std::path::Path, key: &std::path::Path| serde_json::json!({"ca_file": ca, "cert_file": cert, "key_file": key});
    // Only some of a group.
    refused_naming(
        c,
        serde_json::json!({"cert_file": pki.server.cert}),
        "ca_file",
    )
    .await;
    refused_naming(
        c,
        serde_json::json!({"ca_file": pki.ca, "cert_file": pki.server.cert}),
        "key_file",
    )
    .await;
    refused_naming(
        c,
        serde_json::json!({"rep_ca_cert": pki.ca}),
        "rep_client_cert",
    )
    .await;
    refused_naming(
        c,
        serde_json::json!({"auctioneer_client_key": pki.client.key}),
        "auctioneer_ca_cert",
    )
    .await;
    // Missing, unreadable or mismatched files.
    let missing = pki.dir.path().join("missing.crt");
    refused_naming(c, keys(&pki.ca, &missing, &pki.server.key), "cert_file").await;
    refused_naming(
        c,
        keys(&garbage, &pki.server.cert, &pki.server.key),
        "ca_file",
    )
    .await;
    refused_naming(c, keys(&pki.ca, &pki.server.cert, &garbage), "key_file").await;
    refused_naming(
        c,
        keys(&pki.ca, &pki.server.cert, &pki.server_ecdsa.key),
        "key_file",
    )
    .await;
    refused_naming(
        c,
        serde_json::json!({
            "rep_ca_cert": pki.ca,
            "rep_client_cert": pki.client.cert,
            "rep_client_key": pki.server.key,
        }),
        "rep_client_key",
    )
    .await;
}

/// A fake collaborator serving HTTPS that requires a client certificate of `pki`'s CA.
async fn tls_fake(pki: &Pki, status: u16) -> FakeServer {
    FakeServer::start_tls(status, pki.server_config(&pki.server)).await
}

/// Registers `cell-1` with `rep_url`, starts task `t1` there and cancels it (the cancel
/// itself succeeds whether or not the rep can be told, as upstream's).
async fn run_then_cancel_on_a_cell(server: &Server, rep_url: &str) {
    let cell = m::RegisterCellRequest {
        cell_presence: Some(m::CellPresence {
            cell_id: "cell-1".into(),
            rep_address: rep_url.into(),
            rep_url: rep_url.into(),
            ..Default::default()
        }),
        ttl_seconds: 60,
    };
    let reply: support::ErrorOnly = server.call("/v1/cells/register", &cell).await;
    assert_eq!(reply.error, None);
    let start: m::StartTaskResponse = server
        .call(
            "/v1/tasks/start",
            &m::StartTaskRequest {
                task_guid: "t1".into(),
                cell_id: "cell-1".into(),
            },
        )
        .await;
    assert!(start.should_start);
    let cancel: m::TaskLifecycleResponse = server
        .call(
            "/v1/tasks/cancel",
            &m::TaskGuidRequest {
                task_guid: "t1".into(),
            },
        )
        .await;
    assert_eq!(cancel.error, None);
}

async fn the_bbs_calls_out_over_mutual_tls(backend: bbs_store::Backend) {
    let Some(store) = support::test_store(backend).await else {
        return;
    };
    let pki = Pki::new();
    let auctioneer = tls_fake(&pki, 202).await;
    let rep = tls_fake(&pki, 202).await;
    let receiver = tls_fake(&pki, 200).await;
    // The BBS presents its own certificate to callback receivers, and the client one to
    // the auctioneer and reps.
    let outbound = serde_json::json!({
        "auctioneer_address": auctioneer.url,
        "auctioneer_ca_cert": pki.ca,
        "auctioneer_client_cert": pki.client.cert,
        "auctioneer_client_key": pki.client.key,
        "auctioneer_require_tls": true,
        "rep_ca_cert": pki.ca,
        "rep_client_cert": pki.client.cert,
        "rep_client_key": pki.client.key,
    });
    let server = tls_server(&pki, &store.config, outbound).await;
    let mut task = support::fixtures::desire_task("t1");
    if let Some(definition) = task.task_definition.as_mut() {
        definition.completion_callback_url = format!("{}/done", receiver.url);
    }
    let reply: m::TaskLifecycleResponse = server.call("/v1/tasks/desire.r2", &task).await;
    assert_eq!(reply.error, None);
    assert!(
        eventually(Duration::from_secs(10), || !auctioneer
            .received()
            .is_empty())
        .await,
        "the auctioneer is asked to place the task over TLS"
    );
    assert_eq!(auctioneer.received()[0].path, "/v1/tasks");
    run_then_cancel_on_a_cell(&server, &rep.url).await;
    assert!(
        eventually(Duration::from_secs(10), || !rep.received().is_empty()).await,
        "the rep is told over TLS"
    );
    assert_eq!(rep.received()[0].path, "/v1/tasks/t1/cancel");
    assert!(
        eventually(Duration::from_secs(10), || !receiver.received().is_empty()).await,
        "the completion callback goes over TLS"
    );
    assert_eq!(receiver.received()[0].body["task_guid"], "t1");
}

async fn the_auctioneer_falls_back_to_http_unless_tls_is_required(backend: bbs_store::Backend) {
    let Some(store) = support::test_store(backend).await else {
        return;
    };
    let pki = Pki::new();
    // A plain-HTTP auctioneer behind an https address: the TLS call fails.
    let plain = FakeServer::start_plain(202).await;
    let address = plain.url.replace("http://", "https://");
    for (require_tls, reached) in [(false, true), (true, false)] {
        let keys = serde_json::json!({
            "auctioneer_address": address,
            "auctioneer_ca_cert": pki.ca,
            "auctioneer_client_cert": pki.client.cert,
            "auctioneer_client_key": pki.client.key,
            "auctioneer_require_tls": require_tls,
        });
        let server = tls_server(&pki, &store.config, keys).await;
        let guid = format!("t-{require_tls}");
        let reply: m::TaskLifecycleResponse = server
            .call(
                "/v1/tasks/desire.r2",
                &support::fixtures::desire_task(&guid),
            )
            .await;
        assert_eq!(reply.error, None);
        let got = eventually(Duration::from_secs(3), || {
            plain
                .received()
                .iter()
                .any(|r| r.body.to_string().contains(&guid))
        })
        .await;
        assert_eq!(got, reached, "require_tls {require_tls}");
    }
}

async fn a_rep_without_an_https_url_is_not_called_over_plain_http(backend: bbs_store::Backend) {
    let Some(store) = support::test_store(backend).await else {
        return;
    };
    let pki = Pki::new();
    let plain_rep = FakeServer::start_plain(202).await;
    let keys = serde_json::json!({
        "rep_ca_cert": pki.ca,
        "rep_client_cert": pki.client.cert,
        "rep_client_key": pki.client.key,
    });
    let server = tls_server(&pki, &store.config, keys).await;
    let reply: m::TaskLifecycleResponse = server
        .call("/v1/tasks/desire.r2", &support::fixtures::desire_task("t1"))
        .await;
    assert_eq!(reply.error, None);
    run_then_cancel_on_a_cell(&server, &plain_rep.url).await;
    actix_web::rt::time::sleep(Duration::from_millis(500)).await;
    assert!(
        plain_rep.received().is_empty(),
        "upstream requires https reps"
    );
}

/// With the TLS-only test stores (scripts/ensure-tls-stores), the server's store sessions are
/// encrypted, as the store itself reports them.
async fn the_store_sessions_are_tls(backend: bbs_store::Backend) {
    let Some(tls) = bbs_store::testing::store_tls() else {
        eprintln!("SKIPPED here: the store TLS pass (TEST_STORE_TLS_DIR) runs this");
        return;
    };
    let Some(store) = support::test_store(backend).await else {
        return;
    };
    let server = Server::start(config_json(&store.config, serde_json::json!({}))).await;
    let reply: m::DesiredLrpLifecycleResponse = server
        .call(
            "/v1/desired_lrp/desire.r2",
            &m::DesireLrpRequest {
                desired_lrp: Some(support::fixtures::desired_lrp("web", 1)),
            },
        )
        .await;
    assert_eq!(reply.error, None);
    match backend {
        bbs_store::Backend::Postgres => {
            let database = store
                .config
                .connection_string
                .rsplit('/')
                .next()
                .unwrap()
                .to_owned();
            let rows = store
                .text_rows(&format!(
                    "SELECT count(*)::text AS a, coalesce(bool_and(s.ssl), false)::text AS b,                      coalesce(min(s.version), '')::text AS c, ''::text AS d, NULL::text AS e                      FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid)                      WHERE a.datname = '{database}' AND a.pid <> pg_backend_pid()"
                ))
                .await;
            let [count, all_ssl, version, _, _] = &rows[0];
            assert_ne!(count.as_deref(), Some("0"), "the server has sessions");
            assert_eq!(all_ssl.as_deref(), Some("true"), "every session is TLS");
            assert!(version.as_deref().unwrap().starts_with("TLSv1."));
        }
        bbs_store::Backend::Mysql => {
            let rows = store
                .text_rows(
                    "SELECT CAST(@@require_secure_transport AS CHAR) AS a,                      CAST(@@have_ssl AS CHAR) AS b, '' AS c, '' AS d, NULL AS e",
                )
                .await;
            assert!(
                matches!(rows[0][0].as_deref(), Some("1" | "ON")),
                "plain sessions are refused: {rows:?}"
            );
            assert_eq!(rows[0][1].as_deref(), Some("YES"));
            let cipher = store
                .text_rows(
                    "SELECT VARIABLE_VALUE AS a, '' AS b, '' AS c, '' AS d, NULL AS e                      FROM information_schema.SESSION_STATUS WHERE VARIABLE_NAME = 'SSL_CIPHER'",
                )
                .await;
            assert_ne!(cipher[0][0].as_deref(), Some(""), "a TLS session");
        }
        bbs_store::Backend::Etcd => {
            // etcd requires client certificates: without one, nothing is answered.
            let ca = std::fs::read(tls.etcd_ca.as_ref().unwrap()).unwrap();
            let options = etcd_client::ConnectOptions::new()
                .with_connect_timeout(Duration::from_secs(3))
                .with_timeout(Duration::from_secs(3))
                .with_tls(
                    etcd_client::TlsOptions::new()
                        .ca_certificate(etcd_client::Certificate::from_pem(ca)),
                );
            let endpoints = store.config.connection_string.clone();
            let refused = match etcd_client::Client::connect([endpoints], Some(options)).await {
                Err(_) => true,
                Ok(mut client) => client.get("/version", None).await.is_err(),
            };
            assert!(refused, "etcd refuses a client without a certificate");
        }
        bbs_store::Backend::Sqlite => unreachable!("SQLite has no connection to secure"),
    }
}

/// A store whose certificate the configured CA does not sign: start-up stops naming the keys.
async fn a_store_refusing_the_handshake_stops_start_up_naming_the_key(backend: bbs_store::Backend) {
    if bbs_store::testing::store_tls().is_none() {
        eprintln!("SKIPPED here: the store TLS pass (TEST_STORE_TLS_DIR) runs this");
        return;
    }
    let Some(store) = support::test_store(backend).await else {
        return;
    };
    let key = match backend {
        bbs_store::Backend::Mysql | bbs_store::Backend::Postgres => "sql_ca_cert_file",
        bbs_store::Backend::Etcd => "etcd_ca_file",
        bbs_store::Backend::Sqlite => unreachable!("SQLite has no connection to secure"),
    };
    let pki = Pki::new();
    let mut server = Server::spawn(config_json(
        &store.config,
        serde_json::json!({ key: pki.other_ca }),
    ));
    let code = server.stop_when_exited(Duration::from_secs(60));
    let log = server.log();
    assert!(matches!(code, Some(c) if c != 0), "{code:?}: {log}");
    assert!(log.contains(key), "names {key}: {log}");
}

/// The store connection cases, on the stores that connect over the network (SQLite is a
/// file).
macro_rules! on_network_stores {
    ($($case:ident),* $(,)?) => {
        mod store_tls {
            mod mysql { $( #[actix_web::test] async fn $case() { super::super::$case(bbs_store::Backend::Mysql).await } )* }
            mod postgres { $( #[actix_web::test] async fn $case() { super::super::$case(bbs_store::Backend::Postgres).await } )* }
            mod etcd { $( #[actix_web::test] async fn $case() { super::super::$case(bbs_store::Backend::Etcd).await } )* }
        }
    };
}

on_network_stores!(
    a_store_refusing_the_handshake_stops_start_up_naming_the_key,
    the_store_sessions_are_tls,
);

on_every_backend!(
    the_bbs_calls_out_over_mutual_tls,
    the_auctioneer_falls_back_to_http_unless_tls_is_required,
    a_rep_without_an_https_url_is_not_called_over_plain_http,
);
