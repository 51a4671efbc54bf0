//! Alert rules: what they watch, how they are checked on save, and the
//! defaults every organisation gets.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::domain::{AlertRuleId, TenantId};

/// The longest window a rule may look back over.
pub const MAX_WINDOW_SECS: i64 = 86_400;
/// The longest cooldown.
pub const MAX_COOLDOWN_SECS: i64 = 7 * 86_400;
/// The most escalation levels a rule may have.
pub const MAX_LEVELS: usize = 5;
/// The most channels one level may notify.
pub const MAX_CHANNELS: usize = 10;
/// The latest an escalation level may come, in minutes after opening.
pub const MAX_AFTER_MINUTES: i64 = 7 * 24 * 60;

/// What a rule watches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    /// Percent of a channel's finished sends that failed for good over the
    /// window (`queue_minutes`); subject: the channel.
    FailureRate,
    /// Seconds the oldest due item of a queue has waited; subject: the queue.
    QueueOldestDueAge,
    /// Items due in a queue and not yet handed to a worker; subject: the
    /// queue.
    QueueDepth,
    /// The 99th percentile of accepted-to-sent latency over the window, in
    /// milliseconds; subject: the channel.
    LatencyP99,
    /// Provider configs of a channel whose circuit breaker is open; subject:
    /// the channel.
    CircuitOpen,
    /// Live worker processes serving a queue; fires *below* the threshold.
    /// Subject: the queue.
    NoWorkerAlive,
    /// Days until the organisation's BAA expires (negative once expired);
    /// fires at or below the threshold. Subject: the organisation.
    BaaExpiring,
    /// Items that failed for good within the window (every kind of work);
    /// subject: `failed_work`.
    FailedWork,
    /// API requests answered 5xx within the window (a count: the platform
    /// keeps no per-window request counts to divide by). The API counts
    /// its 5xx without the organisation, so only platform-wide rules may
    /// watch it. Subject: `api`.
    ApiServerErrors,
    /// The organisation's outgoing webhook endpoints that are disabled
    /// (after repeated failures, by an administrator, or either:
    /// `disabled_by`). Subject: `webhook_endpoints`.
    WebhookEndpointDisabled,
}

impl Metric {
    /// Every metric.
    pub const ALL: [Metric; 10] = [
        Metric::FailureRate,
        Metric::QueueOldestDueAge,
        Metric::QueueDepth,
        Metric::LatencyP99,
        Metric::CircuitOpen,
        Metric::NoWorkerAlive,
        Metric::BaaExpiring,
        Metric::FailedWork,
        Metric::ApiServerErrors,
        Metric::WebhookEndpointDisabled,
    ];

    /// Its name.
    pub fn as_str(self) -> &'static str {
        match self {
            Metric::FailureRate => "failure_rate",
            Metric::QueueOldestDueAge => "queue_oldest_due_age",
            Metric::QueueDepth => "queue_depth",
            Metric::LatencyP99 => "latency_p99",
            Metric::CircuitOpen => "circuit_open",
            Metric::NoWorkerAlive => "no_worker_alive",
            Metric::BaaExpiring => "baa_expiring",
            Metric::FailedWork => "failed_work",
            Metric::ApiServerErrors => "api_server_errors",
            Metric::WebhookEndpointDisabled => "webhook_endpoint_disabled",
        }
    }

    /// Parses a name.
    pub fn parse(raw: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|m| m.as_str() == raw)
    }

    /// The thresholds a rule of this metric may use (inclusive).
    pub fn threshold_range(self) -> (f64, f64) {
        match self {
            Metric::FailureRate => (0.01, 100.0),
            Metric::QueueOldestDueAge => (1.0, 604_800.0),
            Metric::QueueDepth | Metric::FailedWork | Metric::ApiServerErrors => (1.0, 1e9),
            Metric::WebhookEndpointDisabled => (1.0, 10_000.0),
            Metric::LatencyP99 => (1.0, 3_600_000.0),
            Metric::CircuitOpen | Metric::NoWorkerAlive => (1.0, 1_000.0),
            Metric::BaaExpiring => (0.0, 365.0),
        }
    }

    /// The unit of its threshold, for people.
    pub fn unit(self) -> &'static str {
        match self {
            Metric::FailureRate => "%",
            Metric::QueueOldestDueAge => "s",
            Metric::QueueDepth | Metric::FailedWork => "items",
            Metric::LatencyP99 => "ms",
            Metric::CircuitOpen => "open circuits",
            Metric::NoWorkerAlive => "workers",
            Metric::BaaExpiring => "days",
            Metric::ApiServerErrors => "5xx answers",
            Metric::WebhookEndpointDisabled => "endpoints",
        }
    }

    /// Whether `value` breaks `threshold`.
    pub fn fires(self, value: f64, threshold: f64) -> bool {
        match self {
            Metric::NoWorkerAlive => value < threshold,
            Metric::BaaExpiring => value <= threshold,
            _ => value >= threshold,
        }
    }

    /// Whether only platform-wide rules (no organisation) may watch it.
    pub fn platform_only(self) -> bool {
        self == Metric::ApiServerErrors
    }
}

