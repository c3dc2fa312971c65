//! The event hub: every committed change becomes one or more upstream events (bbs-reference
//! §5), numbered by one counter for the whole BBS, kept for a retention window, and fanned out
//! to subscribers through bounded queues.
//!
//! Publishing happens inside the owning actor right after a change is applied, under the
//! record's lock, so one record's events are numbered in commit order, and a change that
//! failed never publishes. The hub is a mutex-guarded fan-out rather than an actor of its
//! own: publishers must neither wait (they run inside actor continuations) nor drop events
//! (a full actor mailbox would force one or the other); a subscriber that cannot keep up is
//! the one that loses, by being disconnected, so memory stays bounded.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use bbs_models as m;

/// One upstream event.
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    DesiredLrpCreated(Box<m::DesiredLrp>),
    DesiredLrpChanged(Box<m::DesiredLrp>, Box<m::DesiredLrp>),
    DesiredLrpRemoved(Box<m::DesiredLrp>),
    ActualLrpInstanceCreated(Box<m::ActualLrp>),
    ActualLrpInstanceChanged(Box<m::ActualLrpInstanceChangedEvent>),
    ActualLrpInstanceRemoved(Box<m::ActualLrp>),
    /// A crash as the instance stream reports it.
    ActualLrpCrashed(Box<m::ActualLrpCrashedEvent>),
    /// A crash as the deprecated group stream reports it: upstream computes the two streams'
    /// crash events separately, and they differ when a suspect or evacuating row is involved.
    ActualLrpGroupCrashed(Box<m::ActualLrpCrashedEvent>),
    ActualLrpGroupCreated(Box<m::ActualLrpGroup>),
    ActualLrpGroupChanged(Box<m::ActualLrpGroup>, Box<m::ActualLrpGroup>),
    ActualLrpGroupRemoved(Box<m::ActualLrpGroup>),
    TaskCreated(Box<m::Task>),
    TaskChanged(Box<m::Task>, Box<m::Task>),
    TaskRemoved(Box<m::Task>),
}

/// Which stream a subscriber reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stream {
    /// Desired LRP and actual LRP instance events.
    LrpInstances,
    /// Desired LRP and the deprecated actual LRP group events.
    LrpGroups,
    Tasks,
}

fn instance_cell(lrp: &m::ActualLrp) -> &str {
    lrp.actual_lrp_instance_key
        .as_ref()
        .map(|k| k.cell_id.as_str())
        .unwrap_or_default()
}

fn group_on(group: &m::ActualLrpGroup, cell: &str) -> bool {
    crate::rules::actual_lrps::resolve(group).is_some_and(|l| instance_cell(l) == cell)
}

impl Event {
    /// Whether a subscriber of `stream`, filtered to `cell` when not empty, gets this event.
    pub fn belongs_to(&self, stream: Stream, cell: &str) -> bool {
        use Event::*;
        match (stream, self) {
            (Stream::Tasks, TaskCreated(_) | TaskChanged(..) | TaskRemoved(_)) => true,
            (Stream::Tasks, _) | (_, TaskCreated(_) | TaskChanged(..) | TaskRemoved(_)) => false,
            (_, DesiredLrpCreated(_) | DesiredLrpChanged(..) | DesiredLrpRemoved(_)) => true,
            (Stream::LrpInstances, ActualLrpCrashed(e))
            | (Stream::LrpGroups, ActualLrpGroupCrashed(e)) => {
                cell.is_empty()
                    || e.actual_lrp_instance_key
                        .as_ref()
                        .is_some_and(|k| k.cell_id == cell)
            }
            (Stream::LrpInstances, ActualLrpInstanceCreated(l) | ActualLrpInstanceRemoved(l)) => {
                cell.is_empty() || instance_cell(l) == cell
            }
            (Stream::LrpInstances, ActualLrpInstanceChanged(e)) => {
                cell.is_empty()
                    || e.actual_lrp_instance_key
                        .as_ref()
                        .is_some_and(|k| k.cell_id == cell)
            }
            (Stream::LrpGroups, ActualLrpGroupCreated(g) | ActualLrpGroupRemoved(g)) => {
                cell.is_empty() || group_on(g, cell)
            }
            (Stream::LrpGroups, ActualLrpGroupChanged(before, after)) => {
                cell.is_empty() || group_on(before, cell) || group_on(after, cell)
            }
            _ => false,
        }
    }
}

