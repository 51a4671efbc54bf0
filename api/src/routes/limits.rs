//! `/api/v1/admin/organizations/{id}/rate-limits` and `…/quotas`: an
//! organisation's request rate limits and send quotas.
//!
//! Platform admins set them; an organisation's own admins may read its own
//! (any other id answers 404). Every change, and every refusal, is written
//! to the audit log. A change shows at once on the API replica that made it
//! and within `rate_limits.settings_cache_secs` on the others.

use chrono::{DateTime, Utc};
use poem_openapi::{ApiResponse, Object, OpenApi, param::Path, payload::Json};
use serde_json::json;
use shared::{
    config::{ClassLimit, check_class_limit},
    db::limits::{self, Override, Quota},
    db::organizations,
    domain::{Channel, TenantId},
};

use crate::{
    AppState,
    access::Principal,
    body::StrictJson,
    error::{ApiError, InvalidParam},
    extract::AdminCtx,
    limits::{Class, OVERRIDABLE, Period},
    routes::ApiTags,
};

/// Most quotas one organisation may hold: every channel, per day and month.
const MAX_QUOTAS: usize = 10;

/// The rate-limit and quota endpoints.
#[derive(Debug)]
pub struct LimitsApi;

/// One class's limit.
#[derive(Debug, Clone, Object, serde::Deserialize)]
#[oai(deny_unknown_fields)]
#[serde(deny_unknown_fields)]
pub struct LimitInput {
    /// Sustained requests per second (above 0, at most 1,000,000; `0.5` is
    /// one every two seconds).
    #[oai(validator(minimum(value = "0", exclusive = true), maximum(value = "1000000")))]
    pub per_sec: f64,
    /// Requests at once after a quiet spell (1 to 1,000,000).
    #[oai(validator(minimum(value = "1"), maximum(value = "1000000")))]
    pub burst: u32,
}

/// An organisation's overrides; a class left out uses the platform's limit.
#[derive(Debug, Object, serde::Deserialize)]
#[oai(deny_unknown_fields)]
#[serde(deny_unknown_fields)]
pub struct RateLimitsInput {
    /// Sends and batches, per API key.
    pub send: Option<LimitInput>,
    /// `GET` requests, per API key or sign-in token.
    pub read: Option<LimitInput>,
    /// Other writes, per API key or sign-in token.
    pub write: Option<LimitInput>,
    /// CSV bulk uploads, per API key.
    pub upload: Option<LimitInput>,
}

/// One class's limit as applied.
#[derive(Debug, Object)]
pub struct LimitView {
    /// `send`, `read`, `write`, `upload`, `auth` or `callback`.
    pub class: String,
    /// Sustained requests per second.
    pub per_sec: f64,
    /// Requests at once.
    pub burst: u32,
    /// `organization` (an override) or `platform` (the default).
    pub source: String,
}

/// The limits an organisation's callers get.
#[derive(Debug, Object)]
pub struct RateLimitsView {
    /// The organisation.
    pub organization_id: String,
    /// Every class; `auth` and `callback` are per client address and the
    /// platform's for everyone.
    pub limits: Vec<LimitView>,
}

/// One quota to set.
#[derive(Debug, Clone, Object, serde::Deserialize)]
#[oai(deny_unknown_fields)]
#[serde(deny_unknown_fields)]
pub struct QuotaInput {
    /// `email`, `sms`, `push`, `whatsapp` or `inapp`.
    #[oai(validator(pattern = "^(email|sms|push|whatsapp|inapp)$"))]
    pub channel: String,
    /// `day` (UTC) or `month` (calendar month, UTC).
    #[oai(validator(pattern = "^(day|month)$"))]
    pub period: String,
    /// Notifications allowed per period (0 to 1,000,000,000,000; 0 stops
    /// the channel).
    #[oai(validator(maximum(value = "1000000000000")))]
    pub quota: u64,
}

