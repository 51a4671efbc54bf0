//! Typed configuration, read once at startup.
//!
//! Two sources feed it:
//!
//! * `jobs.toml` ([`JobsConfig`]): every queue with its concurrency, attempts,
//!   backoff and timeout, the dispatcher's window and every cron entry. Any of
//!   its keys can be overridden by an environment variable with the `JOBS__`
//!   prefix (`JOBS__QUEUES__EMAIL__CONCURRENCY=64`).
//! * the environment ([`Settings::from_env`]): connection URLs, listen
//!   addresses and secrets.
//!
//! A bad file is an error that names the key (`queues.email.concurrency: must be
//! at least 1`), so a typo stops startup instead of silently using a default.

use std::{
    collections::BTreeMap,
    net::{IpAddr, SocketAddr},
    path::PathBuf,
    str::FromStr,
    time::Duration,
};

use anyhow::{Context, bail};
use rand::Rng;
use secrecy::SecretString;
use serde::{Deserialize, Deserializer};

use crate::jobs::QueueName;

/// Everything `jobs.toml` declares.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobsConfig {
    /// Per-queue settings, keyed by queue name (validated against
    /// [`QueueName`]; a string key keeps error paths readable).
    pub queues: BTreeMap<String, QueueConfig>,
    /// How due rows move from Postgres to Redis.
    pub dispatcher: DispatcherConfig,
    /// Periodic jobs.
    #[serde(default)]
    pub cron: Vec<CronEntry>,
    /// How long message content is kept.
    pub retention: RetentionConfig,
    /// When a failing provider is skipped.
    pub circuit_breaker: CircuitBreakerConfig,
    /// Invitation lifetimes.
    #[serde(default)]
    pub invitations: InvitationsConfig,
    /// When organisations' admins hear that their BAA expires.
    #[serde(default)]
    pub baa_reminders: BaaRemindersConfig,
    /// The API's request rate limits, per caller and route class.
    #[serde(default)]
    pub rate_limits: RateLimitsConfig,
}

/// One class's request rate limit (GCRA): `per_sec` requests a second
/// sustained (fractions allowed: `0.2` is 12 a minute), at most `burst` at
/// once after a quiet spell.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ClassLimit {
    /// Sustained requests per second.
    pub per_sec: f64,
    /// Requests that may come at once.
    pub burst: u32,
}

/// The API's request rate limits: per API key or signed-in user's token for
/// authenticated routes, per client address for anonymous ones.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitsConfig {
    /// Sends and batches (`send`, `send-batch`, `send-chunk`).
    pub send: ClassLimit,
    /// Reads (`GET`).
    pub read: ClassLimit,
    /// Other writes.
    pub write: ClassLimit,
    /// CSV bulk uploads.
    pub upload: ClassLimit,
    /// Sign-in and invitation tokens, per client address.
    pub auth: ClassLimit,
    /// Providers' delivery callbacks, per client address.
    pub callback: ClassLimit,
    /// Seconds an organisation's overrides and quotas are used before they
    /// are read from Postgres again (0: every request).
    pub settings_cache_secs: u64,
    /// Longest wait for Redis on one check, in milliseconds; past it the
    /// check fails (open or closed by class).
    pub redis_timeout_ms: u64,
}

impl Default for RateLimitsConfig {
    fn default() -> Self {
        Self {
            send: ClassLimit {
                per_sec: 200.0,
                burst: 400,
            },
            read: ClassLimit {
                per_sec: 100.0,
                burst: 200,
            },
            write: ClassLimit {
                per_sec: 50.0,
                burst: 100,
            },
            upload: ClassLimit {
                per_sec: 2.0,
                burst: 5,
            },
            auth: ClassLimit {
                per_sec: 2.0,
                burst: 30,
            },
            callback: ClassLimit {
                per_sec: 500.0,
                burst: 1_000,
            },
            settings_cache_secs: 5,
            redis_timeout_ms: 250,
        }
    }
}

