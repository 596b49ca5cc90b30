//! [`Sequencer`]: the listener passes on only the next sequence number of
//! each segment. In a cluster a segment's events reach a node from every
//! owner (a backup as it applies a write, the primary once every owner has
//! it), each stream in order but starting, stopping and lagging on its own;
//! the sequencer turns them into one stream per segment with every version
//! once and in order.
//!
//! Per segment of a watched cache it keeps the last version passed on and
//! holds events past a gap until the versions in between arrive, from
//! another owner or, once the gap has lasted [`Sequencer::gaps_older_than`]
//! allows, from an owner's history (the listener reads it, tells
//! [`Sequencer::filled`] and offers what it read). A segment's stream starts where a subscription's
//! snapshot (or replay) left it: until the cache's starting subscriptions
//! have said so ([`Sequencer::positioned`]), its events are held, so an
//! owner that started sending late cannot set the start past events
//! another owner is still to deliver.
//!
//! Only caches with subscriptions here have streams: an event of any other
//! cache matches nothing and passes untouched.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::grid::{CacheName, Event, SegmentId, Version};

/// Events held past a gap, at most, per segment: beyond it the gap is
/// filled from history at once rather than after the wait.
const MAX_HELD: usize = 10_000;

#[derive(Default)]
pub struct Sequencer {
    caches: HashMap<CacheName, CacheStreams>,
}

#[derive(Default)]
struct CacheStreams {
    segments: HashMap<SegmentId, Stream>,
    /// Subscriptions registered whose start positions are not known yet.
    starting: usize,
}

#[derive(Default)]
struct Stream {
    /// The last version passed on; `None` until a start is known.
    passed: Option<Version>,
    /// Versions past `passed + 1`, waiting for the versions in between:
    /// an event, or `None` for a version skipped as not wanted here.
    held: BTreeMap<Version, Option<Arc<Event>>>,
    /// When the oldest open gap opened.
    gap_since: Option<Instant>,
    /// A history read for this segment is under way.
    filling: bool,
}

/// What [`Sequencer::offer`] made of an event.
#[derive(Debug)]
pub enum Sequenced {
    /// Pass these on, in this order (the offered event, maybe followed by
    /// events it released; none when it was held).
    Pass(Vec<Arc<Event>>),
    /// At or below what was passed on already: a duplicate.
    Duplicate,
}

/// A history read that closes a gap: the events of `segment` after `after`.
#[derive(Debug, PartialEq, Eq)]
pub struct Fill {
    pub cache: CacheName,
    pub segment: SegmentId,
    pub after: Version,
}

impl Sequencer {
    /// A subscription to `cache` was registered. `positioned`: it will say
    /// where it starts ([`Self::positioned`]); events are held until then.
    pub fn watch(&mut self, cache: &CacheName, positioned: bool) {
        let streams = self.caches.entry(cache.clone()).or_default();
        if positioned {
            streams.starting += 1;
        }
    }

    /// No subscription to `cache` is left here: its streams go.
    pub fn forget(&mut self, cache: &str) {
        self.caches.remove(cache);
    }

    /// A starting subscription of `cache` covered `positions` with its
    /// snapshot or replay (empty: it read none, or it ended before it
    /// started). A segment without a start starts there; once no
    /// subscription is starting, a segment still without one starts at the
    /// first event it holds. Returns the events this released.
    pub fn positioned(&mut self, cache: &str, positions: &HashMap<SegmentId, Version>) -> Vec<Arc<Event>> {
        let Some(streams) = self.caches.get_mut(cache) else {
            return Vec::new();
        };
        streams.starting = streams.starting.saturating_sub(1);
        let mut released = Vec::new();
        for (segment, position) in positions {
            let stream = streams.segments.entry(*segment).or_default();
            if stream.passed.is_none() {
                stream.passed = Some(*position);
                stream.release(&mut released);
            }
        }
        if streams.starting == 0 {
            for stream in streams.segments.values_mut() {
                if stream.passed.is_none() {
                    if let Some((&first, _)) = stream.held.first_key_value() {
                        stream.passed = Some(Version(first.0 - 1));
                        stream.release(&mut released);
                    }
                }
            }
        }
        released
    }