/// An organisation's send quotas, replacing the ones it had.
#[derive(Debug, Object, serde::Deserialize)]
#[oai(deny_unknown_fields)]
#[serde(deny_unknown_fields)]
pub struct QuotasInput {
    /// Up to 10 quotas, one per channel and period; empty removes them all.
    #[oai(validator(max_items = 10))]
    pub quotas: Vec<QuotaInput>,
}

/// One quota and what this period used of it.
#[derive(Debug, Object)]
pub struct QuotaView {
    /// The channel.
    pub channel: String,
    /// `day` or `month`.
    pub period: String,
    /// Notifications allowed per period.
    pub quota: i64,
    /// Notifications accepted this period; absent while the counters
    /// cannot be read.
    pub used: Option<i64>,
    /// What is left this period; absent with `used`.
    pub remaining: Option<i64>,
    /// When the period ends and the count starts again.
    pub resets_at: DateTime<Utc>,
}

/// An organisation's send quotas and usage.
#[derive(Debug, Object)]
pub struct QuotasView {
    /// The organisation.
    pub organization_id: String,
    /// The quotas; a channel without one is not limited.
    pub quotas: Vec<QuotaView>,
}

/// Answers with rate limits.
#[derive(Debug, ApiResponse)]
pub enum RateLimitsResponse {
    /// The limits.
    #[oai(status = 200)]
    Ok(Json<RateLimitsView>),
}

/// Answers with quotas.
#[derive(Debug, ApiResponse)]
pub enum QuotasResponse {
    /// The quotas and their usage.
    #[oai(status = 200)]
    Ok(Json<QuotasView>),
}

