//! Time as upstream stores it: nanoseconds since the Unix epoch.

use std::time::{SystemTime, UNIX_EPOCH};

pub type Nanos = i64;

pub const NANOS_PER_SECOND: i64 = 1_000_000_000;

pub fn now_nanos() -> Nanos {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or_default()
}
