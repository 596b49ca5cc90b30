//! One segment's state, as a plain type with no runtime: its entries in key
//! order, its sequence counter and [`Lineage`] (which epoch wrote which
//! versions), its bounded event history (for resume), the index of expiry
//! deadlines and the write order (for eviction).
//!
//! The partition actor wraps one `Segment` and is the only thing that holds
//! it, so none of this needs a lock. Every write takes the next sequence
//! number, builds its [`Event`] once and keeps it with the unpublished
//! events until the actor publishes them.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::ops::Bound;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{CacheName, Event, EventKind, GridError, JsonValue, Key, OpId, SegmentId, Version};

mod completed;
mod lineage;
mod replica;
pub use completed::{Completed, CompletedOps, REMEMBERED_OPS};
pub use lineage::{EpochStart, Lineage, Position};
pub use replica::{SegmentImage, SegmentOp};

/// What a write requires of the entry's current state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Precondition {
    #[default]
    None,
    /// The entry exists with exactly this version.
    IfVersion(Version),
    /// There is no entry.
    IfAbsent,
    /// There is an entry, whatever its version (`If-Match: *`).
    IfPresent,
}

impl Precondition {
    fn check(self, current: Option<Version>) -> Result<(), GridError> {
        let holds = match self {
            Precondition::None => true,
            Precondition::IfVersion(v) => current == Some(v),
            Precondition::IfAbsent => current.is_none(),
            Precondition::IfPresent => current.is_some(),
        };
        if holds {
            Ok(())
        } else {
            Err(GridError::VersionMismatch { current })
        }
    }
}

#[derive(Clone, Debug)]
pub struct PutRequest {
    pub key: Key,
    pub value: JsonValue,
    pub precondition: Precondition,
    /// The entry's lifespan; `None` means it never expires.
    pub lifespan_ms: Option<u64>,
    /// The client's name for the write, so that it is applied once.
    pub op: Option<OpId>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PutOutcome {
    pub version: Version,
    pub created: bool,
}

/// An entry as reads, listings and snapshots return it.
#[derive(Clone, Debug, Serialize)]
pub struct EntryView {
    pub key: Key,
    pub value: JsonValue,
    pub version: Version,
    pub segment: SegmentId,
}

#[derive(Debug)]
struct StoredEntry {
    value: JsonValue,
    version: Version,
    expires_at_ms: Option<u64>,
}

impl StoredEntry {
    fn is_expired(&self, now_ms: u64) -> bool {
        self.expires_at_ms.is_some_and(|at| at <= now_ms)
    }
}

/// What one entry counts for in a segment's bytes.
fn footprint(key: &str, entry: &StoredEntry) -> usize {
    key.len() + entry.value.get().len()
}

#[derive(Debug)]
pub struct Segment {
    cache: CacheName,
    id: SegmentId,
    entries: BTreeMap<Key, StoredEntry>,
    /// Keys by the version of their last write: the first is the least
    /// recently written, which is what eviction removes.
    write_order: BTreeMap<Version, Key>,
    deadlines: BTreeSet<(u64, Key)>,
    sequence: Version,
    lineage: Lineage,
    /// The epoch this copy writes under: its primary's (0 on one node).
    epoch: u64,
    history: VecDeque<Arc<Event>>,
    history_capacity: usize,
    unpublished: Vec<Arc<Event>>,
    /// Bytes of keys and values held: what `/metrics` reports per cache.
    bytes: usize,
    /// Whether writes are recorded as [`SegmentOp`]s for other owners.
    replicating: bool,
    unreplicated: Vec<SegmentOp>,
    completed: CompletedOps,
}

impl Segment {
    pub fn new(cache: CacheName, id: SegmentId, history_capacity: usize) -> Self {
        Segment {
            cache,
            id,
            entries: BTreeMap::new(),
            write_order: BTreeMap::new(),
            deadlines: BTreeSet::new(),
            sequence: Version(0),
            lineage: Lineage::default(),
            epoch: 0,
            history: VecDeque::with_capacity(history_capacity.min(64)),
            history_capacity,
            unpublished: Vec::new(),
            bytes: 0,
            replicating: false,
            unreplicated: Vec::new(),
            completed: CompletedOps::default(),
        }
    }

