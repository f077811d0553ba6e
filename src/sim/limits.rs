//! Lark's limits as the simulator enforces them: exact sliding windows over arrival times read
//! from the injected clock (so a test moves the clock instead of waiting a minute), and the
//! monthly per-tenant call quota, reset on the 1st of each Asia/Shanghai calendar month.

use std::collections::{HashMap, VecDeque};

use chrono::{DateTime, Datelike, Duration, Utc};
use chrono_tz::Asia::Shanghai;

/// One window: at most `limit` arrivals within any `span`.
#[derive(Debug, Clone)]
pub(crate) struct Limit {
    pub key: String,
    pub limit: usize,
    pub span: Duration,
}

impl Limit {
    pub fn per_second(key: String, limit: usize) -> Limit {
        Limit {
            key,
            limit,
            span: Duration::seconds(1),
        }
    }

    pub fn per_minute(key: String, limit: usize) -> Limit {
        Limit {
            key,
            limit,
            span: Duration::minutes(1),
        }
    }
}

/// Which limit refused a call and when it frees a slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Refusal {
    pub limit: usize,
    /// Whole seconds until the oldest arrival leaves the window (at least 1).
    pub reset_secs: u64,
}

#[derive(Debug, Default)]
pub(crate) struct Windows {
    arrivals: HashMap<String, VecDeque<DateTime<Utc>>>,
}

impl Windows {
    /// Admits the call into every window, or into none when one of them is full: refused calls
    /// are not counted, as Lark's gateway does not count what it turns away.
    pub fn admit(&mut self, limits: &[Limit], now: DateTime<Utc>) -> Result<(), Refusal> {
        for l in limits {
            let queue = self.arrivals.entry(l.key.clone()).or_default();
            while queue.front().is_some_and(|t| *t <= now - l.span) {
                queue.pop_front();
            }
            if queue.len() >= l.limit {
                let oldest = *queue.front().expect("a full window is not empty");
                let wait = oldest + l.span - now;
                let millis = wait.num_milliseconds().max(1);
                return Err(Refusal {
                    limit: l.limit,
                    reset_secs: (millis as u64).div_ceil(1000),
                });
            }
        }
        for l in limits {
            self.arrivals.entry(l.key.clone()).or_default().push_back(now);
        }
        Ok(())
    }
}

/// The tenant's calls this month.
#[derive(Debug)]
pub(crate) struct Quota {
    limit: Option<u64>,
    month: Option<(i32, u32)>,
    used: u64,
}

impl Quota {
    pub fn new(limit: Option<u64>) -> Quota {
        Quota {
            limit,
            month: None,
            used: 0,
        }
    }

    fn roll(&mut self, now: DateTime<Utc>) {
        let local = now.with_timezone(&Shanghai);
        let month = Some((local.year(), local.month()));
        if self.month != month {
            self.month = month;
            self.used = 0;
        }
    }

    /// Counts one call, or refuses it when the month's quota is spent.
    pub fn take(&mut self, now: DateTime<Utc>) -> bool {
        self.roll(now);
        if self.limit.is_some_and(|l| self.used >= l) {
            return false;
        }
        self.used += 1;
        true
    }

    /// Counts calls the tenant made elsewhere, beyond the limit if need be.
    pub fn spend(&mut self, now: DateTime<Utc>, calls: u64) {
        self.roll(now);
        self.used += calls;
    }

    pub fn used(&mut self, now: DateTime<Utc>) -> u64 {
        self.roll(now);
        self.used
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn window_counts_arrivals_exactly_and_reports_the_wait() {
        let mut w = Windows::default();
        let t0 = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
        let lim = [Limit::per_second("k".into(), 2)];
        assert!(w.admit(&lim, t0).is_ok());
        assert!(w.admit(&lim, t0 + Duration::milliseconds(400)).is_ok());
        let refused = w.admit(&lim, t0 + Duration::milliseconds(500)).unwrap_err();
        assert_eq!(
            refused,
            Refusal {
                limit: 2,
                reset_secs: 1
            }
        );
        // The refused call did not take a slot: at t0+1s the first arrival has left.
        assert!(w.admit(&lim, t0 + Duration::seconds(1)).is_ok());
        assert!(w.admit(&lim, t0 + Duration::milliseconds(1300)).is_err());
    }

    #[test]
    fn a_full_second_window_blocks_the_other_windows_too() {
        let mut w = Windows::default();
        let t0 = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
        let both = [Limit::per_second("a".into(), 5), Limit::per_second("b".into(), 1)];
        assert!(w.admit(&both, t0).is_ok());
        assert!(w.admit(&both, t0).is_err());
        // "a" holds only the admitted call.
        let only_a = [Limit::per_second("a".into(), 2)];
        assert!(w.admit(&only_a, t0).is_ok());
        assert!(w.admit(&only_a, t0).is_err());
    }

    #[test]
    fn quota_resets_on_the_first_in_shanghai() {
        let mut q = Quota::new(Some(2));
        // 2026-01-31 15:59 UTC is 23:59 in Shanghai; 16:00 UTC is Feb 1st there.
        let jan = Utc.with_ymd_and_hms(2026, 1, 31, 15, 59, 0).unwrap();
        assert!(q.take(jan) && q.take(jan) && !q.take(jan));
        assert!(q.take(jan + Duration::minutes(1)));
        assert_eq!(q.used(jan + Duration::minutes(1)), 1);
    }
}
