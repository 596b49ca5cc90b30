//! A cache's settings and the state its partitions share: the validated
//! [`CacheConfig`] (from the config file or `PUT /api/v1/caches/{cache}`) and
//! [`CacheShared`], the few atomics that span segments (the entries held,
//! those of the segments this node leads, which this node's share of
//! `max_entries` bounds, and the bytes held).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::{CacheName, GridMetrics};

pub const DEFAULT_SEGMENTS: u32 = 256;
pub const MAX_SEGMENTS: u32 = 65_536;
pub const DEFAULT_MAX_VALUE_BYTES: usize = 1024 * 1024;
pub const DEFAULT_HISTORY_PER_SEGMENT: usize = 1024;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CacheConfig {
    /// How many segments keys hash to; fixed at creation.
    pub segments: u32,
    /// Copies of each segment across the cluster (primary included).
    /// Left out, the grid's default: 1 on a single node, 2 in a cluster
    /// (see [`CacheConfig::with_default_owners`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub num_owners: Option<u32>,
    /// The largest value accepted, in bytes of encoded JSON.
    pub max_value_bytes: usize,
    /// Lifespan of entries written without their own; `None`: forever.
    pub lifespan_ms: Option<u64>,
    /// Entries beyond this are evicted, least recently written first. In
    /// a cluster, each segment's primary keeps its segments within their
    /// share (see [`CacheConfig::entries_share`]).
    pub max_entries: Option<usize>,
    /// Events each segment keeps for `resume`.
    pub history_per_segment: usize,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            segments: DEFAULT_SEGMENTS,
            num_owners: None,
            max_value_bytes: DEFAULT_MAX_VALUE_BYTES,
            lifespan_ms: None,
            max_entries: None,
            history_per_segment: DEFAULT_HISTORY_PER_SEGMENT,
        }
    }
}

impl CacheConfig {
    /// Copies of each segment, once the grid has settled the default.
    pub fn owners(&self) -> u32 {
        self.num_owners.unwrap_or(1)
    }

    /// Segment `segment`'s share of `max_entries`: an equal part, the
    /// remainder spread one each over the first segments, so the shares
    /// of all segments add up to `max_entries` exactly. `None`: no limit.
    pub fn entries_share(&self, segment: u32) -> Option<usize> {
        let max = self.max_entries?;
        let segments = self.segments.max(1) as usize;
        Some(max / segments + usize::from((segment as usize) < max % segments))
    }

    /// This config with `num_owners` settled: as given, or `default`.
    pub fn with_default_owners(mut self, default: u32) -> Self {
        self.num_owners.get_or_insert(default);
        self
    }

    /// Checks every field; the error names the field and its allowed range.
    pub fn validate(&self) -> Result<(), String> {
        if !(1..=MAX_SEGMENTS).contains(&self.segments) {
            return Err(format!(
                "segments: must be 1 to {MAX_SEGMENTS}, not {}",
                self.segments
            ));
        }
        if let Some(owners) = self.num_owners.filter(|n| !(1..=16).contains(n)) {
            return Err(format!("num_owners: must be 1 to 16, not {owners}"));
        }
        if !(1..=64 * 1024 * 1024).contains(&self.max_value_bytes) {
            return Err(format!(
                "max_value_bytes: must be 1 to 67108864, not {}",
                self.max_value_bytes
            ));
        }
        if self.lifespan_ms == Some(0) {
            return Err("lifespan_ms: must be at least 1 (leave it out for no expiry)".into());
        }
        if self.max_entries == Some(0) {
            return Err("max_entries: must be at least 1 (leave it out for no limit)".into());
        }
        if self.history_per_segment > 1_000_000 {
            return Err(format!(
                "history_per_segment: must be at most 1000000, not {}",
                self.history_per_segment
            ));
        }
        Ok(())
    }
}

/// What the partitions of one cache share.
pub struct CacheShared {
    pub name: CacheName,
    pub config: CacheConfig,
    /// Entries held here, every copy counted.
    entries: AtomicUsize,
    /// Entries of the segments this node leads (primary or only owner):
    /// what its share of `max_entries` bounds.
    led_entries: AtomicUsize,
    /// This node's share of `max_entries`: all of it on a single node, the
    /// shares of the segments it leads in a cluster.
    entry_limit: AtomicUsize,
    bytes: AtomicUsize,
    pub metrics: GridMetrics,
}