/// Who disabled a webhook endpoint, for `webhook_endpoint_disabled`.
pub const DISABLED_BY: &[&str] = &["failures", "admin"];

/// How urgent an alert is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// Worth knowing.
    Info,
    /// Needs attention soon.
    Warning,
    /// Patients are affected now.
    Critical,
}

impl Severity {
    /// Its name.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }

    /// Parses a name.
    pub fn parse(raw: &str) -> Option<Self> {
        [Severity::Info, Severity::Warning, Severity::Critical]
            .into_iter()
            .find(|s| s.as_str() == raw)
    }
}

/// Where a level's notifications go.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ChannelSpec {
    /// The organisation's admins' in-app inboxes.
    InApp,
    /// The organisation's admins by email (always with in-app beside it, so
    /// an alert about the email provider still arrives).
    Email,
    /// A signed POST to an HTTPS endpoint (the platform's webhook signature).
    Webhook {
        /// The endpoint.
        url: String,
        /// The signing secret the receiver checks with.
        secret: String,
    },
    /// A Slack-compatible incoming webhook (`{"text": …}`).
    Slack {
        /// The incoming-webhook URL.
        url: String,
    },
    /// PagerDuty Events API v2.
    Pagerduty {
        /// The integration's routing key.
        routing_key: String,
    },
    /// Text messages through the organisation's SMS provider: to the E.164
    /// numbers in `to`, or, when `to` is empty, to the organisation's admins
    /// at the phone number of their subscriber profile.
    Sms {
        /// On-call numbers; empty for the admins.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        to: Vec<String>,
    },
}

impl ChannelSpec {
    /// Its type name.
    pub fn kind(&self) -> &'static str {
        match self {
            ChannelSpec::InApp => "in_app",
            ChannelSpec::Email => "email",
            ChannelSpec::Webhook { .. } => "webhook",
            ChannelSpec::Slack { .. } => "slack",
            ChannelSpec::Pagerduty { .. } => "pagerduty",
            ChannelSpec::Sms { .. } => "sms",
        }
    }

    /// What tells two targets of one type apart, without secrets.
    pub fn target_key(&self) -> String {
        use sha2::{Digest, Sha256};
        match self {
            ChannelSpec::InApp | ChannelSpec::Email => "admins".to_owned(),
            ChannelSpec::Sms { to } if to.is_empty() => "admins".to_owned(),
            ChannelSpec::Sms { to } => {
                let mut sorted = to.clone();
                sorted.sort();
                hex::encode(&Sha256::digest(sorted.join(",").as_bytes())[..12])
            }
            ChannelSpec::Webhook { url, .. } | ChannelSpec::Slack { url } => {
                hex::encode(&Sha256::digest(url.as_bytes())[..12])
            }
            ChannelSpec::Pagerduty { routing_key } => {
                hex::encode(&Sha256::digest(routing_key.as_bytes())[..12])
            }
        }
    }

    /// A copy fit to show: URLs cut to their origin, secrets hidden.
    pub fn masked(&self) -> Value {
        let origin = |u: &str| {
            url::Url::parse(u)
                .map(|p| format!("{}/…", p.origin().ascii_serialization()))
                .unwrap_or_else(|_| "…".to_owned())
        };
        match self {
            ChannelSpec::InApp | ChannelSpec::Email => json!({"type": self.kind()}),
            ChannelSpec::Webhook { url, .. } => {
                json!({"type": "webhook", "url": origin(url), "secret": "whsec_…"})
            }
            ChannelSpec::Slack { url } => json!({"type": "slack", "url": origin(url)}),
            ChannelSpec::Pagerduty { routing_key } => json!({
                "type": "pagerduty",
                "routing_key": format!("{}…", routing_key.chars().take(4).collect::<String>()),
            }),
            ChannelSpec::Sms { to } if to.is_empty() => json!({"type": "sms"}),
            ChannelSpec::Sms { to } => {
                json!({"type": "sms", "to": to.iter().map(|n| mask_number(n)).collect::<Vec<_>>()})
            }
        }
    }
}

