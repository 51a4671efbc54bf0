//! The notifications of an alert's transitions.
//!
//! In-app, email and SMS go to the admins of the alert's organisation (of
//! the platform organisation for a platform-wide rule) as ordinary
//! notifications ([`crate::notices`]), inserted in the transition's
//! transaction with an idempotency key per alert, transition and admin; an
//! SMS channel that names numbers texts those instead, keyed per number.
//! Outgoing calls (Slack, PagerDuty, signed webhooks) are recorded as
//! `queued` deliveries that the scheduler posts with retries. The unique key
//! `(transition, channel, target)` makes each notification once per
//! transition.

use std::sync::LazyLock;

use chrono::{DateTime, Utc};
use serde_json::json;

use super::{ChannelSpec, Level, Rule};
use crate::{
    config::JobsConfig,
    db::{
        alerts::{self, Alert, NewDelivery},
        organizations, users,
    },
    domain::{Channel, NotificationId, PhoneNumber, TenantId},
    notices::{self, Notice, NoticeError},
    templates::Template,
};

/// The template key an organisation may override alert notices with.
pub const TEMPLATE_KEY: &str = "platform.alert";

static ALERT: LazyLock<Template> = LazyLock::new(|| {
    notices::builtin(json!({
        "key": TEMPLATE_KEY,
        "name": "Alert",
        "category": "operations",
        "critical": true,
        "default_locale": "en",
        "default_channels": ["email", "inapp"],
        "locales": {"en": {
            "email": {
                "subject": "{{#if resolved}}Resolved: {{/if}}[{{severity}}] {{rule}}: {{subject}}",
                "text": "{{summary}}\n\nAlert {{alert_id}} is {{state}}.{{#if resolved}}{{else}} Acknowledge it in the admin console to stop its escalation.{{/if}}"
            },
            "inapp": {
                "title": "{{#if resolved}}Resolved: {{/if}}{{rule}} ({{subject}})",
                "body": "{{summary}}"
            },
            "sms": {
                "body": "{{#if resolved}}Resolved: {{/if}}[{{severity}}] {{rule}} ({{subject}}): {{summary}}{{#if resolved}}{{else}} Alert {{alert_id}}.{{/if}}"
            }
        }}
    }))
});

/// What the admins' notices say.
#[derive(Debug, Clone)]
pub struct Wording<'a> {
    /// The rule's name.
    pub rule: &'a str,
    /// `opened`, `escalated` or `resolved`.
    pub state: &'a str,
}

impl Wording<'_> {
    /// The template's data for `alert`.
    fn data(&self, alert: &Alert) -> serde_json::Value {
        json!({
            "alert_id": alert.id,
            "rule": self.rule,
            "subject": alert.subject,
            "severity": alert.severity,
            "summary": alert.summary,
            "state": self.state,
            "resolved": self.state == "resolved",
        })
    }

    /// The transition's action: `resolve` or `trigger`.
    fn action(&self) -> &'static str {
        if self.state == "resolved" {
            "resolve"
        } else {
            "trigger"
        }
    }
}

/// One transition of an alert, as its notifications tell it.
#[derive(Debug, Clone)]
pub struct Transition<'a> {
    /// The queues' settings the notices are queued with.
    pub jobs: &'a JobsConfig,
    /// The alert.
    pub alert: &'a Alert,
    /// The transition's event id (what makes each notification once).
    pub event_id: i64,
    /// What the notices say.
    pub wording: Wording<'a>,
    /// When it happened.
    pub now: DateTime<Utc>,
}

/// Notifies level `index` of `rule` for the transition `t`.
pub async fn level(
    tx: &mut sqlx::PgConnection,
    t: &Transition<'_>,
    rule: &Rule,
    index: usize,
) -> Result<(), NoticeError> {
    let Some(Level { channels, .. }) = rule.spec.escalation.get(index) else {
        return Ok(());
    };
    let (alert, event_id, now) = (t.alert, t.event_id, t.now);
    let admin_channels: Vec<Channel> = channels
        .iter()
        .filter_map(|c| match c {
            ChannelSpec::InApp => Some(Channel::InApp),
            ChannelSpec::Email => Some(Channel::Email),
            ChannelSpec::Sms { to } if to.is_empty() => Some(Channel::Sms),
            _ => None,
        })
        .collect();
    admins(tx, t, &admin_channels).await?;
    for c in channels {
        match c {
            ChannelSpec::InApp | ChannelSpec::Email => continue,
            ChannelSpec::Sms { to } if to.is_empty() => continue,
            ChannelSpec::Sms { to } => {
                texts(tx, t, c, to).await?;
                continue;
            }
            _ => {}
        }
        alerts::deliver(
            &mut *tx,
            alert,
            NewDelivery {
                event_id,
                channel: c.kind(),
                target_key: c.target_key(),
                target: serde_json::to_value(c).unwrap_or_default(),
                action: "trigger",
                status: "queued",
                notification_ids: Vec::new(),
                run_at: now,
            },
        )
        .await?;
    }
    Ok(())
}

