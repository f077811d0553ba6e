//! Lark's rate limits as exact sliding windows. The dispatcher asks when a call may start
//! instead of sending and backing off, so a storm of jobs meets zero "rate limited" answers.
//!
//! Lark counts a call when it *arrives*, which is somewhere between when it started (a token
//! fetch or a new connection can delay it) and when its answer came back. So a call holds its
//! slot from its start until its answer, and then counts in the window at its answer time: a
//! later call starting a full window after that answer cannot share a window with it at Lark,
//! however late the first one arrived. Each window also carries a small margin for clock reads.
//!
//! Lark's windows outlive a restart of ours: [`AppLimits::resume`] seeds them from the durable
//! record of the calls made before, and holds back for the calls that record cannot know (those
//! in flight when the process died).

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use tokio::time::Instant;

/// The limits of one Lark app (reference §5.2, §5.3, §6.1).
#[derive(Debug, Clone)]
pub struct LimitConfig {
    /// Calls per second on each API (Lark counts per API × app × tenant).
    pub per_api_per_second: usize,
    /// One 50/s bucket shared by every API, for cautious sites.
    pub shared_api_bucket: bool,
    /// Send-message calls per minute.
    pub sends_per_minute: usize,
    /// Messages per second to one user or one chat (shared by every bot in a group).
    pub per_receiver_per_second: usize,
    /// Updates per second to one message.
    pub per_message_per_second: usize,
    /// Added to every window.
    pub margin: Duration,
}

impl Default for LimitConfig {
    fn default() -> Self {
        LimitConfig {
            per_api_per_second: 50,
            shared_api_bucket: false,
            sends_per_minute: 1000,
            per_receiver_per_second: 5,
            per_message_per_second: 5,
            margin: Duration::from_millis(15),
        }
    }
}

impl LimitConfig {
    /// A custom group bot's limits (next §2): 5/s and 100/min per bot, whatever the app.
    pub fn bot_webhook(margin: Duration) -> LimitConfig {
        LimitConfig {
            per_api_per_second: 5,
            shared_api_bucket: false,
            sends_per_minute: 100,
            per_receiver_per_second: 5,
            per_message_per_second: 5,
            margin,
        }
    }
}

/// One exact sliding window: at most `limit` calls in any span of `window`, counting calls in
/// flight as well as calls answered within the window.
#[derive(Debug)]
struct Window {
    limit: usize,
    window: Duration,
    /// Answer times of finished calls, ascending.
    answered: VecDeque<Instant>,
    /// Calls started and not yet answered: each holds a slot until it is.
    in_flight: usize,
    /// Lark said "rate limited"; nothing starts before this.
    blocked_until: Option<Instant>,
}

impl Window {
    fn new(limit: usize, window: Duration) -> Window {
        Window {
            limit,
            window,
            answered: VecDeque::with_capacity(limit),
            in_flight: 0,
            blocked_until: None,
        }
    }

    fn prune(&mut self, now: Instant) {
        while self
            .answered
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) >= self.window)
        {
            self.answered.pop_front();
        }
    }

    /// The earliest instant (≤ now means "now") at which one more call may start. When only
    /// calls in flight fill the window, that is unknown: one window from now, and the dispatcher
    /// looks again as soon as one of them is answered.
    fn available_at(&mut self, now: Instant) -> Instant {
        self.prune(now);
        let taken = self.answered.len() + self.in_flight;
        let by_count = if taken < self.limit {
            now
        } else {
            // The (taken - limit + 1) oldest answers must leave the window first.
            let must_leave = taken - self.limit;
            match self.answered.get(must_leave) {
                Some(t) => *t + self.window,
                None => now + self.window,
            }
        };
        self.blocked_until.map_or(by_count, |b| b.max(by_count))
    }

    fn start(&mut self) {
        self.in_flight += 1;
    }

    fn answer(&mut self, at: Instant) {
        self.in_flight = self.in_flight.saturating_sub(1);
        let pos = self.answered.partition_point(|t| *t <= at);
        self.answered.insert(pos, at);
    }

    fn block_until(&mut self, until: Instant) {
        self.blocked_until = Some(self.blocked_until.map_or(until, |b| b.max(until)));
    }

    fn is_idle(&self, now: Instant) -> bool {
        self.in_flight == 0
            && self
                .answered
                .back()
                .is_none_or(|t| now.saturating_duration_since(*t) >= self.window)
            && self.blocked_until.is_none_or(|b| b <= now)
    }
}