    pub fn id(&self) -> SegmentId {
        self.id
    }

    /// The version of the segment's last write: its position.
    pub fn position(&self) -> Version {
        self.sequence
    }

    /// The position with the epoch its last write was made under.
    pub fn position_in_lineage(&self) -> Position {
        Position {
            version: self.sequence,
            epoch: self.lineage.epoch_of(self.sequence),
        }
    }

    /// Sets the epoch this copy's own writes are made under: the one at
    /// which it became the segment's primary.
    pub fn set_epoch(&mut self, epoch: u64) {
        self.epoch = epoch;
    }

    /// Entries held, including expired ones the reaper has not reached yet.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Bytes of the keys and (encoded JSON) values held.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// The entry under `key`, unless it is absent or its lifespan has passed.
    pub fn get(&self, key: &str, now_ms: u64) -> Option<EntryView> {
        let entry = self.entries.get(key).filter(|e| !e.is_expired(now_ms))?;
        let (key, _) = self.entries.get_key_value(key)?;
        Some(self.view(key, entry))
    }

    /// What the write named `op` did, if this segment remembers it.
    pub fn completed(&self, op: &OpId) -> Option<Completed> {
        self.completed.get(op)
    }

    /// Writes an entry; a write whose op id is remembered is answered with
    /// what it did then, and changes nothing.
    pub fn put(&mut self, request: PutRequest, now_ms: u64) -> Result<PutOutcome, GridError> {
        if let Some(op) = &request.op {
            if let Some(done) = self.completed.get(op) {
                return done.as_put(op);
            }
        }
        self.expire_if_due(&request.key, now_ms);
        let current = self.entries.get(&*request.key).map(|e| e.version);
        request.precondition.check(current)?;

        let version = self.next_version();
        let expires_at_ms = request.lifespan_ms.map(|ms| now_ms.saturating_add(ms));
        let stored = StoredEntry {
            value: request.value.clone(),
            version,
            expires_at_ms,
        };
        self.bytes += footprint(&request.key, &stored);
        if let Some(old) = self.entries.insert(request.key.clone(), stored) {
            self.unindex(&request.key, &old);
        }
        self.write_order.insert(version, request.key.clone());
        if let Some(at) = expires_at_ms {
            self.deadlines.insert((at, request.key.clone()));
        }
        let kind = if current.is_some() {
            EventKind::Modified
        } else {
            EventKind::Created
        };
        let outcome = PutOutcome {
            version,
            created: current.is_none(),
        };
        self.emit(
            kind,
            request.key,
            Some(request.value),
            version,
            now_ms,
            expires_at_ms,
        );
        self.complete(request.op, Completed::Put(outcome));
        Ok(outcome)
    }

    /// Removes the entry; the precondition is checked before existence, so a
    /// failed `if_version` on a missing key is a mismatch, not `not_found`.
    /// A remove whose op id is remembered is answered as it was then.
    pub fn remove(
        &mut self,
        key: &str,
        precondition: Precondition,
        op: Option<OpId>,
        now_ms: u64,
    ) -> Result<Version, GridError> {
        if let Some(op) = &op {
            if let Some(done) = self.completed.get(op) {
                return done.as_remove(op);
            }
        }
        self.expire_if_due(key, now_ms);
        precondition.check(self.entries.get(key).map(|e| e.version))?;
        let (key, old) = self.entries.remove_entry(key).ok_or(GridError::NotFound)?;
        self.unindex(&key, &old);
        let version = self.next_version();
        self.emit(EventKind::Removed, key, None, version, now_ms, None);
        self.complete(op, Completed::Removed(version));
        Ok(version)
    }

