//! Stored subscriber preferences.

use serde_json::Value;
use sqlx::{PgExecutor, types::Json};

use crate::{
    domain::{SubscriberId, TenantId},
    preferences::Preferences,
};

/// The subscriber's preferences (the defaults when none are stored, or when
/// what is stored no longer parses).
#[tracing::instrument(skip_all)]
pub async fn get(
    db: impl PgExecutor<'_>,
    tenant_id: TenantId,
    subscriber_id: SubscriberId,
) -> Result<Preferences, sqlx::Error> {
    let stored: Option<Json<Value>> = sqlx::query_scalar!(
        r#"select preferences as "preferences: Json<Value>" from subscriber_preferences
         where tenant_id = $1 and subscriber_id = $2"#,
        tenant_id.0,
        subscriber_id.0,
    )
    .fetch_optional(db)
    .await?;
    Ok(stored
        .and_then(|v| Preferences::parse(v.0).ok())
        .unwrap_or_default())
}

/// Replaces the subscriber's preferences.
#[tracing::instrument(skip_all)]
pub async fn put(
    db: impl PgExecutor<'_>,
    tenant_id: TenantId,
    subscriber_id: SubscriberId,
    preferences: &Preferences,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "insert into subscriber_preferences (subscriber_id, tenant_id, preferences) values ($2, $1, $3)
         on conflict (subscriber_id) do update set preferences = excluded.preferences",
        tenant_id.0,
        subscriber_id.0,
        Json(preferences) as _,
    )
    .execute(db)
    .await?;
    Ok(())
}
