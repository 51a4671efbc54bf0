//! What deciding a group of sends reads and writes (see
//! [`crate::send_windows`]): an organisation's send rules, the time zones
//! and preferences of a group's subscribers in one statement, and the
//! deferral of the rows held back in one statement.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::{PgExecutor, types::Json};

use crate::{
    domain::{NotificationId, SubscriberId, TenantId, parse_time_zone},
    preferences::Preferences,
    send_windows::SendRules,
};

/// The organisation's send rules (none when it has none, or when its stored
/// settings no longer parse).
#[tracing::instrument(skip_all)]
pub async fn rules(db: impl PgExecutor<'_>, tenant_id: TenantId) -> Result<SendRules, sqlx::Error> {
    let settings: Option<Value> =
        sqlx::query_scalar!("select settings from tenants where id = $1", tenant_id.0)
            .fetch_optional(db)
            .await?;
    Ok(settings.map(|s| SendRules::of(&s)).unwrap_or_default())
}

/// A subscriber as deciding a send sees them.
#[derive(Debug, Clone, Default)]
pub struct Subscriber {
    /// Their profile's time zone.
    pub timezone: Option<chrono_tz::Tz>,
    /// Their preferences (the defaults when none are stored, or when what is
    /// stored no longer parses).
    pub preferences: Preferences,
}

/// The time zones and preferences of `ids`, in one statement; subscribers
/// not found are left out.
#[tracing::instrument(skip_all)]
pub async fn subscribers(
    db: impl PgExecutor<'_>,
    tenant_id: TenantId,
    ids: &[SubscriberId],
) -> Result<HashMap<SubscriberId, Subscriber>, sqlx::Error> {
    let rows = sqlx::query!(
        r#"select s.id as "id: SubscriberId", s.timezone,
             p.preferences as "preferences?: Json<Value>"
         from subscribers s left join subscriber_preferences p on p.subscriber_id = s.id
         where s.tenant_id = $1 and s.id = any($2)"#,
        tenant_id.0,
        ids as _,
    )
    .fetch_all(db)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| {
            let (id, timezone, preferences) = (r.id, r.timezone, r.preferences);
            let subscriber = Subscriber {
                timezone: timezone.and_then(|tz| parse_time_zone(&tz).ok()),
                preferences: preferences
                    .and_then(|p| Preferences::parse(p.0).ok())
                    .unwrap_or_default(),
            };
            (id, subscriber)
        })
        .collect())
}

/// Puts claimed rows back, unattempted, each until its time (quiet hours,
/// a send window): `deferred`, with the claim's attempt given back. A row
/// whose claim was lost meanwhile (cancelled, or its lease ran out) stays as
/// it is. `rows` are (id, claimed attempt, until). Returns the rows
/// deferred.
#[tracing::instrument(skip_all)]
pub async fn defer(
    db: impl PgExecutor<'_>,
    tenant_id: TenantId,
    rows: &[(NotificationId, i32, DateTime<Utc>)],
) -> Result<Vec<NotificationId>, sqlx::Error> {
    let ids: Vec<NotificationId> = rows.iter().map(|r| r.0).collect();
    let attempts: Vec<i32> = rows.iter().map(|r| r.1).collect();
    let until: Vec<DateTime<Utc>> = rows.iter().map(|r| r.2).collect();
    sqlx::query_scalar!(
        r#"update notifications n
         set status = 'deferred', attempts = n.attempts - 1, run_at = r.until, dispatched_at = null
         from unnest($2::uuid[], $3::int4[], $4::timestamptz[]) as r(id, attempt, until)
         where n.tenant_id = $1 and n.id = r.id and n.status = 'sending' and n.attempts = r.attempt
         returning n.id as "id: NotificationId""#,
        tenant_id.0,
        ids as _,
        &attempts,
        &until,
    )
    .fetch_all(db)
    .await
}