    /// Expires every entry whose deadline has passed; returns how many.
    pub fn reap(&mut self, now_ms: u64) -> usize {
        let mut reaped = 0;
        while let Some((at, key)) = self.deadlines.first().cloned() {
            if at > now_ms {
                break;
            }
            self.expire_if_due(&key, now_ms);
            reaped += 1;
        }
        reaped
    }

    /// The earliest expiry deadline still pending.
    pub fn next_deadline(&self) -> Option<u64> {
        self.deadlines.first().map(|(at, _)| *at)
    }

    /// Drops the least recently written entry without an event (eviction is
    /// not a write). Returns false when the segment is empty.
    pub fn evict_least_recently_written(&mut self) -> bool {
        let Some((_, key)) = self.write_order.pop_first() else {
            return false;
        };
        if let Some(old) = self.entries.remove(&key) {
            self.bytes -= footprint(&key, &old);
            if let Some(at) = old.expires_at_ms {
                self.deadlines.remove(&(at, key.clone()));
            }
        }
        if self.replicating {
            self.unreplicated.push(SegmentOp::Evict { key });
        }
        true
    }

    /// Up to `limit` live entries whose key starts with `prefix` and sorts
    /// after `after`, in key order.
    pub fn list(&self, prefix: &str, after: Option<&str>, limit: usize, now_ms: u64) -> Vec<EntryView> {
        let start = match after {
            Some(after) if after >= prefix => Bound::Excluded(after),
            _ => Bound::Included(prefix),
        };
        self.entries
            .range::<str, _>((start, Bound::Unbounded))
            .take_while(|(key, _)| key.starts_with(prefix))
            .filter(|(_, entry)| !entry.is_expired(now_ms))
            .take(limit)
            .map(|(key, entry)| self.view(key, entry))
            .collect()
    }

    /// Every live entry matching `filter`, and the segment's position at
    /// this instant.
    pub fn snapshot(&self, filter: impl Fn(&str) -> bool, now_ms: u64) -> (Vec<EntryView>, Position) {
        let entries = self
            .entries
            .iter()
            .filter(|(key, entry)| filter(key) && !entry.is_expired(now_ms))
            .map(|(key, entry)| self.view(key, entry))
            .collect();
        (entries, self.position_in_lineage())
    }

    /// Every event after `position`, if the history still holds all of them.
    /// A position this copy never passed through is answered with `None`
    /// too: one beyond its own, or one whose version was written here under
    /// another epoch than the position names (the client saw writes that
    /// did not survive).
    pub fn history_after(&self, position: Position) -> Option<Vec<Arc<Event>>> {
        if position.version > self.sequence || !self.lineage.holds(position) {
            return None;
        }
        let position = position.version;
        if position == self.sequence {
            return Some(Vec::new());
        }
        let oldest = self.history.front()?.version;
        if oldest.0 > position.0 + 1 {
            return None;
        }
        let skip = self.history.partition_point(|e| e.version <= position);
        Some(self.history.range(skip..).cloned().collect())
    }

    /// The events written since the last call, in version order.
    pub fn take_events(&mut self) -> Vec<Arc<Event>> {
        std::mem::take(&mut self.unpublished)
    }

    fn expire_if_due(&mut self, key: &str, now_ms: u64) {
        if !self.entries.get(key).is_some_and(|e| e.is_expired(now_ms)) {
            return;
        }
        let Some((key, old)) = self.entries.remove_entry(key) else {
            return;
        };
        self.unindex(&key, &old);
        let version = self.next_version();
        self.emit(EventKind::Expired, key, None, version, now_ms, None);
    }

    /// Forgets an entry just taken out of `entries` (or replaced there).
    fn unindex(&mut self, key: &Key, old: &StoredEntry) {
        self.bytes -= footprint(key, old);
        self.write_order.remove(&old.version);
        if let Some(at) = old.expires_at_ms {
            self.deadlines.remove(&(at, key.clone()));
        }
    }

