//! Start-up and shutdown, in upstream's order: health server first, then the store and its
//! migrations, then the `bbs` lock (a passive server waits here, its API port closed), then
//! the API (answering 503 until the actors have loaded their records), then the actors.
//! Losing the lock ends the process; SIGTERM releases it.

use std::sync::Arc;
use std::time::Duration;

use actix::Arbiter;
use actix_web::{web, HttpServer};
use bbs_actors::{ActorSettings, Bbs};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use slog::{error, info, Logger};

use crate::config::Settings;
use crate::http::{api_app, debug_app, health_app, ApiState};

/// How often a standby catches up with the store while it waits for the lock. Reading every
/// version costs seconds at 250K instances, and the rep loop's re-asserts change nothing, so
/// this only keeps a long wait's backlog small.
const STANDBY_REFRESH: Duration = Duration::from_secs(60);

/// How long a server waits on its first attempt at the lock before it starts loading anyway.
const FIRST_LOCK_ATTEMPT: Duration = Duration::from_secs(5);

/// How long an idle API connection is kept: longer than Go's 90 s client idle timeout.
const KEEP_ALIVE_SECONDS: u64 = 120;

/// How long a stopping server waits for requests in flight before it drops them.
pub const SHUTDOWN_DRAIN: Duration = Duration::from_secs(10);

/// Resolves on SIGTERM or SIGINT, naming it. A signal whose handler cannot be installed
/// keeps its default action (the process ends).
pub(crate) async fn termination() -> &'static str {
    use tokio::signal::unix::{signal, Signal, SignalKind};
    async fn received(signal: Option<Signal>) {
        match signal {
            Some(mut s) => {
                s.recv().await;
            }
            None => std::future::pending().await,
        }
    }
    let term = signal(SignalKind::terminate()).ok();
    let int = signal(SignalKind::interrupt()).ok();
    tokio::select! {
        _ = received(term) => "SIGTERM",
        _ = received(int) => "SIGINT",
    }
}

/// Stops the API: no new connections; event streams end at once; responses close their
/// connections; requests in flight are answered and written (for at most `SHUTDOWN_DRAIN`, or
/// until a second signal), then every remaining connection is closed.
async fn stop_api(state: &ApiState, handle: &actix_server::ServerHandle, log: &Logger) {
    state.begin_stopping();
    handle.pause().await;
    if let Ok(bbs) = state.bbs() {
        bbs.events.close_all();
    }
    tokio::select! {
        drained = state.drained(SHUTDOWN_DRAIN) => if !drained {
            slog::warn!(log, "shutdown-drain-timed-out"; "seconds" => SHUTDOWN_DRAIN.as_secs());
        },
        signal = termination() => {
            slog::warn!(log, "stopping-now"; "signal" => signal);
        }
    }
    // The last bytes written (an event stream's final chunk) leave before the drop.
    tokio::time::sleep(Duration::from_millis(20)).await;
    handle.stop(false).await;
}

/// Serves `/metrics` on `address` (none when it is empty), for the BBS and `bbs locket`.
pub(crate) fn serve_debug(
    address: &str,
    metrics: &Arc<PrometheusHandle>,
) -> std::io::Result<Option<actix_web::dev::ServerHandle>> {
    if address.is_empty() {
        return Ok(None);
    }
    let handle = Arc::clone(metrics);
    let server = HttpServer::new(move || debug_app(Arc::clone(&handle)))
        .workers(1)
        .disable_signals()
        .bind(address)?
        .run();
    let handle = server.handle();
    actix_rt::spawn(server);
    Ok(Some(handle))
}

/// Latency buckets for every `*_seconds` histogram, from 100 µs to 30 s.
const SECONDS_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0, 30.0,
];

pub fn install_metrics() -> Result<Arc<PrometheusHandle>, String> {
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), SECONDS_BUCKETS)
        .map_err(|e| e.to_string())?
        .install_recorder()
        .map_err(|e| e.to_string())?;
    Ok(Arc::new(handle))
}

/// Upstream's OpenFileDescriptors: each open connection holds one, so it shows how near the
/// process is to its limit (`ulimit -n`) under many clients.
fn export_open_file_descriptors() {
    if let Ok(entries) = std::fs::read_dir("/proc/self/fd") {
        metrics::gauge!("bbs_open_file_descriptors").set(entries.count() as f64);
    }
}

