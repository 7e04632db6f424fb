//! The GitHub deliveries already handled, so that a replayed one changes nothing.
//!
//! A delivery is known by its `X-GitHub-Delivery` id and by the SHA-256 of its body:
//! the header is not covered by the signature, so a replay under a made-up id is
//! still caught by the body, which is. Both are kept in memory only, per replica,
//! bounded in number and in age: a replay after a restart, on another replica, or
//! older than the window is handled again (and then only makes the tracker say what
//! GitHub says now, as the periodic resync would).

use lru::LruCache;
use std::num::NonZeroUsize;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How many deliveries are remembered by default (two keys each).
pub const DEFAULT_CAPACITY: usize = 10_000;
/// How long a delivery is remembered by default: GitHub lets a delivery be
/// redelivered for 3 days.
pub const DEFAULT_MAX_AGE: Duration = Duration::from_secs(72 * 3600);

/// The deliveries seen lately, bounded in number (least recently seen go first) and age.
pub struct Deliveries {
    seen: Mutex<LruCache<String, Instant>>,
    max_age: Duration,
}

impl Default for Deliveries {
    fn default() -> Self {
        Self::new(DEFAULT_CAPACITY, DEFAULT_MAX_AGE)
    }
}

impl Deliveries {
    /// Remembers up to `capacity` deliveries (at least one), each for `max_age`.
    pub fn new(capacity: usize, max_age: Duration) -> Self {
        let keys = NonZeroUsize::new(capacity.saturating_mul(2)).unwrap_or(NonZeroUsize::MIN);
        Self {
            seen: Mutex::new(LruCache::new(keys)),
            max_age,
        }
    }

    /// Claims a delivery known by `keys`: false when one of them was seen within the
    /// window (a duplicate), otherwise remembers them all and answers true.
    pub(super) fn claim(&self, keys: &[String]) -> bool {
        let now = Instant::now();
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        let fresh = |at: &Instant| now.saturating_duration_since(*at) < self.max_age;
        if keys.iter().any(|k| seen.peek(k).is_some_and(fresh)) {
            return false;
        }
        for k in keys {
            seen.put(k.clone(), now);
        }
        true
    }

    /// Forgets a claimed delivery that was not handled, so GitHub's redelivery is.
    pub(super) fn forget(&self, keys: &[String]) {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        for k in keys {
            seen.pop(k);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(id: &str, body: &str) -> Vec<String> {
        vec![format!("id:{id}"), format!("body:{body}")]
    }

    #[test]
    fn a_delivery_is_claimed_once_by_id_or_body() {
        let d = Deliveries::new(10, DEFAULT_MAX_AGE);
        assert!(d.claim(&keys("a", "1")));
        assert!(!d.claim(&keys("a", "1")), "the same delivery");
        assert!(!d.claim(&keys("b", "1")), "the same body under a new id");
        assert!(!d.claim(&keys("a", "2")), "the same id");
        assert!(d.claim(&keys("c", "3")));
        d.forget(&keys("c", "3"));
        assert!(
            d.claim(&keys("c", "3")),
            "a forgotten delivery is new again"
        );
    }

    #[test]
    fn the_memory_is_bounded_in_number_and_age() {
        let d = Deliveries::new(2, DEFAULT_MAX_AGE);
        for n in 0..3 {
            assert!(d.claim(&keys(&n.to_string(), &n.to_string())));
        }
        assert!(d.claim(&keys("0", "0")), "the oldest went first");
        let d = Deliveries::new(10, Duration::ZERO);
        assert!(d.claim(&keys("a", "1")));
        assert!(d.claim(&keys("a", "1")), "older than the window");
    }
}