    /// An event seen for the first time (by id): what to pass on.
    pub fn offer(&mut self, event: Arc<Event>, now: Instant) -> Sequenced {
        let (cache, segment, version) = (event.cache.clone(), event.segment, event.version);
        self.sequence(cache.as_str(), segment, version, Some(event), now)
    }

    /// Versions `first..=last` of a segment that an owner relayed as not
    /// wanted here (no subscription's filter matches their keys): they
    /// count as passed on, routing nothing. Returns the events they release.
    pub fn skip(
        &mut self,
        cache: &str,
        segment: SegmentId,
        first: Version,
        last: Version,
        now: Instant,
    ) -> Vec<Arc<Event>> {
        let mut released = Vec::new();
        for version in first.0..=last.0 {
            if let Sequenced::Pass(events) = self.sequence(cache, segment, Version(version), None, now) {
                released.extend(events);
            }
        }
        released
    }

    /// One version of a segment, with its event or without (skipped).
    fn sequence(
        &mut self,
        cache: &str,
        segment: SegmentId,
        version: Version,
        event: Option<Arc<Event>>,
        now: Instant,
    ) -> Sequenced {
        let Some(streams) = self.caches.get_mut(cache) else {
            return Sequenced::Pass(event.into_iter().collect());
        };
        let starting = streams.starting > 0;
        let stream = streams.segments.entry(segment).or_default();
        let passed = match stream.passed {
            Some(passed) => passed,
            None if starting => {
                stream.held.insert(version, event);
                return Sequenced::Pass(Vec::new());
            }
            None => Version(version.0.saturating_sub(1)),
        };
        if version <= passed {
            if version.0 != 1 || event.is_none() {
                return Sequenced::Duplicate;
            }
            // A new event (its id is unseen) at version 1 below the
            // stream: the segment started again, declared lost.
            *stream = Stream::default();
        }
        let passed = stream.passed.unwrap_or(Version(version.0.saturating_sub(1)));
        if version.0 > passed.0 + 1 {
            stream.held.insert(version, event);
            stream.gap_since.get_or_insert(now);
            stream.passed = Some(passed);
            return Sequenced::Pass(Vec::new());
        }
        stream.passed = Some(version);
        let mut released: Vec<Arc<Event>> = event.into_iter().collect();
        stream.release(&mut released);
        Sequenced::Pass(released)
    }

    /// The segments whose gap has lasted `wait` (or that hold too much),
    /// and not being filled: each is marked as filling, to be read from
    /// history and handed to [`Self::filled`].
    pub fn gaps_older_than(&mut self, wait: Duration, now: Instant) -> Vec<Fill> {
        self.fills_where(|stream| {
            stream
                .gap_since
                .is_some_and(|since| now.duration_since(since) >= wait || stream.held.len() > MAX_HELD)
        })
    }

    /// Every started segment not being filled, to be read from history: a
    /// node that was cut off catches its subscribers up with what it missed.
    pub fn catch_up(&mut self) -> Vec<Fill> {
        self.fills_where(|_| true)
    }

    /// Marks as filling, and returns as fills, the started segments not
    /// being filled that `due` picks.
    fn fills_where(&mut self, due: impl Fn(&Stream) -> bool) -> Vec<Fill> {
        let mut fills = Vec::new();
        for (cache, streams) in &mut self.caches {
            for (segment, stream) in &mut streams.segments {
                if let (false, Some(passed)) = (stream.filling, stream.passed) {
                    if due(stream) {
                        stream.filling = true;
                        fills.push(Fill {
                            cache: cache.clone(),
                            segment: *segment,
                            after: passed,
                        });
                    }
                }
            }
        }
        fills
    }

