//! System broadcasts under `/api/v1/admin/broadcasts`: a platform admin's
//! message to every subscriber of every organisation, or of the ones named.
//!
//! A broadcast is stored with one in-app notification per subscriber
//! (category `system`), and optionally one email per subscriber with an
//! address, in one transaction; they are born undispatched and the
//! dispatcher feeds them to the channel workers under its window, which put
//! them in the inboxes (`notification.created` to each user) or send them.
//! After the commit every organisation addressed hears a `system.alert`
//! event on its `org` real-time topic. A `critical` broadcast ignores
//! opt-outs; the others respect each subscriber's preferences. Sending is
//! audited (`broadcast.send`), refusals too.

use chrono::{DateTime, Utc};
use poem_openapi::{
    ApiResponse, Object, OpenApi,
    param::{Header, Path},
    payload::Json,
};
use shared::{
    db::topics::{self, Broadcast},
    domain::{ACTION_URL_REASON, Problems, TenantId, action_url_ok, one_line_ok},
};

use crate::extract::{idempotency_key, request_hash};
use crate::{
    AppState, body::StrictJson, error::ApiError, extract::AdminCtx, routes::ApiTags,
    services::broadcasts as service,
};

/// Most organisations one broadcast names.
const MAX_ORGANIZATIONS: usize = 1_000;

/// The broadcast endpoints.
#[derive(Debug)]
pub struct BroadcastsApi;

/// A system broadcast.
#[derive(Debug, Clone, Object, serde::Serialize, serde::Deserialize)]
#[oai(deny_unknown_fields)]
#[serde(deny_unknown_fields)]
pub struct BroadcastRequest {
    /// The title: one line, 1 to 200 characters.
    pub title: String,
    /// The message: 1 to 5,000 characters.
    pub body: String,
    /// `info` (the default), `warning` or `critical`. A critical broadcast
    /// reaches subscribers who opted out of in-app or email messages.
    pub severity: Option<String>,
    /// Where a click leads: an `https://` or `http://` URL, or a path
    /// starting with `/`.
    pub action_url: Option<String>,
    /// Also email every subscriber who has an address (default false).
    pub email: Option<bool>,
    /// The email's subject (default: the title); one line, at most 998
    /// characters.
    pub email_subject: Option<String>,
    /// The organisations' ids (1 to 1,000, each once); left out: every
    /// organisation.
    #[oai(validator(min_items = 1, max_items = 1000))]
    pub organizations: Option<Vec<String>>,
}

/// A broadcast.
#[derive(Debug, Clone, Object)]
pub struct BroadcastView {
    /// Its id.
    pub id: String,
    /// Its title.
    pub title: String,
    /// `info`, `warning` or `critical`.
    pub severity: String,
    /// The organisations named; absent: every organisation.
    pub organizations: Option<Vec<String>>,
    /// In-app notifications created (one per subscriber).
    pub inapp: i64,
    /// Email notifications created (one per subscriber with an address).
    pub email: i64,
    /// Notifications per channel and status now, e.g. `{"inapp": {"sent": 3}}`.
    pub counts: serde_json::Value,
    /// When it was sent.
    pub created_at: DateTime<Utc>,
    /// Where to read it again.
    pub status_url: String,
}

/// Answers to a broadcast.
#[derive(Debug, ApiResponse)]
pub enum BroadcastResponse {
    /// Accepted: every notification is committed. With the same
    /// `Idempotency-Key` and body the first answer is returned again, with
    /// `Idempotent-Replayed: true`.
    #[oai(status = 202)]
    Accepted(
        Json<BroadcastView>,
        #[oai(header = "Location")] String,
        #[oai(header = "Idempotent-Replayed")] Option<String>,
    ),
    /// The broadcast.
    #[oai(status = 200)]
    Ok(Json<BroadcastView>),
}

/// A checked request: its severity, email subject (when it emails) and
/// organisations (`None`: all).
type Checked = (String, Option<String>, Option<Vec<TenantId>>);

