//! What the failed-work endpoints read from callers: filters (query or
//! body), selections of ids, cursors. Every field is checked here and a bad
//! one answers 400 naming it; an organisation the caller may not see
//! answers 404.

use chrono::{DateTime, Utc};
use poem_openapi::Object;
use shared::{
    db::{
        failed_work::{Filter, GroupKey, KINDS, Kind, MAX_SELECTION},
        scope::Reach,
    },
    domain::TenantId,
};
use uuid::Uuid;

use crate::{access::Principal, error::ApiError};

/// The channels a notification can have.
pub const CHANNELS: [&str; 5] = ["email", "sms", "push", "whatsapp", "inapp"];

/// A filter of failed items, as a request body (and the query's filters).
#[derive(Debug, Clone, Default, Object, serde::Deserialize)]
#[oai(deny_unknown_fields)]
#[serde(deny_unknown_fields)]
pub struct FilterBody {
    /// Failed at or after (RFC 3339); not after `until`.
    pub since: Option<DateTime<Utc>>,
    /// Failed before (RFC 3339).
    pub until: Option<DateTime<Utc>>,
    /// One organisation's items (platform admins; an organisation admin's
    /// are always its own, and another organisation is not found).
    pub organization_id: Option<Uuid>,
    /// `notification`, `webhook`, `bulk_job` or `shipment`.
    #[oai(validator(pattern = "^(notification|webhook|bulk_job|shipment)$"))]
    pub kind: Option<String>,
    /// A notification channel: `email`, `sms`, `push`, `whatsapp`, `inapp`.
    #[oai(validator(pattern = "^(email|sms|push|whatsapp|inapp)$"))]
    pub channel: Option<String>,
    /// A provider (a provider config's name, `smtp`, or `ups`).
    #[oai(validator(min_length = 1, max_length = 100))]
    pub provider: Option<String>,
    /// An error class, e.g. `mail_refused`, `circuit_open`, `http_5xx`.
    #[oai(validator(pattern = "^[a-z0-9_]{1,64}$"))]
    pub error_class: Option<String>,
    /// A group's `key` from `GET /api/v1/ops/failed/groups`.
    #[oai(validator(pattern = "^[A-Za-z0-9_-]{1,1024}$"))]
    pub group: Option<String>,
}

/// Years Postgres can store; a bound beyond them selects what the nearest
/// bound within would.
fn clamp(t: Option<DateTime<Utc>>) -> Option<DateTime<Utc>> {
    let low = DateTime::<Utc>::from_timestamp(-62_135_596_800, 0).unwrap_or_default();
    let high = DateTime::<Utc>::from_timestamp(253_402_300_799, 0).unwrap_or_default();
    t.map(|t| t.clamp(low, high))
}

fn token(field: &str, raw: Option<&str>, max: usize) -> Result<Option<String>, ApiError> {
    match raw {
        None => Ok(None),
        Some(s)
            if !s.is_empty() && s.chars().count() <= max && s.chars().all(|c| !c.is_control()) =>
        {
            Ok(Some(s.to_owned()))
        }
        Some(_) => Err(ApiError::invalid(
            field,
            format!("must be 1 to {max} printable characters"),
        )),
    }
}

/// The reach an optional `organization_id` narrows to: malformed is 400,
/// another organisation than an organisation admin's own is 404.
pub fn reach(p: &Principal, raw: Option<&str>, field: &str) -> Result<Reach, ApiError> {
    if raw.is_some_and(|raw| raw.parse::<TenantId>().is_err()) {
        return Err(ApiError::invalid(
            field,
            "must be an organisation id (a UUID)",
        ));
    }
    p.reach_of(raw)
}

/// Parses a kind.
pub fn kind(field: &str, raw: &str) -> Result<Kind, ApiError> {
    Kind::parse(raw)
        .ok_or_else(|| ApiError::invalid(field, format!("must be one of {}", KINDS.join(", "))))
}

