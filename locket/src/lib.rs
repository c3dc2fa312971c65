//! Locket, upstream's lock and presence service, for a BBS that must run active/passive and
//! learn its cells from the reps' presences.
//!
//! - [`rules`]: locket's semantics as pure functions over a stored row (who may lock, refresh
//!   or release; what a fetch shows).
//! - [`table`]: those rules applied to locket's `locks` rows in any BBS store.
//! - [`expiry`]: releases rows whose owner stopped refreshing them within their TTL.
//! - [`service`]: the gRPC server (`bbs locket`); [`client`]: the gRPC client.
//! - [`Locket`]: what a BBS needs from locket, served by the gRPC client or, with no locket
//!   process, by the table and expiry in the BBS's own store; [`runner`] holds the BBS lock.

pub mod client;
pub mod error;
pub mod expiry;
pub mod rules;
pub mod runner;
pub mod service;
pub mod table;

/// The generated messages and gRPC stubs, in upstream's package `models`.
pub mod models {
    #![allow(clippy::all, missing_docs)]
    include!(concat!(env!("OUT_DIR"), "/models.rs"));
}

use async_trait::async_trait;

pub use error::{LocketError, LocketResult};
pub use models::{Resource, TypeCode};

/// The lock resource's type string, as stored in the `type` column.
pub const LOCK_TYPE: &str = "lock";
/// A cell presence's type string.
pub const PRESENCE_TYPE: &str = "presence";
/// The BBS's active/passive lock key (bbs-reference §10).
pub const BBS_LOCK_KEY: &str = "bbs";

/// Locket's four calls, as a BBS uses them.
#[async_trait]
pub trait Locket: Send + Sync {
    async fn lock(&self, resource: &Resource, ttl_seconds: i64) -> LocketResult<()>;
    async fn release(&self, resource: &Resource) -> LocketResult<()>;
    async fn fetch(&self, key: &str) -> LocketResult<Resource>;
    async fn fetch_all(&self, type_code: TypeCode) -> LocketResult<Vec<Resource>>;
}
