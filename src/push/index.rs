//! [`SubscriptionIndex`]: which subscriptions want an event, found without
//! scanning them all. Per cache, whole-cache subscriptions are a list,
//! exact-key ones a map by key, and prefix ones a map by prefix probed once
//! per distinct prefix length in use.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use super::filter::Filter;
use crate::grid::{CacheName, Key, MAX_INTEREST_FILTERS};

struct Entries<T> {
    all: Vec<T>,
    by_key: HashMap<Key, Vec<T>>,
    by_prefix: HashMap<Arc<str>, Vec<T>>,
    /// Prefix length in bytes -> how many prefixes of that length.
    prefix_lengths: BTreeMap<usize, usize>,
}

impl<T> Default for Entries<T> {
    fn default() -> Self {
        Entries {
            all: Vec::new(),
            by_key: HashMap::new(),
            by_prefix: HashMap::new(),
            prefix_lengths: BTreeMap::new(),
        }
    }
}

impl<T> Entries<T> {
    fn is_empty(&self) -> bool {
        self.all.is_empty() && self.by_key.is_empty() && self.by_prefix.is_empty()
    }
}

/// Subscriptions by cache and filter; `T` is what identifies one (a session
/// and its subscription id, with the session's address).
pub struct SubscriptionIndex<T> {
    caches: HashMap<CacheName, Entries<T>>,
    len: usize,
}

impl<T> Default for SubscriptionIndex<T> {
    fn default() -> Self {
        SubscriptionIndex {
            caches: HashMap::new(),
            len: 0,
        }
    }
}

impl<T> SubscriptionIndex<T> {
    pub fn insert(&mut self, cache: CacheName, filter: &Filter, target: T) {
        let entries = self.caches.entry(cache).or_default();
        match filter {
            Filter::All => entries.all.push(target),
            Filter::Key(key) => entries.by_key.entry(key.clone()).or_default().push(target),
            Filter::Prefix(prefix) => {
                let list = entries.by_prefix.entry(prefix.clone()).or_default();
                if list.is_empty() {
                    *entries.prefix_lengths.entry(prefix.len()).or_default() += 1;
                }
                list.push(target);
            }
        }
        self.len += 1;
    }

    /// Removes the first target under `cache` and `filter` for which `is`
    /// holds; returns it.
    pub fn remove(&mut self, cache: &str, filter: &Filter, is: impl Fn(&T) -> bool) -> Option<T> {
        let entries = self.caches.get_mut(cache)?;
        let removed = match filter {
            Filter::All => take_first(&mut entries.all, &is),
            Filter::Key(key) => {
                let list = entries.by_key.get_mut(&**key)?;
                let removed = take_first(list, &is);
                if list.is_empty() {
                    entries.by_key.remove(&**key);
                }
                removed
            }
            Filter::Prefix(prefix) => {
                let list = entries.by_prefix.get_mut(&**prefix)?;
                let removed = take_first(list, &is);
                if list.is_empty() {
                    entries.by_prefix.remove(&**prefix);
                    if let Some(count) = entries.prefix_lengths.get_mut(&prefix.len()) {
                        *count -= 1;
                        if *count == 0 {
                            entries.prefix_lengths.remove(&prefix.len());
                        }
                    }
                }
                removed
            }
        };
        if entries.is_empty() {
            self.caches.remove(cache);
        }
        if removed.is_some() {
            self.len -= 1;
        }
        removed
    }

    /// Removes every subscription to `cache`; returns them.
    pub fn remove_cache(&mut self, cache: &str) -> Vec<T> {
        let Some(entries) = self.caches.remove(cache) else {
            return Vec::new();
        };
        let mut removed = entries.all;
        removed.extend(entries.by_key.into_values().flatten());
        removed.extend(entries.by_prefix.into_values().flatten());
        self.len -= removed.len();
        removed
    }

    /// Calls `visit` with every subscription that wants a write to `key`.
    pub fn for_each_match(&self, cache: &str, key: &str, mut visit: impl FnMut(&T)) {
        let Some(entries) = self.caches.get(cache) else {
            return;
        };
        entries.all.iter().for_each(&mut visit);
        if let Some(list) = entries.by_key.get(key) {
            list.iter().for_each(&mut visit);
        }
        for &length in entries.prefix_lengths.keys() {
            if length > key.len() {
                break;
            }
            if !key.is_char_boundary(length) {
                continue;
            }
            if let Some(list) = entries.by_prefix.get(&key[..length]) {
                list.iter().for_each(&mut visit);
            }
        }
    }