    fn next_version(&mut self) -> Version {
        self.sequence = Version(self.sequence.0 + 1);
        self.lineage.wrote(self.epoch, self.sequence);
        self.sequence
    }

    fn emit(
        &mut self,
        kind: EventKind,
        key: Key,
        value: Option<JsonValue>,
        version: Version,
        ts: u64,
        expires_at_ms: Option<u64>,
    ) {
        let event = self.event(Uuid::now_v7(), self.epoch, kind, key, value, version, ts);
        if self.replicating {
            self.unreplicated.push(SegmentOp::write(&event, expires_at_ms));
        }
        self.record(event);
    }

    /// Remembers what the write just made did under its client's op id,
    /// and names it so in the change sent to the other owners, which
    /// remember it too.
    fn complete(&mut self, op: Option<OpId>, outcome: Completed) {
        let Some(op) = op else { return };
        if let Some(SegmentOp::Write { op: named, .. }) = self.unreplicated.last_mut() {
            *named = Some(op.clone());
        }
        self.completed.remember(op, outcome);
    }

    #[allow(clippy::too_many_arguments)]
    fn event(
        &self,
        id: Uuid,
        epoch: u64,
        kind: EventKind,
        key: Key,
        value: Option<JsonValue>,
        version: Version,
        ts: u64,
    ) -> Arc<Event> {
        Arc::new(Event {
            id,
            kind,
            cache: self.cache.clone(),
            key,
            value,
            version,
            segment: self.id,
            ts,
            epoch,
        })
    }

    /// Keeps a written event in the history and with the unpublished ones.
    fn record(&mut self, event: Arc<Event>) {
        if self.history_capacity > 0 {
            if self.history.len() == self.history_capacity {
                self.history.pop_front();
            }
            self.history.push_back(event.clone());
        }
        self.forget_unreachable_epochs();
        self.unpublished.push(event);
    }

    /// Keeps the lineage back to the oldest position a resume can start
    /// from: just before the history's first event, or the last write
    /// when there is no history.
    fn forget_unreachable_epochs(&mut self) {
        let oldest = self
            .history
            .front()
            .map_or(self.sequence, |e| Version(e.version.0 - 1));
        self.lineage.forget_before(oldest);
    }

