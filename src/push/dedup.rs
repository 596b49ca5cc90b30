//! [`DedupWindow`]: the event ids seen recently, bounded by count and age, so
//! the listener can drop the second copy of an event that reaches it twice
//! (from a primary and a backup owner, or again during a rebalance).

use std::collections::{HashSet, VecDeque};
use std::time::{Duration, Instant};

use uuid::Uuid;

pub struct DedupWindow {
    seen: HashSet<Uuid>,
    order: VecDeque<(Instant, Uuid)>,
    capacity: usize,
    max_age: Duration,
}

impl DedupWindow {
    pub fn new(capacity: usize, max_age: Duration) -> Self {
        DedupWindow {
            seen: HashSet::with_capacity(capacity.min(1 << 16)),
            order: VecDeque::with_capacity(capacity.min(1 << 16)),
            capacity: capacity.max(1),
            max_age,
        }
    }

    /// Records `id`; false if it was already in the window.
    pub fn first_sighting(&mut self, id: Uuid, now: Instant) -> bool {
        while let Some(&(at, old)) = self.order.front() {
            if self.order.len() < self.capacity && now.duration_since(at) < self.max_age {
                break;
            }
            self.order.pop_front();
            self.seen.remove(&old);
        }
        if !self.seen.insert(id) {
            return false;
        }
        self.order.push_back((now, id));
        true
    }

    pub fn len(&self) -> usize {
        self.seen.len()
    }

    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_repeated_id_is_caught() {
        let mut window = DedupWindow::new(10, Duration::from_secs(60));
        let (a, b, now) = (Uuid::now_v7(), Uuid::now_v7(), Instant::now());
        assert!(window.first_sighting(a, now));
        assert!(window.first_sighting(b, now));
        assert!(!window.first_sighting(a, now));
        assert_eq!(window.len(), 2);
    }

    #[test]
    fn the_window_is_bounded_by_count() {
        let mut window = DedupWindow::new(3, Duration::from_secs(60));
        let now = Instant::now();
        let ids: Vec<_> = (0..5).map(|_| Uuid::now_v7()).collect();
        for id in &ids {
            assert!(window.first_sighting(*id, now));
        }
        assert_eq!(window.len(), 3);
        assert!(
            window.first_sighting(ids[0], now),
            "the oldest id has left the window"
        );
    }

    #[test]
    fn the_window_is_bounded_by_age() {
        let mut window = DedupWindow::new(100, Duration::from_millis(10));
        let start = Instant::now();
        let id = Uuid::now_v7();
        assert!(window.first_sighting(id, start));
        assert!(window.first_sighting(Uuid::now_v7(), start + Duration::from_millis(20)));
        assert_eq!(window.len(), 1);
        assert!(window.first_sighting(id, start + Duration::from_millis(20)));
    }
}
