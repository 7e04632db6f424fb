//! Two lanes for reconciles. Routine polls share a bounded set of slots; a wake
//! (a CI callback, a user's approval or retry) has slots of its own, and a
//! tracker woken while its poll waits for a slot moves to the wake lane. So the
//! last pass -> promotion step never queues behind overdue polls in a burst.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

/// Which lane a reconcile ran in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lane {
    /// A routine poll or watch event.
    Poll,
    /// A wake: served ahead of polls.
    Wake,
}

/// A reconcile slot, held for the length of one reconcile.
#[derive(Debug)]
pub struct Slot {
    _permit: OwnedSemaphorePermit,
    /// The lane the slot came from.
    pub lane: Lane,
}

/// The poll and wake lanes, keyed by "namespace/name".
#[derive(Debug)]
pub struct Lanes {
    polls: Arc<Semaphore>,
    wakes: Arc<Semaphore>,
    woken: Mutex<HashSet<String>>,
    waiting: Mutex<HashMap<String, Arc<Notify>>>,
    poll_slots: usize,
    backlog: AtomicUsize,
}

impl Lanes {
    /// `polls` slots for routine reconciles and `wakes` for woken ones (0: no limit).
    pub fn new(polls: usize, wakes: usize) -> Self {
        let size = |n: usize| if n == 0 { Semaphore::MAX_PERMITS } else { n };
        Self {
            polls: Arc::new(Semaphore::new(size(polls))),
            wakes: Arc::new(Semaphore::new(size(wakes))),
            woken: Mutex::default(),
            waiting: Mutex::default(),
            poll_slots: polls,
            backlog: AtomicUsize::new(0),
        }
    }

    /// Marks `key` woken: its next reconcile, or the one waiting for a poll slot now,
    /// takes the wake lane.
    pub fn wake(&self, key: &str) {
        if let Ok(mut w) = self.woken.lock() {
            w.insert(key.to_string());
        }
        if let Some(n) = self.waiting.lock().ok().and_then(|w| w.get(key).cloned()) {
            n.notify_one();
        }
    }

    fn take_wake(&self, key: &str) -> bool {
        self.woken
            .lock()
            .map(|mut w| w.remove(key))
            .unwrap_or(false)
    }

    /// Waits for a slot for `key`: the wake lane when it was woken or is `urgent`,
    /// else a poll slot unless it is woken while it waits.
    pub async fn enter(&self, key: &str, urgent: bool) -> Slot {
        if urgent | self.take_wake(key) {
            return self.wake_slot().await;
        }
        let notify = Arc::new(Notify::new());
        if let Ok(mut w) = self.waiting.lock() {
            w.insert(key.to_string(), notify.clone());
        }
        // A wake between the check above and the registration left its mark in `woken`.
        let slot = if self.take_wake(key) {
            None
        } else {
            let _waiting = Backlog::count(&self.backlog);
            tokio::select! {
                permit = self.polls.clone().acquire_owned() => permit.ok().map(|p| Slot { _permit: p, lane: Lane::Poll }),
                () = notify.notified() => {
                    self.take_wake(key);
                    None
                }
            }
        };
        if let Ok(mut w) = self.waiting.lock() {
            w.remove(key);
        }
        match slot {
            Some(s) => s,
            None => self.wake_slot().await,
        }
    }

    /// How long until the next routine poll of a tracker, `base` when polls get their
    /// slots at once, stretched (with jitter) up to `max` as more polls wait for one.
    pub fn pace(&self, base: Duration, max: Duration) -> Duration {
        pace(
            base,
            max,
            self.backlog.load(Ordering::Relaxed),
            self.poll_slots,
            rand::random::<f64>(),
        )
    }

    async fn wake_slot(&self) -> Slot {
        loop {
            // The semaphores are never closed; the loop only satisfies the type.
            if let Ok(p) = self.wakes.clone().acquire_owned().await {
                return Slot {
                    _permit: p,
                    lane: Lane::Wake,
                };
            }
        }
    }
}

/// Counts a poll waiting for a slot while it lives.
struct Backlog<'a>(&'a AtomicUsize);

impl<'a> Backlog<'a> {
    fn count(n: &'a AtomicUsize) -> Self {
        n.fetch_add(1, Ordering::Relaxed);
        Self(n)
    }
}

impl Drop for Backlog<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// `base` stretched by the share of polls waiting per slot, jittered by +-10 % (`unit`
/// in [0, 1)) so stretched polls do not come back in step, never above `max`; `base`
/// is kept exactly when nothing waits, so an idle controller polls on time.
pub fn pace(base: Duration, max: Duration, backlog: usize, slots: usize, unit: f64) -> Duration {
    if backlog == 0 || slots == 0 || max <= base {
        return base;
    }
    let stretch = 1.0 + backlog as f64 / slots as f64;
    let jitter = 0.9 + 0.2 * unit.clamp(0.0, 1.0);
    base.mul_f64(stretch * jitter).clamp(base, max)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn a_wake_overtakes_polls_waiting_for_a_slot() {
        let lanes = Arc::new(Lanes::new(1, 1));
        let busy = lanes.enter("ns/busy", false).await;
        assert_eq!(busy.lane, Lane::Poll);
        let waiting = {
            let lanes = lanes.clone();
            tokio::spawn(async move { lanes.enter("ns/a", false).await.lane })
        };
        // The poll cannot get a slot while `busy` holds the only one...
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        // ...until it is woken, when it takes the wake lane.
        lanes.wake("ns/a");
        let lane = tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("served")
            .expect("joined");
        assert_eq!(lane, Lane::Wake);
    }

    #[test]
    fn polls_stretch_with_the_backlog_within_the_bound() {
        let s = Duration::from_secs;
        assert_eq!(pace(s(10), s(60), 0, 32, 0.99), s(10), "idle: on time");
        assert_eq!(
            pace(s(10), s(60), 32, 32, 0.5),
            s(20),
            "one waiting per slot: twice"
        );
        assert_eq!(
            pace(s(10), s(60), 10_000, 32, 0.99),
            s(60),
            "never past the bound"
        );
        assert_eq!(
            pace(s(10), s(60), 1, 32, 0.0),
            s(10),
            "never below the base"
        );
        assert_ne!(
            pace(s(10), s(60), 64, 32, 0.0),
            pace(s(10), s(60), 64, 32, 0.9),
            "jittered"
        );
    }

    #[tokio::test]
    async fn a_wake_before_the_reconcile_is_kept_for_it_and_used_once() {
        let lanes = Lanes::new(1, 1);
        lanes.wake("ns/a");
        assert_eq!(lanes.enter("ns/a", false).await.lane, Lane::Wake);
        assert_eq!(lanes.enter("ns/a", false).await.lane, Lane::Poll);
    }
}
