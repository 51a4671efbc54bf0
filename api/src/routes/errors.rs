//! `/api/v1/errors`: error tracking ([`shared::errors`]). Failures grouped
//! by cause, their counts, organisations, sample ids and recoveries, and
//! statistics over a range.
//!
//! Admins only. An organisation's admins see their organisation's counts
//! and samples only; a group their organisation has no occurrences of
//! answers 404, like another organisation's resource. Platform admins see
//! every organisation's counts summed, and which organisations a group
//! touches.

use chrono::{DateTime, Duration, Utc};
use poem_openapi::{
    ApiResponse, Enum, Object, OpenApi,
    param::{Path, Query},
    payload::Json,
    validation::Pattern,
};
use shared::{
    db::{
        errors::{self as store, Filter, Group, Recovery, Share, Tally},
        scope::Reach,
    },
    domain::ErrorGroupId,
    errors::{ErrorClass, ErrorKind},
};

use crate::{
    error::ApiError,
    extract::AdminCtx,
    extract::{Cursor, PageSize, Params, PathId, page},
    routes::ApiTags,
};

/// The error-tracking endpoints.
#[derive(Debug)]
pub struct ErrorsApi;

/// An error class.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[oai(rename_all = "snake_case")]
pub enum ErrorClassParam {
    /// Likely to pass on a later try.
    Transient,
    /// Will not pass however often it is tried.
    Permanent,
    /// The input was refused.
    Validation,
    /// Credentials or a sender were refused.
    Authorization,
    /// The network failed.
    Network,
    /// Postgres failed.
    Database,
    /// A provider or endpoint answered with an error.
    ExternalProvider,
}

impl From<ErrorClassParam> for ErrorClass {
    fn from(c: ErrorClassParam) -> Self {
        match c {
            ErrorClassParam::Transient => ErrorClass::Transient,
            ErrorClassParam::Permanent => ErrorClass::Permanent,
            ErrorClassParam::Validation => ErrorClass::Validation,
            ErrorClassParam::Authorization => ErrorClass::Authorization,
            ErrorClassParam::Network => ErrorClass::Network,
            ErrorClassParam::Database => ErrorClass::Database,
            ErrorClassParam::ExternalProvider => ErrorClass::ExternalProvider,
        }
    }
}

/// Where errors happen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[oai(rename_all = "snake_case")]
pub enum ErrorKindParam {
    /// A notification's delivery attempt.
    Delivery,
    /// A webhook delivery that gave up.
    Webhook,
    /// A bulk CSV job.
    BulkJob,
    /// A UPS poll of a shipment.
    Shipment,
    /// A background job.
    Job,
    /// An API request answered 5xx.
    Api,
}

impl From<ErrorKindParam> for ErrorKind {
    fn from(k: ErrorKindParam) -> Self {
        match k {
            ErrorKindParam::Delivery => ErrorKind::Delivery,
            ErrorKindParam::Webhook => ErrorKind::Webhook,
            ErrorKindParam::BulkJob => ErrorKind::BulkJob,
            ErrorKindParam::Shipment => ErrorKind::Shipment,
            ErrorKindParam::Job => ErrorKind::Job,
            ErrorKindParam::Api => ErrorKind::Api,
        }
    }
}

/// A delivery channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
pub enum ChannelParam {
    /// Email.
    #[oai(rename = "email")]
    Email,
    /// Text messages.
    #[oai(rename = "sms")]
    Sms,
    /// Mobile push.
    #[oai(rename = "push")]
    Push,
    /// WhatsApp.
    #[oai(rename = "whatsapp")]
    WhatsApp,
    /// In-app.
    #[oai(rename = "inapp")]
    InApp,
}

impl ChannelParam {
    fn as_str(self) -> &'static str {
        match self {
            ChannelParam::Email => "email",
            ChannelParam::Sms => "sms",
            ChannelParam::Push => "push",
            ChannelParam::WhatsApp => "whatsapp",
            ChannelParam::InApp => "inapp",
        }
    }
}

