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
    /// Pause between sweeps, in milliseconds.
    pub interval_ms: u64,
    /// Most jobs waiting in one queue's Redis backlog.
    pub high_water_mark: usize,
    /// Most notifications carried by one delivery job.
    pub group_size: usize,
    /// Seconds after which a pushed but unclaimed row is pushed again.
    pub redispatch_after_secs: u64,
}

impl DispatcherConfig {
    /// Pause between sweeps.
    pub fn interval(&self) -> Duration {
        Duration::from_millis(self.interval_ms)
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

/// How email leaves the platform.
#[derive(Debug, Clone)]
pub enum EmailTransport {
    /// SMTP through lettre. The URL follows lettre's form:
    /// `smtp://host:587?tls=required`, `smtps://user:pass@host:465`,
    /// or `smtp://localhost:1025` for plain text.
    Smtp {
        /// The server URL; it may hold credentials.
        url: SecretString,
        /// Most pooled connections per worker process.
        pool_max_size: u32,
        /// A PEM file of extra CA certificates to trust for the server's TLS
        /// certificate (a private relay's CA); the system roots otherwise.
        ca_file: Option<PathBuf>,
    },
    /// Messages are written as `.eml` files into this folder (development
    /// without an SMTP catcher).
    File {
        /// Where the files go.
        dir: PathBuf,
    },
}

/// Where each HTTP provider's API lives. Operators set these (tests point
/// them at local fakes); tenants never can.
#[derive(Debug, Clone)]
pub struct ProviderUrls {
    /// `TWILIO_BASE_URL`, default `https://api.twilio.com`.
    pub twilio: String,
    /// `SENDGRID_BASE_URL`, default `https://api.sendgrid.com`.
    pub sendgrid: String,
    /// `FCM_BASE_URL`, default `https://fcm.googleapis.com`.
    pub fcm: String,
    /// `GOOGLE_TOKEN_URL`, default `https://oauth2.googleapis.com/token`.
    pub google_token: String,
    /// `WHATSAPP_BASE_URL`, default `https://graph.facebook.com`.
    pub whatsapp: String,
    /// `WHATSAPP_API_VERSION`, default `v21.0`.
    pub whatsapp_version: String,
    /// `UPS_BASE_URL`, default `https://onlinetools.ups.com` (OAuth at
    /// `/security/v1/oauth/token`, tracking at `/api/track/v1/details/…`).
    pub ups: String,
    /// `PAGERDUTY_BASE_URL`, default `https://events.pagerduty.com` (alerts
    /// go to `/v2/enqueue`).
    pub pagerduty: String,
}

/// Email settings.
#[derive(Debug, Clone)]
pub struct EmailSettings {
    /// The transport.
    pub transport: EmailTransport,
    /// The `From` mailbox, e.g. `Notifications <no-reply@example.org>`.
    pub from: lettre::message::Mailbox,
}

/// How end users' and admins' bearer JWTs are verified.
#[derive(Debug, Clone)]
pub struct JwtSettings {
    /// Algorithms accepted (`JWT_ALGORITHMS`, default `HS256,RS256,ES256`);
    /// `none` is never accepted.
    pub algorithms: Vec<jsonwebtoken::Algorithm>,
    /// Required `iss` (`JWT_ISSUER`), when set.
    pub issuer: Option<String>,
    /// Required `aud` (`JWT_AUDIENCE`), when set.
    pub audience: Option<String>,
    /// The OIDC provider's JWKS URL for RS256/ES256 (`JWT_JWKS_URL`).
    pub jwks_url: Option<String>,
    /// Allowed clock skew in seconds (`JWT_LEEWAY_SECS`, default 30).
    pub leeway_secs: u64,
    /// Claim holding the subject (`JWT_SUBJECT_CLAIM`, default `sub`).
    pub subject_claim: String,
    /// Claim holding the tenant id (`JWT_TENANT_CLAIM`, default `tenant_id`).
    pub tenant_claim: String,
    /// Claim holding the roles (`JWT_ROLES_CLAIM`, default `roles`): an array
    /// of strings or one space-separated string.
    pub roles_claim: String,
}

/// The WebSocket endpoint's limits.
#[derive(Debug, Clone)]
pub struct RealtimeSettings {
    /// How often the server pings (`WS_HEARTBEAT_SECS`, default 25).
    pub heartbeat: Duration,
    /// A connection silent this long is closed (`WS_IDLE_TIMEOUT_SECS`, default 60).
    pub idle_timeout: Duration,
    /// How long a browser has to send its token (`WS_AUTH_TIMEOUT_SECS`, default 10).
    pub auth_timeout: Duration,
    /// Events queued for one client before it is dropped as too slow
    /// (`WS_CLIENT_QUEUE`, default 256).
    pub client_queue: usize,
}

/// Outgoing webhooks.
#[derive(Debug, Clone)]
pub struct WebhookSettings {
    /// `WEBHOOKS_ALLOW_LOOPBACK=true` lets endpoints be `http` and on
    /// loopback or private addresses: for tests and local development only.
    /// Off by default; cloud metadata addresses stay refused either way.
    pub allow_loopback: bool,
    /// An endpoint is disabled after this many deliveries in a row failed
    /// their last attempt (`WEBHOOKS_DISABLE_AFTER_FAILURES`, default 10).
    pub disable_after_failures: u32,
}

/// How long the API waits for a client, and how many connections one
/// address may hold.
#[derive(Debug, Clone)]
pub struct HttpLimits {
    /// A request's headers must arrive whole within this
    /// (`HTTP_HEADER_TIMEOUT_MS`, default 10 s); the connection is closed
    /// otherwise.
    pub header_read_timeout: Duration,
    /// A request's body must arrive whole within this
    /// (`HTTP_BODY_TIMEOUT_MS`, default 10 s); 408 otherwise.
    pub body_read_timeout: Duration,
    /// A CSV upload may pause at most this long between two reads
    /// (`HTTP_UPLOAD_STALL_TIMEOUT_MS`, default 30 s); 408 otherwise.
    pub upload_stall_timeout: Duration,
    /// Open connections one client address may hold
    /// (`HTTP_MAX_CONNECTIONS_PER_IP`, default 1024; `0` turns the cap off).
    /// Trusted proxies' connections are not capped. More are answered 429
    /// and closed.
    pub max_connections_per_ip: usize,
    /// A connection with no traffic for this long is closed
    /// (`HTTP_IDLE_TIMEOUT_SECS`, default 75).
    pub idle_timeout: Duration,
    /// Load balancers and proxies whose `X-Forwarded-For` is believed
    /// (`TRUSTED_PROXIES`, comma-separated CIDRs; none by default). Their
    /// connections are not held to the per-address cap.
    pub trusted_proxies: TrustedProxies,
}

/// The networks of the proxies in front of the API (`TRUSTED_PROXIES`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies(Vec<ipnet::IpNet>);

impl TrustedProxies {
    /// Parses a comma-separated list of CIDRs (`10.0.0.0/8, 2001:db8::/32`);
    /// a bare address is a single host (`/32` or `/128`). Empty: none.
    pub fn parse(list: &str) -> anyhow::Result<Self> {
        let mut nets = Vec::new();
        for item in list.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            let net = match item.parse::<ipnet::IpNet>() {
                Ok(net) => net.trunc(),
                Err(_) => match item.parse::<IpAddr>() {
                    Ok(ip) => ipnet::IpNet::from(ip.to_canonical()),
                    Err(_) => bail!(
                        "TRUSTED_PROXIES: `{item}` is not a CIDR (such as 10.0.0.0/8 or fd00::/8)"
                    ),
                },
            };
            nets.push(net);
        }
        Ok(Self(nets))
    }

    /// Whether no proxy is trusted.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether `ip` belongs to a trusted proxy (an IPv4-mapped IPv6 address
    /// counts as its IPv4 address).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.0.iter().any(|net| net.contains(&ip))
    }
}

