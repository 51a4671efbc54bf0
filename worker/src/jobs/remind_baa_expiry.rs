//! `RemindBaaExpiry`: tell each organisation's admins, by email and in-app,
//! that its BAA expires soon or has expired.
//!
//! The day is the tick's (`scheduled_for`), so the job's clock is the
//! scheduler's. For each active organisation whose current agreement is
//! within the largest threshold, the most urgent threshold crossed applies:
//! `30d`, `14d`, `7d`, `1d` (from `jobs.toml`) or `expired` (from the expiry
//! day on). Each organisation gets its own transaction that inserts the
//! `(agreement, threshold)` row — `on conflict do nothing` — and queues the
//! notices, so a threshold goes out once per agreement even when the job runs
//! twice, two schedulers fire, or a worker dies mid-run (its transaction
//! rolls back and the next run sends it). A newly signed BAA is a new
//! agreement, so its thresholds start again. An organisation without an
//! active admin is not marked, and is reminded once it has one.

use std::sync::{Arc, LazyLock};

use anyhow::Context;
use apalis_core::{error::BoxDynError, task::data::Data, task::task_id::TaskId};
use chrono::{DateTime, Days, Utc};
use serde_json::json;
use shared::{
    db::{organizations, users},
    domain::Channel,
    jobs::{Job, RemindBaaExpiry},
    notices::{self, Notice},
    templates::Template,
};
use tracing::Instrument;

use crate::WorkerState;

/// The template key an organisation overrides the reminder with.
pub const TEMPLATE_KEY: &str = "platform.baa_reminder";

static REMINDER: LazyLock<Template> = LazyLock::new(|| {
    notices::builtin(json!({
        "key": TEMPLATE_KEY,
        "name": "BAA expiry reminder",
        "category": "compliance",
        "critical": true,
        "default_locale": "en",
        "default_channels": ["email", "inapp"],
        "locales": {"en": {
            "email": {
                "subject": "{{#if expired}}The BAA of {{organization}} has expired{{else}}The BAA of {{organization}} expires in {{days_left}} days{{/if}}",
                "text": "The business associate agreement of {{organization}} {{#if expired}}expired on {{expires_on}}{{else}}expires on {{expires_on}}{{/if}}. Sign a new agreement to keep sending messages that carry PHI."
            },
            "inapp": {
                "title": "{{#if expired}}BAA expired{{else}}BAA expires in {{days_left}} days{{/if}}",
                "body": "{{organization}}: expiry date {{expires_on}}"
            }
        }}
    }))
});

/// Runs one `RemindBaaExpiry` job.
pub async fn handle(
    job: RemindBaaExpiry,
    state: Data<Arc<WorkerState>>,
    task_id: TaskId,
) -> Result<(), BoxDynError> {
    let span = tracing::info_span!("job", queue = %job.queue(), job = RemindBaaExpiry::NAME, job_id = %task_id, scheduled_for = %job.scheduled_for);
    async move {
        let queue = job.queue().as_str();
        metrics::counter!("jobs_started_total", "queue" => queue).increment(1);
        let started = std::time::Instant::now();
        let reminded = remind(&state, job.scheduled_for).await;
        crate::jobs::count_job(&state, job.queue(), None, reminded.is_ok(), started);
        match reminded {
            Ok(sent) => {
                metrics::counter!("jobs_succeeded_total", "queue" => queue).increment(1);
                tracing::info!(sent, "BAA reminders done");
            }
            Err(error) => {
                // Nothing half-sent: the next tick sends what this one missed.
                metrics::counter!("jobs_failed_total", "queue" => queue).increment(1);
                tracing::error!(error = format!("{error:#}"), "BAA reminders failed");
            }
        }
        Ok(())
    }
    .instrument(span)
    .await
}

/// The threshold that applies `days_left` days before expiry, if any.
pub fn threshold(thresholds: &[u32], days_left: i64) -> Option<String> {
    if days_left <= 0 {
        return Some("expired".to_owned());
    }
    thresholds
        .iter()
        .copied()
        .filter(|t| days_left <= i64::from(*t))
        .min()
        .map(|t| format!("{t}d"))
}

/// Sends the reminders due on the day of `scheduled_for`; returns how many
/// organisations were reminded.
pub async fn remind(state: &WorkerState, scheduled_for: DateTime<Utc>) -> anyhow::Result<u32> {
    let today = scheduled_for.date_naive();
    let thresholds = &state.jobs.baa_reminders.thresholds_days;
    let horizon = thresholds.iter().copied().max().unwrap_or(0);
    let orgs = organizations::expiring_by(&state.pool, today + Days::new(u64::from(horizon)))
        .await
        .context("while finding expiring agreements")?;
    let mut reminded = 0;
    for org in orgs {
        let (Some(agreement), Some(expires_on)) = (org.baa_id, org.baa_expires_on) else {
            continue;
        };
        let days_left = (expires_on - today).num_days();
        let Some(threshold) = threshold(thresholds, days_left) else {
            continue;
        };
        let mut tx = state.pool.begin().await.context("while starting")?;
        let admins = users::admins(&mut *tx, org.id)
            .await
            .context("while reading admins")?;
        if admins.is_empty() {
            continue;
        }
        let claimed = organizations::claim_reminder(
            &mut *tx,
            org.id,
            agreement,
            &threshold,
            scheduled_for,
            i32::try_from(admins.len()).unwrap_or(i32::MAX),
        )
        .await
        .context("while recording the reminder")?;
        if !claimed {
            continue;
        }
        let data = json!({
            "organization": org.name,
            "days_left": days_left.max(0),
            "expires_on": expires_on.to_string(),
            "expired": days_left <= 0,
            "threshold": threshold,
        });
        for admin in &admins {
            // Emailed where the admin's subscriber says: its own address,
            // else the sign-in address.
            let subscriber = admin.to_string();
            let key = format!("baa:{agreement}:{threshold}:{admin}");
            notices::queue(
                &mut tx,
                &state.jobs,
                org.id,
                Notice {
                    key: TEMPLATE_KEY,
                    default: &REMINDER,
                    data: &data,
                    channels: &[Channel::Email, Channel::InApp],
                    subscriber: Some(&subscriber),
                    email: None,
                    phone: None,
                    locale: None,
                    metadata: json!({"baa_agreement_id": agreement, "threshold": threshold}),
                    idempotency_key: Some(&key),
                },
            )
            .await
            .context("while queueing a reminder")?;
        }
        tx.commit().await.context("while committing")?;
        reminded += 1;
    }
    Ok(reminded)
}

#[cfg(test)]
mod tests {
    use super::threshold;

    #[test]
    fn the_most_urgent_threshold_crossed_applies() {
        let t = [30, 14, 7, 1];
        assert_eq!(threshold(&t, 45), None);
        assert_eq!(threshold(&t, 30).as_deref(), Some("30d"));
        assert_eq!(threshold(&t, 20).as_deref(), Some("30d"));
        assert_eq!(threshold(&t, 14).as_deref(), Some("14d"));
        assert_eq!(threshold(&t, 7).as_deref(), Some("7d"));
        assert_eq!(threshold(&t, 1).as_deref(), Some("1d"));
        assert_eq!(threshold(&t, 0).as_deref(), Some("expired"));
        assert_eq!(threshold(&t, -40).as_deref(), Some("expired"));
    }
}
