//! Alerts: listing the alerts a caller may see. The routes in
//! [`crate::routes::alerts`] parse requests and shape answers.

use chrono::{DateTime, Utc};
use shared::{
    db::alerts::{self as store, Alert},
    domain::{AlertId, AlertRuleId},
};

use crate::{
    AppState,
    access::Principal,
    error::ApiError,
    extract::{Cursor, PageSize, page},
    middleware::RequestId,
};

/// The filters of the alert list, as sent.
#[derive(Debug)]
pub struct ListFilter {
    /// The organisation (platform admins).
    pub organization_id: Option<String>,
    /// `open`, `acknowledged` or `resolved`.
    pub status: Option<String>,
    /// `info`, `warning` or `critical`.
    pub severity: Option<String>,
    /// One rule's id.
    pub rule_id: Option<String>,
    /// Opened at or after.
    pub since: Option<DateTime<Utc>>,
    /// Opened before.
    pub until: Option<DateTime<Utc>>,
}

/// `t` within what Postgres stores.
pub fn clamp(t: Option<DateTime<Utc>>) -> Option<DateTime<Utc>> {
    let low = DateTime::<Utc>::from_timestamp(-62_135_596_800, 0).unwrap_or_default();
    let high = DateTime::<Utc>::from_timestamp(253_402_300_799, 0).unwrap_or_default();
    t.map(|t| t.clamp(low, high))
}

/// One page (`limit`, after `cursor`) of the alerts within the reach `p`
/// names with `f.organization_id` (refusal audited as `alert.list`) that
/// match `f`, newest first, with the cursor of the next. The rule id is
/// checked before the cursor.
pub async fn list(
    state: &AppState,
    p: &Principal,
    request_id: &RequestId,
    f: ListFilter,
    cursor: Option<Cursor<(DateTime<Utc>, AlertId)>>,
    limit: PageSize,
) -> Result<(Vec<Alert>, Option<String>), ApiError> {
    let act = p.at(state, request_id).acting("alert.list", "alert");
    let reach = act
        .refused(None, p.reach_of(f.organization_id.as_deref()))
        .await?;
    let rule = f
        .rule_id
        .as_deref()
        .map(|r| {
            r.parse::<AlertRuleId>()
                .map_err(|_| ApiError::invalid("rule_id", "is not a rule id"))
        })
        .transpose()?;
    let filter = store::Filter {
        status: f.status,
        severity: f.severity,
        rule,
        since: clamp(f.since),
        until: clamp(f.until),
        after: cursor.map(Cursor::get).transpose()?,
    };
    let rows = store::list(&state.pool, reach, &filter, limit.fetch()).await?;
    Ok(page(rows, limit, |a: &Alert| (a.opened_at, a.id)))
}