/// Settings of all three services, from the environment plus `jobs.toml`.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Postgres URL (`DATABASE_URL`).
    pub database_url: SecretString,
    /// Most Postgres connections per process (`DATABASE_MAX_CONNECTIONS`).
    pub database_max_connections: u32,
    /// Redis URL (`REDIS_URL`).
    pub redis_url: SecretString,
    /// Prefix of every Redis key (`REDIS_PREFIX`), so several deployments can
    /// share one Redis.
    pub redis_prefix: String,
    /// Queues, dispatcher and cron.
    pub jobs: JobsConfig,
    /// The API's listen address (`API_ADDR`).
    pub api_addr: SocketAddr,
    /// Largest accepted request body in bytes (`MAX_BODY_BYTES`).
    pub max_body_bytes: usize,
    /// Largest accepted CSV upload in bytes (`MAX_CSV_BYTES`, default 1 GiB);
    /// it is streamed, never held in memory.
    pub max_csv_bytes: u64,
    /// Timeouts and caps that keep slow or hostile clients from holding the
    /// API's connections.
    pub http: HttpLimits,
    /// The URL the API is reached at from outside (`PUBLIC_BASE_URL`, no
    /// trailing `/`), which providers sign their callbacks with (Twilio signs
    /// the full URL it calls). `None` when unset: then `http://` and the
    /// address the API is bound to (`API_ADDR`).
    pub public_base_url: Option<String>,
    /// Where a worker or scheduler serves `/metrics` (`METRICS_ADDR`); none
    /// when unset. The API serves it on its own port.
    pub metrics_addr: Option<SocketAddr>,
    /// Email delivery.
    pub email: EmailSettings,
    /// Queues this worker replica serves (`WORKER_QUEUES`, comma separated);
    /// all when unset.
    pub worker_queues: Vec<QueueName>,
    /// How long a stopping process waits for in-flight work (`SHUTDOWN_TIMEOUT_SECS`).
    pub shutdown_timeout: Duration,
    /// How often an idle worker looks for new jobs it was not woken for
    /// (`WORKER_POLL_INTERVAL_MS`, default 1000): a push wakes the workers of
    /// its queue at once, so this only bounds the pickup of a job whose
    /// wake-up was lost.
    pub worker_poll_interval: Duration,
    /// How often a queue worker reports to Redis that it is alive
    /// (`WORKER_HEARTBEAT_SECS`, default 5); after three missed reports its
    /// peers take back its in-flight jobs.
    pub worker_heartbeat: Duration,
    /// How long an authenticated API key is trusted without asking Postgres
    /// again (`API_KEY_CACHE_SECS`, default 5; 0 turns the cache off): a key
    /// revoked, or a tenant suspended, elsewhere stops working within this.
    pub api_key_cache: Duration,
    /// How long a compiled template is used without reading it again
    /// (`TEMPLATE_CACHE_SECS`, default 5; 0 turns the cache off): an edit
    /// made through another API instance shows within this, one made through
    /// this instance at once.
    pub template_cache: Duration,
    /// Keys that seal secrets at rest (`ENCRYPTION_KEYS`, `ENCRYPTION_KEY_ID`);
    /// none when unset, and then nothing that needs them can be stored.
    pub encryption: Option<crate::crypto::Keyring>,
    /// Bearer JWT verification.
    pub jwt: JwtSettings,
    /// The WebSocket endpoint.
    pub realtime: RealtimeSettings,
    /// HTTP providers' base URLs.
    pub provider_urls: ProviderUrls,
    /// Outgoing webhooks.
    pub webhooks: WebhookSettings,
    /// How often the scheduler evaluates alert rules
    /// (`ALERTS_EVALUATE_SECS`, default 5; 0 turns evaluation off).
    pub alerts_interval: Option<Duration>,
    /// How often the scheduler folds delivery rollups and sends due
    /// scheduled reports (`REPORTS_TICK_SECS`, default 1; 0 turns both
    /// off).
    pub reports_interval: Option<Duration>,
}