/// A phone number fit to show: its last four digits.
fn mask_number(n: &str) -> String {
    let tail: String = n
        .chars()
        .rev()
        .take(4)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    format!("+…{tail}")
}

/// Most numbers one SMS channel texts.
pub const MAX_SMS_NUMBERS: usize = 10;

/// One escalation level.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Level {
    /// Minutes after the alert opened, while unacknowledged.
    pub after_minutes: i64,
    /// Who is notified.
    pub channels: Vec<ChannelSpec>,
}

/// A rule as the caller sent it: loosely typed, so every mistake gets its
/// own precise message from [`RuleInput::check`].
#[derive(Debug, Clone, Default, Deserialize)]
pub struct RuleInput {
    /// A name for people.
    pub name: Option<String>,
    /// The metric's name.
    pub metric: Option<String>,
    /// Narrows to one channel (failure rate, latency, circuits).
    pub channel: Option<String>,
    /// Narrows to one queue (age, depth, workers).
    pub queue: Option<String>,
    /// Narrows a failure rate to one provider config, by name.
    pub provider: Option<String>,
    /// Fewest finished sends in the window for a failure rate to count.
    pub min_events: Option<i64>,
    /// `webhook_endpoint_disabled`: count only endpoints disabled after
    /// repeated failures (`failures`) or by an administrator (`admin`).
    pub disabled_by: Option<String>,
    /// The threshold, in the metric's unit.
    pub threshold: Option<f64>,
    /// Seconds to look back over.
    pub window_secs: Option<i64>,
    /// `info`, `warning` or `critical`.
    pub severity: Option<String>,
    /// Seconds after an alert resolves before it may open again.
    pub cooldown_secs: Option<i64>,
    /// The escalation levels.
    pub escalation: Option<Vec<Value>>,
    /// Whether the rule is evaluated.
    pub enabled: Option<bool>,
}

/// A checked rule.
#[derive(Debug, Clone, PartialEq)]
pub struct RuleSpec {
    /// A name for people.
    pub name: String,
    /// What it watches.
    pub metric: Metric,
    /// `channel`, `queue` and `min_events` narrowing the metric.
    pub scope: Value,
    /// The threshold.
    pub threshold: f64,
    /// Seconds to look back over.
    pub window_secs: i32,
    /// How urgent.
    pub severity: Severity,
    /// Seconds before the same alert may open again.
    pub cooldown_secs: i32,
    /// The levels, by `after_minutes`.
    pub escalation: Vec<Level>,
    /// Whether it is evaluated.
    pub enabled: bool,
}

/// The channels failure rates, latencies and circuits are kept for.
pub const CHANNELS: &[&str] = &["email", "sms", "push", "whatsapp", "inapp"];

/// One field's problem.
pub type Problem = (String, String);