/// Upstream's one-time copy from its etcd-era store into an empty SQL store, when
/// `etcd_cluster_urls` is set beside a SQL `database_driver` (docs/migration.md). Every node
/// may run it: nodes starting together copy the same records, and a store that already holds
/// records is never copied into.
async fn copy_from_etcd_v2(
    settings: &Settings,
    store: &dyn bbs_store::Store,
    codec: &bbs_actors::codec::Codec,
    log: &Logger,
) -> Result<(), i32> {
    let config = match settings.etcd_v2() {
        Ok(Some(config)) => config,
        Ok(None) => return Ok(()),
        Err(e) => {
            error!(log, "invalid-config"; "error" => %e);
            return Err(2);
        }
    };
    if store.backend() == bbs_store::Backend::Etcd {
        slog::warn!(log, "etcd-v2-ignored"; "detail" => "etcd_cluster_urls is copied from only into a SQL store");
        return Ok(());
    }
    let started = std::time::Instant::now();
    match crate::migrate::startup::copy_etcd_v2_at_start(&config, store, codec).await {
        Ok(None) => {
            info!(log, "etcd-v2-nothing-to-copy");
            Ok(())
        }
        Ok(Some(copy)) => {
            for u in &copy.unreadable {
                slog::warn!(log, "etcd-v2-record-skipped"; "kind" => u.kind, "key" => &u.key, "error" => &u.error);
            }
            info!(log, "etcd-v2-copied"; "copied" => copy.copied, "skipped" => copy.unreadable.len(),
                "duration_ms" => started.elapsed().as_millis() as u64);
            Ok(())
        }
        Err(e) => {
            error!(log, "etcd-v2-copy-failed"; "error" => %e);
            Err(1)
        }
    }
}