/// What one call needs from the limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallShape {
    /// The API, e.g. `im.message.create`.
    pub api: &'static str,
    /// Whether it counts against the send-message minute budget.
    pub is_send: bool,
    /// The user or chat it is addressed to, for the per-receiver limit.
    pub receiver: Option<String>,
    /// The message it updates, for the per-message limit.
    pub message: Option<String>,
}

/// All the windows of one app.
#[derive(Debug)]
pub struct AppLimits {
    config: LimitConfig,
    apis: HashMap<&'static str, Window>,
    /// The per-minute windows of the APIs in [`PER_MINUTE`].
    api_minutes: HashMap<&'static str, Window>,
    sends: Window,
    receivers: HashMap<String, Window>,
    messages: HashMap<String, Window>,
    /// After a restart with calls of unknown time: nothing starts before this.
    resumes_at: Option<Instant>,
}

/// What the previous run left for one app's windows.
#[derive(Debug, Default)]
pub struct Resume {
    /// Calls recorded with the time of their answer.
    pub calls: Vec<(CallShape, Instant)>,
    /// Calls that may have reached Lark unrecorded (in flight when the process stopped), of
    /// which this many were sends.
    pub unrecorded: usize,
    pub unrecorded_sends: usize,
}

const SHARED_API: &str = "*";

/// APIs Lark also limits per minute, beyond the per-second limit every API has (next §1.1–1.4:
/// 1000/min and 50/s each).
const PER_MINUTE: &[(&str, usize)] = &[
    ("im.chat.create", 1000),
    ("im.chat.members.create", 1000),
    ("im.pin.create", 1000),
    ("im.chat.top_notice.put_top_notice", 1000),
];

fn per_minute_limit(api: &str) -> Option<usize> {
    PER_MINUTE
        .iter()
        .find(|(a, _)| *a == api)
        .map(|(_, limit)| *limit)
}

impl AppLimits {
    pub fn new(config: LimitConfig) -> AppLimits {
        let sends = Window::new(config.sends_per_minute, Duration::from_secs(60) + config.margin);
        AppLimits {
            config,
            apis: HashMap::new(),
            api_minutes: HashMap::new(),
            sends,
            receivers: HashMap::new(),
            messages: HashMap::new(),
            resumes_at: None,
        }
    }

    /// Seeds the windows at start, `now`, from what the previous run left. An unrecorded call
    /// reached Lark before `now`, when, and on which API or receiver, is unknown: it is counted
    /// in the minute budget as of `now`, and no call starts until every per-second window it
    /// may be in has passed.
    pub fn resume(&mut self, resume: &Resume, now: Instant) {
        for (call, at) in &resume.calls {
            self.started(call);
            self.answered(call, *at);
        }
        for _ in 0..resume.unrecorded_sends {
            self.sends.start();
            self.sends.answer(now);
        }
        if resume.unrecorded > 0 {
            self.resumes_at = Some(now + Duration::from_secs(1) + self.config.margin);
        }
    }

    fn second(&self, limit: usize) -> Window {
        Window::new(limit, Duration::from_secs(1) + self.config.margin)
    }

    fn api_minute(&mut self, api: &'static str) -> Option<&mut Window> {
        let limit = per_minute_limit(api)?;
        let window = Duration::from_secs(60) + self.config.margin;
        Some(
            self.api_minutes
                .entry(api)
                .or_insert_with(|| Window::new(limit, window)),
        )
    }

