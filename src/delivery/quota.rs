//! The monthly quota ledger: calls Lark counts, by class, per calendar month in the configured
//! time zone; warnings at 80 % and 95 %; a forecast of the day it runs out; and the degradation
//! policy that decides which calls give way as the budget runs low.

use std::collections::BTreeMap;

use chrono::{DateTime, Datelike, NaiveDate, TimeZone, Utc};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

use super::job::{CallClass, Job, JobKind};

/// An integration's plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "plan", rename_all = "snake_case")]
pub enum Plan {
    /// Lark's free tier: a monthly call quota (10,000 by default).
    BasicFree {
        monthly_quota: u64,
    },
    Paid,
}

impl Plan {
    pub fn limit(self) -> Option<u64> {
        match self {
            Plan::BasicFree { monthly_quota } => Some(monthly_quota),
            Plan::Paid => None,
        }
    }
}

/// Below what share of the quota left each kind of call waits (documented in the README).
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct DegradationPolicy {
    /// Cosmetic card refreshes wait below this share left (percent).
    pub cosmetic_below_pct: u8,
    /// Info-level sends and updates wait below this share left.
    pub info_below_pct: u8,
    /// Warning-level chat sends wait below this share left; pages to people never wait.
    pub warning_chat_below_pct: u8,
}

impl Default for DegradationPolicy {
    fn default() -> Self {
        DegradationPolicy {
            cosmetic_below_pct: 20,
            info_below_pct: 10,
            warning_chat_below_pct: 3,
        }
    }
}

/// One integration's calls in one month.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct MonthUsage {
    pub by_class: BTreeMap<CallClass, u64>,
    pub total: u64,
    /// Thresholds (percent) already warned about this month.
    pub warned: Vec<u8>,
    /// Calls by local day (`YYYY-MM-DD` in the quota's time zone), for the admin UI's chart.
    /// Months counted before it existed have none.
    #[serde(default)]
    pub by_day: BTreeMap<String, u64>,
}

pub const WARN_THRESHOLDS: [u8; 2] = [80, 95];

/// The calendar month of `at` in `tz`, as `YYYY-MM`.
pub fn month_key(at: DateTime<Utc>, tz: Tz) -> String {
    let local = at.with_timezone(&tz);
    format!("{:04}-{:02}", local.year(), local.month())
}

/// The instant the month containing `at` ends in `tz` (the 1st of the next month, 00:00 local).
pub fn month_end(at: DateTime<Utc>, tz: Tz) -> DateTime<Utc> {
    let local = at.with_timezone(&tz);
    let (y, m) = if local.month() == 12 {
        (local.year() + 1, 1)
    } else {
        (local.year(), local.month() + 1)
    };
    let first = NaiveDate::from_ymd_opt(y, m, 1)
        .expect("valid date")
        .and_hms_opt(0, 0, 0)
        .expect("midnight");
    tz.from_local_datetime(&first)
        .earliest()
        .expect("midnight exists")
        .with_timezone(&Utc)
}

fn month_start(at: DateTime<Utc>, tz: Tz) -> DateTime<Utc> {
    let local = at.with_timezone(&tz);
    let first = NaiveDate::from_ymd_opt(local.year(), local.month(), 1)
        .expect("valid date")
        .and_hms_opt(0, 0, 0)
        .expect("midnight");
    tz.from_local_datetime(&first)
        .earliest()
        .expect("midnight exists")
        .with_timezone(&Utc)
}

/// Percent of the quota left after `used` calls (100 when unlimited).
pub fn percent_left(used: u64, plan: Plan) -> f64 {
    match plan.limit() {
        None => 100.0,
        Some(0) => 0.0,
        Some(limit) => 100.0 * limit.saturating_sub(used) as f64 / limit as f64,
    }
}

/// Whether `job` may spend quota now, `used` calls (counted and in flight) into the month;
/// `None` = go, otherwise why it waits.
pub fn may_spend(
    job: &Job,
    used: u64,
    plan: Plan,
    policy: &DegradationPolicy,
) -> Option<super::job::HoldReason> {
    use super::job::{HoldReason, Priority};
    let limit = plan.limit()?;
    if used >= limit {
        return Some(HoldReason::QuotaExhausted);
    }
    let left = percent_left(used, plan);
    // A critical or warning page to a person spends the last of the budget.
    let page_to_person = job.priority != Priority::Info
        && !job.cosmetic
        && matches!(job.kind, JobKind::Send { .. } | JobKind::Reply { .. })
        && job.kind.class() == CallClass::SendToPerson;
    if page_to_person {
        return None;
    }
    let to_chat = job.kind.class() == CallClass::SendToChat;
    let waits = (job.cosmetic && left < f64::from(policy.cosmetic_below_pct))
        || (job.priority == Priority::Info && left < f64::from(policy.info_below_pct))
        || (job.priority == Priority::Warning && to_chat && left < f64::from(policy.warning_chat_below_pct));
    waits.then_some(HoldReason::QuotaReserved)
}

