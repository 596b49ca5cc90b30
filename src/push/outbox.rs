//! [`Outbox`]: what a session has yet to write to its socket, bounded.
//!
//! Frames wait in order. When more than `conflate_after_bytes` are waiting
//! (the client is not keeping up), new events stop queueing behind each
//! other: each (subscription, key) keeps only its latest pending event, which
//! replaces an older one and is then sent with `"conflated":true`. A
//! replacing event takes the older one's place at the back of the line, so
//! pending events stay in arrival order, which per segment is version
//! order: a client (or an SSE stream's position token) that remembers the
//! highest version it got per segment never skips a write still pending.
//! Those are sent after the ordered queue. If even that exceeds
//! `close_after_bytes`, the outbox reports [`Admission::Overloaded`] and
//! the session closes with 1013.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use bytes::Bytes;

use super::{Health, SubId};
use crate::grid::{CacheName, Key};
use crate::protocol::codec::{Format, WireFrame};
use crate::protocol::event::EncodedEvent;
use crate::protocol::position::Positions;

#[derive(Clone, Copy, Debug)]
pub struct OutboxLimits {
    pub conflate_after_bytes: usize,
    pub close_after_bytes: usize,
}

#[derive(Debug)]
pub enum Outgoing {
    /// A reply or snapshot frame, encoded.
    Message(WireFrame),
    Event {
        sub: SubId,
        event: Arc<EncodedEvent>,
        conflated: bool,
    },
    /// Once everything before it is written, the subscription's client has
    /// every event up to `positions` (the end of a replay, which covers the
    /// history read, not only the events that matched).
    Covered { sub: SubId, positions: Positions },
    /// The subscription named `sub` ended: its cache was deleted.
    Ended { sub: Arc<str>, cache: CacheName },
    /// The transport's keep-alive: a WebSocket ping, an SSE comment.
    Heartbeat,
    /// The node's health changed.
    Health(Health),
    /// A WebSocket pong, answering the client's ping.
    Pong(Bytes),
}

#[derive(Debug, PartialEq, Eq)]
pub enum Admission {
    Queued,
    /// Replaced a pending event of the same key: one write skipped.
    Conflated,
    Overloaded,
}

struct Latest {
    event: Arc<EncodedEvent>,
    conflated: bool,
    bytes: usize,
    /// Its place in `latest_order`; older places of the key are stale.
    turn: u64,
}

pub struct Outbox {
    format: Format,
    limits: OutboxLimits,
    queue: VecDeque<(Outgoing, usize)>,
    queued_bytes: usize,
    conflating: bool,
    latest: HashMap<(SubId, Key), Latest>,
    /// Keys by turn; a key appears again each time it is replaced, and
    /// only its entry with the current turn counts.
    latest_order: VecDeque<(u64, (SubId, Key))>,
    next_turn: u64,
    latest_bytes: usize,
}

impl Outbox {
    pub fn new(format: Format, limits: OutboxLimits) -> Self {
        Outbox {
            format,
            limits,
            queue: VecDeque::new(),
            queued_bytes: 0,
            conflating: false,
            latest: HashMap::new(),
            latest_order: VecDeque::new(),
            next_turn: 0,
            latest_bytes: 0,
        }
    }

    /// Bytes waiting to be written.
    pub fn pending_bytes(&self) -> usize {
        self.queued_bytes + self.latest_bytes
    }

    pub fn is_empty(&self) -> bool {
        self.queue.is_empty() && self.latest.is_empty()
    }

    /// Queues a reply, snapshot frame or control frame. These are never
    /// conflated and never overload the session: they answer the client's
    /// own requests, which it bounds by asking.
    pub fn push(&mut self, item: Outgoing) {
        let bytes = match &item {
            Outgoing::Message(frame) => frame.len(),
            Outgoing::Pong(b) => b.len(),
            Outgoing::Heartbeat | Outgoing::Health(_) | Outgoing::Covered { .. } | Outgoing::Ended { .. } => {
                0
            }
            Outgoing::Event { event, .. } => event.encoded(self.format, false).len(),
        };
        self.queued_bytes += bytes;
        self.queue.push_back((item, bytes));
    }

    pub fn push_event(&mut self, sub: SubId, event: Arc<EncodedEvent>) -> Admission {
        let bytes = event.encoded(self.format, false).len();
        if !self.conflating && self.pending_bytes() + bytes > self.limits.conflate_after_bytes {
            self.conflating = true;
        }
        let mut admission = Admission::Queued;
        if self.conflating {
            let key = (sub, event.event.key.clone());
            let turn = self.next_turn;
            self.next_turn += 1;
            let replaced = self.latest.remove(&key);
            if let Some(replaced) = &replaced {
                self.latest_bytes -= replaced.bytes;
                admission = Admission::Conflated;
            }
            let latest = Latest {
                event,
                conflated: replaced.is_some(),
                bytes,
                turn,
            };
            self.latest.insert(key.clone(), latest);
            self.latest_bytes += bytes;
            self.latest_order.push_back((turn, key));
            self.drop_stale_turns();
        } else {
            self.push(Outgoing::Event {
                sub,
                event,
                conflated: false,
            });
        }
        if self.pending_bytes() > self.limits.close_after_bytes {
            Admission::Overloaded
        } else {
            admission
        }
    }