    fn api_key(&self, api: &'static str) -> &'static str {
        if self.config.shared_api_bucket {
            SHARED_API
        } else {
            api
        }
    }

    /// The earliest instant at which `call` may start without breaking any limit.
    pub fn available_at(&mut self, call: &CallShape, now: Instant) -> Instant {
        let key = self.api_key(call.api);
        let fresh = self.second(self.config.per_api_per_second);
        let mut at = self.apis.entry(key).or_insert(fresh).available_at(now);
        if let Some(w) = self.api_minute(call.api) {
            at = at.max(w.available_at(now));
        }
        if call.is_send {
            at = at.max(self.sends.available_at(now));
        }
        if let Some(r) = &call.receiver {
            let fresh = self.second(self.config.per_receiver_per_second);
            at = at.max(self.receivers.entry(r.clone()).or_insert(fresh).available_at(now));
        }
        if let Some(m) = &call.message {
            let fresh = self.second(self.config.per_message_per_second);
            at = at.max(self.messages.entry(m.clone()).or_insert(fresh).available_at(now));
        }
        self.resumes_at.map_or(at, |r| at.max(r))
    }

    /// Records that `call` started (after `available_at` said it may): it holds a slot in each
    /// of its windows until [`AppLimits::answered`].
    pub fn started(&mut self, call: &CallShape) {
        self.each_window(call, Window::start);
    }

    /// Records that the answer to a started `call` came back at `at`.
    pub fn answered(&mut self, call: &CallShape, at: Instant) {
        self.each_window(call, |w| w.answer(at));
    }

    fn each_window(&mut self, call: &CallShape, mut f: impl FnMut(&mut Window)) {
        let key = self.api_key(call.api);
        let fresh = self.second(self.config.per_api_per_second);
        f(self.apis.entry(key).or_insert(fresh));
        if let Some(w) = self.api_minute(call.api) {
            f(w);
        }
        if call.is_send {
            f(&mut self.sends);
        }
        if let Some(r) = &call.receiver {
            let fresh = self.second(self.config.per_receiver_per_second);
            f(self.receivers.entry(r.clone()).or_insert(fresh));
        }
        if let Some(m) = &call.message {
            let fresh = self.second(self.config.per_message_per_second);
            f(self.messages.entry(m.clone()).or_insert(fresh));
        }
    }

    /// Lark answered "rate limited" with a reset time: hold the buckets the call touched.
    pub fn honour_reset(&mut self, call: &CallShape, until: Instant) {
        let key = self.api_key(call.api);
        if let Some(w) = self.apis.get_mut(key) {
            w.block_until(until);
        }
        if let Some(w) = self.api_minutes.get_mut(call.api) {
            w.block_until(until);
        }
        if call.is_send {
            self.sends.block_until(until);
        }
        if let Some(w) = call.receiver.as_ref().and_then(|r| self.receivers.get_mut(r)) {
            w.block_until(until);
        }
        if let Some(w) = call.message.as_ref().and_then(|m| self.messages.get_mut(m)) {
            w.block_until(until);
        }
    }

    /// Drops per-receiver and per-message windows that no longer constrain anything.
    pub fn forget_idle(&mut self, now: Instant) {
        self.receivers.retain(|_, w| !w.is_idle(now));
        self.messages.retain(|_, w| !w.is_idle(now));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn send_to(r: &str) -> CallShape {
        CallShape {
            api: "im.message.create",
            is_send: true,
            receiver: Some(r.into()),
            message: None,
        }
    }

    /// Drives the limits greedily (start every call as soon as allowed) and returns start times.
    fn schedule(limits: &mut AppLimits, calls: &[CallShape], t0: Instant) -> Vec<Instant> {
        calls
            .iter()
            .map(|c| {
                let at = limits.available_at(c, t0).max(t0);
                limits.started(c);
                limits.answered(c, at);
                at
            })
            .collect()
    }

    fn max_in_any_window(starts: &[Instant], window: Duration) -> usize {
        let mut sorted = starts.to_vec();
        sorted.sort();
        let mut best = 0;
        let mut lo = 0;
        for hi in 0..sorted.len() {
            while sorted[hi].duration_since(sorted[lo]) >= window {
                lo += 1;
            }
            best = best.max(hi - lo + 1);
        }
        best
    }

    #[test]
    fn per_receiver_limit_holds_in_every_window() {
        let mut limits = AppLimits::new(LimitConfig::default());
        let t0 = Instant::now();
        let starts = schedule(&mut limits, &vec![send_to("oc_1"); 30], t0);
        assert_eq!(max_in_any_window(&starts, Duration::from_secs(1)), 5);
        // 30 calls at 5/s (+ margin): the last starts a bit after 5 s.
        let last = starts.last().unwrap().duration_since(t0);
        assert!(
            last >= Duration::from_secs(5) && last < Duration::from_millis(5200),
            "{last:?}"
        );
    }

    #[test]
    fn api_and_minute_limits_combine() {
        let mut limits = AppLimits::new(LimitConfig::default());
        let t0 = Instant::now();
        let calls: Vec<_> = (0..1100).map(|i| send_to(&format!("ou_{i}"))).collect();
        let starts = schedule(&mut limits, &calls, t0);
        assert_eq!(max_in_any_window(&starts, Duration::from_secs(1)), 50);
        assert_eq!(max_in_any_window(&starts, Duration::from_secs(60)), 1000);
        // The 1001st call waits for the first to leave the minute window.
        assert!(starts[1000].duration_since(t0) >= Duration::from_secs(60));
        // The first 1000 go out at 50/s: about 20 s, not faster, not much slower.
        let t999 = starts[999].duration_since(t0);
        assert!(
            t999 >= Duration::from_secs(19) && t999 < Duration::from_millis(19_400),
            "{t999:?}"
        );
    }

    #[test]
    fn chat_apis_keep_their_minute_limit() {
        let mut limits = AppLimits::new(LimitConfig::default());
        let t0 = Instant::now();
        let pins: Vec<_> = (0..1010)
            .map(|i| CallShape {
                api: "im.pin.create",
                is_send: false,
                receiver: Some(format!("chat_id:oc_{i}")),
                message: Some(format!("om_{i}")),
            })
            .collect();
        let starts = schedule(&mut limits, &pins, t0);
        assert_eq!(max_in_any_window(&starts, Duration::from_secs(60)), 1000);
        assert!(starts[1000].duration_since(t0) >= Duration::from_secs(60));
        // Another chat API has a minute of its own.
        let rename = CallShape {
            api: "im.chat.update",
            is_send: false,
            receiver: Some("chat_id:oc_x".into()),
            message: None,
        };
        let t = starts[999] + Duration::from_secs(1);
        assert!(limits.available_at(&rename, t) <= t);
    }

    #[test]
    fn a_call_holds_its_slot_in_flight_and_counts_from_its_answer() {
        let config = LimitConfig {
            per_receiver_per_second: 1,
            margin: Duration::ZERO,
            ..LimitConfig::default()
        };
        let mut limits = AppLimits::new(config);
        let t0 = Instant::now();
        let call = send_to("ou_1");
        limits.started(&call);
        // However long it takes, a call in flight keeps the receiver's one slot.
        let later = t0 + Duration::from_secs(5);
        assert!(limits.available_at(&call, later) > later);
        // Answered 300 ms after it started (it may have arrived as late as that): the next call
        // starts a full second after the answer, not after the start.
        limits.answered(&call, t0 + Duration::from_millis(300));
        assert_eq!(limits.available_at(&call, t0), t0 + Duration::from_millis(1300));
        assert_eq!(limits.available_at(&send_to("ou_2"), t0), t0);
    }

    #[test]
    fn shared_bucket_counts_every_api_together() {
        let config = LimitConfig {
            shared_api_bucket: true,
            ..LimitConfig::default()
        };
        let mut limits = AppLimits::new(config);
        let t0 = Instant::now();
        let mut calls = Vec::new();
        for i in 0..60 {
            calls.push(CallShape {
                api: if i % 2 == 0 {
                    "im.message.patch"
                } else {
                    "im.chat.create"
                },
                is_send: false,
                receiver: None,
                message: Some(format!("om_{i}")),
            });
        }
        let starts = schedule(&mut limits, &calls, t0);
        assert_eq!(max_in_any_window(&starts, Duration::from_secs(1)), 50);
    }

    #[test]
    fn a_resumed_app_counts_the_calls_before_its_restart() {
        let mut limits = AppLimits::new(LimitConfig::default());
        let t0 = Instant::now();
        let restart = t0 + Duration::from_secs(30);
        // 990 sends answered in the minute before, 20 more in flight when it stopped.
        let calls = (0..990)
            .map(|i| (send_to(&format!("ou_{i}")), t0 + Duration::from_millis(20 * i)))
            .collect();
        let resume = Resume {
            calls,
            unrecorded: 20,
            unrecorded_sends: 20,
        };
        limits.resume(&resume, restart);
        // A call that is no send waits a second (the unrecorded calls may be in any per-second
        // window) and no longer.
        let patch = CallShape {
            api: "im.message.patch",
            is_send: false,
            receiver: None,
            message: Some("om_1".into()),
        };
        let pause = restart + Duration::from_secs(1) + LimitConfig::default().margin;
        assert_eq!(limits.available_at(&patch, restart), pause);
        // A send waits until the minute budget (990 + 20 > 1000) has room: the 11th oldest of
        // the recorded sends (answered at 200 ms) leaves it.
        let at = limits.available_at(&send_to("ou_new"), restart);
        let margin = LimitConfig::default().margin;
        assert_eq!(at, t0 + Duration::from_millis(60_200) + margin);
    }

    #[test]
    fn a_reset_from_lark_blocks_the_bucket() {
        let mut limits = AppLimits::new(LimitConfig::default());
        let t0 = Instant::now();
        let call = send_to("oc_1");
        limits.started(&call);
        limits.answered(&call, t0);
        limits.honour_reset(&call, t0 + Duration::from_secs(3));
        assert_eq!(limits.available_at(&call, t0), t0 + Duration::from_secs(3));
        // Other receivers still share the blocked API and minute buckets.
        assert_eq!(
            limits.available_at(&send_to("oc_2"), t0),
            t0 + Duration::from_secs(3)
        );
    }
}
