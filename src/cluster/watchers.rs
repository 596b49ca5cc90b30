//! Who watches which cache, for the relay (`cluster::relay`) to send
//! each event only to the members whose subscribers want it: each
//! member's list of the caches its subscribers watch, with the union of
//! their filters (sent on every change and every few seconds), and each
//! snapshot or history request a member makes for a subscriber, which
//! counts at once for every key, before the snapshot is taken, so no event
//! after the snapshot's position is missed.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;

use crate::grid::owners::MemberId;
use crate::grid::{CacheName, Interests, KeyFilter, MAX_INTEREST_FILTERS};

/// How long a watch begun by a snapshot or history request holds against
/// a watch list without its cache: the list may have been sent before the
/// subscription that made the request.
const WATCH_GRACE: Duration = Duration::from_secs(10);

/// What one member watches of one cache.
#[derive(Default)]
struct Watch {
    /// The filters from its last list (empty: not in it).
    filters: Vec<KeyFilter>,
    /// The filters of its snapshot and history requests, each with when it
    /// was made: wanted for the grace period whatever its lists say.
    begun: Vec<(KeyFilter, Instant)>,
}

impl Watch {
    /// The filters in force: its list's and those begun within the grace
    /// period.
    fn interest(&mut self) -> Vec<KeyFilter> {
        self.begun.retain(|(_, at)| at.elapsed() < WATCH_GRACE);
        let mut filters = self.filters.clone();
        for (filter, _) in &self.begun {
            if !filters.contains(filter) {
                filters.push(filter.clone());
            }
        }
        filters
    }

    fn begun_lately(&self) -> bool {
        self.begun.iter().any(|(_, at)| at.elapsed() < WATCH_GRACE)
    }
}

/// A member watching a cache, and the filters its events must match.
pub type Watcher = (MemberId, Arc<[KeyFilter]>);

/// Who watches which cache, and which keys of it.
#[derive(Default)]
pub struct Watchers {
    /// Per member, what it watches of each cache.
    lists: Mutex<HashMap<MemberId, HashMap<CacheName, Watch>>>,
    /// The members watching each cache, read for every event.
    by_cache: ArcSwap<HashMap<CacheName, Arc<[Watcher]>>>,
}

impl Watchers {
    /// `member` asked for a snapshot or history of `cache` for a
    /// subscriber with `filter`: it watches those keys from now on (its
    /// lists take over after the grace period).
    pub fn begin(&self, member: MemberId, cache: CacheName, filter: KeyFilter) {
        self.change(|lists| {
            let watch = lists.entry(member).or_default().entry(cache).or_default();
            let now = Instant::now();
            watch.begun.retain(|(begun, _)| *begun != filter);
            if watch.begun.len() >= MAX_INTEREST_FILTERS {
                // Too many to list: every key, for the grace period.
                watch.begun = vec![(KeyFilter::All, now)];
            } else {
                watch.begun.push((filter, now));
            }
        });
    }

    /// `member` watches exactly `interests` (and what it began to watch
    /// within the grace period).
    pub fn set(&self, member: MemberId, interests: Interests) {
        self.change(|lists| {
            let list = lists.entry(member).or_default();
            list.retain(|cache, watch| interests.contains_key(cache) || watch.begun_lately());
            for watch in list.values_mut() {
                watch.filters.clear();
            }
            for (cache, filters) in interests {
                list.entry(cache).or_default().filters = filters;
            }
        });
    }

    /// Forgets the members not in `members`.
    pub fn keep_only(&self, members: &BTreeSet<MemberId>) {
        self.change(|lists| lists.retain(|member, _| members.contains(member)));
    }

    /// The members watching `cache`, with their filters.
    pub fn of(&self, cache: &CacheName) -> Option<Arc<[Watcher]>> {
        self.by_cache.load().get(cache).cloned()
    }

    fn change(&self, change: impl FnOnce(&mut HashMap<MemberId, HashMap<CacheName, Watch>>)) {
        let mut lists = self.lists.lock().unwrap_or_else(|e| e.into_inner());
        change(&mut lists);
        let mut by_cache: HashMap<CacheName, Vec<Watcher>> = HashMap::new();
        for (member, caches) in lists.iter_mut() {
            for (cache, watch) in caches.iter_mut() {
                by_cache
                    .entry(cache.clone())
                    .or_default()
                    .push((member.clone(), Arc::from(watch.interest())));
            }
        }
        let by_cache = by_cache
            .into_iter()
            .map(|(cache, members)| (cache, Arc::from(members)))
            .collect();
        self.by_cache.store(Arc::new(by_cache));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(name: &str) -> MemberId {
        MemberId(Arc::from(name))
    }

    fn interest(watchers: &Watchers, cache: &CacheName) -> Vec<(String, Vec<KeyFilter>)> {
        let mut found: Vec<_> = watchers
            .of(cache)
            .unwrap_or_else(|| Arc::from(Vec::new()))
            .iter()
            .map(|(m, filters)| (m.0.to_string(), filters.to_vec()))
            .collect();
        found.sort_by(|a, b| a.0.cmp(&b.0));
        found
    }

    #[test]
    fn a_member_watches_the_union_of_its_list_and_its_recent_requests() {
        let watchers = Watchers::default();
        let cache = CacheName::parse("c").unwrap();
        let key = |k: &str| KeyFilter::Key(Arc::from(k));
        watchers.set(member("n2"), Interests::from([(cache.clone(), vec![key("a")])]));
        // A subscriber's snapshot request comes before the list naming it.
        watchers.begin(member("n3"), cache.clone(), key("b"));
        watchers.set(member("n3"), Interests::new());
        assert_eq!(
            interest(&watchers, &cache),
            vec![("n2".into(), vec![key("a")]), ("n3".into(), vec![key("b")])]
        );
        watchers.set(member("n3"), Interests::from([(cache.clone(), vec![key("c")])]));
        assert_eq!(
            interest(&watchers, &cache)[1],
            ("n3".into(), vec![key("c"), key("b")])
        );
        watchers.keep_only(&BTreeSet::from([member("n3")]));
        assert_eq!(interest(&watchers, &cache).len(), 1, "n2 left");
    }
}
