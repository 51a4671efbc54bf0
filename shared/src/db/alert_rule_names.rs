//! Alert rules' names, for the messages about their alerts
//! ([`crate::alerts::evaluate`]).

use crate::domain::AlertRuleId;
use sqlx::PgExecutor;

/// The name of alert rule `id` (an error when there is none).
pub async fn name(db: impl PgExecutor<'_>, id: AlertRuleId) -> Result<String, sqlx::Error> {
    sqlx::query_scalar!("select name from alert_rules where id = $1", id.0)
        .fetch_one(db)
        .await
}