impl RateLimitsConfig {
    /// Every class's limit, by the class's name.
    pub fn classes(&self) -> [(&'static str, ClassLimit); 6] {
        [
            ("send", self.send),
            ("read", self.read),
            ("write", self.write),
            ("upload", self.upload),
            ("auth", self.auth),
            ("callback", self.callback),
        ]
    }

    /// How long an override or quota is used without reading it again.
    pub fn settings_cache(&self) -> Duration {
        Duration::from_secs(self.settings_cache_secs)
    }

    /// Longest wait for Redis on one check.
    pub fn redis_timeout(&self) -> Duration {
        Duration::from_millis(self.redis_timeout_ms)
    }
}

/// Whether `limit` is one a limiter can apply: a positive, finite rate of at
/// most a million a second, and a burst of 1 to 1,000,000.
pub fn check_class_limit(limit: &ClassLimit) -> Result<(), &'static str> {
    if !(limit.per_sec.is_finite() && limit.per_sec > 0.0 && limit.per_sec <= 1_000_000.0) {
        return Err("per_sec must be a number above 0 and at most 1000000");
    }
    if !(1..=1_000_000).contains(&limit.burst) {
        return Err("burst must be 1 to 1000000");
    }
    Ok(())
}

/// Invitations: how long a token stays valid unless the inviter says
/// otherwise (1 to 30 days).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InvitationsConfig {
    /// Days an invitation is valid.
    pub expiry_days: u32,
}

impl Default for InvitationsConfig {
    fn default() -> Self {
        Self { expiry_days: 7 }
    }
}

/// BAA-expiry reminders: days before expiry at which an organisation's
/// admins are told (each once per agreement), plus once on expiry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BaaRemindersConfig {
    /// Days before expiry, e.g. `[30, 14, 7, 1]`.
    pub thresholds_days: Vec<u32>,
}

impl Default for BaaRemindersConfig {
    fn default() -> Self {
        Self {
            thresholds_days: vec![30, 14, 7, 1],
        }
    }
}

/// The circuit breaker every provider config has: after `failures`
/// consecutive failures the provider is skipped for `cooldown_secs`, then one
/// send probes it (half-open) and closes the circuit if it succeeds.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CircuitBreakerConfig {
    /// Consecutive failures that open the circuit.
    pub failures: u32,
    /// Seconds an open circuit stays open before a probe.
    pub cooldown_secs: u64,
}

impl CircuitBreakerConfig {
    /// How long an open circuit stays open.
    pub fn cooldown(&self) -> Duration {
        Duration::from_secs(self.cooldown_secs)
    }
}

/// A token bucket: `per_sec` tokens a second, at most `burst` saved up.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    /// Sustained sends per second.
    pub per_sec: u32,
    /// Sends that may go at once after a quiet spell.
    pub burst: u32,
}

/// One queue's settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueueConfig {
    /// Jobs of this queue one worker process runs at once.
    pub concurrency: usize,
    /// Attempts of one unit of work before it is marked `failed`.
    pub max_attempts: u32,
    /// Upper bound of one attempt; also the lease a claim holds.
    pub timeout_secs: u64,
    /// Delay between attempts.
    pub backoff: Backoff,
    /// The default rate of each provider on this queue, shared by all
    /// workers; a provider config may set its own `rate_per_sec`.
    #[serde(default)]
    pub rate_limit: Option<RateLimit>,
}

impl QueueConfig {
    /// One attempt's upper bound.
    pub fn timeout(&self) -> Duration {
        Duration::from_secs(self.timeout_secs)
    }
}

/// Exponential backoff with jitter: attempt `n` (1-based) waits
/// `min(max, initial × multiplier^(n-1))`, spread by ±`jitter` (a fraction).
#[derive(Debug, Clone, Copy, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Backoff {
    /// Delay after the first failed attempt, in milliseconds.
    pub initial_ms: u64,
    /// Longest delay, in milliseconds.
    pub max_ms: u64,
    /// Growth factor per attempt, at least 1.
    pub multiplier: f64,
    /// Random spread as a fraction of the delay, from 0 to 1.
    pub jitter: f64,
}

