//! A segment's copies on its other owners: the [`SegmentOp`]s a primary
//! records for every change (a write with the version, event id and expiry
//! deadline it took, or an eviction, which is no write and has no event),
//! applied in order by a backup to reach the same state, history and
//! events; and the [`SegmentImage`] a backup that fell behind is brought
//! level with at once.
//!
//! Values travel as their JSON text, so a copy holds exactly what was
//! written, as the primary does.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{footprint, Completed, EpochStart, PutOutcome, Segment, StoredEntry};
use crate::grid::{Event, EventKind, JsonValue, Key, OpId, Version};

/// One change of a segment, as its other owners apply it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum SegmentOp {
    Write {
        version: Version,
        kind: EventKind,
        key: Key,
        #[serde(with = "crate::grid::value::optional_text")]
        value: Option<JsonValue>,
        expires_at_ms: Option<u64>,
        id: Uuid,
        ts: u64,
        /// The epoch the write was made under.
        #[serde(default)]
        epoch: u64,
        /// The client's op id for the write, for the owner to remember.
        #[serde(default)]
        op: Option<OpId>,
    },
    /// The least recently written entry made room: no event, no version.
    Evict { key: Key },
}

impl SegmentOp {
    pub(super) fn write(event: &Event, expires_at_ms: Option<u64>) -> Self {
        SegmentOp::Write {
            version: event.version,
            kind: event.kind,
            key: event.key.clone(),
            value: event.value.clone(),
            expires_at_ms,
            id: event.id,
            ts: event.ts,
            epoch: event.epoch,
            op: None,
        }
    }
}

/// A whole segment at one sequence number: its live entries and history.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SegmentImage {
    pub sequence: Version,
    pub entries: Vec<ImageEntry>,
    /// The history, oldest first, as writes.
    pub history: Vec<SegmentOp>,
    /// The writes remembered by op id, oldest first.
    #[serde(default)]
    pub completed: Vec<(OpId, Completed)>,
    /// The segment's lineage, as far back as its history.
    #[serde(default)]
    pub epochs: Vec<EpochStart>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ImageEntry {
    pub key: Key,
    #[serde(with = "crate::grid::value::optional_text")]
    pub value: Option<JsonValue>,
    pub version: Version,
    pub expires_at_ms: Option<u64>,
}

impl Segment {
    /// Starts or stops recording changes for other owners.
    pub fn set_replicating(&mut self, replicating: bool) {
        self.replicating = replicating;
        self.unreplicated.clear();
    }

    /// The changes made since the last call, in order.
    pub fn take_ops(&mut self) -> Vec<SegmentOp> {
        std::mem::take(&mut self.unreplicated)
    }

    /// Applies a change the primary made, with the version, event id and
    /// time it made it with, so this copy's state, history and events are
    /// the primary's.
    pub fn apply(&mut self, op: SegmentOp) {
        match op {
            SegmentOp::Evict { key } => {
                if let Some((key, old)) = self.entries.remove_entry(&key) {
                    self.unindex(&key, &old);
                }
            }
            SegmentOp::Write {
                version,
                kind,
                key,
                value,
                expires_at_ms,
                id,
                ts,
                epoch,
                op,
            } => {
                if let Some(op) = op {
                    let outcome = match value {
                        Some(_) => Completed::Put(PutOutcome {
                            version,
                            created: kind == EventKind::Created,
                        }),
                        None => Completed::Removed(version),
                    };
                    self.completed.remember(op, outcome);
                }
                if let Some((old_key, old)) = self.entries.remove_entry(&key) {
                    self.unindex(&old_key, &old);
                }
                if let Some(value) = &value {
                    self.insert(key.clone(), value.clone(), version, expires_at_ms);
                }
                self.sequence = self.sequence.max(version);
                self.lineage.wrote(epoch, version);
                let event = self.event(id, epoch, kind, key, value, version, ts);
                self.record(event);
            }
        }
    }

    fn insert(&mut self, key: Key, value: JsonValue, version: Version, expires_at_ms: Option<u64>) {
        let stored = StoredEntry {
            value,
            version,
            expires_at_ms,
        };
        self.bytes += footprint(&key, &stored);
        self.write_order.insert(version, key.clone());
        if let Some(at) = expires_at_ms {
            self.deadlines.insert((at, key.clone()));
        }
        if let Some(old) = self.entries.insert(key.clone(), stored) {
            self.unindex(&key, &old);
        }
    }

