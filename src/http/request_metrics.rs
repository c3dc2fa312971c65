//! Upstream's RequestCount and RequestLatency, per route (docs/metrics.md). Upstream sends the
//! per-route series only for routes listed in its advanced metrics settings; a Prometheus label
//! costs nothing to scrape, so every route has them here. The handles are made once, when the
//! API starts, so a request only bumps them: looking a labelled metric up per request would
//! hash its name and labels every time.

use std::collections::HashMap;
use std::time::Duration;

use metrics::{Counter, Histogram};

use super::admission::EVENT_STREAMS;
use super::routes::ROUTES;

/// The label for a path no route answers: a fixed name, so a scanner cannot mint series.
const UNKNOWN_ROUTE: &str = "unknown";

/// One route's series.
pub struct RouteMetrics {
    count: Counter,
    /// `None` for event streams: upstream leaves them out of RequestLatency, since they last
    /// as long as their subscriber.
    latency: Option<Histogram>,
}

impl RouteMetrics {
    fn new(name: &'static str, path: &str) -> RouteMetrics {
        RouteMetrics {
            count: metrics::counter!("bbs_requests_total", "route" => name),
            latency: (!path.starts_with(EVENT_STREAMS))
                .then(|| metrics::histogram!("bbs_request_duration_seconds", "route" => name)),
        }
    }

    /// Counts a request as it arrives, as upstream's RequestCount does.
    pub fn arrived(&self) {
        self.count.increment(1);
    }

    /// Records how long the request took to answer.
    pub fn answered(&self, took: Duration) {
        if let Some(latency) = &self.latency {
            latency.record(took.as_secs_f64());
        }
    }
}

/// Every route's series, by path.
pub struct RequestMetrics {
    by_path: HashMap<&'static str, RouteMetrics>,
    unknown: RouteMetrics,
}

impl Default for RequestMetrics {
    fn default() -> Self {
        RequestMetrics {
            by_path: ROUTES
                .iter()
                .map(|route| (route.path, RouteMetrics::new(route.name, route.path)))
                .collect(),
            unknown: RouteMetrics::new(UNKNOWN_ROUTE, ""),
        }
    }
}

impl RequestMetrics {
    pub fn route(&self, path: &str) -> &RouteMetrics {
        self.by_path.get(path).unwrap_or(&self.unknown)
    }
}