/// Tells every target `alert` triggered so far that it was acknowledged or
/// resolved (`action`): outgoing calls for each, and for a resolution the
/// admins again on the channels they heard it on.
pub async fn follow_up(
    tx: &mut sqlx::PgConnection,
    jobs: &JobsConfig,
    rule_name: &str,
    alert: &Alert,
    event_id: i64,
    action: &str,
    now: DateTime<Utc>,
) -> Result<(), NoticeError> {
    let targets = alerts::triggered(&mut *tx, alert.id).await?;
    let mut admin_channels = Vec::new();
    let mut numbers: Vec<ChannelSpec> = Vec::new();
    for (channel, target_key, target) in targets {
        match channel.as_str() {
            "in_app" => admin_channels.push(Channel::InApp),
            "email" => admin_channels.push(Channel::Email),
            // Text messages are notices like in-app and email: the people
            // texted hear of the resolution, not of the acknowledgement.
            "sms" if target_key == "admins" => admin_channels.push(Channel::Sms),
            "sms" => numbers.extend(serde_json::from_value::<ChannelSpec>(target).ok()),
            _ => {
                alerts::deliver(
                    &mut *tx,
                    alert,
                    NewDelivery {
                        event_id,
                        channel: &channel,
                        target_key,
                        target,
                        action,
                        status: "queued",
                        notification_ids: Vec::new(),
                        run_at: now,
                    },
                )
                .await?;
            }
        }
    }
    if action == "resolve" {
        let t = Transition {
            jobs,
            alert,
            event_id,
            wording: Wording {
                rule: rule_name,
                state: "resolved",
            },
            now,
        };
        admins(tx, &t, &admin_channels).await?;
        for spec in &numbers {
            if let ChannelSpec::Sms { to } = spec {
                texts(tx, &t, spec, to).await?;
            }
        }
    }
    Ok(())
}

/// The organisation whose admins hear about `alert`.
async fn audience(
    tx: &mut sqlx::PgConnection,
    alert: &Alert,
) -> Result<Option<TenantId>, sqlx::Error> {
    match alert.tenant_id {
        Some(t) => Ok(Some(t)),
        None => Ok(organizations::platform(&mut *tx).await?.map(|o| o.id)),
    }
}

/// Notifies the admins of the alert's organisation on `channels`.
async fn admins(
    tx: &mut sqlx::PgConnection,
    t: &Transition<'_>,
    channels: &[Channel],
) -> Result<(), NoticeError> {
    if channels.is_empty() {
        return Ok(());
    }
    let Transition {
        jobs,
        alert,
        event_id,
        ref wording,
        now,
    } = *t;
    let tenant = audience(tx, alert).await?;
    let admins = match tenant {
        Some(t) => users::admins(&mut *tx, t).await?,
        None => Vec::new(),
    };
    let data = wording.data(alert);
    let mut made: Vec<(Channel, NotificationId)> = Vec::new();
    if let Some(tenant) = tenant {
        for admin in &admins {
            let subscriber = admin.to_string();
            let key = format!("alert:{}:{event_id}:{admin}", alert.id);
            let queued = notices::queue(
                tx,
                jobs,
                tenant,
                Notice {
                    key: TEMPLATE_KEY,
                    default: &ALERT,
                    data: &data,
                    channels,
                    subscriber: Some(&subscriber),
                    email: None,
                    phone: None,
                    locale: None,
                    metadata: json!({"alert_id": alert.id, "alert_state": wording.state}),
                    idempotency_key: Some(&key),
                },
            )
            .await?;
            made.extend(queued.notifications);
        }
    }
    for channel in channels {
        let ids: Vec<uuid::Uuid> = made
            .iter()
            .filter(|(c, _)| c == channel)
            .map(|(_, id)| id.0)
            .collect();
        let kind = match channel {
            Channel::Email => "email",
            Channel::Sms => "sms",
            _ => "in_app",
        };
        alerts::deliver(
            &mut *tx,
            alert,
            NewDelivery {
                event_id,
                channel: kind,
                target_key: "admins".to_owned(),
                target: json!({"type": kind}),
                action: wording.action(),
                status: if ids.is_empty() { "skipped" } else { "sent" },
                notification_ids: ids,
                run_at: now,
            },
        )
        .await?;
    }
    Ok(())
}

/// Texts the numbers of an SMS channel (`spec`, whose numbers are `to`)
/// about `alert`: one notification per number through the organisation's
/// SMS provider, idempotent per alert, transition and number, recorded as
/// one delivery of the channel.
async fn texts(
    tx: &mut sqlx::PgConnection,
    t: &Transition<'_>,
    spec: &ChannelSpec,
    to: &[String],
) -> Result<(), NoticeError> {
    let Transition {
        jobs,
        alert,
        event_id,
        ref wording,
        now,
    } = *t;
    let tenant = audience(tx, alert).await?;
    let data = wording.data(alert);
    let mut ids = Vec::new();
    if let Some(tenant) = tenant {
        for raw in to {
            // Checked when the rule was saved; a number that no longer
            // parses is left out rather than failing the transition.
            let Ok(number) = PhoneNumber::parse(raw) else {
                continue;
            };
            let key = format!("alert:{}:{event_id}:sms:{}", alert.id, number.as_str());
            let queued = notices::queue(
                tx,
                jobs,
                tenant,
                Notice {
                    key: TEMPLATE_KEY,
                    default: &ALERT,
                    data: &data,
                    channels: &[Channel::Sms],
                    subscriber: None,
                    email: None,
                    phone: Some(&number),
                    locale: None,
                    metadata: json!({"alert_id": alert.id, "alert_state": wording.state}),
                    idempotency_key: Some(&key),
                },
            )
            .await?;
            ids.extend(queued.notifications.into_iter().map(|(_, id)| id.0));
        }
    }
    alerts::deliver(
        &mut *tx,
        alert,
        NewDelivery {
            event_id,
            channel: "sms",
            target_key: spec.target_key(),
            target: serde_json::to_value(spec).unwrap_or_default(),
            action: wording.action(),
            status: if ids.is_empty() { "skipped" } else { "sent" },
            notification_ids: ids,
            run_at: now,
        },
    )
    .await?;
    Ok(())
}