/// A group of errors of the same cause.
#[derive(Debug, Object)]
pub struct ErrorGroupView {
    /// Its id (the same cause always has the same id).
    #[oai(validator(max_length = 36))]
    pub id: String,
    /// `delivery`, `webhook`, `bulk_job`, `shipment`, `job` or `api`.
    pub kind: String,
    /// `transient`, `permanent`, `validation`, `authorization`, `network`,
    /// `database` or `external_provider`.
    pub class: String,
    /// The platform's reason code (e.g. `mail_refused`, `timeout`,
    /// `postgres_unreachable`); never a provider's text.
    pub reason: String,
    /// The provider that failed, where there is one.
    pub provider: Option<String>,
    /// The channel, for deliveries.
    pub channel: Option<String>,
    /// The queue of a job, the route template of an API request.
    pub source: Option<String>,
    /// Occurrences (in the caller's organisation; for platform admins, in
    /// all).
    pub occurrences: i64,
    /// Notifications sent after failing in this group.
    pub recoveries: i64,
    /// Organisations with occurrences (the platform's own counts as one).
    pub organizations: i64,
    /// First seen.
    pub first_seen: DateTime<Utc>,
    /// Last seen.
    pub last_seen: DateTime<Utc>,
    /// Last recovery.
    pub last_recovered_at: Option<DateTime<Utc>>,
    /// Up to 5 of the newest notification, webhook delivery, bulk job,
    /// shipment or request ids.
    pub sample_ids: Vec<String>,
}

impl From<Group> for ErrorGroupView {
    fn from(g: Group) -> Self {
        Self {
            id: g.id.to_string(),
            kind: g.kind,
            class: g.class,
            reason: g.reason,
            provider: g.provider,
            channel: g.channel,
            source: g.source,
            occurrences: g.occurrences,
            recoveries: g.recoveries,
            organizations: g.organizations,
            first_seen: g.first_seen,
            last_seen: g.last_seen,
            last_recovered_at: g.last_recovered_at,
            sample_ids: g.sample_ids,
        }
    }
}

/// One organisation's share of a group.
#[derive(Debug, Object)]
pub struct ErrorShareView {
    /// The organisation; absent for the platform's own (API requests,
    /// jobs of no organisation).
    pub organization_id: Option<String>,
    /// Its name.
    pub name: Option<String>,
    /// Occurrences.
    pub occurrences: i64,
    /// Recoveries.
    pub recoveries: i64,
    /// Last seen.
    pub last_seen: DateTime<Utc>,
}

impl From<Share> for ErrorShareView {
    fn from(s: Share) -> Self {
        Self {
            organization_id: (!s.tenant_id.is_nil()).then(|| s.tenant_id.to_string()),
            name: s.name,
            occurrences: s.occurrences,
            recoveries: s.recoveries,
            last_seen: s.last_seen,
        }
    }
}

/// A group with the organisations it touches.
#[derive(Debug, Object)]
pub struct ErrorGroupDetail {
    /// The group.
    pub group: ErrorGroupView,
    /// Platform admins: the organisations, most occurrences first (at most
    /// 100). Absent for an organisation's admins.
    pub affected_organizations: Option<Vec<ErrorShareView>>,
}

/// A page of groups.
#[derive(Debug, Object)]
pub struct ErrorGroupPage {
    /// Last seen first.
    pub items: Vec<ErrorGroupView>,
    /// Pass as `cursor` for the next page; absent on the last.
    pub next_cursor: Option<String>,
}

/// A notification sent after failing in a group.
#[derive(Debug, Object)]
pub struct RecoveryView {
    /// The organisation.
    pub organization_id: String,
    /// The notification.
    pub notification_id: String,
    /// Its failed attempts in the group before it was sent.
    pub failures: i32,
    /// When it was sent.
    pub recovered_at: DateTime<Utc>,
}

impl From<Recovery> for RecoveryView {
    fn from(r: Recovery) -> Self {
        Self {
            organization_id: r.tenant_id.to_string(),
            notification_id: r.notification_id.to_string(),
            failures: r.failures,
            recovered_at: r.recovered_at,
        }
    }
}

/// A page of recoveries.
#[derive(Debug, Object)]
pub struct RecoveryPage {
    /// Newest first.
    pub items: Vec<RecoveryView>,
    /// Pass as `cursor` for the next page; absent on the last.
    pub next_cursor: Option<String>,
}

/// Counts of one class, channel or kind.
#[derive(Debug, Object)]
pub struct ErrorCount {
    /// The class, channel (`none` for errors of no channel) or kind.
    pub name: String,
    /// Occurrences.
    pub occurrences: i64,
    /// Recoveries.
    pub recoveries: i64,
}

/// Error statistics over a range.
#[derive(Debug, Object)]
pub struct ErrorStatistics {
    /// From (counts are kept per hour: the hour this falls in is counted
    /// whole).
    pub since: DateTime<Utc>,
    /// To (before).
    pub until: DateTime<Utc>,
    /// Occurrences.
    pub occurrences: i64,
    /// Recoveries.
    pub recoveries: i64,
    /// Recoveries per occurrence (0 to 1; 0 without occurrences).
    pub recovery_rate: f64,
    /// Every class, in a fixed order.
    pub by_class: Vec<ErrorCount>,
    /// Channels with occurrences, most first.
    pub by_channel: Vec<ErrorCount>,
    /// Kinds with occurrences, most first.
    pub by_kind: Vec<ErrorCount>,
}