impl RuleInput {
    /// Checks every field; the problems, one per field, when any. URLs are
    /// checked for form here; the caller resolves hosts
    /// ([`crate::webhooks::check_endpoint`]).
    pub fn check(self, allow_loopback: bool) -> Result<RuleSpec, Vec<Problem>> {
        let mut problems: Vec<Problem> = Vec::new();
        let mut bad = |f: &str, why: String| problems.push((f.to_owned(), why));
        let name = match self.name.map(|n| n.trim().to_owned()) {
            Some(n) if (1..=200).contains(&n.chars().count()) => n,
            Some(_) => {
                bad("name", "must be 1 to 200 characters".into());
                String::new()
            }
            None => {
                bad("name", "is required".into());
                String::new()
            }
        };
        let metric = match self.metric.as_deref() {
            None => {
                bad("metric", "is required".into());
                None
            }
            Some(m) => match Metric::parse(m) {
                Some(m) => Some(m),
                None => {
                    let known: Vec<&str> = Metric::ALL.iter().map(|m| m.as_str()).collect();
                    bad(
                        "metric",
                        format!("unknown metric; one of {}", known.join(", ")),
                    );
                    None
                }
            },
        };
        let mut scope = serde_json::Map::new();
        if let Some(c) = self.channel {
            if !matches!(
                metric,
                Some(Metric::FailureRate | Metric::LatencyP99 | Metric::CircuitOpen)
            ) {
                bad(
                    "channel",
                    "applies to failure_rate, latency_p99 and circuit_open only".into(),
                );
            } else if !CHANNELS.contains(&c.as_str()) {
                bad("channel", format!("must be one of {}", CHANNELS.join(", ")));
            } else {
                scope.insert("channel".into(), c.into());
            }
        }
        if let Some(q) = self.queue {
            if !matches!(
                metric,
                Some(Metric::QueueOldestDueAge | Metric::QueueDepth | Metric::NoWorkerAlive)
            ) {
                bad(
                    "queue",
                    "applies to queue_oldest_due_age, queue_depth and no_worker_alive only".into(),
                );
            } else if !crate::jobs::QueueName::ALL.iter().any(|n| n.as_str() == q) {
                bad("queue", "is not a queue of the platform".into());
            } else {
                scope.insert("queue".into(), q.into());
            }
        }
        if let Some(p) = self.provider {
            if metric != Some(Metric::FailureRate) {
                bad("provider", "applies to failure_rate only".into());
            } else if p.trim().is_empty()
                || p.chars().count() > 100
                || p.chars().any(char::is_control)
            {
                bad(
                    "provider",
                    "must be a provider config's name (1 to 100 characters, no control characters)"
                        .into(),
                );
            } else {
                scope.insert("provider".into(), p.into());
            }
        }
        if let Some(by) = self.disabled_by {
            if metric != Some(Metric::WebhookEndpointDisabled) {
                bad(
                    "disabled_by",
                    "applies to webhook_endpoint_disabled only".into(),
                );
            } else if !DISABLED_BY.contains(&by.as_str()) {
                bad(
                    "disabled_by",
                    format!("must be one of {}", DISABLED_BY.join(", ")),
                );
            } else {
                scope.insert("disabled_by".into(), by.into());
            }
        }
        if let Some(n) = self.min_events {
            if metric != Some(Metric::FailureRate) {
                bad("min_events", "applies to failure_rate only".into());
            } else if !(1..=1_000_000).contains(&n) {
                bad("min_events", "must be 1 to 1000000".into());
            } else {
                scope.insert("min_events".into(), n.into());
            }
        }
        let threshold = match (self.threshold, metric) {
            (None, _) => {
                bad("threshold", "is required".into());
                0.0
            }
            (Some(t), Some(m)) => {
                let (lo, hi) = m.threshold_range();
                if !t.is_finite() || t < lo || t > hi {
                    bad(
                        "threshold",
                        format!("must be {lo} to {hi} ({}) for {}", m.unit(), m.as_str()),
                    );
                }
                t
            }
            (Some(t), None) => t,
        };
        let window_secs = match self.window_secs {
            None => {
                bad("window_secs", "is required".into());
                0
            }
            Some(w) if w <= 0 => {
                bad("window_secs", "must be positive".into());
                0
            }
            Some(w) if w > MAX_WINDOW_SECS => {
                bad("window_secs", "must be at most 86400 (24 hours)".into());
                0
            }
            Some(w) => w as i32,
        };
        let severity = match self.severity.as_deref() {
            None => Severity::Warning,
            Some(s) => Severity::parse(s).unwrap_or_else(|| {
                bad("severity", "must be info, warning or critical".into());
                Severity::Warning
            }),
        };
        let cooldown_secs = match self.cooldown_secs.unwrap_or(900) {
            c if (0..=MAX_COOLDOWN_SECS).contains(&c) => c as i32,
            _ => {
                bad("cooldown_secs", "must be 0 to 604800 (7 days)".into());
                0
            }
        };
        let escalation = match self.escalation {
            None => vec![Level {
                after_minutes: 0,
                channels: vec![ChannelSpec::InApp, ChannelSpec::Email],
            }],
            Some(levels) => check_levels(levels, allow_loopback, &mut bad),
        };
        if problems.is_empty() {
            Ok(RuleSpec {
                name,
                metric: metric.unwrap_or(Metric::FailureRate),
                scope: Value::Object(scope),
                threshold,
                window_secs,
                severity,
                cooldown_secs,
                escalation,
                enabled: self.enabled.unwrap_or(true),
            })
        } else {
            Err(problems)
        }
    }
}