impl Settings {
    /// Reads the process environment and the jobs file (`JOBS_FILE`, default
    /// `jobs.toml`).
    pub fn from_env() -> anyhow::Result<Self> {
        Self::from_vars(std::env::vars())
    }

    /// Reads settings from the given variables, so tests can build them
    /// without touching the process environment.
    pub fn from_vars(vars: impl IntoIterator<Item = (String, String)>) -> anyhow::Result<Self> {
        let vars: BTreeMap<String, String> = vars.into_iter().collect();
        let get = |k: &str| vars.get(k).map(String::as_str).filter(|v| !v.is_empty());
        let jobs_file = PathBuf::from(get("JOBS_FILE").unwrap_or("jobs.toml"));
        let jobs = JobsConfig::load(&jobs_file, vars.clone())?;
        let parse = |k: &str, default: &str| -> anyhow::Result<String> {
            Ok(get(k).unwrap_or(default).to_owned())
        };
        let num = |k: &str, default: u64| -> anyhow::Result<u64> {
            match get(k) {
                None => Ok(default),
                Some(v) => v
                    .parse()
                    .with_context(|| format!("{k}: `{v}` is not a whole number")),
            }
        };
        let database_url = parse("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/notify")?;
        let redis_url = parse("REDIS_URL", "redis://127.0.0.1:6379")?;
        let api_addr = parse("API_ADDR", "127.0.0.1:8080")?;
        let api_addr = api_addr
            .parse()
            .with_context(|| format!("API_ADDR: `{api_addr}` is not host:port"))?;
        let metrics_addr = get("METRICS_ADDR")
            .map(|v| {
                v.parse()
                    .with_context(|| format!("METRICS_ADDR: `{v}` is not host:port"))
            })
            .transpose()?;
        let transport = match get("SMTP_URL") {
            Some(url) => EmailTransport::Smtp {
                url: SecretString::from(url.to_owned()),
                pool_max_size: num("SMTP_POOL_MAX_SIZE", 16)? as u32,
                ca_file: get("SMTP_CA_FILE").map(PathBuf::from),
            },
            None => EmailTransport::File {
                dir: PathBuf::from(get("MAIL_DIR").unwrap_or("var/mail")),
            },
        };
        let from = get("EMAIL_FROM").unwrap_or("Notifications <no-reply@localhost>");
        let from = from
            .parse()
            .with_context(|| format!("EMAIL_FROM: `{from}` is not a mailbox"))?;
        let worker_queues = match get("WORKER_QUEUES") {
            None => QueueName::ALL.to_vec(),
            Some(list) => list
                .split(',')
                .map(|q| {
                    q.trim()
                        .parse::<QueueName>()
                        .map_err(|e| anyhow::anyhow!("WORKER_QUEUES: {e}"))
                })
                .collect::<anyhow::Result<_>>()?,
        };
        let encryption = match (get("ENCRYPTION_KEYS"), get("ENCRYPTION_KEY_ID")) {
            (None, None) => None,
            (Some(keys), Some(active)) => Some(crate::crypto::Keyring::parse(keys, active)?),
            _ => bail!("ENCRYPTION_KEYS and ENCRYPTION_KEY_ID go together"),
        };
        let algorithms = get("JWT_ALGORITHMS")
            .unwrap_or("HS256,RS256,ES256")
            .split(',')
            .map(|a| {
                let a = a.trim();
                a.parse::<jsonwebtoken::Algorithm>()
                    .map_err(|_| anyhow::anyhow!("JWT_ALGORITHMS: `{a}` is not a JWT algorithm"))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let jwt = JwtSettings {
            algorithms,
            issuer: get("JWT_ISSUER").map(str::to_owned),
            audience: get("JWT_AUDIENCE").map(str::to_owned),
            jwks_url: get("JWT_JWKS_URL").map(str::to_owned),
            leeway_secs: num("JWT_LEEWAY_SECS", 30)?,
            subject_claim: parse("JWT_SUBJECT_CLAIM", "sub")?,
            tenant_claim: parse("JWT_TENANT_CLAIM", "tenant_id")?,
            roles_claim: parse("JWT_ROLES_CLAIM", "roles")?,
        };
        let base_url = |k: &str, default: &str| -> anyhow::Result<String> {
            let v = get(k).unwrap_or(default).trim_end_matches('/').to_owned();
            let parsed = url::Url::parse(&v).with_context(|| format!("{k}: `{v}` is not a URL"))?;
            if !matches!(parsed.scheme(), "http" | "https") {
                bail!("{k}: must be an http(s) URL");
            }
            Ok(v)
        };
        let provider_urls = ProviderUrls {
            twilio: base_url("TWILIO_BASE_URL", "https://api.twilio.com")?,
            sendgrid: base_url("SENDGRID_BASE_URL", "https://api.sendgrid.com")?,
            fcm: base_url("FCM_BASE_URL", "https://fcm.googleapis.com")?,
            google_token: base_url("GOOGLE_TOKEN_URL", "https://oauth2.googleapis.com/token")?,
            whatsapp: base_url("WHATSAPP_BASE_URL", "https://graph.facebook.com")?,
            whatsapp_version: parse("WHATSAPP_API_VERSION", "v21.0")?,
            ups: base_url("UPS_BASE_URL", "https://onlinetools.ups.com")?,
            pagerduty: base_url("PAGERDUTY_BASE_URL", "https://events.pagerduty.com")?,
        };
        let allow_loopback = match get("WEBHOOKS_ALLOW_LOOPBACK") {
            None | Some("false") => false,
            Some("true") => true,
            Some(v) => bail!("WEBHOOKS_ALLOW_LOOPBACK: `{v}` is neither `true` nor `false`"),
        };
        let webhooks = WebhookSettings {
            allow_loopback,
            disable_after_failures: num("WEBHOOKS_DISABLE_AFTER_FAILURES", 10)?.clamp(1, 1_000)
                as u32,
        };
        let public_base_url = match get("PUBLIC_BASE_URL") {
            None => None,
            Some(v) => {
                let v = base_url("PUBLIC_BASE_URL", v)?;
                let parsed = url::Url::parse(&v)?;
                if parsed.query().is_some() || parsed.fragment().is_some() {
                    bail!("PUBLIC_BASE_URL: must not have a query or fragment");
                }
                Some(v)
            }
        };
        let redis_prefix = parse("REDIS_PREFIX", "notify")?;
        if redis_prefix.contains(['{', '}', ' ']) {
            bail!("REDIS_PREFIX: must not contain braces or spaces");
        }
        Ok(Self {
            database_url: SecretString::from(database_url),
            database_max_connections: num("DATABASE_MAX_CONNECTIONS", 20)? as u32,
            redis_url: SecretString::from(redis_url),
            redis_prefix,
            jobs,
            api_addr,
            max_body_bytes: num("MAX_BODY_BYTES", 256 * 1024)? as usize,
            max_csv_bytes: num("MAX_CSV_BYTES", 1024 * 1024 * 1024)?,
            http: HttpLimits {
                header_read_timeout: Duration::from_millis(
                    num("HTTP_HEADER_TIMEOUT_MS", 10_000)?.max(1),
                ),
                body_read_timeout: Duration::from_millis(
                    num("HTTP_BODY_TIMEOUT_MS", 10_000)?.max(1),
                ),
                upload_stall_timeout: Duration::from_millis(
                    num("HTTP_UPLOAD_STALL_TIMEOUT_MS", 30_000)?.max(1),
                ),
                max_connections_per_ip: match num("HTTP_MAX_CONNECTIONS_PER_IP", 1024)? {
                    0 => usize::MAX,
                    n => n as usize,
                },
                idle_timeout: Duration::from_secs(num("HTTP_IDLE_TIMEOUT_SECS", 75)?.max(1)),
                trusted_proxies: TrustedProxies::parse(get("TRUSTED_PROXIES").unwrap_or(""))?,
            },
            public_base_url,
            metrics_addr,
            email: EmailSettings { transport, from },
            worker_queues,
            shutdown_timeout: Duration::from_secs(num("SHUTDOWN_TIMEOUT_SECS", 30)?),
            worker_poll_interval: Duration::from_millis(
                num("WORKER_POLL_INTERVAL_MS", 1000)?.max(1),
            ),
            worker_heartbeat: Duration::from_secs(num("WORKER_HEARTBEAT_SECS", 5)?.max(1)),
            api_key_cache: Duration::from_secs(num("API_KEY_CACHE_SECS", 5)?),
            template_cache: Duration::from_secs(num("TEMPLATE_CACHE_SECS", 5)?),
            encryption,
            jwt,
            realtime: RealtimeSettings {
                heartbeat: Duration::from_secs(num("WS_HEARTBEAT_SECS", 25)?.max(1)),
                idle_timeout: Duration::from_secs(num("WS_IDLE_TIMEOUT_SECS", 60)?.max(1)),
                auth_timeout: Duration::from_secs(num("WS_AUTH_TIMEOUT_SECS", 10)?.max(1)),
                client_queue: num("WS_CLIENT_QUEUE", 256)?.max(1) as usize,
            },
            provider_urls,
            webhooks,
            alerts_interval: match num("ALERTS_EVALUATE_SECS", 5)? {
                0 => None,
                n => Some(Duration::from_secs(n.min(3600))),
            },
            reports_interval: match num("REPORTS_TICK_SECS", 1)? {
                0 => None,
                n => Some(Duration::from_secs(n.min(3600))),
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const REAL: &str = include_str!("../../jobs.toml");

    fn parse(text: &str) -> anyhow::Result<JobsConfig> {
        JobsConfig::parse(text, Vec::new())
    }

    fn error_of(text: &str) -> String {
        format!("{:#}", parse(text).unwrap_err())
    }

    #[test]
    fn the_real_jobs_file_parses() {
        let config = parse(REAL).expect("jobs.toml must parse");
        for q in QueueName::ALL {
            assert!(config.queues.contains_key(q.as_str()), "{q} is declared");
        }
        assert!(config.cron.iter().any(|c| c.job == CronJob::VacuumQueues));
    }

    #[test]
    fn the_public_base_url_is_checked_and_optional() {
        let with = |v: Option<&str>| {
            let mut vars = vec![(
                "JOBS_FILE".to_owned(),
                concat!(env!("CARGO_MANIFEST_DIR"), "/../jobs.toml").to_owned(),
            )];
            if let Some(v) = v {
                vars.push(("PUBLIC_BASE_URL".to_owned(), v.to_owned()));
            }
            Settings::from_vars(vars)
        };
        assert_eq!(with(None).unwrap().public_base_url, None);
        assert_eq!(
            with(Some("https://notify.example.org/"))
                .unwrap()
                .public_base_url,
            Some("https://notify.example.org".to_owned())
        );
        for bad in ["notify.example.org", "ftp://x.org", "https://x.org/?a=1"] {
            let err = format!("{:#}", with(Some(bad)).unwrap_err());
            assert!(err.starts_with("PUBLIC_BASE_URL"), "{bad}: {err}");
        }
    }

    #[test]
    fn rate_limits_are_read_overridden_and_checked() {
        let config = parse(REAL).unwrap();
        let limits = &config.rate_limits;
        assert_eq!(limits.send.burst, 400);
        assert!((limits.auth.per_sec - 2.0).abs() < f64::EPSILON);
        let overridden = JobsConfig::parse(
            REAL,
            vec![
                (
                    "JOBS__RATE_LIMITS__SEND__PER_SEC".to_owned(),
                    "5".to_owned(),
                ),
                ("JOBS__RATE_LIMITS__SEND__BURST".to_owned(), "7".to_owned()),
            ],
        )
        .unwrap();
        assert_eq!(
            overridden.rate_limits.send,
            ClassLimit {
                per_sec: 5.0,
                burst: 7
            }
        );
        for (var, value, named) in [
            ("JOBS__RATE_LIMITS__READ__PER_SEC", "0", "rate_limits.read"),
            (
                "JOBS__RATE_LIMITS__UPLOAD__BURST",
                "0",
                "rate_limits.upload",
            ),
            ("JOBS__RATE_LIMITS__AUTH__PER_SEC", "-1", "rate_limits.auth"),
            (
                "JOBS__RATE_LIMITS__REDIS_TIMEOUT_MS",
                "0",
                "rate_limits.redis_timeout_ms",
            ),
        ] {
            let err = format!(
                "{:#}",
                JobsConfig::parse(REAL, vec![(var.to_owned(), value.to_owned())]).unwrap_err()
            );
            assert!(err.contains(named), "{var}={value}: {err}");
        }
        let without = REAL.split("\n[rate_limits]").next().unwrap().to_owned();
        assert_eq!(
            parse(&without).unwrap().rate_limits.send,
            RateLimitsConfig::default().send,
            "the section is optional"
        );
    }

    #[test]
    fn an_unknown_key_is_named() {
        let text = REAL.replace("concurrency = 32", "concurrency = 32\nconcurrancy = 3");
        let err = error_of(&text);
        assert!(
            err.contains("queues.email") && err.contains("concurrancy"),
            "{err}"
        );
    }

    #[test]
    fn zero_concurrency_is_named() {
        let err = error_of(&REAL.replace("concurrency = 32", "concurrency = 0"));
        assert_eq!(err, "queues.email.concurrency: must be at least 1");
    }

    #[test]
    fn a_bad_cron_expression_is_named() {
        let err = error_of(&REAL.replace("\"0 */5 * * * *\"", "\"0 */5 * * *\""));
        assert!(err.starts_with("cron[0].schedule"), "{err}");
        assert!(err.contains("six are expected"), "{err}");
        let err = error_of(&REAL.replace("\"0 */5 * * * *\"", "\"0 */5 * * * fortnight\""));
        assert!(
            err.starts_with("cron[0].schedule") && err.contains("not a valid cron"),
            "{err}"
        );
    }

    #[test]
    fn an_unknown_queue_or_job_is_named() {
        let err = error_of(&REAL.replace("[queues.maintenance]", "[queues.fax]"));
        assert_eq!(
            err,
            "queues.fax: unknown queue; the queues are email, sms, push, whatsapp, inapp, webhook, maintenance, batch_chunk, bulk_csv, bulk_chunk, invitation, baa_reminder, ups_poll"
        );
        let err = error_of(&REAL.replace("job = \"vacuum_queues\"", "job = \"vacuum_everything\""));
        assert!(
            err.starts_with("cron[0].job") && err.contains("vacuum_everything"),
            "{err}"
        );
    }

    #[test]
    fn a_missing_queue_is_named() {
        let start = REAL.find("[queues.maintenance]").unwrap();
        let end = REAL.find("# The dispatcher").unwrap();
        let text = format!("{}{}", &REAL[..start], &REAL[end..]);
        let err = error_of(&text);
        assert_eq!(
            err,
            "queues.maintenance: missing; every queue must be declared"
        );
    }

    #[test]
    fn environment_overrides_win() {
        let env = vec![
            (
                "JOBS__QUEUES__EMAIL__CONCURRENCY".to_owned(),
                "7".to_owned(),
            ),
            (
                "JOBS__DISPATCHER__HIGH_WATER_MARK".to_owned(),
                "123".to_owned(),
            ),
            ("UNRELATED".to_owned(), "x".to_owned()),
        ];
        let config = JobsConfig::parse(REAL, env).unwrap();
        assert_eq!(config.queue(QueueName::Email).concurrency, 7);
        assert_eq!(config.dispatcher.high_water_mark, 123);
    }

    #[test]
    fn an_override_of_the_wrong_type_is_named() {
        let env = vec![(
            "JOBS__QUEUES__EMAIL__CONCURRENCY".to_owned(),
            "lots".to_owned(),
        )];
        let err = format!("{:#}", JobsConfig::parse(REAL, env).unwrap_err());
        assert!(err.starts_with("queues.email.concurrency"), "{err}");
    }

    #[test]
    fn trusted_proxies_parse_cidrs_and_single_addresses() {
        let t = TrustedProxies::parse(" 10.0.0.0/8, 192.168.1.7 ,fd00::/8,,2001:db8::1").unwrap();
        assert!(t.contains("10.20.30.40".parse().unwrap()));
        assert!(t.contains("192.168.1.7".parse().unwrap()));
        assert!(!t.contains("192.168.1.8".parse().unwrap()));
        assert!(t.contains("fd12::5".parse().unwrap()));
        assert!(t.contains("2001:db8::1".parse().unwrap()));
        assert!(!t.contains("2001:db8::2".parse().unwrap()));
        assert!(!t.contains("11.0.0.1".parse().unwrap()));
        // An IPv4 peer seen on a dual-stack socket.
        assert!(t.contains("::ffff:10.1.2.3".parse().unwrap()));
        // Host bits are dropped: 172.16.5.1/12 is 172.16.0.0/12.
        let t = TrustedProxies::parse("172.16.5.1/12").unwrap();
        assert!(t.contains("172.31.255.255".parse().unwrap()));
        assert!(TrustedProxies::parse("").unwrap().is_empty());
        assert!(TrustedProxies::parse(" , ").unwrap().is_empty());
    }

    #[test]
    fn a_bad_trusted_proxy_is_named() {
        for bad in [
            "10.0.0.0/33",
            "10.0.0/8",
            "proxy.internal",
            "10.0.0.0/8;fd00::/8",
            "fd00::/129",
            "10.0.0.1:80",
        ] {
            let err = format!("{:#}", TrustedProxies::parse(bad).unwrap_err());
            assert!(err.starts_with("TRUSTED_PROXIES: `"), "{bad}: {err}");
        }
        let vars = [
            (
                "JOBS_FILE".to_owned(),
                format!("{}/../jobs.toml", env!("CARGO_MANIFEST_DIR")),
            ),
            (
                "TRUSTED_PROXIES".to_owned(),
                "10.0.0.0/8, nonsense".to_owned(),
            ),
        ];
        let err = format!("{:#}", Settings::from_vars(vars).unwrap_err());
        assert!(
            err.contains("TRUSTED_PROXIES") && err.contains("nonsense"),
            "{err}"
        );
        let vars = [
            (
                "JOBS_FILE".to_owned(),
                format!("{}/../jobs.toml", env!("CARGO_MANIFEST_DIR")),
            ),
            ("TRUSTED_PROXIES".to_owned(), "10.0.0.0/8".to_owned()),
        ];
        let settings = Settings::from_vars(vars).unwrap();
        assert!(
            settings
                .http
                .trusted_proxies
                .contains("10.9.9.9".parse().unwrap())
        );
        let vars = [(
            "JOBS_FILE".to_owned(),
            format!("{}/../jobs.toml", env!("CARGO_MANIFEST_DIR")),
        )];
        assert!(
            Settings::from_vars(vars)
                .unwrap()
                .http
                .trusted_proxies
                .is_empty()
        );
    }

    #[test]
    fn security_events_retention_defaults_to_400_days() {
        assert_eq!(parse(REAL).unwrap().retention.security_events_days, 400);
        let without = REAL.replace("security_events_days = 400\n", "");
        assert_ne!(without, REAL);
        assert_eq!(parse(&without).unwrap().retention.security_events_days, 400);
        let custom = REAL.replace("security_events_days = 400", "security_events_days = 30");
        assert_eq!(parse(&custom).unwrap().retention.security_events_days, 30);
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let b = Backoff {
            initial_ms: 100,
            max_ms: 1_000,
            multiplier: 2.0,
            jitter: 0.0,
        };
        let d: Vec<u128> = (1..=6).map(|n| b.delay(n).as_millis()).collect();
        assert_eq!(d, vec![100, 200, 400, 800, 1_000, 1_000]);
        let j = Backoff { jitter: 0.5, ..b };
        for _ in 0..100 {
            let ms = j.delay(2).as_millis();
            assert!((100..=300).contains(&ms), "{ms}");
        }
    }
}
