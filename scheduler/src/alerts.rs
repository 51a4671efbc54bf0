//! Alerting in the scheduler: every `ALERTS_EVALUATE_SECS` it evaluates the
//! alert rules ([`shared::alerts::Evaluator`], once per rule and period
//! across replicas) and makes the outgoing calls the alerts' transitions
//! queued: Slack incoming webhooks, PagerDuty Events API v2 and signed
//! webhooks ([`Sender`]).
//!
//! Outgoing calls are rows in `alert_deliveries`. A scheduler claims due
//! rows with a lease (`for update skip locked`), so two schedulers never
//! make the same call at once, and a call cut off by a crash is made again
//! after the lease (PagerDuty's `dedup_key` is the alert id, so a repeated
//! trigger is one incident). Failures are retried with exponential backoff
//! up to [`MAX_ATTEMPTS`], and each attempt's status and error are recorded.
//!
//! Every call goes through an SSRF-guarded client: URLs are checked again
//! before each call ([`shared::webhooks::check_url`]), names are resolved
//! by [`GuardedResolver`], which drops every address
//! [`shared::webhooks::forbidden_reason`] refuses, and redirects are not
//! followed.

use std::{sync::Arc, time::Duration};

use chrono::{DateTime, TimeDelta, Utc};
use reqwest::{
    Client, StatusCode,
    dns::{Addrs, Name, Resolve, Resolving},
    header::CONTENT_TYPE,
    redirect,
};
use serde_json::{Value, json};
use shared::{
    alerts::{ChannelSpec, Evaluator},
    config::Settings,
    db::alerts::{self as store, Outgoing},
    jobs::Queues,
    webhooks::{check_url, resolve_allowed, sign},
};
use sqlx::PgPool;
use tokio::task::JoinHandle;

/// Calls made for one delivery before it is given up.
pub const MAX_ATTEMPTS: i32 = 8;
/// How long a claimed call is held before another scheduler may make it.
const LEASE: TimeDelta = TimeDelta::seconds(60);
/// Deliveries claimed at once.
const BATCH: i64 = 20;

/// Resolves host names, keeping only the addresses alerts may reach.
#[derive(Debug, Clone, Copy)]
pub struct GuardedResolver {
    allow_loopback: bool,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let allow_loopback = self.allow_loopback;
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let (allowed, refused) = resolve_allowed(&host, 0, allow_loopback).await?;
            if allowed.is_empty() {
                let why = refused.unwrap_or("no address");
                return Err(format!("the host resolves only to {why}").into());
            }
            let addrs: Addrs = Box::new(allowed.into_iter());
            Ok(addrs)
        })
    }
}

/// How one call ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Accepted.
    Sent(u16),
    /// Refused for a reason another try may not have (e.g. a 5xx, a 429,
    /// no connection).
    Retry(Option<u16>, String),
    /// Refused for good (e.g. PagerDuty's 400 for a bad routing key).
    Failed(Option<u16>, String),
}

/// Makes alerts' outgoing calls.
#[derive(Debug, Clone)]
pub struct Sender {
    pool: PgPool,
    client: Client,
    allow_loopback: bool,
    pagerduty: String,
}

impl Sender {
    /// A sender with the settings' PagerDuty URL and loopback policy.
    pub fn new(pool: PgPool, settings: &Settings) -> anyhow::Result<Self> {
        let allow_loopback = settings.webhooks.allow_loopback;
        let timeout = Duration::from_secs(10);
        let client = Client::builder()
            .dns_resolver(Arc::new(GuardedResolver { allow_loopback }))
            .redirect(redirect::Policy::none())
            .no_proxy()
            .timeout(timeout)
            .connect_timeout(Duration::from_secs(5))
            .user_agent(concat!("notify-alerts/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Self {
            pool,
            client,
            allow_loopback,
            pagerduty: settings.provider_urls.pagerduty.clone(),
        })
    }

    /// Makes every call due at `now`; returns how many were made.
    pub async fn deliver(&self, now: DateTime<Utc>) -> anyhow::Result<usize> {
        let mut made = 0;
        loop {
            let due = store::claim_outgoing(&self.pool, now, now + LEASE, BATCH).await?;
            if due.is_empty() {
                return Ok(made);
            }
            for d in &due {
                let outcome = self.call(d, now).await;
                made += 1;
                self.record(d, &outcome, now).await?;
            }
        }
    }

