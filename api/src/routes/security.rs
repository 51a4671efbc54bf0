//! `/api/v1/security/events` and `/api/v1/security/statistics`: sign-ins,
//! lockouts, unlocks, refresh-token reuse, session revocations, API key
//! changes and refusals and sampled rate-limit refusals, for admins.
//!
//! An organisation admin sees its organisation's events. A platform admin
//! sees every event, including failed sign-ins with an unknown address,
//! which belong to no organisation; `organization_id` narrows to one
//! organisation, `organization_id=platform` to those without one.

use chrono::{DateTime, Duration, Utc};
use poem_openapi::{ApiResponse, Object, OpenApi, payload::Json, validation::Pattern};
use serde_json::Value;
use shared::db::{
    scope::Reach,
    security_events::{self as events, Scope},
};
use shared::domain::UserId;
use uuid::Uuid;

use crate::{
    access::Principal,
    error::ApiError,
    extract::AdminCtx,
    extract::{Cursor, PageSize, Params, page},
    routes::ApiTags,
};

/// The default statistics window.
pub const DEFAULT_WINDOW: Duration = Duration::hours(24);

/// The security endpoints.
#[derive(Debug)]
pub struct SecurityApi;

/// One security event.
#[derive(Debug, Object)]
pub struct SecurityEventView {
    /// Its id.
    pub id: i64,
    /// The organisation; absent for failed sign-ins with an unknown address
    /// and locks of a client address.
    pub organization_id: Option<String>,
    /// `login.succeeded`, `login.failed`, `login.throttled`,
    /// `account.locked`, `account.unlocked`, `refresh_token.reused`,
    /// `session.revoked`, `api_key.created`, `api_key.revoked`,
    /// `api_key.networks_changed`, `api_key.address_refused` or
    /// `rate_limit.refused`.
    #[oai(rename = "type")]
    pub kind: String,
    /// The user concerned.
    pub user_id: Option<String>,
    /// The session concerned.
    pub session_id: Option<String>,
    /// The client address (truncated).
    pub ip: Option<String>,
    /// The client's user agent (truncated).
    pub user_agent: Option<String>,
    /// Extra facts (never a password or token).
    pub details: Value,
    /// When.
    pub created_at: DateTime<Utc>,
}

impl From<events::Row> for SecurityEventView {
    fn from(r: events::Row) -> Self {
        Self {
            id: r.id,
            organization_id: r.tenant_id.map(|t| t.to_string()),
            kind: r.kind,
            user_id: r.user_id.map(|u| u.to_string()),
            session_id: r.session_id.map(|u| u.to_string()),
            ip: r.ip,
            user_agent: r.user_agent,
            details: r.details,
            created_at: r.created_at,
        }
    }
}

/// A page of events.
#[derive(Debug, Object)]
pub struct SecurityEventPage {
    /// Events, newest first.
    pub items: Vec<SecurityEventView>,
    /// Pass as `cursor` for the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

/// Events of one type.
#[derive(Debug, Object)]
pub struct TypeCount {
    /// The type.
    #[oai(rename = "type")]
    pub kind: String,
    /// How many.
    pub count: i64,
}

/// Counts per type over a window.
#[derive(Debug, Object)]
pub struct SecurityStatistics {
    /// The window's start (inclusive).
    pub since: DateTime<Utc>,
    /// The window's end (exclusive).
    pub until: DateTime<Utc>,
    /// Every type, with zero where none happened.
    pub counts: Vec<TypeCount>,
    /// All of them.
    pub total: i64,
}

/// Answers with a page.
#[derive(Debug, ApiResponse)]
pub enum EventsResponse {
    /// A page.
    #[oai(status = 200)]
    Ok(Json<SecurityEventPage>),
}

/// Answers with statistics.
#[derive(Debug, ApiResponse)]
pub enum StatisticsResponse {
    /// Counts per type.
    #[oai(status = 200)]
    Ok(Json<SecurityStatistics>),
}

/// The organisations the caller reads.
fn scope(p: &Principal, organization_id: Option<&str>) -> Result<Scope, ApiError> {
    match (organization_id, p.reach()) {
        (Some("platform"), Reach::Platform(operator)) => Ok(Scope::Unowned(operator)),
        (Some("platform"), Reach::Tenant(_)) => Err(ApiError::NotFound("organization")),
        (other, _) => p.reach_of(other).map(Scope::Within),
    }
}

fn kind(raw: Option<&str>) -> Result<Option<&'static str>, ApiError> {
    match raw {
        None => Ok(None),
        Some(k) => events::KINDS
            .iter()
            .find(|known| **known == k)
            .copied()
            .map(Some)
            .ok_or_else(|| {
                ApiError::invalid(
                    "type",
                    format!("must be one of {}", events::KINDS.join(", ")),
                )
            }),
    }
}