impl Backoff {
    /// The delay after failed attempt number `attempt` (1-based).
    pub fn delay(&self, attempt: u32) -> Duration {
        let exp = attempt.saturating_sub(1).min(64) as i32;
        let base = (self.initial_ms as f64 * self.multiplier.powi(exp)).min(self.max_ms as f64);
        let spread = if self.jitter > 0.0 {
            rand::rng().random_range(-self.jitter..=self.jitter)
        } else {
            0.0
        };
        Duration::from_millis((base * (1.0 + spread)).max(0.0) as u64)
    }
}

/// The dispatcher's settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DispatcherConfig {
    /// Pause between sweeps while they find work, in milliseconds.
    pub interval_ms: u64,
    /// Longest pause between sweeps while they find nothing, in
    /// milliseconds: each empty sweep doubles the pause up to this. Writers
    /// of work only the dispatcher feeds wake it at once (see
    /// [`crate::wake::DispatcherWakes`]); this bounds how late work that
    /// becomes due by the clock (scheduled sends, retries) goes out, and
    /// what an idle dispatcher costs.
    #[serde(default = "DispatcherConfig::default_idle_interval_ms")]
    pub idle_interval_ms: u64,
    /// Most jobs waiting in one queue's Redis backlog.
    pub high_water_mark: usize,
    /// Most notifications carried by one delivery job.
    pub group_size: usize,
    /// Seconds after which a pushed but unclaimed row is pushed again.
    pub redispatch_after_secs: u64,
}

impl DispatcherConfig {
    fn default_idle_interval_ms() -> u64 {
        1_000
    }

    /// Pause between sweeps while they find work.
    pub fn interval(&self) -> Duration {
        Duration::from_millis(self.interval_ms)
    }

    /// Longest pause between sweeps while they find nothing.
    pub fn idle_interval(&self) -> Duration {
        Duration::from_millis(self.idle_interval_ms)
    }

    /// The pause before the next sweep, after one that paused `previous`
    /// before it: [`Self::interval`] when that sweep found work, else
    /// twice `previous`, at most [`Self::idle_interval`].
    pub fn next_pause(&self, previous: Duration, found_work: bool) -> Duration {
        if found_work {
            self.interval()
        } else {
            (previous * 2).clamp(self.interval(), self.idle_interval())
        }
    }
}

/// Content retention.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionConfig {
    /// Days after which the content of a finished notification is erased.
    pub content_days: u32,
    /// Seconds after which Redis forgets a finished job.
    pub finished_jobs_secs: u64,
    /// Hours real-time events are kept for catch-up.
    pub events_hours: u32,
    /// Days security events (sign-ins, lockouts, revocations) are kept
    /// (default 400).
    #[serde(default = "default_security_events_days")]
    pub security_events_days: u32,
}

fn default_security_events_days() -> u32 {
    400
}

/// One periodic job.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CronEntry {
    /// Unique name; a tick is recorded under it.
    pub name: String,
    /// When it fires.
    pub schedule: CronSchedule,
    /// What it enqueues.
    pub job: CronJob,
}

/// The jobs a cron entry can start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CronJob {
    /// Drop finished jobs' bookkeeping from Redis.
    VacuumQueues,
    /// Erase the content of finished notifications past retention.
    RedactExpiredContent,
    /// Drop real-time events past retention.
    PruneEvents,
    /// Mark invitations past their expiry as expired, and push invitation
    /// emails whose job never reached Redis.
    ExpireInvitations,
    /// Remind organisations' admins of BAAs near or past expiry.
    RemindBaaExpiry,
    /// Poll UPS for the shipments that are due.
    PollUpsShipments,
}

