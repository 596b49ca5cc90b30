//! One subscription's delivery state inside its [`Feed`](super::feed::Feed),
//! and the read of what it starts with. A subscription is registered with
//! the listener *before* its snapshot (or history replay) is read, so no
//! write can fall between the two; events that reach it in the meantime are
//! held, and once the snapshot's per-segment positions are known, only the
//! events after them are delivered. Nothing is both in the snapshot and
//! sent as an event, and nothing is missed.

use std::collections::HashMap;
use std::sync::Arc;

use futures_util::future::join_all;

use super::filter::Filter;
use crate::grid::{Cache, CacheName, EntryView, Event, Grid, GridError, Incarnation, SegmentId, Version};
use crate::protocol::event::EncodedEvent;
use crate::protocol::position::{self, Positions};

pub struct Subscription {
    /// The wire name, `s<n>`.
    pub name: Arc<str>,
    pub cache: CacheName,
    pub filter: Filter,
    stage: Stage,
}

enum Stage {
    /// Registered; the snapshot or replay is being read.
    Starting { held: Vec<Arc<EncodedEvent>> },
    /// Delivering. `covered` holds, per segment, the position the snapshot
    /// or replay already covered; an entry is dropped at the first event past
    /// it, since every later event of that segment is past it too.
    Live { covered: HashMap<SegmentId, Version> },
}

impl Subscription {
    pub fn new(name: Arc<str>, cache: CacheName, filter: Filter) -> Self {
        Subscription {
            name,
            cache,
            filter,
            stage: Stage::Starting { held: Vec::new() },
        }
    }

    #[cfg(test)]
    fn is_live(&self) -> bool {
        matches!(self.stage, Stage::Live { .. })
    }

    /// Its cache started again (segments declared lost): it holds events
    /// again until a reset snapshot is sent ([`Self::go_live`]).
    pub fn restart(&mut self) {
        self.stage = Stage::Starting { held: Vec::new() };
    }

    /// An event the listener routed here: returned if it is to be sent now.
    pub fn offer(&mut self, event: Arc<EncodedEvent>) -> Option<Arc<EncodedEvent>> {
        match &mut self.stage {
            Stage::Starting { held } => {
                held.push(event);
                None
            }
            Stage::Live { covered } => {
                let segment = event.event.segment;
                match covered.get(&segment) {
                    Some(position) if event.event.version <= *position => None,
                    Some(_) => {
                        covered.remove(&segment);
                        Some(event)
                    }
                    None => Some(event),
                }
            }
        }
    }

    /// The snapshot or replay is sent and covered `positions`: start
    /// delivering, beginning with the held events past those positions.
    pub fn go_live(&mut self, positions: &Positions) -> Vec<Arc<EncodedEvent>> {
        let covered = position::versions(positions);
        let held = match std::mem::replace(&mut self.stage, Stage::Live { covered }) {
            Stage::Starting { held } => held,
            Stage::Live { .. } => Vec::new(),
        };
        held.into_iter().filter_map(|event| self.offer(event)).collect()
    }
}

/// What a subscription sends before its live events.
pub enum Start {
    /// A snapshot of these entries, covering `positions`.
    Snapshot {
        entries: Vec<EntryView>,
        positions: Positions,
        /// The incarnation the positions belong to.
        incarnation: Incarnation,
        /// Sent because a resume was impossible: the client replaces its state.
        reset: bool,
    },
    /// A resume: the missed events, covering `positions`.
    Replay {
        events: Vec<Arc<Event>>,
        positions: Positions,
    },
    /// Live events only, after `positions` (empty when not read).
    Live { positions: Positions },
}

/// Where a subscription starts, as its client asked.
#[derive(Clone, Debug)]
pub enum StartFrom {
    /// A snapshot, then live events.
    Snapshot,
    /// The events after these positions, or a reset snapshot when the
    /// history no longer holds them, or when they belong to another
    /// incarnation of the cache (`None`: the client did not say).
    Resume {
        positions: Positions,
        incarnation: Option<Incarnation>,
    },
    /// Live events only.
    Now,
    /// Live events only, from the current positions, read (a client that
    /// cannot say where it is is given positions as it goes).
    CurrentPositions,
    /// A reset snapshot: segments of the cache were declared lost and
    /// started again while the subscription followed it.
    Again,
}

