//! Who watches which cache, for the relay (`cluster::relay`) to send
//! each event only to the members whose subscribers want it: each
//! member's list of the caches its subscribers watch (sent on every change
//! and every few seconds), and each snapshot or history request a member
//! makes for a subscriber, which counts at once, before the snapshot is
//! taken, so no event after the snapshot's position is missed.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;

use crate::grid::owners::MemberId;
use crate::grid::CacheName;

/// How long a watch begun by a snapshot or history request holds against
/// a watch list without its cache: the list may have been sent before the
/// subscription that made the request.
const WATCH_GRACE: Duration = Duration::from_secs(10);

/// Who watches which cache.
#[derive(Default)]
pub struct Watchers {
    /// Per member, the caches it watches and since when each was begun by a
    /// request (`None`: only by its list).
    lists: Mutex<HashMap<MemberId, HashMap<CacheName, Option<Instant>>>>,
    /// The members watching each cache, read for every event.
    by_cache: ArcSwap<HashMap<CacheName, Arc<[MemberId]>>>,
}

impl Watchers {
    /// `member` asked for a snapshot or history of `cache` for a
    /// subscriber: it watches the cache from now on.
    pub fn begin(&self, member: MemberId, cache: CacheName) {
        self.change(|lists| {
            lists
                .entry(member)
                .or_default()
                .insert(cache, Some(Instant::now()));
        });
    }

    /// `member` watches exactly `caches` (and those it began to watch
    /// within the grace period).
    pub fn set(&self, member: MemberId, caches: BTreeSet<CacheName>) {
        self.change(|lists| {
            let list = lists.entry(member).or_default();
            list.retain(|cache, begun| {
                caches.contains(cache) || begun.is_some_and(|at| at.elapsed() < WATCH_GRACE)
            });
            for cache in caches {
                list.entry(cache).or_insert(None);
            }
        });
    }

    /// Forgets the members not in `members`.
    pub fn keep_only(&self, members: &BTreeSet<MemberId>) {
        self.change(|lists| lists.retain(|member, _| members.contains(member)));
    }

    /// The members watching `cache`.
    pub fn of(&self, cache: &CacheName) -> Option<Arc<[MemberId]>> {
        self.by_cache.load().get(cache).cloned()
    }

    fn change(&self, change: impl FnOnce(&mut HashMap<MemberId, HashMap<CacheName, Option<Instant>>>)) {
        let mut lists = self.lists.lock().unwrap_or_else(|e| e.into_inner());
        change(&mut lists);
        let mut by_cache: HashMap<CacheName, Vec<MemberId>> = HashMap::new();
        for (member, caches) in lists.iter() {
            for cache in caches.keys() {
                by_cache.entry(cache.clone()).or_default().push(member.clone());
            }
        }
        let by_cache = by_cache
            .into_iter()
            .map(|(cache, members)| (cache, Arc::from(members)))
            .collect();
        self.by_cache.store(Arc::new(by_cache));
    }
}