/// Answers with a page of groups.
#[derive(Debug, ApiResponse)]
pub enum ErrorGroupPageResponse {
    /// A page.
    #[oai(status = 200)]
    Ok(Json<ErrorGroupPage>),
}

/// Answers with a group.
#[derive(Debug, ApiResponse)]
pub enum ErrorGroupResponse {
    /// The group.
    #[oai(status = 200)]
    Ok(Json<ErrorGroupDetail>),
}

/// Answers with a page of recoveries.
#[derive(Debug, ApiResponse)]
pub enum RecoveryPageResponse {
    /// A page.
    #[oai(status = 200)]
    Ok(Json<RecoveryPage>),
}

/// Answers with statistics.
#[derive(Debug, ApiResponse)]
pub enum ErrorStatisticsResponse {
    /// The statistics.
    #[oai(status = 200)]
    Ok(Json<ErrorStatistics>),
}

/// Longest range of statistics.
const MAX_RANGE_DAYS: i64 = 366;

/// `t` within what Postgres stores.
fn clamp(t: DateTime<Utc>) -> DateTime<Utc> {
    let low = DateTime::<Utc>::from_timestamp(-62_135_596_800, 0).unwrap_or_default();
    let high = DateTime::<Utc>::from_timestamp(253_402_300_799, 0).unwrap_or_default();
    t.clamp(low, high)
}

/// Sums tallies by a name, most first (or in `order` when given).
fn counts(
    tallies: &[Tally],
    name: impl Fn(&Tally) -> String,
    order: Option<&[&str]>,
) -> Vec<ErrorCount> {
    let mut out: Vec<ErrorCount> = order
        .unwrap_or_default()
        .iter()
        .map(|n| ErrorCount {
            name: (*n).to_owned(),
            occurrences: 0,
            recoveries: 0,
        })
        .collect();
    for t in tallies {
        let n = name(t);
        match out.iter_mut().find(|c| c.name == n) {
            Some(c) => {
                c.occurrences += t.occurrences;
                c.recoveries += t.recoveries;
            }
            None => out.push(ErrorCount {
                name: n,
                occurrences: t.occurrences,
                recoveries: t.recoveries,
            }),
        }
    }
    if order.is_none() {
        out.sort_by(|a, b| b.occurrences.cmp(&a.occurrences).then(a.name.cmp(&b.name)));
    }
    out
}

impl ErrorsApi {
    /// The caller's reach, or 403 (audited) for a caller who is no admin.
    async fn reach(cx: &AdminCtx<'_>, action: &str, id: Option<&str>) -> Result<Reach, ApiError> {
        let p = cx.principal().await?;
        let act = cx.acting(&p, action, "error_group");
        act.refused(id, Ok(p.reach())).await
    }
}

crate::query_params! {
    /// The filters and page of the error group list.
    pub struct ListQuery {
        class: Option<ErrorClassParam>,
        kind: Option<ErrorKindParam>,
        channel: Option<ChannelParam>,
        provider: Option<String> where [Pattern::new("^[a-z0-9_]{1,64}$")],
        since: Option<DateTime<Utc>>,
        cursor: Option<Cursor<(DateTime<Utc>, ErrorGroupId)>>,
        limit: PageSize,
    }
}

#[OpenApi(prefix_path = "/api/v1", tag = "ApiTags::Operations")]
impl ErrorsApi {
    /// Error groups (admins): failures of the same cause, last seen first,
    /// with their counts, sample ids and recoveries. Narrow by `class`,
    /// `kind`, `channel`, `provider` and `since` (last seen at or after).
    #[oai(path = "/errors", method = "get", operation_id = "errors.list")]
    async fn list(
        &self,
        cx: AdminCtx<'_>,
        query: Params<ListQuery>,
    ) -> Result<ErrorGroupPageResponse, ApiError> {
        let q = query.0;
        let scope = Self::reach(&cx, "error_group.list", None).await?;
        let filter = Filter {
            class: q.class.map(Into::into),
            kind: q.kind.map(Into::into),
            channel: q.channel.map(|c| c.as_str().to_owned()),
            provider: q.provider,
            since: q.since.map(clamp),
        };
        let after = q.cursor.map(Cursor::get).transpose()?;
        let rows = store::list(&cx.state.pool, scope, &filter, after, q.limit.fetch()).await?;
        let (rows, next_cursor) = page(rows, q.limit, |g: &Group| (g.last_seen, g.id));
        Ok(ErrorGroupPageResponse::Ok(Json(ErrorGroupPage {
            items: rows.into_iter().map(Into::into).collect(),
            next_cursor,
        })))
    }