#[OpenApi(prefix_path = "/api/v1/admin/organizations", tag = "ApiTags::Admin")]
impl LimitsApi {
    /// The request rate limits of an organisation's callers (platform
    /// admins; an organisation's own admins may read their own).
    #[oai(
        path = "/:id/rate-limits",
        method = "get",
        operation_id = "organizations.rate_limits.get"
    )]
    async fn get_rate_limits(
        &self,
        cx: AdminCtx<'_>,
        id: Path<String>,
    ) -> Result<RateLimitsResponse, ApiError> {
        let p = cx.principal().await?;
        let act = cx.acting(&p, "organization.rate_limits.read", "organization");
        let result = readable(cx.state, &p, &id.0).await;
        let oid = act.refused(Some(&id.0), result).await?;
        let set = limits::overrides(&cx.state.pool, oid).await?;
        Ok(RateLimitsResponse::Ok(Json(rate_view(cx.state, oid, &set))))
    }

    /// Set an organisation's own request rate limits (platform admins): the
    /// classes given replace the platform's, the others use it; the whole
    /// set is replaced.
    #[oai(
        path = "/:id/rate-limits",
        method = "put",
        operation_id = "organizations.rate_limits.put"
    )]
    async fn put_rate_limits(
        &self,
        cx: AdminCtx<'_>,
        id: Path<String>,
        body: StrictJson<RateLimitsInput>,
    ) -> Result<RateLimitsResponse, ApiError> {
        let p = cx.principal().await?;
        let act = cx.acting(&p, "organization.rate_limits.update", "organization");
        let result = writable(cx.state, &p, &id.0).await;
        let oid = act.refused(Some(&id.0), result).await?;
        let b = body.0;
        let mut problems = Vec::new();
        let mut set = Vec::new();
        for (class, input) in [
            (Class::Send, b.send),
            (Class::Read, b.read),
            (Class::Write, b.write),
            (Class::Upload, b.upload),
        ] {
            let Some(input) = input else { continue };
            let limit = ClassLimit {
                per_sec: input.per_sec,
                burst: input.burst,
            };
            match check_class_limit(&limit) {
                Ok(()) => set.push(Override {
                    class: class.as_str().to_owned(),
                    per_sec: input.per_sec,
                    burst: i32::try_from(input.burst).unwrap_or(i32::MAX),
                }),
                Err(reason) => problems.push(InvalidParam {
                    name: class.as_str().to_owned(),
                    reason: reason.to_owned(),
                }),
            }
        }
        if !problems.is_empty() {
            return Err(ApiError::Invalid(problems));
        }
        let mut tx = cx.state.pool.begin().await?;
        limits::replace_overrides(&mut tx, oid, &set).await?;
        act.audit(&mut *tx, Some(oid), oid, json!({"limits": set.iter().map(|o| json!({"class": o.class, "per_sec": o.per_sec, "burst": o.burst})).collect::<Vec<_>>()}))
        .await?;
        tx.commit().await?;
        cx.state.limits.forget(oid);
        Ok(RateLimitsResponse::Ok(Json(rate_view(cx.state, oid, &set))))
    }

    /// Remove an organisation's own request rate limits (platform admins):
    /// its callers get the platform's again.
    #[oai(
        path = "/:id/rate-limits",
        method = "delete",
        operation_id = "organizations.rate_limits.delete"
    )]
    async fn delete_rate_limits(
        &self,
        cx: AdminCtx<'_>,
        id: Path<String>,
    ) -> Result<RateLimitsResponse, ApiError> {
        let p = cx.principal().await?;
        let act = cx.acting(&p, "organization.rate_limits.delete", "organization");
        let result = writable(cx.state, &p, &id.0).await;
        let oid = act.refused(Some(&id.0), result).await?;
        let mut tx = cx.state.pool.begin().await?;
        limits::replace_overrides(&mut tx, oid, &[]).await?;
        act.audit(&mut *tx, Some(oid), oid, json!({})).await?;
        tx.commit().await?;
        cx.state.limits.forget(oid);
        Ok(RateLimitsResponse::Ok(Json(rate_view(cx.state, oid, &[]))))
    }

    /// An organisation's send quotas and what the current day and month
    /// used of them (platform admins; an organisation's own admins may read
    /// their own).
    #[oai(
        path = "/:id/quotas",
        method = "get",
        operation_id = "organizations.quotas.get"
    )]
    async fn get_quotas(
        &self,
        cx: AdminCtx<'_>,
        id: Path<String>,
    ) -> Result<QuotasResponse, ApiError> {
        let p = cx.principal().await?;
        let act = cx.acting(&p, "organization.quotas.read", "organization");
        let result = readable(cx.state, &p, &id.0).await;
        let oid = act.refused(Some(&id.0), result).await?;
        let set = limits::quotas(&cx.state.pool, oid).await?;
        Ok(QuotasResponse::Ok(Json(
            quotas_view(cx.state, oid, set).await,
        )))
    }

    /// Set an organisation's send quotas (platform admins), replacing the
    /// ones it had: per channel, notifications per UTC day and/or calendar
    /// month. A send that would pass one is refused whole with 429; at 80%
    /// a `quota.warning` event is recorded in the audit log.
    #[oai(
        path = "/:id/quotas",
        method = "put",
        operation_id = "organizations.quotas.put"
    )]
    async fn put_quotas(
        &self,
        cx: AdminCtx<'_>,
        id: Path<String>,
        body: StrictJson<QuotasInput>,
    ) -> Result<QuotasResponse, ApiError> {
        let p = cx.principal().await?;
        let act = cx.acting(&p, "organization.quotas.update", "organization");
        let result = writable(cx.state, &p, &id.0).await;
        let oid = act.refused(Some(&id.0), result).await?;
        let set = check_quotas(body.0.quotas)?;
        let mut tx = cx.state.pool.begin().await?;
        limits::replace_quotas(&mut tx, oid, &set).await?;
        act.audit(&mut *tx, Some(oid), oid, json!({"quotas": set.iter().map(|q| json!({"channel": q.channel, "period": q.period, "quota": q.quota})).collect::<Vec<_>>()}))
        .await?;
        tx.commit().await?;
        cx.state.limits.forget(oid);
        Ok(QuotasResponse::Ok(Json(
            quotas_view(cx.state, oid, set).await,
        )))
    }
}

