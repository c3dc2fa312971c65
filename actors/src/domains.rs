//! The DomainActor owns the domain set: it loads it once, writes every upsert through the
//! store before acknowledging, and answers reads from memory.

use std::collections::HashMap;

use actix::{Actor, Context, Handler, Message, ResponseActFuture};
use futures::future::BoxFuture;
use futures::FutureExt;

use bbs_store::DomainRecord;

use crate::clock::{now_nanos, Nanos};
use crate::error::BbsResult;
use crate::keyed_lock::KeyedLocks;
use crate::mailbox::Mailbox;
use crate::rules::domains::{expire_time, is_fresh};
use crate::storage::StoragePool;
use crate::write_through::{mutate, Change, OwnsRecords, Unsettled};

/// Upserts a domain with a TTL in seconds (0 = never expires).
#[derive(Message)]
#[rtype(result = "BbsResult<()>")]
pub struct UpsertDomain {
    pub domain: String,
    pub ttl_seconds: u32,
}

/// The names of the fresh domains, sorted.
#[derive(Message)]
#[rtype(result = "Vec<String>")]
pub struct FreshDomains;

pub struct DomainActor {
    expiries: HashMap<String, Nanos>,
    storage: StoragePool,
    locks: KeyedLocks<String>,
    capacity: usize,
    unsettled: Unsettled<String>,
}

impl Actor for DomainActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(self.capacity);
    }
}

impl DomainActor {
    /// Loads the domains from the store and starts the actor.
    pub async fn start(storage: StoragePool, capacity: usize) -> BbsResult<Mailbox<DomainActor>> {
        let domains = storage
            .run(|store| async move { store.domains().await })
            .await?;
        let actor = DomainActor {
            expiries: domains
                .into_iter()
                .map(|d| (d.domain, d.expire_time))
                .collect(),
            storage,
            locks: KeyedLocks::default(),
            capacity,
            unsettled: Unsettled::default(),
        };
        Ok(Mailbox::new(actor.start(), "domains", capacity))
    }
}

impl OwnsRecords for DomainActor {
    type Key = String;
    type Record = Nanos;
    type Held<'a> = &'a Nanos;
    type Report = ();

    fn locks(&self) -> &KeyedLocks<String> {
        &self.locks
    }

    fn record(&self, key: &String) -> Option<&Nanos> {
        self.expiries.get(key)
    }

    fn persist(
        &self,
        key: &String,
        _before: Option<&Nanos>,
        change: &Change<Nanos>,
    ) -> BoxFuture<'static, BbsResult<()>> {
        let storage = self.storage.clone();
        let record = match change {
            Change::Insert(expire_time) | Change::Update(expire_time) => Some(DomainRecord {
                domain: key.clone(),
                expire_time: *expire_time,
            }),
            Change::Delete => None,
            Change::Unchanged => return async { Ok(()) }.boxed(),
        };
        let domain = key.clone();
        async move {
            storage
                .run_write(move |store| async move {
                    match record {
                        Some(record) => store.upsert_domain(&record).await,
                        None => store.delete_domain(&domain).await,
                    }
                })
                .await
        }
        .boxed()
    }

    type Stored = Option<Nanos>;

    fn unsettled(&mut self) -> &mut Unsettled<String> {
        &mut self.unsettled
    }

    fn reload(&self, key: &String) -> BoxFuture<'static, BbsResult<Option<Nanos>>> {
        let (storage, domain) = (self.storage.clone(), key.clone());
        async move {
            let domains = storage
                .run(|store| async move { store.domains().await })
                .await?;
            Ok(domains
                .into_iter()
                .find(|d| d.domain == domain)
                .map(|d| d.expire_time))
        }
        .boxed()
    }

    fn settle(&mut self, key: &String, stored: Option<Nanos>) {
        match stored {
            Some(expiry) => self.expiries.insert(key.clone(), expiry),
            None => self.expiries.remove(key),
        };
    }

    fn apply(&mut self, key: String, change: Change<Nanos>, _: ()) {
        match change {
            Change::Insert(expiry) | Change::Update(expiry) => {
                self.expiries.insert(key, expiry);
            }
            Change::Delete => {
                self.expiries.remove(&key);
            }
            Change::Unchanged => {}
        }
    }
}

impl Handler<UpsertDomain> for DomainActor {
    type Result = ResponseActFuture<Self, BbsResult<()>>;

    fn handle(&mut self, message: UpsertDomain, _: &mut Self::Context) -> Self::Result {
        let expiry = expire_time(now_nanos(), message.ttl_seconds);
        mutate(self, message.domain, move |current| {
            let change = match current {
                None => Change::Insert(expiry),
                Some(_) => Change::Update(expiry),
            };
            Ok((change, ()))
        })
    }
}

/// Deletes the domains that are no longer fresh (the first step of LRP convergence);
/// answers how many it removed.
#[derive(Message)]
#[rtype(result = "usize")]
pub struct PruneExpiredDomains;

impl Handler<PruneExpiredDomains> for DomainActor {
    type Result = usize;

    fn handle(&mut self, _: PruneExpiredDomains, ctx: &mut Self::Context) -> Self::Result {
        use actix::{ActorFutureExt, AsyncContext};
        let now = now_nanos();
        let expired: Vec<String> = self
            .expiries
            .iter()
            .filter(|(_, expiry)| !is_fresh(**expiry, now))
            .map(|(domain, _)| domain.clone())
            .collect();
        for domain in &expired {
            let pruned = mutate(self, domain.clone(), move |current| match current {
                Some(expiry) if !is_fresh(*expiry, now) => Ok((Change::Delete, ())),
                _ => Ok((Change::Unchanged, ())),
            });
            ctx.spawn(pruned.map(|_, _, _| ()));
        }
        expired.len()
    }
}

impl Handler<FreshDomains> for DomainActor {
    type Result = Vec<String>;

    fn handle(&mut self, _: FreshDomains, _: &mut Self::Context) -> Self::Result {
        let now = now_nanos();
        let mut fresh: Vec<String> = self
            .expiries
            .iter()
            .filter(|(_, expiry)| is_fresh(**expiry, now))
            .map(|(domain, _)| domain.clone())
            .collect();
        fresh.sort();
        fresh
    }
}

/// The domains as another server left them, for a standby's catch-up.
#[derive(Message)]
#[rtype(result = "()")]
pub struct ReplaceDomains(pub Vec<DomainRecord>);

impl Handler<ReplaceDomains> for DomainActor {
    type Result = ();

    fn handle(&mut self, msg: ReplaceDomains, _: &mut Self::Context) {
        self.expiries = msg
            .0
            .into_iter()
            .map(|d| (d.domain, d.expire_time))
            .collect();
    }
}

crate::metered_handlers!(DomainActor: UpsertDomain, FreshDomains, PruneExpiredDomains, ReplaceDomains);