    /// The union of the filters of `cache`'s subscriptions, as
    /// [`crate::grid::Interests`] lists it: every key once one wants every
    /// key or they are too many to list.
    pub fn interest(&self, cache: &str) -> Vec<Filter> {
        let Some(entries) = self.caches.get(cache) else {
            return Vec::new();
        };
        if !entries.all.is_empty() || entries.by_key.len() + entries.by_prefix.len() > MAX_INTEREST_FILTERS {
            return vec![Filter::All];
        }
        let keys = entries.by_key.keys().map(|key| Filter::Key(key.clone()));
        let prefixes = entries
            .by_prefix
            .keys()
            .map(|prefix| Filter::Prefix(prefix.clone()));
        keys.chain(prefixes).collect()
    }

    /// Calls `visit` with every subscription.
    pub fn for_each(&self, mut visit: impl FnMut(&T)) {
        for cache in self.caches.keys() {
            self.for_each_in(cache.as_str(), &mut visit);
        }
    }

    /// Calls `visit` with every subscription to `cache`.
    pub fn for_each_in(&self, cache: &str, mut visit: impl FnMut(&T)) {
        let Some(entries) = self.caches.get(cache) else {
            return;
        };
        entries.all.iter().for_each(&mut visit);
        entries.by_key.values().flatten().for_each(&mut visit);
        entries.by_prefix.values().flatten().for_each(&mut visit);
    }

    pub fn len(&self) -> usize {
        self.len
    }

    /// The caches with at least one subscription.
    pub fn caches(&self) -> impl Iterator<Item = &CacheName> {
        self.caches.keys()
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

fn take_first<T>(list: &mut Vec<T>, is: impl Fn(&T) -> bool) -> Option<T> {
    let at = list.iter().position(is)?;
    Some(list.swap_remove(at))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache(name: &str) -> CacheName {
        CacheName::parse(name).unwrap()
    }

    fn matches(index: &SubscriptionIndex<u32>, c: &str, key: &str) -> Vec<u32> {
        let mut found = Vec::new();
        index.for_each_match(c, key, |t| found.push(*t));
        found.sort();
        found
    }

    #[test]
    fn each_filter_kind_finds_its_subscriptions() {
        let mut index = SubscriptionIndex::default();
        index.insert(cache("c"), &Filter::All, 1);
        index.insert(cache("c"), &Filter::Key(Arc::from("match/7")), 2);
        index.insert(cache("c"), &Filter::Prefix(Arc::from("match/")), 3);
        index.insert(cache("c"), &Filter::Prefix(Arc::from("m")), 4);
        index.insert(cache("other"), &Filter::All, 5);
        assert_eq!(matches(&index, "c", "match/7"), [1, 2, 3, 4]);
        assert_eq!(matches(&index, "c", "match/8"), [1, 3, 4]);
        assert_eq!(matches(&index, "c", "team"), [1]);
        assert_eq!(matches(&index, "c", "m"), [1, 4]);
        assert_eq!(matches(&index, "other", "match/7"), [5]);
        assert!(matches(&index, "none", "x").is_empty());
        assert_eq!(index.len(), 5);
    }

    #[test]
    fn prefixes_split_inside_a_character_are_skipped() {
        let mut index = SubscriptionIndex::default();
        index.insert(cache("c"), &Filter::Prefix(Arc::from("é")), 1);
        index.insert(cache("c"), &Filter::Prefix(Arc::from("a")), 2);
        assert_eq!(matches(&index, "c", "éa"), [1]);
        assert_eq!(matches(&index, "c", "a"), [2]);
    }

    #[test]
    fn removal_forgets_exactly_one_subscription() {
        let mut index = SubscriptionIndex::default();
        let prefix = Filter::Prefix(Arc::from("p/"));
        index.insert(cache("c"), &prefix, 1);
        index.insert(cache("c"), &prefix, 2);
        assert_eq!(index.remove("c", &prefix, |t| *t == 1), Some(1));
        assert_eq!(matches(&index, "c", "p/x"), [2]);
        assert_eq!(index.remove("c", &prefix, |t| *t == 1), None);
        assert_eq!(index.remove("c", &prefix, |t| *t == 2), Some(2));
        assert!(index.is_empty());
        assert!(index.caches.is_empty(), "empty caches are dropped");
    }
}