    pub fn pop(&mut self) -> Option<Outgoing> {
        if let Some((item, bytes)) = self.queue.pop_front() {
            self.queued_bytes -= bytes;
            return Some(item);
        }
        while let Some((turn, key)) = self.latest_order.pop_front() {
            if self.latest.get(&key).is_some_and(|latest| latest.turn == turn) {
                let latest = self.latest.remove(&key).expect("just found");
                self.latest_bytes -= latest.bytes;
                return Some(Outgoing::Event {
                    sub: key.0,
                    event: latest.event,
                    conflated: latest.conflated,
                });
            }
        }
        // Caught up: queue in order again.
        self.conflating = false;
        None
    }

    /// Keeps the line within twice the pending keys, so memory stays
    /// bounded by keys however often they are replaced.
    fn drop_stale_turns(&mut self) {
        if self.latest_order.len() > 2 * self.latest.len() + 16 {
            let latest = &self.latest;
            self.latest_order
                .retain(|(turn, key)| latest.get(key).is_some_and(|l| l.turn == *turn));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::grid::{CacheName, Event, EventKind, JsonValue, SegmentId, Version};

    fn event(key: &str, version: u64) -> Arc<EncodedEvent> {
        EncodedEvent::new(Arc::new(Event {
            id: uuid::Uuid::now_v7(),
            kind: EventKind::Modified,
            cache: CacheName::parse("c").unwrap(),
            key: Arc::from(key),
            value: Some(JsonValue::parse(&format!("\"{}\"", "x".repeat(100))).unwrap()),
            version: Version(version),
            segment: SegmentId(0),
            ts: 0,
            epoch: 0,
        }))
    }

    fn drain(outbox: &mut Outbox) -> Vec<(String, u64, bool)> {
        std::iter::from_fn(|| outbox.pop())
            .filter_map(|item| match item {
                Outgoing::Event { event, conflated, .. } => {
                    Some((event.event.key.to_string(), event.event.version.0, conflated))
                }
                _ => None,
            })
            .collect()
    }

    fn outbox(conflate_after_bytes: usize, close_after_bytes: usize) -> Outbox {
        Outbox::new(
            Format::Json,
            OutboxLimits {
                conflate_after_bytes,
                close_after_bytes,
            },
        )
    }

    #[test]
    fn below_the_threshold_everything_is_sent_in_order() {
        let mut outbox = outbox(1 << 20, 1 << 21);
        for v in 1..=3 {
            assert_eq!(outbox.push_event(1, event("a", v)), Admission::Queued);
        }
        assert_eq!(
            drain(&mut outbox),
            [
                ("a".into(), 1, false),
                ("a".into(), 2, false),
                ("a".into(), 3, false)
            ]
        );
        assert_eq!(outbox.pending_bytes(), 0);
    }

    #[test]
    fn past_the_threshold_only_the_latest_write_per_key_waits() {
        let size = event("a", 0).encoded(Format::Json, false).len();
        let mut outbox = outbox(size * 2, size * 100);
        assert_eq!(outbox.push_event(1, event("a", 1)), Admission::Queued);
        assert_eq!(outbox.push_event(1, event("b", 2)), Admission::Queued);
        // Over the threshold from here on.
        assert_eq!(outbox.push_event(1, event("a", 3)), Admission::Queued);
        assert_eq!(outbox.push_event(1, event("a", 4)), Admission::Conflated);
        assert_eq!(outbox.push_event(1, event("c", 5)), Admission::Queued);
        assert_eq!(outbox.push_event(1, event("a", 6)), Admission::Conflated);
        assert_eq!(
            outbox.push_event(2, event("a", 6)),
            Admission::Queued,
            "another subscription"
        );
        assert_eq!(
            drain(&mut outbox),
            [
                ("a".into(), 1, false),
                ("b".into(), 2, false),
                ("c".into(), 5, false),
                ("a".into(), 6, true),
                ("a".into(), 6, false),
            ]
        );
        assert!(outbox.is_empty());
        assert_eq!(
            outbox.push_event(1, event("a", 7)),
            Admission::Queued,
            "caught up: ordered again"
        );
        assert_eq!(drain(&mut outbox), [("a".into(), 7, false)]);
    }

    #[test]
    fn memory_stays_bounded_by_keys_and_overload_is_reported() {
        let size = event("a", 0).encoded(Format::Json, false).len();
        let mut outbox = outbox(size, size * 10);
        for v in 0..10_000 {
            assert_ne!(
                outbox.push_event(1, event(&format!("k{}", v % 5), v)),
                Admission::Overloaded
            );
        }
        assert!(outbox.pending_bytes() <= size * 6, "one pending write per key");
        assert!(
            outbox.latest_order.len() <= 2 * 5 + 16,
            "the line drops stale turns"
        );
        let overloaded =
            (0..20).any(|i| outbox.push_event(1, event(&format!("new{i}"), i)) == Admission::Overloaded);
        assert!(overloaded, "distinct keys beyond the limit overload the session");
    }

    #[test]
    fn replies_are_never_conflated() {
        let mut outbox = outbox(0, 1);
        let pong = WireFrame::Text("{\"type\":\"pong\"}".into());
        outbox.push(Outgoing::Message(pong.clone()));
        outbox.push(Outgoing::Message(pong));
        assert_eq!(std::iter::from_fn(|| outbox.pop()).count(), 2);
    }
}