    /// A history read of [`Fill`] ended. After [`HistoryRead::Read`] the
    /// caller offers the events read (by id first), as any other. Returns
    /// the events released by skipping a gap the history no longer holds.
    pub fn filled(&mut self, fill: &Fill, read: HistoryRead, now: Instant) -> Vec<Arc<Event>> {
        let mut released = Vec::new();
        let Some(stream) = self
            .caches
            .get_mut(fill.cache.as_str())
            .and_then(|streams| streams.segments.get_mut(&fill.segment))
        else {
            return released;
        };
        stream.filling = false;
        match read {
            HistoryRead::Read => {
                if stream.held.is_empty() {
                    stream.gap_since = None;
                }
            }
            HistoryRead::NoLongerHeld => {
                if let Some((&first, _)) = stream.held.first_key_value() {
                    stream.passed = Some(Version(first.0 - 1));
                    stream.release(&mut released);
                }
            }
            // Tried again after the wait, a catch-up's read too.
            HistoryRead::Failed => stream.gap_since = Some(now),
        }
        released
    }

    /// Whether some segment holds events past a gap.
    pub fn has_gaps(&self) -> bool {
        self.caches
            .values()
            .any(|streams| streams.segments.values().any(|s| s.gap_since.is_some()))
    }
}

/// How a history read for a [`Fill`] ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HistoryRead {
    /// Its events are being offered.
    Read,
    /// The history no longer reaches back: the gap is skipped.
    NoLongerHeld,
    /// It failed (no owner reachable): tried again after the wait.
    Failed,
}