    async fn record(
        &self,
        d: &Outgoing,
        outcome: &Outcome,
        now: DateTime<Utc>,
    ) -> anyhow::Result<()> {
        let attempt = d.attempts + 1;
        let (status, code, error, retry_at) = match outcome {
            Outcome::Sent(code) => ("sent", Some(*code), None, now),
            Outcome::Failed(code, why) => ("failed", *code, Some(why.as_str()), now),
            Outcome::Retry(code, why) if attempt >= MAX_ATTEMPTS => {
                ("failed", *code, Some(why.as_str()), now)
            }
            Outcome::Retry(code, why) => {
                ("queued", *code, Some(why.as_str()), now + backoff(attempt))
            }
        };
        if status != "sent" {
            tracing::warn!(delivery = %d.id, channel = %d.channel, attempt, error = error.unwrap_or_default(), "alert notification not accepted");
        }
        metrics::counter!("alert_notifications_total", "channel" => d.channel.clone(), "outcome" => status).increment(1);
        store::finish_outgoing(
            &self.pool,
            d.id,
            status,
            code.map(i32::from),
            error,
            now,
            retry_at,
        )
        .await?;
        Ok(())
    }

    /// Makes one call.
    pub async fn call(&self, d: &Outgoing, now: DateTime<Utc>) -> Outcome {
        let spec: ChannelSpec = match serde_json::from_value(d.target.clone()) {
            Ok(s) => s,
            Err(_) => return Outcome::Failed(None, "the channel is not understood".into()),
        };
        match spec {
            ChannelSpec::Slack { url } => {
                let body = json!({"text": slack_text(d)});
                self.post(
                    &url,
                    serde_json::to_vec(&body).unwrap_or_default(),
                    None,
                    200..300,
                )
                .await
            }
            ChannelSpec::Pagerduty { routing_key } => {
                let url = format!("{}/v2/enqueue", self.pagerduty);
                let body = pagerduty_body(d, &routing_key);
                self.post(
                    &url,
                    serde_json::to_vec(&body).unwrap_or_default(),
                    None,
                    200..300,
                )
                .await
            }
            ChannelSpec::Webhook { url, secret } => {
                let body = webhook_body(d);
                let bytes = serde_json::to_vec(&body).unwrap_or_default();
                let id = d.id.to_string();
                let ts = now.timestamp();
                let signature = sign(&secret, &id, ts, &bytes);
                self.post(&url, bytes, Some((id, ts, signature)), 200..300)
                    .await
            }
            ChannelSpec::InApp | ChannelSpec::Email | ChannelSpec::Sms { .. } => {
                Outcome::Failed(None, "in-app, email and SMS are not outgoing calls".into())
            }
        }
    }

    async fn post(
        &self,
        url: &str,
        body: Vec<u8>,
        signed: Option<(String, i64, String)>,
        ok: std::ops::Range<u16>,
    ) -> Outcome {
        let url = match check_url(url, self.allow_loopback) {
            Ok(u) => u,
            Err(why) => return Outcome::Failed(None, format!("the URL {why}")),
        };
        let mut req = self
            .client
            .post(url)
            .header(CONTENT_TYPE, "application/json")
            .body(body);
        if let Some((id, ts, signature)) = signed {
            req = req
                .header("webhook-id", id)
                .header("webhook-timestamp", ts.to_string())
                .header("webhook-signature", signature);
        }
        match req.send().await {
            Ok(resp) => {
                let status = resp.status();
                let code = status.as_u16();
                if ok.contains(&code) {
                    Outcome::Sent(code)
                } else if retryable(status) {
                    Outcome::Retry(Some(code), format!("answered {status}"))
                } else {
                    Outcome::Failed(Some(code), format!("answered {status}"))
                }
            }
            Err(e) => Outcome::Retry(None, describe_error(&e)),
        }
    }
}

/// Whether a refusal may pass on another try.
fn retryable(status: StatusCode) -> bool {
    status.is_server_error()
        || status == StatusCode::TOO_MANY_REQUESTS
        || status == StatusCode::REQUEST_TIMEOUT
}

/// The wait before attempt `attempt + 1`: 10 s doubling, at most an hour.
pub fn backoff(attempt: i32) -> TimeDelta {
    let secs = 10_i64.saturating_mul(1_i64 << attempt.clamp(0, 20));
    TimeDelta::seconds(secs.min(3600))
}

