//! Holds the BBS's active/passive lock as upstream's lock runner does (locket lock/lock.go):
//! try at once, then every retry interval; collisions while waiting are routine and quiet; once
//! held, a refresh that fails means the lock is lost and the process must stop acting.

use std::sync::Arc;
use std::time::Duration;

use slog::Logger;
use tokio::sync::Notify;

use crate::error::LocketError;
use crate::models::{Resource, TypeCode};
use crate::{Locket, BBS_LOCK_KEY, LOCK_TYPE};

/// Between attempts on a connection that is not ready, within one request's time.
const UNAVAILABLE_PAUSE: Duration = Duration::from_millis(200);

/// The BBS lock's identity and timing (bbs-reference §10).
#[derive(Clone, Debug)]
pub struct LockSettings {
    /// The config's `uuid`: the lock's owner.
    pub owner: String,
    /// `lock_ttl`, sent in whole seconds.
    pub ttl: Duration,
    /// `lock_retry_interval`: between attempts and refreshes, and each call's timeout.
    pub retry_interval: Duration,
}

impl LockSettings {
    pub fn resource(&self) -> Resource {
        #[allow(deprecated)]
        Resource {
            key: BBS_LOCK_KEY.into(),
            owner: self.owner.clone(),
            value: String::new(),
            r#type: LOCK_TYPE.into(),
            type_code: TypeCode::Lock as i32,
        }
    }

    fn ttl_seconds(&self) -> i64 {
        i64::try_from(self.ttl.as_secs()).unwrap_or(i64::MAX).max(1)
    }
}

#[derive(Clone)]
pub struct LockRunner {
    locket: Arc<dyn Locket>,
    settings: LockSettings,
    /// Woken when the local expiry releases a row, so a passive node tries at once instead
    /// of at its next retry.
    wake: Option<Arc<Notify>>,
    log: Logger,
}

impl LockRunner {
    pub fn new(
        locket: Arc<dyn Locket>,
        settings: LockSettings,
        wake: Option<Arc<Notify>>,
        log: Logger,
    ) -> Self {
        metrics::gauge!("bbs_lock_held").set(0.0);
        LockRunner {
            locket,
            settings,
            wake,
            log,
        }
    }

    /// One lock request, given the retry interval. A connection that is not ready yet is
    /// waited for within that time, as upstream's gRPC `WaitForReady` does, so a locket restart
    /// or a connection blip does not count as a lost lock.
    async fn attempt(&self) -> Result<(), LocketError> {
        let resource = self.settings.resource();
        let deadline = tokio::time::Instant::now() + self.settings.retry_interval;
        loop {
            let result = tokio::time::timeout_at(
                deadline,
                self.locket.lock(&resource, self.settings.ttl_seconds()),
            )
            .await;
            match result {
                Ok(Err(LocketError::Transport {
                    code: tonic::Code::Unavailable,
                    ..
                })) if tokio::time::Instant::now() + UNAVAILABLE_PAUSE < deadline => {
                    tokio::time::sleep(UNAVAILABLE_PAUSE).await;
                }
                Ok(result) => return result,
                Err(_) => {
                    return Err(LocketError::Transport {
                        code: tonic::Code::DeadlineExceeded,
                        message: "lock request timed out".into(),
                    })
                }
            }
        }
    }

    async fn pause(&self) {
        match &self.wake {
            Some(wake) => {
                tokio::select! {
                    _ = tokio::time::sleep(self.settings.retry_interval) => {}
                    _ = wake.notified() => {}
                }
            }
            None => tokio::time::sleep(self.settings.retry_interval).await,
        }
    }

    /// Returns once the lock is held. Failures other than a collision are logged and retried:
    /// a locket that cannot be reached never lets this node act.
    pub async fn acquire(&self) {
        let mut first = true;
        loop {
            match self.attempt().await {
                Ok(()) => return self.acquired(),
                Err(LocketError::LockCollision) if !first => {}
                Err(e) => {
                    let holder = match self.locket.fetch(BBS_LOCK_KEY).await {
                        Ok(resource) => resource.owner,
                        Err(_) => String::new(),
                    };
                    slog::info!(self.log, "failed-to-acquire-lock"; "error" => %e, "lock_owner" => holder);
                }
            }
            first = false;
            self.pause().await;
        }
    }

    /// One attempt at the lock, without retrying: whether it is now held. A server tries once
    /// before it loads its records (with `free_or_ours`, it then knows whether it can skip the
    /// catch-up).
    pub async fn try_acquire(&self) -> bool {
        let held = self.attempt().await.is_ok();
        if held {
            self.acquired();
        }
        held
    }

    /// Whether the lock is free or already this owner's: a server that then wins it knows
    /// no other server can have writes in flight (a holder whose lock lapsed may).
    pub async fn free_or_ours(&self) -> bool {
        match self.locket.fetch(BBS_LOCK_KEY).await {
            Ok(resource) => resource.owner.is_empty() || resource.owner == self.settings.owner,
            Err(LocketError::ResourceNotFound) => true,
            Err(_) => false,
        }
    }

    fn acquired(&self) {
        slog::info!(self.log, "acquired-lock"; "key" => BBS_LOCK_KEY, "owner" => &self.settings.owner);
        metrics::gauge!("bbs_lock_held").set(1.0);
        metrics::counter!("bbs_lock_acquisitions_total").increment(1);
    }

    /// Refreshes the held lock every retry interval; returns the error that lost it.
    pub async fn keep(&self) -> LocketError {
        loop {
            tokio::time::sleep(self.settings.retry_interval).await;
            if let Err(e) = self.attempt().await {
                slog::error!(self.log, "lost-lock"; "error" => %e);
                metrics::gauge!("bbs_lock_held").set(0.0);
                metrics::counter!("bbs_lock_losses_total").increment(1);
                return e;
            }
        }
    }

    /// Gives the lock up (on SIGTERM), so a peer takes over without waiting out the TTL.
    pub async fn release(&self) {
        let resource = self.settings.resource();
        match tokio::time::timeout(self.settings.retry_interval, self.locket.release(&resource))
            .await
        {
            Ok(Ok(())) => slog::info!(self.log, "released-lock"),
            Ok(Err(e)) => slog::error!(self.log, "failed-to-release-lock"; "error" => %e),
            Err(_) => slog::error!(self.log, "failed-to-release-lock"; "error" => "timed out"),
        }
        metrics::gauge!("bbs_lock_held").set(0.0);
    }
}