/// `t` within what Postgres stores (years 1 to 9999): a bound beyond it
/// selects the same events as the nearest one within.
fn clamp(t: Option<DateTime<Utc>>) -> Option<DateTime<Utc>> {
    let low = DateTime::<Utc>::from_timestamp(-62_135_596_800, 0).unwrap_or_default();
    let high = DateTime::<Utc>::from_timestamp(253_402_300_799, 0).unwrap_or_default();
    t.map(|t| t.clamp(low, high))
}

crate::query_params! {
    /// The filters and page of the security event list.
    pub struct EventsQuery {
        organization_id: Option<String>,
        kind_filter as "type": Option<String> where [Pattern::new(
            r"^(login\.succeeded|login\.failed|login\.throttled|account\.locked|account\.unlocked|refresh_token\.reused|session\.revoked|api_key\.created|api_key\.revoked|api_key\.networks_changed|api_key\.address_refused|rate_limit\.refused)$"
        )],
        user_id: Option<Uuid>,
        since: Option<DateTime<Utc>>,
        until: Option<DateTime<Utc>>,
        cursor: Option<Cursor<i64>>,
        limit: PageSize,
    }
}

crate::query_params! {
    /// The filters of the security statistics.
    pub struct StatisticsQuery {
        organization_id: Option<String>,
        user_id: Option<Uuid>,
        since: Option<DateTime<Utc>>,
        until: Option<DateTime<Utc>>,
    }
}

#[OpenApi(prefix_path = "/api/v1/security", tag = "ApiTags::Admin")]
impl SecurityApi {
    /// Security events, newest first (admins), filtered by `type`,
    /// `user_id`, `since`, `until` and, for platform admins,
    /// `organization_id` (`platform`: events without an organisation).
    #[oai(path = "/events", method = "get", operation_id = "security.events")]
    async fn list(
        &self,
        cx: AdminCtx<'_>,
        query: Params<EventsQuery>,
    ) -> Result<EventsResponse, ApiError> {
        let EventsQuery {
            organization_id,
            kind_filter,
            user_id,
            since,
            until,
            cursor,
            limit,
        } = query.0;
        let p = cx.principal().await?;
        let act = cx.acting(&p, "security.events", "security_event");
        let scope = act
            .refused(None, scope(&p, organization_id.as_deref()))
            .await?;
        let kind = kind(kind_filter.as_deref())?;
        let before_id = cursor.map(Cursor::get).transpose()?;
        let rows = events::list(
            &cx.state.pool,
            events::Filter {
                scope,
                kind,
                user_id: user_id.map(UserId),
                since: clamp(since),
                until: clamp(until),
                before_id,
            },
            limit.fetch(),
        )
        .await?;
        let (rows, next_cursor) = page(rows, limit, |r| r.id);
        Ok(EventsResponse::Ok(Json(SecurityEventPage {
            items: rows.into_iter().map(Into::into).collect(),
            next_cursor,
        })))
    }

    /// Security events per type over a window (admins): `since` (default
    /// 24 hours before `until`) to `until` (default now), for one `user_id`
    /// or everyone, and for platform admins one `organization_id`.
    #[oai(
        path = "/statistics",
        method = "get",
        operation_id = "security.statistics"
    )]
    async fn statistics(
        &self,
        cx: AdminCtx<'_>,
        query: Params<StatisticsQuery>,
    ) -> Result<StatisticsResponse, ApiError> {
        let StatisticsQuery {
            organization_id,
            user_id,
            since,
            until,
        } = query.0;
        let p = cx.principal().await?;
        let act = cx.acting(&p, "security.statistics", "security_event");
        let scope = act
            .refused(None, scope(&p, organization_id.as_deref()))
            .await?;
        let until = clamp(Some(until.unwrap_or_else(Utc::now))).unwrap_or_else(Utc::now);
        let since = match clamp(since) {
            Some(s) => s,
            None => until.checked_sub_signed(DEFAULT_WINDOW).unwrap_or(until),
        };
        let found = events::counts(
            &cx.state.pool,
            events::Filter {
                scope,
                kind: None,
                user_id: user_id.map(UserId),
                since: Some(since),
                until: Some(until),
                before_id: None,
            },
        )
        .await?;
        let counts: Vec<TypeCount> = events::KINDS
            .iter()
            .map(|k| TypeCount {
                kind: (*k).to_owned(),
                count: found.iter().find(|(f, _)| f == k).map_or(0, |(_, n)| *n),
            })
            .collect();
        let total = counts.iter().map(|c| c.count).sum();
        Ok(StatisticsResponse::Ok(Json(SecurityStatistics {
            since,
            until,
            counts,
            total,
        })))
    }
}