impl CronJob {
    /// All jobs.
    pub const ALL: &'static [CronJob] = &[
        CronJob::VacuumQueues,
        CronJob::RedactExpiredContent,
        CronJob::PruneEvents,
        CronJob::ExpireInvitations,
        CronJob::RemindBaaExpiry,
        CronJob::PollUpsShipments,
    ];

    /// The job's name, as written in `jobs.toml`.
    pub fn as_str(self) -> &'static str {
        match self {
            CronJob::VacuumQueues => "vacuum_queues",
            CronJob::RedactExpiredContent => "redact_expired_content",
            CronJob::PruneEvents => "prune_events",
            CronJob::ExpireInvitations => "expire_invitations",
            CronJob::RemindBaaExpiry => "remind_baa_expiry",
            CronJob::PollUpsShipments => "poll_ups_shipments",
        }
    }
}

impl FromStr for CronJob {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        CronJob::ALL
            .iter()
            .copied()
            .find(|j| j.as_str() == s)
            .ok_or_else(|| format!("unknown job `{s}`"))
    }
}

/// A parsed cron expression (six fields, seconds first, UTC).
#[derive(Clone)]
pub struct CronSchedule {
    source: String,
    schedule: cron::Schedule,
}

impl CronSchedule {
    /// The parsed schedule.
    pub fn schedule(&self) -> &cron::Schedule {
        &self.schedule
    }
}

impl std::fmt::Debug for CronSchedule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.source)
    }
}

impl FromStr for CronSchedule {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let fields = s.split_whitespace().count();
        if fields != 6 {
            return Err(format!(
                "`{s}` has {fields} fields; six are expected (sec min hour day month weekday)"
            ));
        }
        let schedule = cron::Schedule::from_str(s)
            .map_err(|e| format!("`{s}` is not a valid cron expression: {e}"))?;
        Ok(Self {
            source: s.to_owned(),
            schedule,
        })
    }
}

impl<'de> Deserialize<'de> for CronSchedule {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl JobsConfig {
    /// Reads `path`, applies `JOBS__…` overrides from `env`, and validates.
    pub fn load(
        path: &std::path::Path,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("while reading the jobs file {}", path.display()))?;
        Self::parse(&text, env).with_context(|| format!("in the jobs file {}", path.display()))
    }