impl CacheShared {
    pub fn new(name: CacheName, config: CacheConfig, metrics: GridMetrics) -> Arc<Self> {
        let entry_limit = AtomicUsize::new(config.max_entries.unwrap_or(usize::MAX));
        Arc::new(CacheShared {
            name,
            config,
            entries: AtomicUsize::new(0),
            led_entries: AtomicUsize::new(0),
            entry_limit,
            bytes: AtomicUsize::new(0),
            metrics,
        })
    }

    /// Entries across all segments, expired-but-not-reaped ones included.
    pub fn entry_count(&self) -> usize {
        self.entries.load(Ordering::Relaxed)
    }

    /// Bytes of keys and values across all segments.
    pub fn bytes(&self) -> usize {
        self.bytes.load(Ordering::Relaxed)
    }

    /// Applies a partition's change in bytes held.
    pub fn adjust_bytes(&self, before: usize, after: usize) {
        // Most writes replace a value with one of its size: no shared write.
        if after > before {
            self.bytes.fetch_add(after - before, Ordering::Relaxed);
        } else if after < before {
            self.bytes.fetch_sub(before - after, Ordering::Relaxed);
        }
    }

    /// Applies a partition's change in entries (`leads`: of a segment this
    /// node leads); returns how many entries the segments this node leads
    /// hold beyond its share of `max_entries` afterwards.
    pub fn adjust_entries(&self, before: usize, after: usize, leads: bool) -> usize {
        adjust(&self.entries, before, after);
        if !leads {
            return 0;
        }
        let led = adjust(&self.led_entries, before, after);
        self.beyond_limit(led)
    }

    /// A partition's `count` entries now count as led (or no longer do):
    /// its segment became this node's to lead (or another's).
    pub fn lead_entries(&self, count: usize, leads: bool) {
        if leads {
            adjust(&self.led_entries, 0, count);
        } else {
            adjust(&self.led_entries, count, 0);
        }
    }

    /// Sets this node's share of `max_entries`.
    pub fn set_entry_limit(&self, limit: usize) {
        self.entry_limit.store(limit, Ordering::Release);
    }

    /// How many entries the segments this node leads hold beyond its share
    /// of `max_entries`.
    pub fn excess(&self) -> usize {
        self.beyond_limit(self.led_entries.load(Ordering::Acquire))
    }

    fn beyond_limit(&self, led: usize) -> usize {
        match self.config.max_entries {
            Some(_) => led.saturating_sub(self.entry_limit.load(Ordering::Acquire)),
            None => 0,
        }
    }
}

/// Applies a change from `before` to `after` to `counter`; returns its new
/// value. A change that keeps the count (an update) touches no shared line.
fn adjust(counter: &AtomicUsize, before: usize, after: usize) -> usize {
    if after == before {
        counter.load(Ordering::Acquire)
    } else if after > before {
        counter.fetch_add(after - before, Ordering::AcqRel) + (after - before)
    } else {
        counter.fetch_sub(before - after, Ordering::AcqRel) - (before - after)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_match_the_contract() {
        let config: CacheConfig = serde_json::from_str("{}").unwrap();
        assert_eq!(config, CacheConfig::default());
        assert_eq!(config.segments, 256);
        assert!(config.validate().is_ok());
    }

    #[test]
    fn bad_fields_are_named() {
        let bad = CacheConfig {
            segments: 0,
            ..CacheConfig::default()
        };
        assert!(bad.validate().unwrap_err().starts_with("segments:"));
        let bad = CacheConfig {
            max_entries: Some(0),
            ..CacheConfig::default()
        };
        assert!(bad.validate().unwrap_err().starts_with("max_entries:"));
        assert!(serde_json::from_str::<CacheConfig>(r#"{"segmnts":4}"#).is_err());
    }

    #[test]
    fn the_segments_shares_add_up_to_max_entries() {
        let config = CacheConfig {
            segments: 16,
            max_entries: Some(100),
            ..CacheConfig::default()
        };
        let shares: Vec<usize> = (0..16).map(|s| config.entries_share(s).unwrap()).collect();
        assert_eq!(shares.iter().sum::<usize>(), 100);
        assert!(shares.iter().all(|&s| s == 6 || s == 7));
        assert_eq!(CacheConfig::default().entries_share(0), None);
    }
}