/// Runs the server until SIGINT/SIGTERM. Returns the process exit code.
pub async fn run(settings: Settings, log: Logger, metrics: Arc<PrometheusHandle>) -> i32 {
    let ignored = settings.ignored_keys();
    if !ignored.is_empty() {
        info!(log, "ignored-upstream-keys"; "keys" => ignored.join(","));
    }
    let key_ring = match settings.key_ring() {
        Ok(ring) => ring.map(Arc::new),
        Err(e) => {
            error!(log, "invalid-config"; "error" => %e);
            return 2;
        }
    };
    if key_ring.is_none() {
        slog::warn!(log, "records-not-encrypted"; "detail" => "no encryption_keys configured: records are stored base64-encoded, not encrypted");
    }
    let store_config = match settings.store_config() {
        Ok(c) => c,
        Err(e) => {
            error!(log, "invalid-config"; "error" => %e);
            return 2;
        }
    };

    let health = match HttpServer::new(health_app)
        .workers(1)
        .disable_signals()
        .bind(&settings.health_address)
    {
        Ok(server) => server.run(),
        Err(e) => {
            error!(log, "health-listen-failed"; "address" => &settings.health_address, "error" => %e);
            return 1;
        }
    };
    let health_handle = health.handle();
    actix_rt::spawn(health);

    let debug_handle = match serve_debug(&settings.debug_address, &metrics) {
        Ok(handle) => handle,
        Err(e) => {
            error!(log, "debug-listen-failed"; "address" => &settings.debug_address, "error" => %e);
            return 1;
        }
    };
    let upkeep = Arc::clone(&metrics);
    export_open_file_descriptors();
    actix_rt::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(5)).await;
            upkeep.run_upkeep();
            export_open_file_descriptors();
        }
    });

    let state = web::Data::new(ApiState::new(settings.max_pending_requests));
    let max_body = settings.max_request_body_bytes;
    let (api_tls, outbound_tls) = match (settings.api_tls(), settings.outbound_tls()) {
        (Ok(api), Ok(outbound)) => (api, outbound),
        (Err(e), _) | (_, Err(e)) => {
            error!(log, "invalid-config"; "error" => %e);
            return 2;
        }
    };
    if api_tls.is_none() {
        slog::warn!(log, "api-not-tls"; "detail" => "ca_file, cert_file and key_file are not set: the API serves plain HTTP, which Diego's components do not speak (see docs/security.md)");
    }
    let listen = crate::listener::ListenSettings {
        address: settings.listen_address.clone(),
        // Go clients keep idle connections for 90 s; closing them sooner races their next
        // request on the connection. A loaded server may also take more than actix's 5 s
        // default to read a request's headers, which must not be answered with a 408.
        keep_alive: Duration::from_secs(KEEP_ALIVE_SECONDS),
        client_request_timeout: Duration::from_secs(60),
        backlog: 4096,
        tls: api_tls,
    };
    let mut terminated = Box::pin(termination());
    let servers = Servers {
        api: None,
        health: health_handle,
        debug: debug_handle,
    };
    info!(log, "health-listening"; "health" => &settings.health_address, "debug" => &settings.debug_address);

    // Lent to upstream's record-rewriting migrations, for a database the Go BBS left at an
    // earlier schema version.
    let upgrade_codec = key_ring
        .as_ref()
        .map(|keys| bbs_actors::codec::Codec::with_keys(keys.clone()));
    let started = std::time::Instant::now();
    let connected = tokio::select! {
        connected = bbs_store::connect_with(
            &store_config,
            bbs_store::SchemaUse::Migrate(upgrade_codec.as_ref().map(|c| c as &dyn bbs_store::UpgradeCodec)),
        ) => connected,
        signal = &mut terminated => {
            info!(log, "signalled-while-starting"; "signal" => signal);
            return servers.stop(0, &log).await;
        }
    };
    let store = match connected {
        Err(e) => {
            error!(log, "store-open-failed"; "backend" => store_config.backend.name(), "error" => %e);
            return servers.stop(1, &log).await;
        }
        Ok(store) => store,
    };
    info!(log, "store-ready"; "backend" => store_config.backend.name(), "duration_ms" => started.elapsed().as_millis() as u64);
    // Upstream's MigrationDuration: here the store's opening, which runs its migrations.
    metrics::gauge!("bbs_migration_duration_seconds").set(started.elapsed().as_secs_f64());
    if let Err(code) = copy_from_etcd_v2(
        &settings,
        store.as_ref(),
        &upgrade_codec.clone().unwrap_or_default(),
        &log,
    )
    .await
    {
        return servers.stop(code, &log).await;
    }

    // Only the lock holder opens the API and acts (upstream: a passive BBS refuses
    // connections and answers only on its health port).
    // A lock kept in the store gets connections of its own: a pool busy with loading,
    // convergence or a catch-up must not delay a refresh past the TTL.
    let lock_store = match settings.locket_address.as_deref() {
        Some(address) if !address.is_empty() => store.clone(),
        _ => {
            let config = bbs_store::StoreConfig {
                max_connections: 2,
                ..store_config.clone()
            };
            match bbs_store::connect(&config).await {
                Ok(lock_store) => lock_store,
                Err(e) => {
                    error!(log, "store-open-failed"; "backend" => store_config.backend.name(), "error" => %e);
                    return servers.stop(1, &log).await;
                }
            }
        }
    };
    let activity = match crate::lock::Activity::new(&settings, lock_store, &log) {
        Ok(activity) => activity,
        Err(e) => {
            error!(log, "invalid-config"; "error" => %e);
            return servers.stop(2, &log).await;
        }
    };
    // Load every record while waiting for the lock (a standby), so taking over costs only a
    // catch-up on what the active server changed since (actors/src/standby.rs).
    let arbiters: Vec<Arbiter> = (0..std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2))
        .map(|_| Arbiter::new())
        .collect();
    let handles: Vec<_> = arbiters.iter().map(|a| a.handle()).collect();
    let actor_settings = ActorSettings {
        storage_actors: settings.storage_actors(),
        store_timeouts: bbs_actors::storage::StoreTimeouts::new(
            settings.db_read_timeout,
            settings.db_write_timeout,
        ),
        mailbox_capacity: settings.actor_mailbox_capacity,
        auctioneer_address: settings.auctioneer_address.clone(),
        communication_timeout: settings.communication_timeout,
        max_task_retries: settings.max_task_retries,
        task_callback_workers: settings.task_callback_workers as usize,
        kick_task_duration: settings.kick_task_duration,
        encryption: key_ring.clone(),
        events: bbs_actors::events::HubSettings {
            retention_count: settings.event_retention_count,
            retention_time: settings.event_retention_duration,
            subscriber_buffer: settings.event_subscriber_buffer,
        },
        converge_repeat_interval: settings.converge_repeat_interval,
        expire_pending_task_duration: settings.expire_pending_task_duration,
        expire_completed_task_duration: settings.expire_completed_task_duration,
        convergence_workers: settings.convergence_workers as usize,
        outbound_tls: outbound_tls.clone(),
        cell_directory: activity.cells.clone(),
        standby: true,
    };
    let mut run = Run {
        activity,
        keeper: None,
        arbiters,
        servers,
    };
    // The lock is sought, and once held refreshed, by tasks of their own, so nothing this
    // server does meanwhile (loading, catching up) delays a refresh.
    let runner = run.activity.runner.clone();
    // One attempt before the first read. A server that wins a lock that was free or already
    // its own (a restart) has every acknowledged write once its load ends: no other server
    // can write after that, nor had one the lock with writes in flight. So it skips the
    // catch-up (at 250,000 LRPs, seconds of reading every record's version). A standby's
    // attempt fails at once and it loads as before; one that takes over a lapsed lock of
    // another server's catches up after its load.
    let first_attempt = async {
        let quiet = runner.free_or_ours().await;
        (runner.try_acquire().await, quiet)
    };
    let (won_first, quiet) = tokio::time::timeout(FIRST_LOCK_ATTEMPT, first_attempt)
        .await
        .unwrap_or((false, false));
    let mut held = won_first;
    let held_before_load = won_first && quiet;
    if held {
        run.hold();
    }
    let mut acquired = actix_rt::spawn(async move {
        if !won_first {
            runner.acquire().await
        }
    });
    let loading = std::time::Instant::now();
    let mut load = Box::pin(Bbs::start(store, &actor_settings, &handles, &log));
    let loaded = loop {
        tokio::select! {
            loaded = &mut load => break loaded,
            _ = &mut acquired, if !held => {
                held = true;
                run.hold();
            }
            lost = run.lost() => {
                error!(log, "lost-lock-while-starting"; "error" => lost);
                return run.finish(1, false, &log).await;
            }
            signal = &mut terminated => {
                info!(log, "signalled-while-starting"; "signal" => signal);
                acquired.abort();
                return run.finish(0, true, &log).await;
            }
        }
    };
    drop(load);
    let bbs = match loaded {
        Ok(bbs) => bbs,
        Err(e) => {
            error!(log, "actors-start-failed"; "error" => %e);
            acquired.abort();
            return run.finish(1, true, &log).await;
        }
    };
    info!(log, "standby-ready"; "load_ms" => loading.elapsed().as_millis() as u64);
    // A standby keeps up while it waits, so the catch-up at take-over stays small.
    let mut refresh = tokio::time::interval(STANDBY_REFRESH);
    refresh.tick().await;
    while !held {
        tokio::select! {
            _ = &mut acquired => {
                held = true;
                run.hold();
            }
            _ = refresh.tick() => {
                if let Err(e) = bbs.catch_up(&log).await {
                    slog::warn!(log, "standby-catch-up-failed"; "error" => %e);
                }
            }
            signal = &mut terminated => {
                info!(log, "signalled-while-passive"; "signal" => signal);
                acquired.abort();
                // Upstream releases on every signal: an attempt in flight may have won.
                return run.finish(0, true, &log).await;
            }
        }
    }
    if held_before_load {
        info!(log, "catch-up-skipped"; "reason" => "the lock was free or this server's, and held before the first read");
    } else {
        let catching_up = std::time::Instant::now();
        let caught_up = tokio::select! {
            caught_up = bbs.catch_up(&log) => caught_up,
            lost = run.lost() => {
                error!(log, "lost-lock-while-starting"; "error" => lost);
                return run.finish(1, false, &log).await;
            }
        };
        match caught_up {
            Ok(report) => {
                info!(log, "caught-up"; "duration_ms" => catching_up.elapsed().as_millis() as u64,
                    "tasks" => report.tasks, "desired_lrps" => report.desired_lrps, "actual_lrps" => report.actual_lrps,
                    "versions_read_ms" => report.versions_read.as_millis() as u64);
            }
            Err(e) => {
                error!(log, "catch-up-failed"; "error" => %e);
                return run.finish(1, true, &log).await;
            }
        }
    }
    if let Err(e) = bbs.activate().await {
        error!(log, "activation-failed"; "error" => %e);
        bbs.deactivate();
        return run.finish(1, true, &log).await;
    }

    // Signals are ours (stop_api): a graceful stop would wait out idle keep-alive connections
    // and open event streams.
    let api_state = state.clone();
    let (api, api_handle) = match crate::listener::serve(listen, move || {
        api_app(api_state.clone(), max_body)
    }) {
        Ok(server) => server,
        Err(e) => {
            error!(log, "api-listen-failed"; "address" => &settings.listen_address, "error" => %e);
            bbs.deactivate();
            return run.finish(1, true, &log).await;
        }
    };
    run.servers.api = Some(api_handle.clone());
    let api_task = actix_rt::spawn(api);

    let encryptor = bbs.encryptor.clone();
    let encryptor_log = log.clone();
    actix_rt::spawn(async move {
        match encryptor.call(bbs_actors::encryptor::Rotate).await {
            Ok(Ok(report)) => {
                info!(encryptor_log, "encryption-checked"; "rewritten" => report.rewritten, "failed" => report.failed)
            }
            Ok(Err(e)) | Err(e) => {
                error!(encryptor_log, "encryption-rotation-failed"; "error" => %e)
            }
        }
    });
    state.set_ready(bbs.clone());
    metrics::gauge!("bbs_master_elected").set(1.0);
    info!(log, "started"; "address" => &settings.listen_address);
    // The lock stays refreshed while the API drains; everything else stops before it is
    // released, so no write of this server's can follow a successor's catch-up.
    let code = tokio::select! {
        _ = api_task => 0,
        signal = &mut terminated => {
            info!(log, "stopping"; "signal" => signal);
            stop_api(&state, &api_handle, &log).await;
            0
        }
        _ = state.unrecoverable() => {
            error!(log, "unrecoverable-error-shutting-down");
            stop_api(&state, &api_handle, &log).await;
            1
        }
        // Upstream exits at once: another server may already be acting.
        lost = run.lost() => {
            error!(log, "lost-lock-exiting"; "error" => lost);
            bbs.deactivate();
            return run.finish(1, false, &log).await;
        }
    };
    info!(log, "api-stopped");
    bbs.deactivate();
    run.finish(code, true, &log).await
}