/// The quota picture an admin sees.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct QuotaReport {
    pub month: String,
    pub used: u64,
    pub limit: Option<u64>,
    pub percent_used: Option<f64>,
    pub by_class: BTreeMap<String, u64>,
    pub warnings: Vec<u8>,
    /// At the month's average rate so far, the day (local date) the quota runs out, if this month.
    pub forecast_exhausted_on: Option<String>,
    pub resets_at: DateTime<Utc>,
    /// Calls by local day this month (days without calls are absent).
    pub by_day: BTreeMap<String, u64>,
}

pub fn report(usage: &MonthUsage, plan: Plan, now: DateTime<Utc>, tz: Tz) -> QuotaReport {
    let limit = plan.limit();
    let start = month_start(now, tz);
    let end = month_end(now, tz);
    let elapsed = (now - start).num_seconds().max(1) as f64;
    let forecast = limit.and_then(|limit| {
        if usage.total == 0 {
            return None;
        }
        let rate = usage.total as f64 / elapsed;
        let left = limit.saturating_sub(usage.total) as f64;
        let at = now + chrono::Duration::seconds((left / rate) as i64);
        (at < end).then(|| at.with_timezone(&tz).date_naive().to_string())
    });
    QuotaReport {
        month: month_key(now, tz),
        used: usage.total,
        limit,
        percent_used: limit.map(|l| {
            if l == 0 {
                100.0
            } else {
                100.0 * usage.total as f64 / l as f64
            }
        }),
        by_class: usage
            .by_class
            .iter()
            .map(|(c, n)| (c.as_str().to_string(), *n))
            .collect(),
        warnings: usage.warned.clone(),
        forecast_exhausted_on: forecast,
        resets_at: end,
        by_day: usage.by_day.clone(),
    }
}

/// The local day of `at` in `tz`, as `YYYY-MM-DD` (the key of [`MonthUsage::by_day`]).
pub fn day_key(at: DateTime<Utc>, tz: Tz) -> String {
    at.with_timezone(&tz).date_naive().to_string()
}

/// Adds `n` calls made on local day `day`; returns the thresholds crossed for the first time
/// this month, lowest first (a jump past both returns both).
pub fn count(usage: &mut MonthUsage, class: CallClass, n: u64, plan: Plan, day: String) -> Vec<u8> {
    *usage.by_class.entry(class).or_default() += n;
    *usage.by_day.entry(day).or_default() += n;
    usage.total += n;
    newly_crossed(usage, plan)
}

/// Lark answered 99991403: its count, which may include calls of other tools on the tenant,
/// has reached the quota. The month is taken as spent; returns the thresholds this crosses.
pub fn learn_exhausted(usage: &mut MonthUsage, plan: Plan) -> Vec<u8> {
    if let Some(limit) = plan.limit() {
        usage.total = usage.total.max(limit);
    }
    newly_crossed(usage, plan)
}

