//! Sending scheduled reports: each due schedule's report is computed from
//! the rollups and emailed to its recipients as ordinary notifications
//! ([`crate::notices`], template key `platform.report`), so delivery,
//! retries and tracking are those of every other send.
//!
//! A firing sends once however many schedulers run: [`run_due`] locks due
//! schedules (`for update skip locked`), queues the emails and moves
//! `next_run_at` on in one transaction; a rival skips the locked rows and
//! finds them no longer due after the commit. The emails carry an
//! idempotency key per schedule, firing and recipient as a second wall.

use std::sync::LazyLock;

use chrono::{DateTime, Utc};
use serde_json::json;
use sqlx::PgPool;

use super::{
    ReportRange, Template, compute, export,
    own::{self, Section},
    schedule::ReportCron,
};
use crate::{
    config::JobsConfig,
    db::{
        report_schedules::{self as store, ReportSchedule},
        scope::Reach,
    },
    domain::Channel,
    notices::{self, Notice},
    templates::Template as MessageTemplate,
};

/// The key an organisation's own wording of report emails has.
pub const TEMPLATE_KEY: &str = "platform.report";

/// The largest report laid out in an email (the renderer's cap is 256 KiB).
const MAX_BODY_BYTES: usize = 200 * 1024;

/// `body` cut to `max` bytes at a line end, with a note that it was cut.
fn cut(body: String, max: usize) -> String {
    if body.len() <= max {
        return body;
    }
    let mut end = max;
    while !body.is_char_boundary(end) {
        end -= 1;
    }
    let end = body[..end].rfind('\n').unwrap_or(end);
    format!(
        "{}\n… cut at {} KiB; fetch the whole report from GET /api/v1/reports",
        &body[..end],
        max / 1024
    )
}

/// Schedules sent per pass.
const BATCH: i64 = 20;

static REPORT: LazyLock<MessageTemplate> = LazyLock::new(|| {
    notices::builtin(json!({
        "key": TEMPLATE_KEY,
        "name": "Scheduled report",
        "category": "reports",
        "default_locale": "en",
        "default_channels": ["email"],
        "locales": {"en": {
            "email": {
                "subject": "{{name}}: {{template}} {{from}} to {{to}}",
                "text": "{{name}} ({{template}})\nFrom {{from}} to {{to}} (UTC).\n\nAccepted: {{accepted}}\nSent: {{sent}}\nDelivered: {{delivered}}\nFailed: {{failed}}\nBounced: {{bounced}}\nRead: {{read}}\n\nThe report ({{format}}):\n\n{{body}}\n"
            }
        }}
    }))
});

/// Sends every schedule due at `now`; returns the schedules sent.
pub async fn run_due(
    pool: &PgPool,
    jobs: &JobsConfig,
    now: DateTime<Utc>,
) -> anyhow::Result<Vec<crate::domain::ReportScheduleId>> {
    use anyhow::Context;
    let mut sent = Vec::new();
    loop {
        let mut tx = pool.begin().await.context("while opening a transaction")?;
        let due = store::take_due(&mut *tx, now, BATCH)
            .await
            .context("while finding due report schedules")?;
        if due.is_empty() {
            return Ok(sent);
        }
        for s in &due {
            let ran_for = s.next_run_at.unwrap_or(now);
            let ids = send(pool, &mut tx, jobs, s, ran_for)
                .await
                .with_context(|| format!("while sending report schedule {}", s.id))?;
            let next = ReportCron::parse(&s.cron, &s.timezone)
                .ok()
                .and_then(|c| c.next_after(now.max(ran_for)));
            store::mark_run(&mut *tx, s.id, ran_for, next, &ids)
                .await
                .context("while recording a report schedule's run")?;
            tracing::info!(schedule = %s.id, ran_for = %ran_for, emails = ids.len(), "scheduled report sent");
            sent.push(s.id);
        }
        tx.commit()
            .await
            .context("while committing scheduled reports")?;
    }
}

async fn send(
    pool: &PgPool,
    tx: &mut sqlx::PgConnection,
    jobs: &JobsConfig,
    s: &ReportSchedule,
    ran_for: DateTime<Utc>,
) -> anyhow::Result<Vec<uuid::Uuid>> {
    // An own template (kept from deletion while a schedule uses it) sets
    // the period, the channel and the sections.
    let own = match s.report_template_id {
        Some(id) => crate::db::report_templates::get(&mut *tx, s.tenant_id, id).await?,
        None => None,
    };
    let (template, label, sections, channel) = match &own {
        Some(t) => (
            Template::Own(t.spec.period),
            t.spec.key.clone(),
            t.spec.sections.clone(),
            t.spec.channel.as_deref(),
        ),
        None => (
            Template::parse(&s.template).unwrap_or(Template::DailySummary),
            s.template.clone(),
            Section::ALL.to_vec(),
            None,
        ),
    };
    let range = ReportRange::new(template, None, Some(ran_for), ran_for)?;
    let report = compute::report_of(pool, Reach::Tenant(s.tenant_id), &range, channel).await?;
    let body = match s.format.as_str() {
        "json" => {
            let mut value = serde_json::to_value(&report)?;
            own::keep_json(&mut value, &sections);
            value["template"] = label.clone().into();
            if let Some(c) = channel {
                value["channel"] = c.into();
            }
            serde_json::to_string_pretty(&value)?
        }
        _ => String::from_utf8(export::csv_of(&report, &sections)?)?,
    };
    let body = cut(body, MAX_BODY_BYTES);
    let t = &report.totals;
    let data = json!({
        "name": s.name,
        "template": label,
        "format": s.format,
        "from": report.from.to_rfc3339(),
        "to": report.to.to_rfc3339(),
        "accepted": t.accepted,
        "sent": t.sent,
        "delivered": t.delivered,
        "failed": t.failed,
        "bounced": t.bounced,
        "read": t.read,
        "body": body,
    });
    let recipients = store::active_users(&mut *tx, s.tenant_id, &s.recipients).await?;
    let mut ids = Vec::new();
    for user in recipients {
        let subscriber = user.to_string();
        let key = format!("report:{}:{}:{user}", s.id, ran_for.timestamp());
        let queued = notices::queue(
            tx,
            jobs,
            s.tenant_id,
            Notice {
                key: TEMPLATE_KEY,
                default: &REPORT,
                data: &data,
                channels: &[Channel::Email],
                subscriber: Some(&subscriber),
                email: None,
                phone: None,
                locale: None,
                metadata: json!({"report_schedule_id": s.id, "report_for": ran_for}),
                idempotency_key: Some(&key),
            },
        )
        .await?;
        ids.extend(queued.notifications.into_iter().map(|(_, id)| id.0));
    }
    Ok(ids)
}
