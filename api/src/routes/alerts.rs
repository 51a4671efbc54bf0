//! `/api/v1/admin/alert-rules` and `/api/v1/admin/alerts`: alert rules, the
//! alerts they open, acknowledging and resolving them, and statistics
//! ([`shared::alerts`]).
//!
//! An organisation's admins manage their organisation's rules and alerts;
//! another organisation's ids answer 404. Platform admins see every rule and
//! alert, and create platform-wide rules (no `organization_id`) or rules of
//! any organisation. Every change is audited; refusals too.

use chrono::{DateTime, Duration, Utc};
use poem_openapi::{
    ApiResponse, Object, OpenApi,
    param::{Path, Query},
    payload::Json,
};
use serde_json::{Value, json};
use shared::{
    alerts::{self, Rule, RuleInput, RuleSpec},
    db::alerts::{self as store, Alert},
    domain::{AlertId, AlertRuleId, TenantId},
};
use uuid::Uuid;

use crate::{AppState, access::Principal, body::StrictJson, error::ApiError, routes::ApiTags};

/// The alert-rule endpoints.
#[derive(Debug)]
pub struct AlertRulesApi;

/// The alert endpoints.
#[derive(Debug)]
pub struct AlertsApi;

/// Where one escalation level's notifications go.
#[derive(Debug, Object, serde::Deserialize)]
#[oai(deny_unknown_fields)]
#[serde(deny_unknown_fields)]
pub struct AlertChannelBody {
    /// `in_app` (the admins' inboxes), `email` (the admins, always with
    /// in-app beside it), `sms` (text messages through the organisation's
    /// SMS provider), `webhook` (a signed POST), `slack` (an incoming
    /// webhook) or `pagerduty` (Events API v2).
    #[oai(rename = "type")]
    #[serde(rename = "type")]
    pub kind: String,
    /// `webhook` and `slack`: an `https` URL whose host is not (and does not
    /// resolve to) a loopback, private, link-local or metadata address.
    pub url: Option<String>,
    /// `webhook`: the signing secret (16 to 200 characters); deliveries
    /// carry `Webhook-Id`, `Webhook-Timestamp` and `Webhook-Signature` as
    /// the platform's other webhooks do.
    pub secret: Option<String>,
    /// `pagerduty`: the integration's routing key (letters and digits).
    pub routing_key: Option<String>,
    /// `sms`: up to 10 E.164 numbers to text (e.g. an on-call phone);
    /// without it, the organisation's admins are texted at the phone number
    /// of their subscriber profile. Shown masked to the last four digits.
    pub to: Option<Vec<String>>,
}

/// One escalation level.
#[derive(Debug, Object, serde::Deserialize)]
#[oai(deny_unknown_fields)]
#[serde(deny_unknown_fields)]
pub struct AlertLevelBody {
    /// Minutes after the alert opened, while it is unacknowledged (0 to
    /// 10080; each level later than the one before).
    pub after_minutes: i64,
    /// Who is notified (1 to 10 targets).
    pub channels: Vec<AlertChannelBody>,
}

/// A rule to create, or a rule's replacement.
#[derive(Debug, Object, serde::Deserialize)]
#[oai(deny_unknown_fields)]
#[serde(deny_unknown_fields)]
pub struct AlertRuleBody {
    /// A name for people (1 to 200 characters).
    pub name: Option<String>,
    /// `failure_rate` (% of a channel's finished sends that failed),
    /// `queue_oldest_due_age` (s), `queue_depth` (items due),
    /// `latency_p99` (ms, accepted to sent), `circuit_open` (provider
    /// configs of a channel with an open breaker), `no_worker_alive` (live
    /// workers of a queue; fires below the threshold), `baa_expiring` (days
    /// left; fires at or below), `failed_work` (items failed for good),
    /// `api_server_errors` (API requests answered 5xx; platform-wide rules
    /// only) or `webhook_endpoint_disabled` (the organisation's disabled
    /// webhook endpoints).
    pub metric: Option<String>,
    /// Narrows `failure_rate`, `latency_p99` and `circuit_open` to one
    /// channel (`email`, `sms`, `push`, `whatsapp`, `inapp`).
    pub channel: Option<String>,
    /// Narrows `queue_oldest_due_age`, `queue_depth` and `no_worker_alive`
    /// to one queue.
    pub queue: Option<String>,
    /// Narrows `failure_rate` to one provider config, by its name: the
    /// share of that provider's answers (sends it took, attempts it failed,
    /// failovers away from it) that were failures.
    pub provider: Option<String>,
    /// `failure_rate`: fewest finished sends in the window for the rate to
    /// count (default 20).
    pub min_events: Option<i64>,
    /// `webhook_endpoint_disabled`: count only endpoints disabled after
    /// repeated failures (`failures`) or by an administrator (`admin`);
    /// absent: both.
    pub disabled_by: Option<String>,
    /// The threshold in the metric's unit; its range depends on the metric
    /// (e.g. 0.01 to 100 for `failure_rate`).
    pub threshold: Option<f64>,
    /// Seconds to look back over (1 to 86400).
    pub window_secs: Option<i64>,
    /// `info`, `warning` (default) or `critical`.
    pub severity: Option<String>,
    /// Seconds after an alert resolves before the same rule and subject may
    /// alert again (0 to 604800, default 900).
    pub cooldown_secs: Option<i64>,
    /// The escalation levels (1 to 5; default: the admins in-app and by
    /// email at once).
    pub escalation: Option<Vec<AlertLevelBody>>,
    /// Whether the rule is evaluated (default true).
    pub enabled: Option<bool>,
    /// Platform admins: the organisation the rule is for (absent: a
    /// platform-wide rule). Others: their own organisation or absent.
    pub organization_id: Option<String>,
}

