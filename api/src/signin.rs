//! Sign-in protection and sessions: the throttling policy for failed
//! sign-ins, the clock it reads, what is kept of the client, and how a
//! revoked session's open WebSockets are closed on every replica.
//!
//! **Throttling.** Failures are counted per sign-in address (known or not,
//! keyed by the SHA-256 of the normalised address, so an unknown address
//! gets the same answers as a real one) and per client address, in Postgres
//! ([`shared::db::login_throttle`]): every replica sees the same counts, a
//! Redis flush does not unlock anyone, and the decisions compare against
//! the time this module's [`Clock`] gives (tests move it). Per account, from
//! the 2nd failure in a window the next attempt must wait 1 s, then 2 s,
//! 4 s; the 5th failure locks the account for 15 minutes, doubling with
//! each further lock up to 24 hours. Per client address, the 100th failure
//! in a window locks the address the same way, without delays. An attempt
//! that must wait is answered 429 with `Retry-After`, unchecked.
//!
//! **Revocation.** A session revoked here is closed on this instance at
//! once and announced on the Redis channel `{prefix}:sessions:revoked`,
//! which every instance's [`crate::realtime::listen`] follows to close its
//! own sockets of that session.

use std::{fmt, sync::Arc};

use chrono::{DateTime, Duration, Utc};
use poem::{Request, http::header};
use shared::db::login_throttle::State;
use uuid::Uuid;

use crate::AppState;

/// Where sign-in protection reads the time.
pub trait Clock: fmt::Debug + Send + Sync {
    /// The current time.
    fn now(&self) -> DateTime<Utc>;
}

/// The system's clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// One throttling rule.
#[derive(Debug, Clone, Copy)]
pub struct Rule {
    /// The failure that locks.
    pub threshold: i32,
    /// Failures older than this (since the window began) are forgotten.
    pub window: Duration,
    /// The first lock's length; each further lock doubles it.
    pub base_lock: Duration,
    /// The longest lock.
    pub max_lock: Duration,
    /// From the 2nd failure, the next attempt waits this, doubling; `None`:
    /// no delays.
    pub delay: Option<Duration>,
}

/// Per sign-in address.
pub const ACCOUNT: Rule = Rule {
    threshold: 5,
    window: Duration::minutes(15),
    base_lock: Duration::minutes(15),
    max_lock: Duration::hours(24),
    delay: Some(Duration::seconds(1)),
};

/// Per client address: a higher threshold (many people may share one
/// address), no delays.
pub const ADDRESS: Rule = Rule {
    threshold: 100,
    window: Duration::minutes(15),
    base_lock: Duration::minutes(15),
    max_lock: Duration::hours(24),
    delay: None,
};

/// A key without failures for this long starts again from its first lock,
/// and may be pruned.
pub const FORGET_AFTER: Duration = Duration::hours(24);

/// How long an access token lives.
pub const ACCESS_TTL_SECS: i64 = 15 * 60;
/// How long each refresh token lives (refreshing issues a new one).
pub const REFRESH_TTL: Duration = Duration::days(14);
/// How long a session lives at most, however often it is refreshed.
pub const SESSION_TTL: Duration = Duration::days(30);

/// Records a failure at `now` in `s` under `rule`; whether it locked.
pub fn fail(s: &mut State, rule: &Rule, now: DateTime<Utc>) -> bool {
    if s.last_failure_at.is_some_and(|t| now - t >= FORGET_AFTER) {
        s.locks = 0;
    }
    let window_over = s.window_started_at.is_none_or(|w| now - w >= rule.window);
    let lock_over = s.locked_until.is_some_and(|t| t <= now);
    if window_over || lock_over {
        s.failures = 0;
        s.window_started_at = Some(now);
        s.locked_until = None;
        s.next_attempt_at = None;
    }
    s.failures += 1;
    s.last_failure_at = Some(now);
    if s.failures >= rule.threshold {
        s.locks += 1;
        let doublings = (s.locks - 1).clamp(0, 20) as u32;
        let length = rule
            .base_lock
            .checked_mul(1 << doublings)
            .unwrap_or(rule.max_lock)
            .min(rule.max_lock);
        s.locked_until = Some(now + length);
        s.next_attempt_at = None;
        return true;
    }
    if let Some(delay) = rule.delay
        && s.failures >= 2
    {
        let doublings = (s.failures - 2).clamp(0, 20) as u32;
        s.next_attempt_at = Some(now + delay * (1 << doublings));
    }
    false
}

/// Whole seconds from `now` until `until`, at least 1.
pub fn retry_after(now: DateTime<Utc>, until: DateTime<Utc>) -> u64 {
    let ms = (until - now).num_milliseconds().max(0);
    (ms as u64).div_ceil(1000).max(1)
}

/// What is kept of the client: its address and user agent, truncated.
#[derive(Debug, Clone, Default)]
pub struct Client {
    /// The client address ([`crate::client::address`]).
    pub ip: Option<String>,
    /// The `User-Agent` header.
    pub user_agent: Option<String>,
}