    /// Error statistics (admins): occurrences and recoveries from `since`
    /// (default 24 hours before `until`) to `until` (default now), in total,
    /// per class, per channel and per kind, and the recovery rate. At most
    /// 366 days; counts are kept per hour.
    #[oai(
        path = "/errors/statistics",
        method = "get",
        operation_id = "errors.statistics"
    )]
    async fn statistics(
        &self,
        cx: AdminCtx<'_>,
        since: Query<Option<DateTime<Utc>>>,
        until: Query<Option<DateTime<Utc>>>,
    ) -> Result<ErrorStatisticsResponse, ApiError> {
        let scope = Self::reach(&cx, "error_group.statistics", None).await?;
        let until = clamp(until.0.unwrap_or_else(Utc::now));
        let since = clamp(since.0.unwrap_or(until - Duration::hours(24)));
        if since >= until {
            return Err(ApiError::invalid("since", "must be before until"));
        }
        if until - since > Duration::days(MAX_RANGE_DAYS) {
            return Err(ApiError::invalid(
                "since",
                "the range is longer than 366 days",
            ));
        }
        let tallies = store::tallies(&cx.state.pool, scope, since, until).await?;
        let occurrences: i64 = tallies.iter().map(|t| t.occurrences).sum();
        let recoveries: i64 = tallies.iter().map(|t| t.recoveries).sum();
        let classes: Vec<&str> = ErrorClass::ALL.iter().map(|c| c.as_str()).collect();
        Ok(ErrorStatisticsResponse::Ok(Json(ErrorStatistics {
            since,
            until,
            occurrences,
            recoveries,
            recovery_rate: if occurrences > 0 {
                (recoveries as f64 / occurrences as f64).min(1.0)
            } else {
                0.0
            },
            by_class: counts(&tallies, |t| t.class.clone(), Some(&classes)),
            by_channel: counts(
                &tallies,
                |t| t.channel.clone().unwrap_or_else(|| "none".into()),
                None,
            ),
            by_kind: counts(&tallies, |t| t.kind.clone(), None),
        })))
    }

    /// One error group (admins), with the organisations it touches for
    /// platform admins. A group the caller's organisation has no
    /// occurrences of answers 404.
    #[oai(path = "/errors/:id", method = "get", operation_id = "errors.get")]
    async fn get(
        &self,
        cx: AdminCtx<'_>,
        id: Path<PathId<ErrorGroupId>>,
    ) -> Result<ErrorGroupResponse, ApiError> {
        let scope = Self::reach(&cx, "error_group.read", Some(id.0.raw())).await?;
        let id = id.0.get("error group")?;
        let group = store::get(&cx.state.pool, scope, id)
            .await?
            .ok_or(ApiError::NotFound("error group"))?;
        let affected_organizations = match scope {
            Reach::Tenant(_) => None,
            Reach::Platform(_) => Some(
                store::shares_across_tenants(&cx.state.pool, id)
                    .await?
                    .into_iter()
                    .map(Into::into)
                    .collect(),
            ),
        };
        Ok(ErrorGroupResponse::Ok(Json(ErrorGroupDetail {
            group: group.into(),
            affected_organizations,
        })))
    }

    /// A group's recoveries (admins): notifications sent after failing in
    /// it, newest first; an organisation's admins see their own only.
    #[oai(
        path = "/errors/:id/recoveries",
        method = "get",
        operation_id = "errors.recoveries"
    )]
    async fn recoveries(
        &self,
        cx: AdminCtx<'_>,
        id: Path<PathId<ErrorGroupId>>,
        cursor: Query<Option<Cursor<i64>>>,
        limit: Query<PageSize>,
    ) -> Result<RecoveryPageResponse, ApiError> {
        let scope = Self::reach(&cx, "error_group.read", Some(id.0.raw())).await?;
        let id = id.0.get("error group")?;
        store::get(&cx.state.pool, scope, id)
            .await?
            .ok_or(ApiError::NotFound("error group"))?;
        let before = cursor.0.map(Cursor::get).transpose()?;
        let rows = store::recoveries(&cx.state.pool, scope, id, before, limit.0.fetch()).await?;
        let (rows, next_cursor) = page(rows, limit.0, |r| r.id);
        Ok(RecoveryPageResponse::Ok(Json(RecoveryPage {
            items: rows.into_iter().map(Into::into).collect(),
            next_cursor,
        })))
    }
}