fn describe_error(e: &reqwest::Error) -> String {
    shared::webhooks::describe_call_error(
        e,
        e.is_timeout(),
        e.is_connect(),
        ["no answer in time", "cannot connect", "the call failed"],
    )
}

/// The Slack message of a transition.
pub fn slack_text(d: &Outgoing) -> String {
    let icon = match d.severity.as_str() {
        "critical" => ":red_circle:",
        "warning" => ":warning:",
        _ => ":information_source:",
    };
    match d.action.as_str() {
        "acknowledge" => format!("{icon} Acknowledged: {} ({})", d.rule_name, d.subject),
        "resolve" => format!(
            ":white_check_mark: Resolved: {} ({})",
            d.rule_name, d.subject
        ),
        _ if d.kind == "escalated" => format!(
            "{icon} Escalated [{}] {}: {}",
            d.severity, d.rule_name, d.summary
        ),
        _ => format!("{icon} [{}] {}: {}", d.severity, d.rule_name, d.summary),
    }
}

/// The PagerDuty Events API v2 event of a transition.
pub fn pagerduty_body(d: &Outgoing, routing_key: &str) -> Value {
    let dedup_key = d.alert_id.to_string();
    match d.action.as_str() {
        "acknowledge" | "resolve" => json!({
            "routing_key": routing_key,
            "event_action": d.action,
            "dedup_key": dedup_key,
        }),
        _ => json!({
            "routing_key": routing_key,
            "event_action": "trigger",
            "dedup_key": dedup_key,
            "payload": {
                "summary": format!("{}: {}", d.rule_name, d.summary).chars().take(1024).collect::<String>(),
                "severity": d.severity,
                "source": match d.tenant_id {
                    Some(t) => format!("notify/organization/{t}"),
                    None => "notify/platform".to_owned(),
                },
                "component": d.subject,
                "timestamp": d.at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                "custom_details": {"alert_id": d.alert_id, "transition": d.kind},
            },
        }),
    }
}

/// The signed webhook's body of a transition.
pub fn webhook_body(d: &Outgoing) -> Value {
    json!({
        "id": d.id,
        "type": format!("alert.{}", d.kind),
        "created_at": d.at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        "data": {
            "alert_id": d.alert_id,
            "organization_id": d.tenant_id,
            "rule": d.rule_name,
            "subject": d.subject,
            "severity": d.severity,
            "status": d.status,
            "summary": d.summary,
        },
    })
}

/// The scheduler's alerting task.
#[derive(Debug)]
pub struct Alerting {
    task: Option<JoinHandle<()>>,
}

impl Alerting {
    /// Starts evaluating and delivering every `ALERTS_EVALUATE_SECS` (not at
    /// all when it is 0).
    pub fn start(settings: &Settings, pool: PgPool, queues: Queues) -> anyhow::Result<Self> {
        let Some(interval) = settings.alerts_interval else {
            return Ok(Self { task: None });
        };
        let evaluator = Evaluator::new(pool.clone(), queues, settings.jobs.clone(), interval);
        let sender = Sender::new(pool, settings)?;
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                if let Err(error) = evaluator.evaluate(Utc::now()).await {
                    tracing::warn!(
                        error = format!("{error:#}"),
                        "alert evaluation failed; retrying"
                    );
                }
                if let Err(error) = sender.deliver(Utc::now()).await {
                    tracing::warn!(
                        error = format!("{error:#}"),
                        "alert notifications failed; retrying"
                    );
                }
            }
        });
        Ok(Self { task: Some(task) })
    }

    /// Stops the task (an evaluation cut off is rolled back; its period is
    /// evaluated again by nobody, the next one by whoever claims it).
    pub async fn stop(mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_ten_seconds_up_to_an_hour() {
        assert_eq!(backoff(0), TimeDelta::seconds(10));
        assert_eq!(backoff(1), TimeDelta::seconds(20));
        assert_eq!(backoff(3), TimeDelta::seconds(80));
        assert_eq!(backoff(30), TimeDelta::seconds(3600));
    }

    #[test]
    fn only_server_errors_and_throttling_are_retried() {
        assert!(retryable(StatusCode::INTERNAL_SERVER_ERROR));
        assert!(retryable(StatusCode::TOO_MANY_REQUESTS));
        assert!(!retryable(StatusCode::BAD_REQUEST));
        assert!(!retryable(StatusCode::NOT_FOUND));
    }
}