fn check_levels(
    raw: Vec<Value>,
    allow_loopback: bool,
    bad: &mut impl FnMut(&str, String),
) -> Vec<Level> {
    if raw.is_empty() || raw.len() > MAX_LEVELS {
        bad("escalation", format!("must have 1 to {MAX_LEVELS} levels"));
        return Vec::new();
    }
    let mut levels: Vec<Level> = Vec::new();
    for (i, value) in raw.into_iter().enumerate() {
        let field = format!("escalation[{i}]");
        let mut level: Level = match serde_json::from_value(value) {
            Ok(l) => l,
            Err(e) => {
                bad(&field, format!("is not a level: {e}"));
                continue;
            }
        };
        if !(0..=MAX_AFTER_MINUTES).contains(&level.after_minutes) {
            bad(
                &format!("{field}.after_minutes"),
                format!("must be 0 to {MAX_AFTER_MINUTES}"),
            );
        } else if levels
            .last()
            .is_some_and(|p| p.after_minutes >= level.after_minutes)
        {
            bad(
                &format!("{field}.after_minutes"),
                "must be later than the level before".into(),
            );
        }
        if level.channels.is_empty() || level.channels.len() > MAX_CHANNELS {
            bad(
                &format!("{field}.channels"),
                format!("must have 1 to {MAX_CHANNELS} channels"),
            );
        }
        for (j, c) in level.channels.iter_mut().enumerate() {
            let at = format!("{field}.channels[{j}]");
            match c {
                ChannelSpec::Webhook { url, secret } => {
                    if let Err(why) = crate::webhooks::check_url(url, allow_loopback) {
                        bad(&format!("{at}.url"), why);
                    }
                    if !(16..=200).contains(&secret.len()) {
                        bad(
                            &format!("{at}.secret"),
                            "must be 16 to 200 characters".into(),
                        );
                    }
                }
                ChannelSpec::Slack { url } => {
                    if let Err(why) = crate::webhooks::check_url(url, allow_loopback) {
                        bad(&format!("{at}.url"), why);
                    }
                }
                ChannelSpec::Pagerduty { routing_key } => {
                    if !(1..=64).contains(&routing_key.len())
                        || !routing_key.chars().all(|c| c.is_ascii_alphanumeric())
                    {
                        bad(
                            &format!("{at}.routing_key"),
                            "must be 1 to 64 letters and digits".into(),
                        );
                    }
                }
                ChannelSpec::Sms { to } => {
                    if to.len() > MAX_SMS_NUMBERS {
                        bad(
                            &format!("{at}.to"),
                            format!("must have at most {MAX_SMS_NUMBERS} numbers"),
                        );
                    }
                    let mut numbers = std::collections::HashSet::new();
                    for (k, raw) in to.iter_mut().enumerate() {
                        match crate::domain::PhoneNumber::parse(raw) {
                            Ok(n) if numbers.insert(n.as_str().to_owned()) => {
                                *raw = n.as_str().to_owned();
                            }
                            Ok(_) => bad(&format!("{at}.to[{k}]"), "is listed twice".into()),
                            Err(why) => bad(&format!("{at}.to[{k}]"), why.0),
                        }
                    }
                }
                ChannelSpec::InApp | ChannelSpec::Email => {}
            }
        }
        let mut seen = std::collections::HashSet::new();
        if !level
            .channels
            .iter()
            .all(|c| seen.insert((c.kind(), c.target_key())))
        {
            bad(
                &format!("{field}.channels"),
                "names the same target twice".into(),
            );
        }
        // Email never goes alone: an alert about the email provider must
        // still reach someone.
        if level.channels.contains(&ChannelSpec::Email)
            && !level.channels.contains(&ChannelSpec::InApp)
        {
            level.channels.insert(0, ChannelSpec::InApp);
        }
        levels.push(level);
    }
    levels
}

/// A stored rule.
#[derive(Debug, Clone)]
pub struct Rule {
    /// Its id.
    pub id: AlertRuleId,
    /// Its organisation; `None` for a platform-wide rule.
    pub tenant_id: Option<TenantId>,
    /// The rule.
    pub spec: RuleSpec,
    /// The default it started as (`high_failure_rate`, …).
    pub builtin: Option<String>,
    /// Who created it (an audit actor, `system` for defaults).
    pub created_by: String,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Last changed.
    pub updated_at: DateTime<Utc>,
}

impl Rule {
    /// The `channel` it narrows to.
    pub fn channel(&self) -> Option<&str> {
        self.spec.scope.get("channel").and_then(Value::as_str)
    }

    /// The `queue` it narrows to.
    pub fn queue(&self) -> Option<&str> {
        self.spec.scope.get("queue").and_then(Value::as_str)
    }

    /// `failure_rate`: the provider config it narrows to, by name.
    pub fn provider(&self) -> Option<&str> {
        self.spec.scope.get("provider").and_then(Value::as_str)
    }

    /// `webhook_endpoint_disabled`: the kind of disabling it counts, if
    /// narrowed.
    pub fn disabled_by(&self) -> Option<&str> {
        self.spec.scope.get("disabled_by").and_then(Value::as_str)
    }

    /// Fewest sends for a failure rate to count (default 20).
    pub fn min_events(&self) -> i64 {
        self.spec
            .scope
            .get("min_events")
            .and_then(Value::as_i64)
            .unwrap_or(20)
    }
}

mod defaults;
pub use defaults::{defaults, ensure_defaults, ensure_defaults_across_tenants};

#[cfg(test)]
mod tests;