fn check_quotas(input: Vec<QuotaInput>) -> Result<Vec<Quota>, ApiError> {
    if input.len() > MAX_QUOTAS {
        return Err(ApiError::invalid(
            "quotas",
            format!("must hold at most {MAX_QUOTAS} quotas"),
        ));
    }
    let mut problems = Vec::new();
    let mut set: Vec<Quota> = Vec::new();
    for (i, q) in input.into_iter().enumerate() {
        let at = |f: &str| format!("quotas[{i}].{f}");
        let channel = Channel::parse(&q.channel);
        if channel.is_none() {
            problems.push(InvalidParam {
                name: at("channel"),
                reason: "must be email, sms, push, whatsapp or inapp".into(),
            });
        }
        if Period::parse(&q.period).is_none() {
            problems.push(InvalidParam {
                name: at("period"),
                reason: "must be day or month".into(),
            });
        }
        if q.quota > 1_000_000_000_000 {
            problems.push(InvalidParam {
                name: at("quota"),
                reason: "must be at most 1000000000000".into(),
            });
        }
        let Some(channel) = channel else { continue };
        if set
            .iter()
            .any(|s| s.channel == channel.as_str() && s.period == q.period)
        {
            problems.push(InvalidParam {
                name: at("period"),
                reason: "this channel already has a quota for this period".into(),
            });
            continue;
        }
        set.push(Quota {
            channel: channel.as_str().to_owned(),
            period: q.period,
            quota: i64::try_from(q.quota).unwrap_or(i64::MAX),
        });
    }
    if problems.is_empty() {
        Ok(set)
    } else {
        Err(ApiError::Invalid(problems))
    }
}

fn rate_view(state: &AppState, oid: TenantId, set: &[Override]) -> RateLimitsView {
    RateLimitsView {
        organization_id: oid.to_string(),
        limits: Class::ALL
            .into_iter()
            .map(|class| {
                let own = OVERRIDABLE
                    .contains(&class)
                    .then(|| set.iter().find(|o| o.class == class.as_str()))
                    .flatten();
                match own {
                    Some(o) => LimitView {
                        class: class.as_str().to_owned(),
                        per_sec: o.per_sec,
                        burst: u32::try_from(o.burst).unwrap_or(1),
                        source: "organization".to_owned(),
                    },
                    None => {
                        let d = state.limits.default_limit(class);
                        LimitView {
                            class: class.as_str().to_owned(),
                            per_sec: d.per_sec,
                            burst: d.burst,
                            source: "platform".to_owned(),
                        }
                    }
                }
            })
            .collect(),
    }
}

async fn quotas_view(state: &AppState, oid: TenantId, set: Vec<Quota>) -> QuotasView {
    let used = state.limits.usage(oid, &set).await;
    let now = Utc::now();
    QuotasView {
        organization_id: oid.to_string(),
        quotas: set
            .into_iter()
            .zip(used)
            .map(|(q, used)| QuotaView {
                resets_at: Period::parse(&q.period).map_or(now, |p| p.end(now)),
                remaining: used.map(|u| (q.quota - u).max(0)),
                used,
                channel: q.channel,
                period: q.period,
                quota: q.quota,
            })
            .collect(),
    }
}

/// The organisation an admin may read: any for a platform admin, its own
/// for an organisation's admin (another id answers 404).
async fn readable(state: &AppState, p: &Principal, raw: &str) -> Result<TenantId, ApiError> {
    let id = crate::extract::id(raw, "organization")?;
    if !p.reach().covers(id) {
        return Err(ApiError::NotFound("organization"));
    }
    organizations::get(&state.pool, id)
        .await?
        .ok_or(ApiError::NotFound("organization"))?;
    Ok(id)
}

/// The organisation a platform admin changes: 404 for another
/// organisation's admin naming anyone but its own, 403 for its own.
async fn writable(state: &AppState, p: &Principal, raw: &str) -> Result<TenantId, ApiError> {
    if !p.platform {
        let id: Option<TenantId> = raw.parse().ok();
        if id != Some(p.caller.tenant_id) {
            return Err(ApiError::NotFound("organization"));
        }
    }
    p.require_platform()?;
    let id = crate::extract::id(raw, "organization")?;
    organizations::get(&state.pool, id)
        .await?
        .ok_or(ApiError::NotFound("organization"))?;
    Ok(id)
}