fn newly_crossed(usage: &mut MonthUsage, plan: Plan) -> Vec<u8> {
    let Some(limit) = plan.limit() else {
        return Vec::new();
    };
    let pct = usage.total.saturating_mul(100).checked_div(limit).unwrap_or(100);
    let newly: Vec<u8> = WARN_THRESHOLDS
        .into_iter()
        .filter(|t| u64::from(*t) <= pct && !usage.warned.contains(t))
        .collect();
    usage.warned.extend(&newly);
    newly
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono_tz::Asia::Shanghai;

    #[test]
    fn months_follow_the_time_zone() {
        let at = "2026-01-31T16:30:00Z".parse::<DateTime<Utc>>().unwrap();
        assert_eq!(month_key(at, Shanghai), "2026-02");
        assert_eq!(month_key(at, chrono_tz::UTC), "2026-01");
        assert_eq!(
            month_end(at, Shanghai),
            "2026-02-28T16:00:00Z".parse::<DateTime<Utc>>().unwrap()
        );
        let dec = "2026-12-15T00:00:00Z".parse::<DateTime<Utc>>().unwrap();
        assert_eq!(
            month_end(dec, Shanghai),
            "2026-12-31T16:00:00Z".parse::<DateTime<Utc>>().unwrap()
        );
    }

    const DAY: &str = "2026-11-02";

    #[test]
    fn warnings_fire_once_per_threshold() {
        let plan = Plan::BasicFree { monthly_quota: 100 };
        let mut u = MonthUsage::default();
        let none: Vec<u8> = Vec::new();
        assert_eq!(count(&mut u, CallClass::SendToPerson, 79, plan, DAY.into()), none);
        assert_eq!(
            count(&mut u, CallClass::SendToPerson, 1, plan, DAY.into()),
            vec![80]
        );
        assert_eq!(count(&mut u, CallClass::CardUpdate, 5, plan, DAY.into()), none);
        assert_eq!(count(&mut u, CallClass::Token, 20, plan, DAY.into()), vec![95]);
        assert_eq!(count(&mut u, CallClass::Token, 1, plan, DAY.into()), none);
        assert_eq!(u.by_class[&CallClass::Token], 21);
        assert_eq!(u.total, 106);
        // A jump past both thresholds warns for both.
        let mut v = MonthUsage::default();
        assert_eq!(
            count(&mut v, CallClass::Other, 99, plan, DAY.into()),
            vec![80, 95]
        );
        assert_eq!(v.warned, vec![80, 95]);
    }

    #[test]
    fn calls_are_counted_by_local_day() {
        let plan = Plan::BasicFree { monthly_quota: 100 };
        let mut u = MonthUsage::default();
        // 23:30 UTC on 1 Nov is 07:30 on 2 Nov in Shanghai.
        let at = "2026-11-01T23:30:00Z".parse::<DateTime<Utc>>().unwrap();
        assert_eq!(day_key(at, Shanghai), "2026-11-02");
        count(&mut u, CallClass::Token, 2, plan, day_key(at, Shanghai));
        count(&mut u, CallClass::SendToPerson, 3, plan, day_key(at, Shanghai));
        count(&mut u, CallClass::SendToPerson, 1, plan, "2026-11-05".into());
        assert_eq!(
            u.by_day,
            BTreeMap::from([("2026-11-02".to_string(), 5), ("2026-11-05".to_string(), 1)])
        );
        let r = report(&u, plan, at, Shanghai);
        assert_eq!(r.by_day.values().sum::<u64>(), r.used);
        // A month stored before days were counted still reads.
        let old: MonthUsage = serde_json::from_str(r#"{"by_class":{},"total":7,"warned":[]}"#).unwrap();
        assert!(old.by_day.is_empty());
    }

    #[test]
    fn a_quota_spent_at_lark_warns_for_every_threshold_passed() {
        let plan = Plan::BasicFree { monthly_quota: 100 };
        let mut u = MonthUsage::default();
        assert_eq!(
            count(&mut u, CallClass::SendToPerson, 50, plan, DAY.into()),
            Vec::<u8>::new()
        );
        assert_eq!(learn_exhausted(&mut u, plan), vec![80, 95]);
        assert_eq!((u.total, u.warned.clone()), (100, vec![80, 95]));
        assert_eq!(learn_exhausted(&mut u, plan), Vec::<u8>::new());
        let mut paid = MonthUsage::default();
        assert_eq!(learn_exhausted(&mut paid, Plan::Paid), Vec::<u8>::new());
        assert_eq!(paid.total, 0);
    }

    #[test]
    fn forecast_projects_the_running_rate() {
        let plan = Plan::BasicFree {
            monthly_quota: 10_000,
        };
        let now = "2026-11-10T16:00:00Z".parse::<DateTime<Utc>>().unwrap(); // 11 Nov 00:00 Shanghai
        let usage = MonthUsage {
            total: 5_000,
            ..MonthUsage::default()
        };
        // 5,000 in 10 days → 500/day → 5,000 more take 10 days → 21 Nov.
        let r = report(&usage, plan, now, Shanghai);
        assert_eq!(r.forecast_exhausted_on.as_deref(), Some("2026-11-21"));
        assert_eq!(r.percent_used, Some(50.0));
        let slow = MonthUsage {
            total: 100,
            ..MonthUsage::default()
        };
        assert_eq!(report(&slow, plan, now, Shanghai).forecast_exhausted_on, None);
        assert_eq!(report(&slow, Plan::Paid, now, Shanghai).limit, None);
    }
}