/// An event with its BBS-wide number and the trace id (`X-Vcap-Request-Id`) of the request
/// that caused it, empty where upstream sends none.
#[derive(Clone, Debug)]
pub struct Numbered {
    pub id: u64,
    pub trace_id: Arc<str>,
    pub event: Arc<Event>,
}

/// What a subscriber receives: events, or word that it must re-list.
#[derive(Clone, Debug)]
pub enum Delivery {
    Event(Numbered),
    /// The requested resume point left the retention window: the client must re-list.
    Relist {
        oldest: u64,
    },
}

/// Retention and per-subscriber limits.
#[derive(Clone, Copy, Debug)]
pub struct HubSettings {
    pub retention_count: usize,
    pub retention_time: Duration,
    pub subscriber_buffer: usize,
}

impl Default for HubSettings {
    fn default() -> Self {
        HubSettings {
            retention_count: 10_000,
            retention_time: Duration::from_secs(300),
            subscriber_buffer: 1024,
        }
    }
}

struct Subscriber {
    stream: Stream,
    cell: String,
    sender: mpsc::Sender<Delivery>,
}

struct HubState {
    /// Set when the server stops: no stream stays open, and none opens.
    closed: bool,
    next_id: u64,
    retained: VecDeque<(Instant, Numbered)>,
    subscribers: Vec<Subscriber>,
}

#[derive(Clone)]
pub struct EventHub {
    state: Arc<Mutex<HubState>>,
    settings: HubSettings,
}