/// An escalation level as stored (secrets masked).
#[derive(Debug, Object)]
pub struct AlertLevelView {
    /// Minutes after opening.
    pub after_minutes: i64,
    /// Targets: `type`, and URLs cut to their origin, secrets and routing
    /// keys masked.
    pub channels: Vec<Value>,
}

/// A rule.
#[derive(Debug, Object)]
pub struct AlertRuleView {
    /// Its id.
    pub id: String,
    /// Its organisation; absent for a platform-wide rule.
    pub organization_id: Option<String>,
    /// Its name.
    pub name: String,
    /// The metric.
    pub metric: String,
    /// The channel it narrows to.
    pub channel: Option<String>,
    /// The queue it narrows to.
    pub queue: Option<String>,
    /// The provider config it narrows to (`failure_rate`).
    pub provider: Option<String>,
    /// `failure_rate`: fewest sends for the rate to count.
    pub min_events: Option<i64>,
    /// `webhook_endpoint_disabled`: `failures` or `admin`, if narrowed.
    pub disabled_by: Option<String>,
    /// The threshold.
    pub threshold: f64,
    /// Its unit.
    pub unit: String,
    /// Seconds looked back over.
    pub window_secs: i32,
    /// `info`, `warning` or `critical`.
    pub severity: String,
    /// Seconds before the same alert may open again.
    pub cooldown_secs: i32,
    /// Escalation levels.
    pub escalation: Vec<AlertLevelView>,
    /// Whether it is evaluated.
    pub enabled: bool,
    /// The default it started as (`high_failure_rate`, `stuck_queue`,
    /// `breaker_open`, `baa_expiring`), if any.
    pub builtin: Option<String>,
    /// Who created it (`system` for defaults).
    pub created_by: String,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Last changed.
    pub updated_at: DateTime<Utc>,
}

impl From<Rule> for AlertRuleView {
    fn from(r: Rule) -> Self {
        Self {
            id: r.id.to_string(),
            organization_id: r.tenant_id.map(|t| t.to_string()),
            channel: r.channel().map(str::to_owned),
            queue: r.queue().map(str::to_owned),
            provider: r.provider().map(str::to_owned),
            min_events: (r.spec.metric == alerts::Metric::FailureRate).then(|| r.min_events()),
            disabled_by: r.disabled_by().map(str::to_owned),
            name: r.spec.name,
            metric: r.spec.metric.as_str().to_owned(),
            threshold: r.spec.threshold,
            unit: r.spec.metric.unit().to_owned(),
            window_secs: r.spec.window_secs,
            severity: r.spec.severity.as_str().to_owned(),
            cooldown_secs: r.spec.cooldown_secs,
            escalation: r
                .spec
                .escalation
                .iter()
                .map(|l| AlertLevelView {
                    after_minutes: l.after_minutes,
                    channels: l.channels.iter().map(|c| c.masked()).collect(),
                })
                .collect(),
            enabled: r.spec.enabled,
            builtin: r.builtin,
            created_by: r.created_by,
            created_at: r.created_at,
            updated_at: r.updated_at,
        }
    }
}

/// Rules.
#[derive(Debug, Object)]
pub struct AlertRuleList {
    /// Oldest first (at most 1,000).
    pub items: Vec<AlertRuleView>,
}

/// An alert.
#[derive(Debug, Object)]
pub struct AlertView {
    /// Its id (also PagerDuty's `dedup_key`).
    pub id: String,
    /// Its organisation; absent for a platform-wide rule's alert.
    pub organization_id: Option<String>,
    /// The rule that opened it.
    pub rule_id: String,
    /// What it is about: a channel, a queue, an organisation.
    pub subject: String,
    /// `open`, `acknowledged` or `resolved`.
    pub status: String,
    /// `info`, `warning` or `critical`.
    pub severity: String,
    /// What is wrong.
    pub summary: String,
    /// The metric's latest value.
    pub value: f64,
    /// Escalation levels notified so far.
    pub escalation_level: i32,
    /// Opened.
    pub opened_at: DateTime<Utc>,
    /// Acknowledged.
    pub acknowledged_at: Option<DateTime<Utc>>,
    /// By whom (an audit actor).
    pub acknowledged_by: Option<String>,
    /// Resolved.
    pub resolved_at: Option<DateTime<Utc>>,
    /// By whom: `auto` when the condition cleared, else an audit actor.
    pub resolved_by: Option<String>,
}