/// What a run holds that its end must let go of, in order.
struct Run {
    activity: crate::lock::Activity,
    /// The task refreshing the lock, once held; it answers the error that lost it.
    keeper: Option<actix_rt::task::JoinHandle<bbs_locket::LocketError>>,
    arbiters: Vec<Arbiter>,
    servers: Servers,
}

impl Run {
    /// The lock is held: keep refreshing it from now on.
    fn hold(&mut self) {
        let runner = self.activity.runner.clone();
        self.keeper = Some(actix_rt::spawn(async move { runner.keep().await }));
    }

    /// Resolves when the held lock is lost; never while it is not held.
    async fn lost(&mut self) -> String {
        match self.keeper.as_mut() {
            Some(keeper) => match keeper.await {
                Ok(error) => error.to_string(),
                Err(e) => format!("the lock refresh stopped: {e}"),
            },
            None => std::future::pending().await,
        }
    }

    /// Stops the actors, then (when `release`) gives the lock up, then closes the servers.
    async fn finish(mut self, code: i32, release: bool, log: &Logger) -> i32 {
        for arbiter in self.arbiters.drain(..) {
            arbiter.stop();
        }
        if let Some(keeper) = self.keeper.take() {
            keeper.abort();
        }
        if release {
            self.activity.runner.release().await;
        }
        self.activity.stop();
        self.servers.stop(code, log).await
    }
}

/// The servers a run may have opened; the API only once the lock is held.
struct Servers {
    api: Option<actix_server::ServerHandle>,
    health: actix_web::dev::ServerHandle,
    debug: Option<actix_web::dev::ServerHandle>,
}

impl Servers {
    /// Closes them at once and answers `code`.
    async fn stop(self, code: i32, log: &Logger) -> i32 {
        if let Some(api) = &self.api {
            api.stop(false).await;
        }
        self.health.stop(false).await;
        if let Some(handle) = &self.debug {
            handle.stop(false).await;
        }
        info!(log, "exited"; "code" => code);
        code
    }
}
