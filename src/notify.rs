//! A wake-up signal for readers waiting for appends: appenders pay one atomic increment
//! and one atomic load when nobody waits.
//!
//! Invariant (no lost wake-up): a waiter registers in `waiters` and re-reads `seq` while
//! holding `lock`; an appender bumps `seq` before reading `waiters`, and takes `lock` to
//! notify. Both sides use `SeqCst`, so either the waiter sees the new `seq` or the appender
//! sees the waiter and its notify reaches the wait.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Instant;

use parking_lot::{Condvar, Mutex};

/// See the module docs.
#[derive(Debug, Default)]
pub(crate) struct Notifier {
    seq: AtomicU64,
    waiters: AtomicUsize,
    lock: Mutex<()>,
    cond: Condvar,
}

impl Notifier {
    /// The current event count; read it before checking for data.
    pub(crate) fn seq(&self) -> u64 {
        self.seq.load(Ordering::SeqCst)
    }

    /// Signals an event and wakes every waiter.
    pub(crate) fn notify(&self) {
        self.seq.fetch_add(1, Ordering::SeqCst);
        if self.waiters.load(Ordering::SeqCst) > 0 {
            let _guard = self.lock.lock();
            self.cond.notify_all();
        }
    }

    /// Waits until an event after `seen`, or until `deadline`.
    pub(crate) fn wait_until(&self, seen: u64, deadline: Instant) {
        let mut guard = self.lock.lock();
        self.waiters.fetch_add(1, Ordering::SeqCst);
        while self.seq.load(Ordering::SeqCst) == seen {
            if self.cond.wait_until(&mut guard, deadline).timed_out() {
                break;
            }
        }
        self.waiters.fetch_sub(1, Ordering::SeqCst);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    #[test]
    fn a_notify_wakes_a_waiter_and_a_missed_one_is_not_waited_for() {
        let n = Arc::new(Notifier::default());
        let seen = n.seq();
        n.notify();
        // The event happened before the wait: it returns at once.
        let start = Instant::now();
        n.wait_until(seen, start + Duration::from_secs(10));
        assert!(start.elapsed() < Duration::from_secs(5));
        let seen = n.seq();
        let notifier = Arc::clone(&n);
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            notifier.notify();
        });
        let start = Instant::now();
        n.wait_until(seen, start + Duration::from_secs(10));
        assert!(start.elapsed() < Duration::from_secs(5));
        t.join().expect("notifier thread");
        // Without an event, the deadline ends the wait.
        let start = Instant::now();
        n.wait_until(n.seq(), start + Duration::from_millis(20));
        assert!(start.elapsed() >= Duration::from_millis(20));
    }
}