/// Reads what a just-registered subscription sends first: the missed events
/// when resuming and every segment's history still holds them, else a reset
/// snapshot; a snapshot when asked; otherwise nothing.
pub async fn read_start(
    grid: &Grid,
    cache: &str,
    filter: &Filter,
    from: StartFrom,
) -> Result<Start, GridError> {
    match from {
        StartFrom::Resume {
            positions,
            incarnation,
        } => {
            let current = grid.cache(cache)?.incarnation();
            if incarnation.is_some_and(|i| i != current) {
                return read_snapshot(grid, cache, filter, true).await;
            }
            match read_replay(grid, cache, filter, &positions).await? {
                Some(replay) => Ok(replay),
                None => read_snapshot(grid, cache, filter, true).await,
            }
        }
        StartFrom::Snapshot => read_snapshot(grid, cache, filter, false).await,
        StartFrom::Again => read_snapshot(grid, cache, filter, true).await,
        StartFrom::Now => Ok(Start::Live {
            positions: Positions::new(),
        }),
        StartFrom::CurrentPositions => Ok(Start::Live {
            positions: read_positions(grid, cache).await?,
        }),
    }
}

/// The segments whose positions matter to `filter`: a key's own segment,
/// or every segment.
pub fn segments_of(cache: &Cache, filter: &Filter) -> Vec<SegmentId> {
    match filter {
        Filter::Key(key) => vec![cache.segment_of(key)],
        Filter::All | Filter::Prefix(_) => (0..cache.config().segments).map(SegmentId).collect(),
    }
}

async fn read_replay(
    grid: &Grid,
    cache: &str,
    filter: &Filter,
    positions: &Positions,
) -> Result<Option<Start>, GridError> {
    let segments = segments_of(&*grid.cache(cache)?, filter);
    let reads = segments.into_iter().map(|segment| {
        let after = positions.get(&segment).copied().unwrap_or_default();
        async move {
            let history = grid.history_for_resume(cache, segment, after).await;
            (segment, after, history)
        }
    });
    let mut events = Vec::new();
    let mut covered = Positions::new();
    for (segment, after, history) in join_all(reads).await {
        let Some(history) = history? else {
            return Ok(None);
        };
        covered.insert(segment, history.last().map_or(after, |e| e.position()));
        events.extend(history.into_iter().filter(|e| filter.matches(&e.key)));
    }
    Ok(Some(Start::Replay {
        events,
        positions: covered,
    }))
}

/// Every segment's current position, without reading any entry.
async fn read_positions(grid: &Grid, cache: &str) -> Result<Positions, GridError> {
    let snapshots = grid.snapshot(cache, None).await?;
    Ok(snapshots.into_iter().map(|s| (s.segment, s.position)).collect())
}

async fn read_snapshot(grid: &Grid, cache: &str, filter: &Filter, reset: bool) -> Result<Start, GridError> {
    let incarnation = grid.cache(cache)?.incarnation();
    let snapshots = grid.snapshot(cache, Some(filter.clone())).await?;
    let mut entries = Vec::new();
    let mut positions = Positions::new();
    for snapshot in snapshots {
        positions.insert(snapshot.segment, snapshot.position);
        entries.extend(snapshot.entries);
    }
    entries.sort_unstable_by(|a, b| a.key.cmp(&b.key));
    Ok(Start::Snapshot {
        entries,
        positions,
        incarnation,
        reset,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::grid::{EventKind, Position};

    fn event(segment: u32, version: u64) -> Arc<EncodedEvent> {
        EncodedEvent::new(Arc::new(Event {
            id: uuid::Uuid::now_v7(),
            kind: EventKind::Modified,
            cache: CacheName::parse("c").unwrap(),
            key: Arc::from("k"),
            value: None,
            version: Version(version),
            segment: SegmentId(segment),
            ts: 0,
            epoch: 0,
        }))
    }

    fn versions(events: &[Arc<EncodedEvent>]) -> Vec<(u32, u64)> {
        events
            .iter()
            .map(|e| (e.event.segment.0, e.event.version.0))
            .collect()
    }

    #[test]
    fn events_during_the_snapshot_are_held_then_trimmed_to_its_positions() {
        let mut sub = Subscription::new(Arc::from("s1"), CacheName::parse("c").unwrap(), Filter::All);
        for (s, v) in [(1, 4), (1, 5), (2, 1), (1, 6)] {
            assert!(sub.offer(event(s, v)).is_none());
        }
        let positions = Positions::from([(SegmentId(1), Position::at(Version(5)))]);
        assert_eq!(versions(&sub.go_live(&positions)), [(2, 1), (1, 6)]);
        assert!(sub.is_live());
        assert!(sub.offer(event(1, 7)).is_some());
    }

    #[test]
    fn live_events_already_covered_are_dropped() {
        let mut sub = Subscription::new(Arc::from("s1"), CacheName::parse("c").unwrap(), Filter::All);
        sub.go_live(&Positions::from([(SegmentId(3), Position::at(Version(10)))]));
        assert!(sub.offer(event(3, 9)).is_none());
        assert!(sub.offer(event(3, 11)).is_some());
        assert!(sub.offer(event(4, 1)).is_some());
    }
}