/// Checks a filter and the reach it is confined to (what `p` may see).
pub fn filter(p: &Principal, f: &FilterBody, prefix: &str) -> Result<(Reach, Filter), ApiError> {
    let name = |field: &str| format!("{prefix}{field}");
    let kind = f
        .kind
        .as_deref()
        .map(|k| kind(&name("kind"), k))
        .transpose()?;
    if let Some(c) = f.channel.as_deref()
        && !CHANNELS.contains(&c)
    {
        return Err(ApiError::invalid(
            name("channel"),
            format!("must be one of {}", CHANNELS.join(", ")),
        ));
    }
    let error_class = token(&name("error_class"), f.error_class.as_deref(), 64)?;
    if error_class.as_deref().is_some_and(|e| {
        !e.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
    }) {
        return Err(ApiError::invalid(
            name("error_class"),
            "must be a class name: lower-case letters, digits and _",
        ));
    }
    let (since, until) = (clamp(f.since), clamp(f.until));
    if let (Some(s), Some(u)) = (since, until)
        && s > u
    {
        return Err(ApiError::invalid(name("since"), "must not be after until"));
    }
    let group = f
        .group
        .as_deref()
        .map(|g| {
            GroupKey::decode(g).ok_or_else(|| {
                ApiError::invalid(name("group"), "is not a group key this API returned")
            })
        })
        .transpose()?;
    let reach = reach(
        p,
        f.organization_id.map(|o| o.to_string()).as_deref(),
        &name("organization_id"),
    )?;
    let filter = Filter {
        kind,
        channel: f.channel.clone(),
        provider: token(&name("provider"), f.provider.as_deref(), 100)?,
        error_class,
        since,
        until,
        group,
    };
    Ok((reach, filter))
}

/// One item of a selection.
#[derive(Debug, Clone, Object, serde::Deserialize)]
#[oai(deny_unknown_fields)]
#[serde(deny_unknown_fields)]
pub struct ItemRef {
    /// `notification`, `webhook`, `bulk_job` or `shipment`.
    #[oai(validator(pattern = "^(notification|webhook|bulk_job|shipment)$"))]
    pub kind: String,
    /// Its id.
    pub id: Uuid,
}

/// What a retry or discard applies to: `ids` (answered at once) or a
/// `filter` (run in the background as an action). Exactly one.
#[derive(Debug, Clone, Object, serde::Deserialize)]
#[oai(deny_unknown_fields)]
#[serde(deny_unknown_fields)]
pub struct SelectionBody {
    /// 1 to 1,000 items.
    #[oai(validator(min_items = 1, max_items = 1000))]
    pub ids: Option<Vec<ItemRef>>,
    /// Everything that matches (and failed before the action started).
    pub filter: Option<FilterBody>,
}

/// A checked selection.
#[derive(Debug)]
pub enum Selection {
    /// These items.
    Ids(Vec<(Kind, Uuid)>),
    /// What this matches within this reach.
    Filter(Reach, Filter),
}

/// Checks a selection body.
pub fn selection(p: &Principal, body: &SelectionBody) -> Result<Selection, ApiError> {
    match (&body.ids, &body.filter) {
        (Some(_), Some(_)) | (None, None) => Err(ApiError::invalid(
            "ids",
            "give either ids (up to 1000 items) or filter, not both",
        )),
        (Some(ids), None) => {
            if ids.is_empty() || ids.len() > MAX_SELECTION {
                return Err(ApiError::invalid(
                    "ids",
                    format!("must hold 1 to {MAX_SELECTION} items; use filter for more"),
                ));
            }
            ids.iter()
                .enumerate()
                .map(|(i, r)| Ok((kind(&format!("ids[{i}].kind"), &r.kind)?, r.id)))
                .collect::<Result<Vec<_>, ApiError>>()
                .map(Selection::Ids)
        }
        (None, Some(f)) => filter(p, f, "filter.").map(|(r, f)| Selection::Filter(r, f)),
    }
}