    fn view(&self, key: &Key, entry: &StoredEntry) -> EntryView {
        EntryView {
            key: key.clone(),
            value: entry.value.clone(),
            version: entry.version,
            segment: self.id,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segment(history: usize) -> Segment {
        Segment::new(CacheName::parse("c").unwrap(), SegmentId(3), history)
    }

    fn json(text: &str) -> JsonValue {
        JsonValue::parse(text).unwrap()
    }

    fn put(
        seg: &mut Segment,
        key: &str,
        value: &str,
        pre: Precondition,
        now: u64,
    ) -> Result<PutOutcome, GridError> {
        seg.put(
            PutRequest {
                key: Arc::from(key),
                value: json(value),
                precondition: pre,
                lifespan_ms: None,
                op: None,
            },
            now,
        )
    }

    #[test]
    fn every_write_takes_the_next_sequence_number() {
        let mut seg = segment(16);
        assert_eq!(
            put(&mut seg, "a", "1", Precondition::None, 0).unwrap(),
            PutOutcome {
                version: Version(1),
                created: true
            }
        );
        assert_eq!(
            put(&mut seg, "b", "2", Precondition::None, 0).unwrap().version,
            Version(2)
        );
        assert_eq!(
            put(&mut seg, "a", "3", Precondition::None, 0).unwrap(),
            PutOutcome {
                version: Version(3),
                created: false
            }
        );
        assert_eq!(seg.remove("b", Precondition::None, None, 0).unwrap(), Version(4));
        let kinds: Vec<_> = seg.take_events().iter().map(|e| (e.kind, e.version.0)).collect();
        assert_eq!(
            kinds,
            vec![
                (EventKind::Created, 1),
                (EventKind::Created, 2),
                (EventKind::Modified, 3),
                (EventKind::Removed, 4)
            ]
        );
        assert!(seg.take_events().is_empty());
        assert_eq!(seg.position(), Version(4));
    }

    #[test]
    fn preconditions_report_the_current_version() {
        let mut seg = segment(16);
        assert_eq!(
            put(&mut seg, "a", "1", Precondition::IfVersion(Version(1)), 0),
            Err(GridError::VersionMismatch { current: None })
        );
        put(&mut seg, "a", "1", Precondition::IfAbsent, 0).unwrap();
        assert_eq!(
            put(&mut seg, "a", "2", Precondition::IfAbsent, 0),
            Err(GridError::VersionMismatch {
                current: Some(Version(1))
            })
        );
        assert_eq!(
            put(&mut seg, "a", "2", Precondition::IfVersion(Version(7)), 0),
            Err(GridError::VersionMismatch {
                current: Some(Version(1))
            })
        );
        assert_eq!(
            put(&mut seg, "a", "2", Precondition::IfVersion(Version(1)), 0)
                .unwrap()
                .version,
            Version(2)
        );
        assert_eq!(
            seg.remove("a", Precondition::IfVersion(Version(1)), None, 0),
            Err(GridError::VersionMismatch {
                current: Some(Version(2))
            })
        );
        assert_eq!(
            seg.remove("zz", Precondition::None, None, 0),
            Err(GridError::NotFound)
        );
        assert_eq!(
            seg.remove("zz", Precondition::IfVersion(Version(1)), None, 0),
            Err(GridError::VersionMismatch { current: None })
        );
        // Failed writes take no sequence number.
        assert_eq!(seg.position(), Version(2));
    }

    #[test]
    fn expired_entries_are_never_read_and_expire_with_an_event() {
        let mut seg = segment(16);
        seg.put(
            PutRequest {
                key: Arc::from("t"),
                value: json("1"),
                precondition: Precondition::None,
                lifespan_ms: Some(100),
                op: None,
            },
            1_000,
        )
        .unwrap();
        assert!(seg.get("t", 1_099).is_some());
        assert!(seg.get("t", 1_100).is_none(), "expired before the reaper ran");
        assert!(seg.list("", None, 10, 1_100).is_empty());
        assert_eq!(seg.next_deadline(), Some(1_100));
        assert_eq!(seg.reap(1_100), 1);
        assert!(seg.is_empty());
        let events = seg.take_events();
        assert_eq!(
            events.last().map(|e| (e.kind, e.version)),
            Some((EventKind::Expired, Version(2)))
        );
        assert!(events.last().unwrap().value.is_none());
        assert_eq!(seg.next_deadline(), None);
    }

    #[test]
    fn writing_over_an_expired_entry_expires_it_first() {
        let mut seg = segment(16);
        seg.put(
            PutRequest {
                key: Arc::from("t"),
                value: json("1"),
                precondition: Precondition::None,
                lifespan_ms: Some(10),
                op: None,
            },
            0,
        )
        .unwrap();
        let outcome = put(&mut seg, "t", "2", Precondition::IfAbsent, 50).unwrap();
        assert_eq!(
            outcome,
            PutOutcome {
                version: Version(3),
                created: true
            }
        );
        let kinds: Vec<_> = seg.take_events().iter().map(|e| e.kind).collect();
        assert_eq!(
            kinds,
            vec![EventKind::Created, EventKind::Expired, EventKind::Created]
        );
        assert_eq!(seg.next_deadline(), None, "the new write has no lifespan");
    }

    #[test]
    fn eviction_takes_the_least_recently_written_without_an_event() {
        let mut seg = segment(16);
        for key in ["a", "b", "c"] {
            put(&mut seg, key, "0", Precondition::None, 0).unwrap();
        }
        put(&mut seg, "a", "1", Precondition::None, 0).unwrap();
        seg.take_events();
        assert!(seg.evict_least_recently_written());
        assert!(seg.get("b", 0).is_none());
        assert!(seg.get("a", 0).is_some() && seg.get("c", 0).is_some());
        assert!(seg.take_events().is_empty());
        assert_eq!(seg.position(), Version(4), "eviction is not a write");
    }

    #[test]
    fn bytes_follow_every_way_an_entry_comes_and_goes() {
        let mut seg = segment(16);
        put(&mut seg, "ab", "[1,2]", Precondition::None, 0).unwrap();
        put(&mut seg, "c", "\"xyz\"", Precondition::None, 0).unwrap();
        assert_eq!(seg.bytes(), 2 + 5 + 1 + 5);
        put(&mut seg, "ab", "7", Precondition::None, 0).unwrap();
        assert_eq!(seg.bytes(), 2 + 1 + 1 + 5, "a replaced value no longer counts");
        seg.remove("c", Precondition::None, None, 0).unwrap();
        assert_eq!(seg.bytes(), 3);
        seg.put(
            PutRequest {
                key: Arc::from("t"),
                value: json("1"),
                precondition: Precondition::None,
                lifespan_ms: Some(10),
                op: None,
            },
            0,
        )
        .unwrap();
        assert_eq!(seg.bytes(), 5);
        seg.reap(20);
        assert_eq!(seg.bytes(), 3, "expired");
        assert!(seg.evict_least_recently_written());
        assert_eq!(seg.bytes(), 0, "evicted");
    }

    #[test]
    fn listing_is_by_prefix_in_key_order_with_paging() {
        let mut seg = segment(0);
        for key in ["m/3", "m/1", "x", "m/2", "l"] {
            put(&mut seg, key, "0", Precondition::None, 0).unwrap();
        }
        let keys = |v: Vec<EntryView>| v.iter().map(|e| e.key.to_string()).collect::<Vec<_>>();
        assert_eq!(keys(seg.list("m/", None, 10, 0)), ["m/1", "m/2", "m/3"]);
        assert_eq!(keys(seg.list("m/", None, 2, 0)), ["m/1", "m/2"]);
        assert_eq!(keys(seg.list("m/", Some("m/2"), 2, 0)), ["m/3"]);
        assert_eq!(keys(seg.list("m/", Some("a"), 1, 0)), ["m/1"]);
        assert_eq!(keys(seg.list("", Some("m/3"), 10, 0)), ["x"]);
    }

    #[test]
    fn history_answers_only_when_it_reaches_back_far_enough() {
        let mut seg = segment(3);
        for i in 0..5 {
            put(&mut seg, &format!("k{i}"), "0", Precondition::None, 0).unwrap();
        }
        // Holds versions 3, 4, 5.
        assert!(seg.history_after(Position::at(Version(1))).is_none());
        let versions = |p| {
            seg.history_after(Position::at(Version(p)))
                .unwrap()
                .iter()
                .map(|e| e.version.0)
                .collect::<Vec<_>>()
        };
        assert_eq!(versions(2), [3, 4, 5]);
        assert_eq!(versions(4), [5]);
        assert!(versions(5).is_empty());
        assert!(
            seg.history_after(Position::at(Version(6))).is_none(),
            "a position this segment never reached"
        );
        assert!(segment(0).history_after(Position::default()).unwrap().is_empty());
    }

    #[test]
    fn snapshot_filters_and_reports_the_position() {
        let mut seg = segment(4);
        put(&mut seg, "a/1", "0", Precondition::None, 0).unwrap();
        put(&mut seg, "b/1", "0", Precondition::None, 0).unwrap();
        let (entries, position) = seg.snapshot(|k| k.starts_with("a/"), 0);
        assert_eq!(entries.len(), 1);
        assert_eq!(position.version, Version(2));
    }
}