impl Stream {
    /// Moves every held event that now follows `passed` into `released`,
    /// dropping held ones at or below it.
    fn release(&mut self, released: &mut Vec<Arc<Event>>) {
        let Some(mut passed) = self.passed else {
            return;
        };
        while let Some(entry) = self.held.first_entry() {
            let version = *entry.key();
            if version <= passed {
                entry.remove();
            } else if version.0 == passed.0 + 1 {
                released.extend(entry.remove());
                passed = version;
            } else {
                break;
            }
        }
        self.passed = Some(passed);
        self.gap_since = if self.held.is_empty() {
            None
        } else {
            self.gap_since.or(Some(Instant::now()))
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::grid::EventKind;

    fn cache() -> CacheName {
        CacheName::parse("c").unwrap()
    }

    fn event(segment: u32, version: u64) -> Arc<Event> {
        Arc::new(Event {
            id: uuid::Uuid::now_v7(),
            kind: EventKind::Modified,
            cache: cache(),
            key: Arc::from(format!("k{segment}")),
            value: None,
            version: Version(version),
            segment: SegmentId(segment),
            ts: 0,
            epoch: 0,
        })
    }

    fn versions(sequenced: Sequenced) -> Vec<u64> {
        match sequenced {
            Sequenced::Pass(events) => events.iter().map(|e| e.version.0).collect(),
            Sequenced::Duplicate => vec![0],
        }
    }

    fn started_at(position: u64) -> Sequencer {
        let mut sequencer = Sequencer::default();
        sequencer.watch(&cache(), true);
        let positions = HashMap::from([(SegmentId(0), Version(position))]);
        assert!(sequencer.positioned("c", &positions).is_empty());
        sequencer
    }

    #[test]
    fn copies_from_two_owners_pass_once_and_in_order() {
        let mut sequencer = started_at(4);
        let now = Instant::now();
        let (five, six, seven) = (event(0, 5), event(0, 6), event(0, 7));
        // The backup's stream is ahead of the primary's.
        assert_eq!(versions(sequencer.offer(six.clone(), now)), Vec::<u64>::new());
        assert_eq!(versions(sequencer.offer(five.clone(), now)), vec![5, 6]);
        assert_eq!(versions(sequencer.offer(five, now)), vec![0]);
        assert_eq!(versions(sequencer.offer(six, now)), vec![0]);
        assert_eq!(versions(sequencer.offer(seven, now)), vec![7]);
        assert!(!sequencer.has_gaps());
    }

    #[test]
    fn events_before_the_start_is_known_wait_for_it() {
        let mut sequencer = Sequencer::default();
        sequencer.watch(&cache(), true);
        let now = Instant::now();
        // An owner that started sending late delivers 9 first; the
        // subscription's snapshot stands at 7.
        assert_eq!(versions(sequencer.offer(event(0, 9), now)), Vec::<u64>::new());
        let released = sequencer.positioned("c", &HashMap::from([(SegmentId(0), Version(7))]));
        assert!(released.is_empty(), "8 is still missing");
        assert_eq!(versions(sequencer.offer(event(0, 8), now)), vec![8, 9]);
    }

    #[test]
    fn without_a_starting_subscription_the_first_event_starts_the_stream() {
        let mut sequencer = Sequencer::default();
        sequencer.watch(&cache(), false);
        let now = Instant::now();
        assert_eq!(versions(sequencer.offer(event(3, 12), now)), vec![12]);
        assert_eq!(versions(sequencer.offer(event(3, 13), now)), vec![13]);
    }

    #[test]
    fn a_lasting_gap_is_filled_from_history_once() {
        let mut sequencer = started_at(1);
        let start = Instant::now();
        assert_eq!(versions(sequencer.offer(event(0, 4), start)), Vec::<u64>::new());
        let wait = Duration::from_millis(100);
        assert!(sequencer.gaps_older_than(wait, start).is_empty(), "not yet");
        let later = start + wait;
        let fills = sequencer.gaps_older_than(wait, later);
        assert_eq!(
            fills,
            vec![Fill {
                cache: cache(),
                segment: SegmentId(0),
                after: Version(1)
            }]
        );
        assert!(
            sequencer.gaps_older_than(wait, later).is_empty(),
            "one read at a time"
        );
        assert!(sequencer.filled(&fills[0], HistoryRead::Read, later).is_empty());
        assert_eq!(versions(sequencer.offer(event(0, 2), later)), vec![2]);
        assert_eq!(versions(sequencer.offer(event(0, 3), later)), vec![3, 4]);
        assert!(!sequencer.has_gaps());
    }

    #[test]
    fn a_gap_history_no_longer_holds_is_skipped() {
        let mut sequencer = started_at(1);
        let now = Instant::now();
        sequencer.offer(event(0, 5), now);
        sequencer.offer(event(0, 6), now);
        let fills = sequencer.gaps_older_than(Duration::ZERO, now);
        let released = sequencer.filled(&fills[0], HistoryRead::NoLongerHeld, now);
        assert_eq!(
            released.iter().map(|e| e.version.0).collect::<Vec<_>>(),
            vec![5, 6]
        );
    }

    #[test]
    fn a_segment_started_again_restarts_its_stream() {
        let mut sequencer = started_at(40);
        let now = Instant::now();
        assert_eq!(versions(sequencer.offer(event(0, 1), now)), vec![1]);
        assert_eq!(versions(sequencer.offer(event(0, 2), now)), vec![2]);
    }

    #[test]
    fn skipped_versions_close_a_gap_and_route_nothing() {
        let mut sequencer = started_at(4);
        let now = Instant::now();
        assert!(sequencer
            .skip("c", SegmentId(0), Version(6), Version(7), now)
            .is_empty());
        assert_eq!(versions(sequencer.offer(event(0, 8), now)), Vec::<u64>::new());
        // 5 arrives: 6 and 7 were skipped, so 8 follows at once.
        assert_eq!(versions(sequencer.offer(event(0, 5), now)), vec![5, 8]);
        let released = sequencer.skip("c", SegmentId(0), Version(9), Version(9), now);
        assert!(released.is_empty());
        assert_eq!(versions(sequencer.offer(event(0, 10), now)), vec![10]);
        assert!(!sequencer.has_gaps());
    }

    #[test]
    fn catching_up_reads_every_started_segment() {
        let mut sequencer = started_at(3);
        let fills = sequencer.catch_up();
        assert_eq!(fills.len(), 1);
        assert_eq!(fills[0].after, Version(3));
        assert!(sequencer.catch_up().is_empty(), "already being read");
    }
}