    /// The whole segment, to bring another owner level with it.
    pub fn export(&self) -> SegmentImage {
        let entries = self
            .entries
            .iter()
            .map(|(key, entry)| ImageEntry {
                key: key.clone(),
                value: Some(entry.value.clone()),
                version: entry.version,
                expires_at_ms: entry.expires_at_ms,
            })
            .collect();
        let history = self
            .history
            .iter()
            .map(|event| SegmentOp::write(event, None))
            .collect();
        SegmentImage {
            sequence: self.sequence,
            entries,
            history,
            completed: self.completed.export(),
            epochs: self.lineage.export(),
        }
    }

    /// Replaces everything held with `image`. Publishes nothing: the
    /// events it stands for were reported where they were written.
    pub fn import(&mut self, image: SegmentImage) {
        self.entries.clear();
        self.write_order.clear();
        self.deadlines.clear();
        self.history.clear();
        self.unpublished.clear();
        self.unreplicated.clear();
        self.bytes = 0;
        for entry in image.entries {
            if let Some(value) = entry.value {
                self.insert(entry.key, value, entry.version, entry.expires_at_ms);
            }
        }
        for op in image.history {
            if let SegmentOp::Write {
                version,
                kind,
                key,
                value,
                id,
                ts,
                epoch,
                ..
            } = op
            {
                if self.history_capacity > 0 {
                    if self.history.len() == self.history_capacity {
                        self.history.pop_front();
                    }
                    let event = self.event(id, epoch, kind, key, value, version, ts);
                    self.history.push_back(event);
                }
            }
        }
        self.completed.import(image.completed);
        self.sequence = image.sequence;
        self.lineage.import(image.epochs);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    use crate::grid::segment::{Precondition, PutRequest};
    use crate::grid::{CacheName, GridError, SegmentId};

    fn segment() -> Segment {
        Segment::new(CacheName::parse("c").unwrap(), SegmentId(1), 8)
    }

    fn put(segment: &mut Segment, key: &str, value: &str, lifespan_ms: Option<u64>) {
        let request = PutRequest {
            key: Arc::from(key),
            value: JsonValue::parse(value).unwrap(),
            precondition: Precondition::None,
            lifespan_ms,
            op: None,
        };
        segment.put(request, 1_000).unwrap();
    }

    /// Entries (key, value, version), position, and history (id, version).
    type State = (Vec<(String, String, u64)>, Version, Vec<(Uuid, u64)>);

    fn state(segment: &Segment) -> State {
        let (entries, position) = segment.snapshot(|_| true, 1_000);
        let entries = entries
            .into_iter()
            .map(|e| (e.key.to_string(), e.value.get().to_string(), e.version.0))
            .collect();
        let history = segment.history.iter().map(|e| (e.id, e.version.0)).collect();
        (entries, position.version, history)
    }

    #[test]
    fn a_copy_applying_the_ops_in_order_is_the_primary() {
        let (mut primary, mut copy) = (segment(), segment());
        primary.set_replicating(true);
        put(&mut primary, "a", "0.22941408906430394", None);
        put(&mut primary, "b", "12345678901234567890123", Some(60_000));
        put(&mut primary, "a", "[1, 2]", None);
        primary.remove("b", Precondition::None, None, 1_000).unwrap();
        put(&mut primary, "t", "true", Some(5));
        primary.reap(2_000);
        put(&mut primary, "c", "{}", None);
        assert!(primary.evict_least_recently_written());
        let ops = primary.take_ops();
        assert_eq!(ops.len(), 8, "six writes, an expiry, an eviction");
        // Over the wire and back.
        let wire = rmp_serde::to_vec_named(&ops).unwrap();
        let ops: Vec<SegmentOp> = rmp_serde::from_slice(&wire).unwrap();
        for op in ops {
            copy.apply(op);
        }
        assert_eq!(state(&copy), state(&primary));
        assert_eq!(copy.bytes(), primary.bytes());
        let primary_events: Vec<_> = primary.take_events().iter().map(|e| e.id).collect();
        let copy_events: Vec<_> = copy.take_events().iter().map(|e| e.id).collect();
        assert_eq!(copy_events, primary_events, "the same events, by id");
        // A copy that continues as primary goes on from the same sequence.
        put(&mut copy, "d", "1", None);
        assert_eq!(copy.position(), Version(primary.position().0 + 1));
    }

    #[test]
    fn an_image_brings_a_copy_level_at_once() {
        let (mut primary, mut copy) = (segment(), segment());
        for n in 0..20 {
            put(&mut primary, &format!("k{}", n % 5), &n.to_string(), Some(60_000));
        }
        put(&mut primary, "spaced", "[0, 0.1]", None);
        put(&mut copy, "stale", "1", None);
        let wire = rmp_serde::to_vec_named(&primary.export()).unwrap();
        copy.import(rmp_serde::from_slice(&wire).unwrap());
        assert_eq!(state(&copy), state(&primary));
        assert_eq!(copy.bytes(), primary.bytes());
        assert_eq!(copy.next_deadline(), primary.next_deadline());
        assert!(copy.take_events().is_empty(), "an image publishes nothing");
    }

    #[test]
    fn a_write_sent_again_with_its_op_id_is_answered_as_before_on_every_copy() {
        let (mut primary, mut copy, mut imaged) = (segment(), segment(), segment());
        primary.set_replicating(true);
        let op = |id: &str| Some(OpId::parse(id).unwrap());
        let named = |key: &str, value: &str, id: &str| PutRequest {
            key: Arc::from(key),
            value: JsonValue::parse(value).unwrap(),
            precondition: Precondition::None,
            lifespan_ms: None,
            op: op(id),
        };
        let first = primary.put(named("a", "1", "w1"), 1_000).unwrap();
        let again = primary.put(named("a", "2", "w1"), 1_000).unwrap();
        assert_eq!(again, first, "answered as the first time");
        assert_eq!(
            primary.get("a", 1_000).unwrap().value.get(),
            "1",
            "not applied twice"
        );
        let removed = primary.remove("a", Precondition::None, op("r1"), 1_000).unwrap();
        assert_eq!(
            primary.remove("a", Precondition::None, op("r1"), 1_000),
            Ok(removed)
        );
        assert!(matches!(
            primary.remove("a", Precondition::None, op("w1"), 1_000),
            Err(GridError::Conflict(_))
        ));
        let third = primary.put(named("b", "9", "w2"), 1_000).unwrap();
        assert_eq!(primary.take_events().len(), 3, "two writes and a removal");

        // The other owners remember them too: from the ops, or an image.
        let wire = rmp_serde::to_vec_named(&primary.take_ops()).unwrap();
        let ops: Vec<SegmentOp> = rmp_serde::from_slice(&wire).unwrap();
        assert_eq!(ops.len(), 3);
        for op in ops {
            copy.apply(op);
        }
        imaged.import(rmp_serde::from_slice(&rmp_serde::to_vec_named(&primary.export()).unwrap()).unwrap());
        for promoted in [&mut copy, &mut imaged] {
            assert_eq!(promoted.put(named("b", "10", "w2"), 1_000), Ok(third));
            assert_eq!(
                promoted.remove("a", Precondition::None, op("r1"), 1_000),
                Ok(removed)
            );
            assert_eq!(promoted.position(), Version(3), "nothing applied again");
        }
    }

    #[test]
    fn a_copy_that_continues_tells_positions_it_passed_through_from_lost_ones() {
        use crate::grid::segment::Position;
        let at = |version, epoch| Position {
            version: Version(version),
            epoch: Some(epoch),
        };
        let replayed = |segment: &Segment, position| {
            segment
                .history_after(position)
                .map(|events| events.iter().map(|e| (e.version.0, e.epoch)).collect::<Vec<_>>())
        };
        let (mut primary, mut copy) = (segment(), segment());
        primary.set_replicating(true);
        primary.set_epoch(1);
        put(&mut primary, "a", "1", None);
        put(&mut primary, "b", "2", None);
        for op in primary.take_ops() {
            copy.apply(op);
        }
        // The primary writes version 3 under epoch 1, which never reaches
        // the copy; the copy goes on as primary of epoch 2.
        put(&mut primary, "lost", "3", None);
        copy.set_epoch(2);
        put(&mut copy, "c", "3", None);
        let imaged = {
            let mut imaged = segment();
            imaged.import(rmp_serde::from_slice(&rmp_serde::to_vec_named(&copy.export()).unwrap()).unwrap());
            imaged
        };
        for continued in [&copy, &imaged] {
            assert_eq!(
                replayed(continued, at(2, 1)),
                Some(vec![(3, 2)]),
                "passed through"
            );
            assert_eq!(replayed(continued, at(3, 2)), Some(vec![]));
            assert_eq!(
                replayed(continued, at(3, 1)),
                None,
                "version 3 of epoch 1 did not survive"
            );
            assert_eq!(replayed(continued, at(2, 2)), None, "epoch 2 wrote no version 2");
            assert_eq!(
                replayed(continued, Position::at(Version(3))),
                Some(vec![]),
                "a position without an epoch is taken at its word"
            );
            assert_eq!(continued.position_in_lineage(), at(3, 2));
        }
    }
}