impl EventHub {
    pub fn new(settings: HubSettings) -> EventHub {
        metrics::gauge!("bbs_event_subscribers").set(0.0);
        metrics::counter!("bbs_event_subscribers_dropped_total").increment(0);
        EventHub {
            state: Arc::new(Mutex::new(HubState {
                closed: false,
                next_id: 1,
                retained: VecDeque::new(),
                subscribers: Vec::new(),
            })),
            settings,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HubState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Numbers, retains and fans out `events`, in order, with no trace id. Never waits: a
    /// subscriber whose queue is full is disconnected.
    pub fn publish(&self, events: Vec<Event>) {
        self.publish_traced("", events)
    }

    /// As `publish`, the events carrying the trace id of the request that caused them.
    pub fn publish_traced(&self, trace_id: &str, events: Vec<Event>) {
        if events.is_empty() {
            return;
        }
        let trace_id: Arc<str> = Arc::from(trace_id);
        let now = Instant::now();
        let mut state = self.lock();
        for mut event in events {
            // This one event carries its whole payload, so its trace id goes in once here
            // rather than into a copy per subscriber.
            if let Event::ActualLrpInstanceChanged(changed) = &mut event {
                changed.trace_id = trace_id.to_string();
            }
            let numbered = Numbered {
                id: state.next_id,
                trace_id: trace_id.clone(),
                event: Arc::new(event),
            };
            state.next_id += 1;
            let mut dropped = 0;
            state.subscribers.retain(|s| {
                if !numbered.event.belongs_to(s.stream, &s.cell) {
                    return !s.sender.is_closed();
                }
                match s.sender.try_send(Delivery::Event(numbered.clone())) {
                    Ok(()) => true,
                    Err(mpsc::error::TrySendError::Full(_)) => {
                        dropped += 1;
                        false
                    }
                    Err(mpsc::error::TrySendError::Closed(_)) => false,
                }
            });
            if dropped > 0 {
                metrics::counter!("bbs_event_subscribers_dropped_total").increment(dropped);
            }
            state.retained.push_back((now, numbered));
        }
        let settings = self.settings;
        while state.retained.len() > settings.retention_count
            || state
                .retained
                .front()
                .is_some_and(|(at, _)| now.duration_since(*at) > settings.retention_time)
        {
            state.retained.pop_front();
        }
        metrics::gauge!("bbs_event_subscribers").set(state.subscribers.len() as f64);
        metrics::gauge!("bbs_events_retained").set(state.retained.len() as f64);
        metrics::gauge!("bbs_event_last_id").set((state.next_id - 1) as f64);
    }

    /// Subscribes to `stream` (filtered to `cell` when not empty). With `after`, the events
    /// numbered above it are replayed first, or a re-list notice is sent when they have left
    /// the retention window.
    pub fn subscribe(
        &self,
        stream: Stream,
        cell: String,
        after: Option<u64>,
    ) -> mpsc::Receiver<Delivery> {
        let buffer = self.settings.subscriber_buffer.max(1);
        let mut state = self.lock();
        if state.closed {
            // The sender goes at once, so the stream ends as soon as it is read.
            return mpsc::channel(1).1;
        }
        let backlog: Vec<Delivery> = match after {
            None => Vec::new(),
            Some(last) => {
                let oldest = state
                    .retained
                    .front()
                    .map(|(_, n)| n.id)
                    .unwrap_or(state.next_id);
                if last + 1 < oldest && last + 1 < state.next_id {
                    vec![Delivery::Relist { oldest }]
                } else {
                    state
                        .retained
                        .iter()
                        .filter(|(_, n)| n.id > last && n.event.belongs_to(stream, &cell))
                        .map(|(_, n)| Delivery::Event(n.clone()))
                        .collect()
                }
            }
        };
        // The queue holds the backlog as well as the live buffer.
        let (sender, receiver) = mpsc::channel(buffer + backlog.len());
        for delivery in backlog {
            let _ = sender.try_send(delivery);
        }
        state.subscribers.push(Subscriber {
            stream,
            cell,
            sender,
        });
        metrics::gauge!("bbs_event_subscribers").set(state.subscribers.len() as f64);
        receiver
    }

    /// Ends every subscription, so the streams finish at once (shutdown: an event stream is
    /// never an in-flight request to wait for).
    pub fn close_all(&self) {
        let mut state = self.lock();
        state.closed = true;
        state.subscribers.clear();
        metrics::gauge!("bbs_event_subscribers").set(0.0);
    }

    pub fn subscriber_count(&self) -> usize {
        let mut state = self.lock();
        state.subscribers.retain(|s| !s.sender.is_closed());
        state.subscribers.len()
    }

    pub fn last_id(&self) -> u64 {
        self.lock().next_id - 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(guid: &str) -> Event {
        Event::TaskCreated(Box::new(m::Task {
            task_guid: guid.into(),
            ..Default::default()
        }))
    }

    fn hub(count: usize, buffer: usize) -> EventHub {
        EventHub::new(HubSettings {
            retention_count: count,
            retention_time: Duration::from_secs(60),
            subscriber_buffer: buffer,
        })
    }

    fn ids(receiver: &mut mpsc::Receiver<Delivery>) -> Vec<u64> {
        let mut out = Vec::new();
        while let Ok(d) = receiver.try_recv() {
            if let Delivery::Event(n) = d {
                out.push(n.id);
            }
        }
        out
    }

    #[test]
    fn events_are_numbered_in_order_and_filtered_by_stream() {
        let hub = hub(100, 10);
        let mut tasks = hub.subscribe(Stream::Tasks, String::new(), None);
        let mut lrps = hub.subscribe(Stream::LrpInstances, String::new(), None);
        hub.publish(vec![task("a"), task("b")]);
        assert_eq!(ids(&mut tasks), [1, 2]);
        assert!(ids(&mut lrps).is_empty());
    }

    #[test]
    fn a_full_subscriber_is_dropped() {
        let hub = hub(100, 2);
        let _slow = hub.subscribe(Stream::Tasks, String::new(), None);
        hub.publish(vec![task("a"), task("b")]);
        assert_eq!(hub.subscriber_count(), 1);
        hub.publish(vec![task("c")]);
        assert_eq!(hub.subscriber_count(), 0);
    }

    #[test]
    fn resume_replays_exactly_the_missed_events() {
        let hub = hub(100, 10);
        hub.publish(vec![task("a"), task("b"), task("c")]);
        let mut resumed = hub.subscribe(Stream::Tasks, String::new(), Some(1));
        assert_eq!(ids(&mut resumed), [2, 3]);
        hub.publish(vec![task("d")]);
        assert_eq!(ids(&mut resumed), [4]);
        let mut current = hub.subscribe(Stream::Tasks, String::new(), Some(4));
        assert!(ids(&mut current).is_empty());
    }

    #[test]
    fn resume_from_before_the_window_asks_for_a_relist() {
        let hub = hub(2, 10);
        hub.publish(vec![task("a"), task("b"), task("c"), task("d")]);
        let mut old = hub.subscribe(Stream::Tasks, String::new(), Some(1));
        assert!(matches!(old.try_recv(), Ok(Delivery::Relist { oldest: 3 })));
        let mut edge = hub.subscribe(Stream::Tasks, String::new(), Some(2));
        assert_eq!(ids(&mut edge), [3, 4]);
    }
}
