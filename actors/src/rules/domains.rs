//! Domain freshness (bbs-reference §3.8), as pure functions of time.

use crate::clock::{Nanos, NANOS_PER_SECOND};

/// When a domain upserted at `now` with `ttl_seconds` stops being fresh; a zero TTL never
/// expires.
pub fn expire_time(now: Nanos, ttl_seconds: u32) -> Nanos {
    if ttl_seconds == 0 {
        i64::MAX
    } else {
        now.saturating_add(i64::from(ttl_seconds) * NANOS_PER_SECOND)
    }
}

/// Fresh means the expiry is still ahead of now, with now rounded to the second as upstream
/// compares it.
pub fn is_fresh(expire_time: Nanos, now: Nanos) -> bool {
    let rounded = now.saturating_add(NANOS_PER_SECOND / 2) / NANOS_PER_SECOND * NANOS_PER_SECOND;
    expire_time > rounded
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: Nanos = 1_700_000_000 * NANOS_PER_SECOND + 200_000_000;

    #[test]
    fn zero_ttl_never_expires() {
        assert_eq!(expire_time(NOW, 0), i64::MAX);
        assert!(is_fresh(expire_time(NOW, 0), i64::MAX - 1));
    }

    #[test]
    fn ttl_counts_seconds_from_now() {
        assert_eq!(expire_time(NOW, 30), NOW + 30 * NANOS_PER_SECOND);
        assert!(is_fresh(expire_time(NOW, 30), NOW + 29 * NANOS_PER_SECOND));
        assert!(!is_fresh(expire_time(NOW, 30), NOW + 31 * NANOS_PER_SECOND));
    }

    #[test]
    fn compares_against_now_rounded_to_the_second() {
        let whole = 1_700_000_000 * NANOS_PER_SECOND;
        // now = whole + 0.2 s rounds down to `whole`: an expiry of whole + 1 ns is fresh.
        assert!(is_fresh(whole + 1, whole + 200_000_000));
        // now = whole + 0.7 s rounds up to whole + 1 s: that same expiry is stale.
        assert!(!is_fresh(whole + 1, whole + 700_000_000));
    }
}
