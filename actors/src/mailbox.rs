//! Bounded, metered actor mailboxes.
//!
//! Callers reach actors only through [`Mailbox::call`], which waits for room in the bounded
//! mailbox (`send`, never `do_send`) and records, per actor name, the mailbox depth, the
//! handled-message count and the handling latency (from dequeue to reply), so operators can
//! watch backpressure on `/metrics`.

use std::sync::{Arc, OnceLock};
use std::time::Instant;

use actix::dev::ToEnvelope;
use actix::{Actor, Addr, Handler, Message};
use metrics::{counter, gauge, histogram, Counter, Gauge, Histogram};

use crate::error::{BbsError, BbsResult};

/// Decrements the depth gauge once, when the message is dequeued or dropped unhandled.
struct QueuedMark {
    depth: Gauge,
}

impl Drop for QueuedMark {
    fn drop(&mut self) {
        self.depth.decrement(1.0);
    }
}

/// A message on its way through a metered mailbox.
pub struct Metered<M> {
    message: M,
    queued: QueuedMark,
    dequeued_at: Arc<OnceLock<Instant>>,
}

impl<M: Message> Message for Metered<M>
where
    M::Result: 'static,
{
    type Result = M::Result;
}

impl<M> Metered<M> {
    /// Takes the message out, marking it dequeued. Handlers call this first.
    pub fn open(self) -> M {
        let _ = self.dequeued_at.set(Instant::now());
        drop(self.queued);
        self.message
    }
}

/// Implements `Handler<Metered<M>>` for an actor by opening the envelope and delegating to
/// its `Handler<M>`.
#[macro_export]
macro_rules! metered_handlers {
    ($actor:ty: $($message:ty),+ $(,)?) => {
        $(
            impl actix::Handler<$crate::mailbox::Metered<$message>> for $actor {
                type Result = <$actor as actix::Handler<$message>>::Result;

                fn handle(
                    &mut self,
                    message: $crate::mailbox::Metered<$message>,
                    ctx: &mut Self::Context,
                ) -> Self::Result {
                    <$actor as actix::Handler<$message>>::handle(self, message.open(), ctx)
                }
            }
        )+
    };
}

/// The caller's side of one actor: its address plus its metrics.
pub struct Mailbox<A: Actor> {
    addr: Addr<A>,
    name: &'static str,
    depth: Gauge,
    handled: Counter,
    latency: Histogram,
}

impl<A: Actor> Clone for Mailbox<A> {
    fn clone(&self) -> Self {
        Mailbox {
            addr: self.addr.clone(),
            name: self.name,
            depth: self.depth.clone(),
            handled: self.handled.clone(),
            latency: self.latency.clone(),
        }
    }
}

impl<A: Actor> Mailbox<A> {
    /// Wraps a started actor whose mailbox holds `capacity` messages.
    pub fn new(addr: Addr<A>, name: &'static str, capacity: usize) -> Self {
        gauge!("bbs_actor_mailbox_capacity", "actor" => name).set(capacity as f64);
        let depth = gauge!("bbs_actor_mailbox_depth", "actor" => name);
        depth.increment(0.0);
        let handled = counter!("bbs_actor_messages_handled_total", "actor" => name);
        handled.increment(0);
        Mailbox {
            addr,
            name,
            depth,
            handled,
            latency: histogram!("bbs_actor_handling_seconds", "actor" => name),
        }
    }

    pub fn name(&self) -> &'static str {
        self.name
    }

    /// Sends `message` and waits for the reply. Waits for room when the mailbox is full.
    pub async fn call<M>(&self, message: M) -> BbsResult<M::Result>
    where
        M: Message + Send + 'static,
        M::Result: Send,
        A: Handler<Metered<M>>,
        A::Context: ToEnvelope<A, Metered<M>>,
    {
        self.depth.increment(1.0);
        let dequeued_at = Arc::new(OnceLock::new());
        let envelope = Metered {
            message,
            queued: QueuedMark {
                depth: self.depth.clone(),
            },
            dequeued_at: Arc::clone(&dequeued_at),
        };
        let reply = self.addr.send(envelope).await;
        if let Some(started) = dequeued_at.get() {
            self.handled.increment(1);
            self.latency.record(started.elapsed().as_secs_f64());
        }
        reply.map_err(|e| BbsError::Unavailable(format!("{} actor: {e}", self.name)))
    }
}