/// Checks a request.
fn check(req: &BroadcastRequest) -> Result<Checked, ApiError> {
    let mut p = Problems::default();
    if !one_line_ok(&req.title, 200) {
        p.add("title", "must be 1 to 200 characters on one line");
    }
    if req.body.trim().is_empty() || req.body.chars().count() > 5_000 {
        p.add("body", "must be 1 to 5,000 characters");
    }
    let severity = req.severity.clone().unwrap_or_else(|| "info".into());
    if !["info", "warning", "critical"].contains(&severity.as_str()) {
        p.add("severity", "must be `info`, `warning` or `critical`");
    }
    if let Some(u) = &req.action_url
        && !action_url_ok(u)
    {
        p.add("action_url", ACTION_URL_REASON);
    }
    let email = req.email.unwrap_or(false);
    let subject = match (&req.email_subject, email) {
        (Some(_), false) => {
            p.add("email_subject", "is only used with `\"email\": true`");
            None
        }
        (Some(s), true) if !one_line_ok(s, 998) => {
            p.add(
                "email_subject",
                "must be one line of at most 998 characters",
            );
            None
        }
        (Some(s), true) => Some(s.clone()),
        (None, true) => Some(req.title.clone()),
        (None, false) => None,
    };
    let orgs = match &req.organizations {
        None => None,
        Some(list) if list.is_empty() || list.len() > MAX_ORGANIZATIONS => {
            p.add(
                "organizations",
                format!("must name 1 to {MAX_ORGANIZATIONS} organisations; leave it out for all"),
            );
            None
        }
        Some(list) => {
            let mut ids: Vec<TenantId> = Vec::with_capacity(list.len());
            for (i, raw) in list.iter().enumerate() {
                match raw.parse::<TenantId>() {
                    Ok(id) if ids.contains(&id) => {
                        p.add(format!("organizations[{i}]"), "is listed twice")
                    }
                    Ok(id) => ids.push(id),
                    Err(_) => p.add(format!("organizations[{i}]"), "is not an organisation id"),
                }
            }
            Some(ids)
        }
    };
    if p.is_empty() {
        Ok((severity, subject, orgs))
    } else {
        Err(p.into())
    }
}

async fn view(state: &AppState, b: Broadcast) -> Result<BroadcastView, ApiError> {
    let mut counts = serde_json::Map::new();
    for (channel, status, n) in topics::broadcast_counts(&state.pool, b.id).await? {
        let per = counts
            .entry(channel)
            .or_insert_with(|| serde_json::Value::Object(Default::default()));
        per[status] = serde_json::json!(n);
    }
    Ok(BroadcastView {
        id: b.id.to_string(),
        title: b.title,
        severity: b.severity,
        organizations: b
            .organizations
            .map(|o| o.iter().map(ToString::to_string).collect()),
        inapp: b.inapp_count,
        email: b.email_count,
        counts: serde_json::Value::Object(counts),
        created_at: b.created_at,
        status_url: format!("/api/v1/admin/broadcasts/{}", b.id),
    })
}

#[OpenApi(prefix_path = "/api/v1/admin/broadcasts", tag = "ApiTags::Admin")]
impl BroadcastsApi {
    /// Broadcast a system message (platform admins): an in-app message to
    /// every subscriber of every organisation, or of the ones named, and
    /// optionally an email to those with an address. Each organisation's
    /// connected clients on the `org` topic hear it at once as `system.alert`.
    /// `Idempotency-Key` makes retries safe. Audited.
    #[oai(path = "/", method = "post", operation_id = "broadcasts.send")]
    async fn send(
        &self,
        cx: AdminCtx<'_>,
        #[oai(name = "Idempotency-Key")] key: Header<Option<String>>,
        body: StrictJson<BroadcastRequest>,
    ) -> Result<BroadcastResponse, ApiError> {
        let p = cx.principal().await?;
        let act = cx.acting(&p, "broadcast.send", "broadcast");
        act.refused(None, p.require_platform()).await?;
        let key = idempotency_key(key.0)?;
        let req = body.0;
        let idempotency = key.map(|k| (k, request_hash(&req)));
        let (severity, email_subject, organizations) = check(&req)?;
        let message = service::Message {
            title: req.title,
            body: req.body,
            severity,
            action_url: req.action_url,
            email_subject,
            organizations,
        };
        let sent = service::send(cx.state, &act, &p.caller.actor, message, idempotency).await?;
        let view = view(cx.state, sent.broadcast).await?;
        let location = view.status_url.clone();
        Ok(BroadcastResponse::Accepted(
            Json(view),
            location,
            sent.replayed.then(|| "true".to_owned()),
        ))
    }

    /// Read a broadcast (platform admins): its notifications per channel and
    /// status.
    #[oai(path = "/:id", method = "get", operation_id = "broadcasts.get")]
    async fn get(&self, cx: AdminCtx<'_>, id: Path<String>) -> Result<BroadcastResponse, ApiError> {
        let p = cx.principal().await?;
        let act = cx.acting(&p, "broadcast.read", "broadcast");
        act.refused(Some(&id.0), p.require_platform()).await?;
        let id = crate::extract::id::<uuid::Uuid>(&id.0, "broadcast")?;
        let b = topics::get_broadcast(&cx.state.pool, id)
            .await?
            .ok_or(ApiError::NotFound("broadcast"))?;
        Ok(BroadcastResponse::Ok(Json(view(cx.state, b).await?)))
    }
}