    /// Parses the text of a jobs file, applies overrides, and validates.
    pub fn parse(
        text: &str,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> anyhow::Result<Self> {
        let mut value: toml::Table =
            toml::from_str(text).map_err(|e| anyhow::anyhow!("{}", e.message().trim()))?;
        for (key, raw) in env {
            let Some(path) = key.strip_prefix("JOBS__") else {
                continue;
            };
            apply_override(&mut value, path, &raw)
                .with_context(|| format!("in the override {key}"))?;
        }
        let config: JobsConfig = serde_path_to_error::deserialize(toml::Value::Table(value))
            .map_err(|e| {
                let path = e.path().to_string();
                anyhow::anyhow!("{path}: {}", e.into_inner().message().trim())
            })?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> anyhow::Result<()> {
        for (name, q) in &self.queues {
            let at = format!("queues.{name}");
            if name.parse::<QueueName>().is_err() {
                let known: Vec<&str> = QueueName::ALL.iter().map(|q| q.as_str()).collect();
                bail!("{at}: unknown queue; the queues are {}", known.join(", "));
            }
            if q.concurrency == 0 {
                bail!("{at}.concurrency: must be at least 1");
            }
            if q.max_attempts == 0 {
                bail!("{at}.max_attempts: must be at least 1");
            }
            if q.timeout_secs == 0 {
                bail!("{at}.timeout_secs: must be at least 1");
            }
            let b = &q.backoff;
            if b.initial_ms == 0 {
                bail!("{at}.backoff.initial_ms: must be at least 1");
            }
            if b.max_ms < b.initial_ms {
                bail!("{at}.backoff.max_ms: must not be below initial_ms");
            }
            if !(b.multiplier.is_finite() && b.multiplier >= 1.0) {
                bail!("{at}.backoff.multiplier: must be a number of at least 1");
            }
            if !(0.0..=1.0).contains(&b.jitter) {
                bail!("{at}.backoff.jitter: must be between 0 and 1");
            }
            if let Some(r) = &q.rate_limit {
                if r.per_sec == 0 {
                    bail!("{at}.rate_limit.per_sec: must be at least 1");
                }
                if r.burst == 0 {
                    bail!("{at}.rate_limit.burst: must be at least 1");
                }
            }
        }
        for required in QueueName::ALL {
            if !self.queues.contains_key(required.as_str()) {
                bail!("queues.{required}: missing; every queue must be declared");
            }
        }
        let d = &self.dispatcher;
        if d.interval_ms == 0 {
            bail!("dispatcher.interval_ms: must be at least 1");
        }
        if d.idle_interval_ms < d.interval_ms || d.idle_interval_ms > 60_000 {
            bail!(
                "dispatcher.idle_interval_ms: must be between dispatcher.interval_ms ({}) and 60000",
                d.interval_ms
            );
        }
        if d.high_water_mark == 0 || d.high_water_mark > 5_000 {
            bail!(
                "dispatcher.high_water_mark: must be between 1 and 5000 (the Redis backend fails above about 8000 due jobs)"
            );
        }
        if d.group_size == 0 || d.group_size > 1_000 {
            bail!("dispatcher.group_size: must be between 1 and 1000");
        }
        if d.redispatch_after_secs == 0 {
            bail!("dispatcher.redispatch_after_secs: must be at least 1");
        }
        let mut names = std::collections::BTreeSet::new();
        for (i, c) in self.cron.iter().enumerate() {
            if c.name.trim().is_empty() {
                bail!("cron[{i}].name: must not be empty");
            }
            if !names.insert(c.name.as_str()) {
                bail!("cron[{i}].name: `{}` is declared twice", c.name);
            }
        }
        if self.circuit_breaker.failures == 0 {
            bail!("circuit_breaker.failures: must be at least 1");
        }
        if self.circuit_breaker.cooldown_secs == 0 {
            bail!("circuit_breaker.cooldown_secs: must be at least 1");
        }
        if self.retention.content_days == 0 {
            bail!("retention.content_days: must be at least 1");
        }
        for (class, limit) in self.rate_limits.classes() {
            if let Err(reason) = check_class_limit(&limit) {
                bail!("rate_limits.{class}: {reason}");
            }
        }
        if self.rate_limits.redis_timeout_ms == 0 {
            bail!("rate_limits.redis_timeout_ms: must be at least 1");
        }
        Ok(())
    }

    /// The settings of `queue`; validation guarantees every queue is declared.
    pub fn queue(&self, queue: QueueName) -> &QueueConfig {
        &self.queues[queue.as_str()]
    }
}

/// Sets `a__b__c` (lower-cased) in `table` to `raw`, read as a TOML value
/// where it parses as one, else as a string.
fn apply_override(table: &mut toml::Table, path: &str, raw: &str) -> anyhow::Result<()> {
    let parts: Vec<String> = path.split("__").map(|p| p.to_ascii_lowercase()).collect();
    if parts.iter().any(String::is_empty) {
        bail!("the path `{path}` has an empty part");
    }
    let value = toml::from_str::<toml::Table>(&format!("v = {raw}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.to_owned()));
    let (last, parents) = parts.split_last().expect("split yields at least one part");
    let mut node = table;
    for p in parents {
        node = node
            .entry(p.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()))
            .as_table_mut()
            .with_context(|| format!("`{p}` is not a table"))?;
    }
    node.insert(last.clone(), value);
    Ok(())
}

mod settings;
#[cfg(test)]
mod tests;

pub use settings::*;
