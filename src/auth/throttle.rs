//! Login throttling that bounds guessing without locking the admin out.
//!
//! - Per client and username: a client address (IPv6 by its /64, which one host usually holds
//!   whole) may try one username 10 times in a burst, then once a minute. An attacker throttles
//!   only their own address, never the admin's.
//! - Global: addresses with a failed login in the last 15 minutes share one budget (30 in a burst,
//!   then one a second), which bounds a guess storm spread over many addresses. An address with no
//!   recent failure is not counted against it, so an admin who types the password right gets in
//!   even while a distributed guess storm runs.
//! - At most [`VERIFY_PERMITS`] argon2 verifications run at once (each takes ~19 MiB), so memory
//!   stays bounded however many attempts arrive together; the rest wait their turn.
//!
//! Limiter state is pruned as it ages, so it cannot grow without bound.

use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use governor::clock::Clock;
use governor::{DefaultDirectRateLimiter, DefaultKeyedRateLimiter, Quota, RateLimiter};
use tokio::sync::{Semaphore, SemaphorePermit};

use super::client_ip::{canonical, mask};

/// Attempts one client may make for one username in a burst; after that, one more per minute.
const PER_CLIENT_BURST: u32 = 10;
/// Attempts all recently failing clients together may make in a burst; then one per second.
const GLOBAL_BURST: u32 = 30;
/// How long an address that failed a login counts against the global budget.
const SUSPECT_WINDOW: Duration = Duration::from_secs(15 * 60);
/// Addresses remembered as recently failing; past this, every address counts against the global
/// budget until old entries expire (a flood of addresses cannot buy itself an exemption).
const MAX_SUSPECTS: usize = 100_000;
/// Concurrent argon2 verifications.
pub const VERIFY_PERMITS: usize = 2;
/// Usernames are cut to this for the limiter key, so long ones cannot grow its memory.
const MAX_KEY_USERNAME: usize = 64;

/// Where a login attempt comes from and whom it is for.
type ClientKey = (IpAddr, String);

pub struct LoginThrottle {
    per_client: DefaultKeyedRateLimiter<ClientKey>,
    global: DefaultDirectRateLimiter,
    suspects: Mutex<HashMap<IpAddr, Instant>>,
    verifiers: Semaphore,
}

/// The address a limiter keys by: IPv4 as is, IPv6 by its /64.
pub fn client_net(ip: IpAddr) -> IpAddr {
    match canonical(ip) {
        v6 @ IpAddr::V6(_) => mask(v6, 64),
        v4 => v4,
    }
}

impl Default for LoginThrottle {
    fn default() -> Self {
        LoginThrottle::new()
    }
}

impl LoginThrottle {
    pub fn new() -> LoginThrottle {
        let per_client = Quota::with_period(Duration::from_secs(60))
            .expect("non-zero period")
            .allow_burst(NonZeroU32::new(PER_CLIENT_BURST).expect("non-zero"));
        let global = Quota::with_period(Duration::from_secs(1))
            .expect("non-zero period")
            .allow_burst(NonZeroU32::new(GLOBAL_BURST).expect("non-zero"));
        LoginThrottle {
            per_client: RateLimiter::keyed(per_client),
            global: RateLimiter::direct(global),
            suspects: Mutex::new(HashMap::new()),
            verifiers: Semaphore::new(VERIFY_PERMITS),
        }
    }

    /// Admits one attempt, or says how long to wait before the next.
    pub fn admit(&self, peer: IpAddr, username: &str) -> Result<(), Duration> {
        let net = client_net(peer);
        let name: String = username.chars().take(MAX_KEY_USERNAME).collect();
        if self.per_client.len() > MAX_SUSPECTS {
            self.per_client.retain_recent();
        }
        let now = self.per_client.clock().now();
        self.per_client
            .check_key(&(net, name))
            .map_err(|not_until| not_until.wait_time_from(now))?;
        if self.is_suspect(net) {
            let now = self.global.clock().now();
            self.global
                .check()
                .map_err(|not_until| not_until.wait_time_from(now))?;
        }
        Ok(())
    }

    /// Records a failed attempt: the address counts against the global budget for a while.
    pub fn failed(&self, peer: IpAddr) {
        let now = Instant::now();
        let mut suspects = self.suspects.lock().expect("suspects lock");
        if suspects.len() >= MAX_SUSPECTS {
            suspects.retain(|_, at| now.duration_since(*at) < SUSPECT_WINDOW);
        }
        if suspects.len() < MAX_SUSPECTS {
            suspects.insert(client_net(peer), now);
        }
    }

    fn is_suspect(&self, net: IpAddr) -> bool {
        let suspects = self.suspects.lock().expect("suspects lock");
        suspects.len() >= MAX_SUSPECTS || suspects.get(&net).is_some_and(|at| at.elapsed() < SUSPECT_WINDOW)
    }

    /// A turn at running argon2; held while one verification runs.
    pub async fn verify_permit(&self) -> SemaphorePermit<'_> {
        self.verifiers
            .acquire()
            .await
            .expect("the semaphore is never closed")
    }

    /// Drops limiter state that has aged out; run by the session-pruning job.
    pub fn prune(&self) {
        self.per_client.retain_recent();
        self.per_client.shrink_to_fit();
        self.suspects
            .lock()
            .expect("suspects lock")
            .retain(|_, at| at.elapsed() < SUSPECT_WINDOW);
    }

    /// Entries the limiters hold (for tests and the pruning job's report).
    pub fn tracked(&self) -> usize {
        self.per_client.len() + self.suspects.lock().expect("suspects lock").len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn ipv6_clients_are_keyed_by_their_64() {
        assert_eq!(client_net(ip("2001:db8:1:2:aaaa::1")), ip("2001:db8:1:2::"));
        assert_eq!(client_net(ip("::ffff:192.0.2.7")), ip("192.0.2.7"));
    }

    #[test]
    fn a_throttled_client_does_not_throttle_another() {
        let t = LoginThrottle::new();
        for _ in 0..PER_CLIENT_BURST {
            t.admit(ip("2001:db8::1"), "admin").unwrap();
            t.failed(ip("2001:db8::1"));
        }
        // Another address in the same /64 is the same client.
        let wait = t.admit(ip("2001:db8::2"), "admin").unwrap_err();
        assert!(wait > Duration::from_secs(1), "{wait:?}");
        t.admit(ip("192.0.2.1"), "admin").unwrap();
    }

    #[test]
    fn recently_failing_clients_share_a_global_budget_and_clean_ones_do_not() {
        let t = LoginThrottle::new();
        let mut refused = 0;
        for i in 0..(GLOBAL_BURST + 20) {
            let addr = IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + i));
            t.failed(addr);
            if t.admit(addr, "admin").is_err() {
                refused += 1;
            }
        }
        assert_eq!(refused, 20);
        t.admit(ip("192.0.2.1"), "admin").unwrap();
    }
}