impl From<Alert> for AlertView {
    fn from(a: Alert) -> Self {
        Self {
            id: a.id.to_string(),
            organization_id: a.tenant_id.map(|t| t.to_string()),
            rule_id: a.rule_id.to_string(),
            subject: a.subject,
            status: a.status,
            severity: a.severity,
            summary: a.summary,
            value: a.value,
            escalation_level: a.level,
            opened_at: a.opened_at,
            acknowledged_at: a.acknowledged_at,
            acknowledged_by: a.acknowledged_by,
            resolved_at: a.resolved_at,
            resolved_by: a.resolved_by,
        }
    }
}

/// A page of alerts.
#[derive(Debug, Object)]
pub struct AlertPage {
    /// Newest first.
    pub items: Vec<AlertView>,
    /// Pass as `cursor` for the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

/// One transition.
#[derive(Debug, Object)]
pub struct AlertEventView {
    /// `opened`, `escalated`, `acknowledged` or `resolved`.
    pub kind: String,
    /// The escalation level it notified.
    pub level: Option<i32>,
    /// `evaluator`, `auto` (the condition cleared) or an audit actor.
    pub actor: String,
    /// When.
    pub at: DateTime<Utc>,
    /// The value and threshold at the time.
    pub details: Value,
    /// Its notifications.
    pub notifications: Vec<AlertNotificationView>,
}

/// One notification of a transition.
#[derive(Debug, Object)]
pub struct AlertNotificationView {
    /// Its id.
    pub id: String,
    /// `in_app`, `email`, `sms`, `webhook`, `slack` or `pagerduty`.
    pub channel: String,
    /// `trigger`, `acknowledge` or `resolve`.
    pub action: String,
    /// `queued`, `sending`, `sent`, `failed` or `skipped` (no admin to
    /// tell).
    pub status: String,
    /// Calls made (outgoing channels).
    pub attempts: i32,
    /// The last answer's status code.
    pub response_status: Option<i32>,
    /// The last error.
    pub last_error: Option<String>,
    /// The platform notifications it became (in-app, email).
    pub notification_ids: Vec<String>,
    /// When it was sent.
    pub sent_at: Option<DateTime<Utc>>,
}

/// An alert with its history.
#[derive(Debug, Object)]
pub struct AlertDetail {
    /// The alert.
    pub alert: AlertView,
    /// Its transitions, oldest first, each with its notifications.
    pub history: Vec<AlertEventView>,
}

/// Alerts in numbers.
#[derive(Debug, Object)]
pub struct AlertStatistics {
    /// Unresolved alerts per severity now.
    pub open_by_severity: AlertOpenBySeverity,
    /// Alerts opened in the window.
    pub opened: i64,
    /// Mean seconds from opening to acknowledgement of the window's
    /// acknowledged alerts.
    pub mean_seconds_to_acknowledge: Option<f64>,
    /// Mean seconds from opening to resolution of the window's resolved
    /// alerts.
    pub mean_seconds_to_resolve: Option<f64>,
    /// The window's start.
    pub since: DateTime<Utc>,
    /// The window's end.
    pub until: DateTime<Utc>,
}

/// Counts per severity.
#[derive(Debug, Object, Default)]
pub struct AlertOpenBySeverity {
    /// `info`.
    pub info: i64,
    /// `warning`.
    pub warning: i64,
    /// `critical`.
    pub critical: i64,
}

/// Answers with a rule.
#[derive(Debug, ApiResponse)]
pub enum AlertRuleResponse {
    /// The rule.
    #[oai(status = 200)]
    Ok(Json<AlertRuleView>),
    /// Created.
    #[oai(status = 201)]
    Created(Json<AlertRuleView>),
}

/// Answers with rules.
#[derive(Debug, ApiResponse)]
pub enum AlertRuleListResponse {
    /// The rules.
    #[oai(status = 200)]
    Ok(Json<AlertRuleList>),
}

/// Answers a deletion.
#[derive(Debug, ApiResponse)]
pub enum AlertDeletedResponse {
    /// Deleted, with its alerts.
    #[oai(status = 204)]
    Deleted,
}

/// Answers with alerts.
#[derive(Debug, ApiResponse)]
pub enum AlertPageResponse {
    /// A page.
    #[oai(status = 200)]
    Ok(Json<AlertPage>),
}

/// Answers with an alert and its history.
#[derive(Debug, ApiResponse)]
pub enum AlertDetailResponse {
    /// The alert.
    #[oai(status = 200)]
    Ok(Json<AlertDetail>),
}

/// Answers with an alert.
#[derive(Debug, ApiResponse)]
pub enum AlertResponse {
    /// The alert after the change.
    #[oai(status = 200)]
    Ok(Json<AlertView>),
}

/// Answers with statistics.
#[derive(Debug, ApiResponse)]
pub enum AlertStatisticsResponse {
    /// The numbers.
    #[oai(status = 200)]
    Ok(Json<AlertStatistics>),
}

mod handlers;