impl Client {
    /// The client of `req`.
    pub fn of(req: &Request) -> Self {
        use shared::db::security_events::{MAX_IP, MAX_USER_AGENT, truncate};
        let ip = crate::client::address(req).map(|ip| ip.to_string());
        let user_agent = req
            .headers()
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(|v| truncate(v, MAX_USER_AGENT))
            .filter(|v| !v.is_empty());
        Self {
            ip: ip.map(|v| truncate(&v, MAX_IP)),
            user_agent,
        }
    }
}

/// Sign-in protection's shared parts.
#[derive(Debug, Clone)]
pub struct SignIn {
    /// The clock throttling decisions read.
    pub clock: Arc<dyn Clock>,
}

impl Default for SignIn {
    fn default() -> Self {
        Self {
            clock: Arc::new(SystemClock),
        }
    }
}

/// The Redis channel announcing revoked sessions.
pub fn revocation_channel(prefix: &str) -> String {
    format!("{prefix}:sessions:revoked")
}

/// Closes the open WebSockets of `sessions`: this instance's at once, other
/// instances' through the revocation channel. A failed announcement is
/// logged: the sessions are revoked in Postgres regardless, so their tokens
/// already fail; only sockets open on other instances stay until they end.
pub async fn announce_revoked(state: &AppState, sessions: &[Uuid]) {
    if sessions.is_empty() {
        return;
    }
    state.hub.close_sessions(sessions);
    let body = serde_json::to_string(sessions).unwrap_or_default();
    let mut conn = state.queues.connection();
    let published: Result<(), redis::RedisError> = redis::cmd("PUBLISH")
        .arg(revocation_channel(state.queues.prefix()))
        .arg(body)
        .query_async(&mut conn)
        .await;
    if let Err(error) = published {
        tracing::warn!(%error, "cannot announce revoked sessions to other instances");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + secs, 0).unwrap()
    }

    #[test]
    fn account_failures_wait_longer_then_lock_and_locks_double() {
        let mut s = State::default();
        assert!(!fail(&mut s, &ACCOUNT, at(0)));
        assert_eq!(s.blocked_until(at(0)), None, "the first failure is free");
        assert!(!fail(&mut s, &ACCOUNT, at(0)));
        assert_eq!(s.blocked_until(at(0)), Some(at(1)));
        assert!(!fail(&mut s, &ACCOUNT, at(1)));
        assert_eq!(s.blocked_until(at(1)), Some(at(3)));
        assert!(!fail(&mut s, &ACCOUNT, at(3)));
        assert_eq!(s.blocked_until(at(3)), Some(at(7)));
        assert!(fail(&mut s, &ACCOUNT, at(7)), "the 5th failure locks");
        assert_eq!(s.blocked_until(at(7)), Some(at(7 + 15 * 60)));
        // After the lock, five more failures lock for twice as long.
        let t = 7 + 15 * 60;
        for now in [t, t, t + 1, t + 3] {
            assert!(!fail(&mut s, &ACCOUNT, at(now)));
        }
        assert!(fail(&mut s, &ACCOUNT, at(t + 7)));
        assert_eq!(s.blocked_until(at(t + 7)), Some(at(t + 7 + 30 * 60)));
        assert_eq!(retry_after(at(t + 7), at(t + 7 + 30 * 60)), 30 * 60);
    }

    #[test]
    fn locks_stop_doubling_at_the_cap_and_are_forgotten_after_a_quiet_day() {
        let mut s = State {
            locks: 30,
            ..State::default()
        };
        s.last_failure_at = Some(at(0));
        s.window_started_at = Some(at(0));
        s.failures = 4;
        assert!(fail(&mut s, &ACCOUNT, at(1)));
        assert_eq!(s.locked_until, Some(at(1) + Duration::hours(24)));
        let later = at(1) + Duration::hours(48);
        assert!(!fail(&mut s, &ACCOUNT, later));
        assert_eq!(s.locks, 0);
        assert_eq!(s.failures, 1);
    }

    #[test]
    fn an_address_has_no_delays_and_a_higher_threshold() {
        let mut s = State::default();
        for _ in 0..99 {
            assert!(!fail(&mut s, &ADDRESS, at(0)));
            assert_eq!(s.blocked_until(at(0)), None);
        }
        assert!(fail(&mut s, &ADDRESS, at(0)));
        assert_eq!(s.blocked_until(at(0)), Some(at(15 * 60)));
    }

    #[test]
    fn old_failures_leave_the_window() {
        let mut s = State::default();
        for t in [0, 0, 1, 3] {
            fail(&mut s, &ACCOUNT, at(t));
        }
        assert!(!fail(&mut s, &ACCOUNT, at(16 * 60)), "a new window");
        assert_eq!(s.failures, 1);
    }
}
