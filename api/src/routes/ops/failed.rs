//! Operations: failed work (dead letters) and what operators do with it.
//!
//! `GET /failed/groups` groups what failed (notifications `failed` or
//! `bounced`, webhook deliveries that gave up, failed bulk CSV jobs,
//! shipments whose UPS polls keep failing) by kind, error class, provider
//! and channel; `GET /failed` lists the items. `POST /failed/retry` and
//! `/failed/discard` act on up to 1,000 ids at once, or on everything a
//! filter matches as a background action (`/actions/{id}`) that a
//! scheduler advances 1,000 rows a step and that can be cancelled.
//!
//! A platform admin sees and acts on every organisation (or one, with
//! `organization_id`); an organisation admin only on its own: other
//! organisations' ids are not found. Nothing returned holds a recipient, a
//! body or a provider's own words. Every retry, discard and cancel is
//! audited.

pub mod input;

use crate::access::Act;
use crate::extract::{Cursor, PageSize, Params, PathId, page};
use chrono::{DateTime, Utc};
use poem_openapi::{
    ApiResponse, Object, OpenApi,
    param::Path,
    payload::Json,
    validation::{MaxLength, MinLength, Pattern},
};
use serde_json::{Value, json};
use shared::{
    db::{
        failed_work::{self, Action, Filter},
        ops_actions::{self, OpsAction},
        scope::Reach,
    },
    domain::OpsActionId,
};
use uuid::Uuid;

use self::input::{FilterBody, Selection, SelectionBody};
use crate::{access::Principal, body::StrictJson, error::ApiError, extract::AdminCtx};

/// The failed-work endpoints.
#[derive(Debug)]
pub struct OpsFailedApi;

/// One group of failures.
#[derive(Debug, Object)]
pub struct FailedGroup {
    /// Opaque; pass back as `group` to list, retry or discard the group.
    pub key: String,
    /// `notification`, `webhook`, `bulk_job` or `shipment`.
    pub kind: String,
    /// What went wrong, as a stable name (`mail_refused`, `circuit_open`,
    /// `http_5xx`, `file_empty`, …; `other` when unclassified).
    pub error_class: String,
    /// The provider that failed them (a provider config's name, `smtp`,
    /// `ups`), when the kind has one.
    pub provider: Option<String>,
    /// The notifications' channel.
    pub channel: Option<String>,
    /// Items in the group.
    pub count: i64,
    /// The earliest failure.
    pub first_seen: DateTime<Utc>,
    /// The latest failure.
    pub last_seen: DateTime<Utc>,
    /// A few of its items' ids.
    pub sample_ids: Vec<String>,
    /// Organisations with items in it.
    pub organizations: i64,
}

/// Groups, largest first.
#[derive(Debug, Object)]
pub struct FailedGroups {
    /// At most 500 groups.
    pub groups: Vec<FailedGroup>,
    /// Items in them.
    pub total: i64,
}

/// One failed item.
#[derive(Debug, Object)]
pub struct FailedItem {
    /// `notification`, `webhook`, `bulk_job` or `shipment`.
    pub kind: String,
    /// Its id.
    pub id: String,
    /// Its organisation.
    pub organization_id: String,
    /// The notification's channel.
    pub channel: Option<String>,
    /// The provider that failed it.
    pub provider: Option<String>,
    /// Its error class.
    pub error_class: String,
    /// What went wrong, in the platform's words (never a provider's text, a
    /// recipient or content).
    pub error: Option<String>,
    /// When it failed.
    pub failed_at: DateTime<Utc>,
    /// Attempts made (failed polls in a row for a shipment; none for a bulk
    /// job).
    pub attempts: Option<i32>,
}

/// A page of failed items.
#[derive(Debug, Object)]
pub struct FailedPage {
    /// Items, latest failure first.
    pub items: Vec<FailedItem>,
    /// Pass as `cursor` for the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

/// A retry of a selection.
#[derive(Debug, Object)]
pub struct Retried {
    /// Made due again.
    pub retried: u64,
    /// Found but left as they were: no longer failed (already retried or
    /// discarded), content erased by retention, a bulk job (uploaded again,
    /// not retried), or a webhook whose endpoint is disabled.
    pub skipped: u64,
    /// Not found (also another organisation's).
    pub not_found: u64,
}

/// A discard of a selection.
#[derive(Debug, Object)]
pub struct Discarded {
    /// Taken off the failed lists.
    pub discarded: u64,
    /// Found but no longer failed (already retried or discarded).
    pub skipped: u64,
    /// Not found (also another organisation's).
    pub not_found: u64,
}

/// A retry or discard of everything a filter matched, run in steps.
#[derive(Debug, Object)]
pub struct OpsActionView {
    /// Its id.
    pub id: String,
    /// `retry` or `discard`.
    pub action: String,
    /// `running`, `completed`, `cancelled` or `failed`.
    pub status: String,
    /// The organisation it is confined to; absent: every organisation.
    pub organization_id: Option<String>,
    /// The filter it applies (the group as its parts).
    pub filter: Value,
    /// Items the filter matched when it started.
    pub matched: i64,
    /// Items handled so far.
    pub processed: i64,
    /// Of those, retried or discarded.
    pub applied: i64,
    /// Of those, left as they were (see `skipped` of a selection).
    pub skipped: i64,
    /// When it started.
    pub created_at: DateTime<Utc>,
    /// When it ended.
    pub finished_at: Option<DateTime<Utc>>,
    /// Who started it: `user:<id>`, `api_key:<id>` or `cli`.
    pub created_by: String,
}

impl From<OpsAction> for OpsActionView {
    fn from(a: OpsAction) -> Self {
        Self {
            id: a.id.to_string(),
            action: a.action,
            status: a.status,
            organization_id: a.tenant_id.map(|t| t.to_string()),
            filter: serde_json::to_value(&a.filter.0).unwrap_or(Value::Null),
            matched: a.matched,
            processed: a.processed,
            applied: a.applied,
            skipped: a.skipped,
            created_at: a.created_at,
            finished_at: a.finished_at,
            created_by: a.created_by,
        }
    }
}

/// Answers with groups.
#[derive(Debug, ApiResponse)]
pub enum GroupsResponse {
    /// The groups.
    #[oai(status = 200)]
    Ok(Json<FailedGroups>),
}

/// Answers with a page.
#[derive(Debug, ApiResponse)]
pub enum PageResponse {
    /// A page.
    #[oai(status = 200)]
    Ok(Json<FailedPage>),
}

/// Answers a retry.
#[derive(Debug, ApiResponse)]
pub enum RetryResponse {
    /// The selection was handled.
    #[oai(status = 200)]
    Done(Json<Retried>),
    /// The action runs in the background; poll `Location`.
    #[oai(status = 202)]
    Started(Json<Box<OpsActionView>>, #[oai(header = "Location")] String),
}

/// Answers a discard.
#[derive(Debug, ApiResponse)]
pub enum DiscardResponse {
    /// The selection was handled.
    #[oai(status = 200)]
    Done(Json<Discarded>),
    /// The action runs in the background; poll `Location`.
    #[oai(status = 202)]
    Started(Json<Box<OpsActionView>>, #[oai(header = "Location")] String),
}

/// Answers with an action.
#[derive(Debug, ApiResponse)]
pub enum ActionResponse {
    /// The action.
    #[oai(status = 200)]
    Ok(Json<OpsActionView>),
}

/// What retry and discard share.
enum Applied {
    Done(failed_work::Counts),
    Started(Box<OpsAction>),
}

crate::query_params! {
    /// Which failed work the groups and the list show.
    pub struct FailedQuery {
        since: Option<DateTime<Utc>>,
        until: Option<DateTime<Utc>>,
        organization_id: Option<Uuid>,
        kind: Option<String> where [Pattern::new("^(notification|webhook|bulk_job|shipment)$")],
        channel: Option<String> where [Pattern::new("^(email|sms|push|whatsapp|inapp)$")],
        provider: Option<String> where [MinLength::new(1), MaxLength::new(100)],
        error_class: Option<String> where [Pattern::new("^[a-z0-9_]{1,64}$")],
    }
}

crate::query_params! {
    /// One group of the list, and the page.
    pub struct FailedPageQuery {
        group: Option<String> where [Pattern::new("^[A-Za-z0-9_-]{1,1024}$")],
        cursor: Option<Cursor<failed_work::Seek>>,
        limit: PageSize,
    }
}

/// The query's filter, of `group` when one is named.
fn query_filter(
    p: &Principal,
    q: FailedQuery,
    group: Option<String>,
) -> Result<(Reach, Filter), ApiError> {
    input::filter(
        p,
        &FilterBody {
            since: q.since,
            until: q.until,
            organization_id: q.organization_id,
            kind: q.kind,
            channel: q.channel,
            provider: q.provider,
            error_class: q.error_class,
            group,
        },
        "",
    )
}

/// Checks the body, applies it (or starts the action) and audits it.
async fn apply(
    cx: &AdminCtx<'_>,
    action: Action,
    body: &SelectionBody,
) -> Result<Applied, ApiError> {
    let name = format!("ops.failed.{}", action.as_str());
    let p = cx.principal().await?;
    let selection = cx
        .acting(&p, &name, "failed_work")
        .refused(None, input::selection(&p, body))
        .await?;
    match selection {
        Selection::Ids(items) => {
            let mut tx = cx.state.pool.begin().await?;
            let counts = failed_work::apply_selection(&mut tx, p.reach(), action, &items).await?;
            let ids: Vec<String> = items
                .iter()
                .map(|(k, id)| format!("{}:{id}", k.as_str()))
                .collect();
            p.audit(
                &mut *tx,
                cx.request_id,
                None,
                Act {
                    action: &name,
                    resource_type: "failed_work",
                },
                "selection",
                json!({"ids": ids, "applied": counts.applied, "skipped": counts.skipped,
                       "not_found": counts.not_found}),
            )
            .await?;
            tx.commit().await?;
            Ok(Applied::Done(counts))
        }
        Selection::Filter(reach, filter) => {
            let started = ops_actions::create(
                &cx.state.pool,
                reach,
                action,
                &filter,
                &p.caller.actor,
                Some(p.caller.tenant_id),
            )
            .await?;
            p.audit(
                &cx.state.pool,
                cx.request_id,
                reach.tenant(),
                Act {
                    action: &name,
                    resource_type: "ops_action",
                },
                started.id,
                json!({"filter": serde_json::to_value(&filter).unwrap_or(Value::Null),
                       "matched": started.matched}),
            )
            .await?;
            Ok(Applied::Started(Box::new(started)))
        }
    }
}

fn location(a: &OpsAction) -> String {
    format!("/api/v1/ops/actions/{}", a.id)
}

#[OpenApi(
    prefix_path = "/api/v1/ops",
    tag = "crate::routes::ApiTags::Operations"
)]
impl OpsFailedApi {
    /// Failed work grouped by kind, error class, provider and channel,
    /// largest group first, filtered by failure time (`since` inclusive,
    /// `until` exclusive), `organization_id` (platform admins), `kind`,
    /// `channel`, `provider` and `error_class`.
    #[oai(
        path = "/failed/groups",
        method = "get",
        operation_id = "ops.failed.groups"
    )]
    async fn groups(
        &self,
        cx: AdminCtx<'_>,
        query: Params<FailedQuery>,
    ) -> Result<GroupsResponse, ApiError> {
        let p = cx.principal().await?;
        let act = cx.acting(&p, "ops.failed.groups", "failed_work");
        let filter = query_filter(&p, query.0, None);
        let (reach, filter) = act.refused(None, filter).await?;
        let rows = failed_work::groups(&cx.state.pool, reach, &filter).await?;
        let total = rows.iter().map(|g| g.count).sum();
        let groups = rows
            .into_iter()
            .map(|g| FailedGroup {
                key: g.key().encode(),
                kind: g.kind,
                error_class: g.error_class,
                provider: g.provider,
                channel: g.channel,
                count: g.count,
                first_seen: g.first_seen,
                last_seen: g.last_seen,
                sample_ids: g.sample_ids.iter().map(ToString::to_string).collect(),
                organizations: g.organizations,
            })
            .collect();
        Ok(GroupsResponse::Ok(Json(FailedGroups { groups, total })))
    }

    /// Failed items, latest failure first, with the same filters as the
    /// groups and `group` (a group's `key`); paged with `cursor` and
    /// `limit` (1 to 500, default 50).
    #[oai(path = "/failed", method = "get", operation_id = "ops.failed.list")]
    async fn list(
        &self,
        cx: AdminCtx<'_>,
        query: Params<FailedQuery>,
        page_query: Params<FailedPageQuery>,
    ) -> Result<PageResponse, ApiError> {
        let FailedPageQuery {
            group,
            cursor,
            limit,
        } = page_query.0;
        let p = cx.principal().await?;
        let act = cx.acting(&p, "ops.failed.list", "failed_work");
        let filter = query_filter(&p, query.0, group);
        let (reach, filter) = act.refused(None, filter).await?;
        let after = cursor.map(Cursor::get).transpose()?;
        let rows = failed_work::list(&cx.state.pool, reach, &filter, after, limit.fetch()).await?;
        let (rows, next_cursor) = page(rows, limit, |r| (r.failed_at, r.id));
        let items = rows
            .into_iter()
            .map(|r| FailedItem {
                kind: r.kind,
                id: r.id.to_string(),
                organization_id: r.tenant_id.to_string(),
                channel: r.channel,
                provider: r.provider,
                error_class: r.error_class,
                error: r.error,
                failed_at: r.failed_at,
                attempts: r.attempts,
            })
            .collect();
        Ok(PageResponse::Ok(Json(FailedPage { items, next_cursor })))
    }

    /// Retries failed items: `{"ids": [{"kind", "id"}]}` (up to 1,000,
    /// answered at once with counts) or `{"filter": {…, "group"}}` (202 and
    /// an action that retries everything matched, 1,000 items a step). A
    /// notification becomes due again like a fresh one, with its full
    /// attempts; one whose content retention erased is skipped. A webhook
    /// delivery is queued again. A shipment is polled again at once.
    #[oai(
        path = "/failed/retry",
        method = "post",
        operation_id = "ops.failed.retry"
    )]
    async fn retry(
        &self,
        cx: AdminCtx<'_>,
        body: StrictJson<SelectionBody>,
    ) -> Result<RetryResponse, ApiError> {
        Ok(match apply(&cx, Action::Retry, &body.0).await? {
            Applied::Done(c) => RetryResponse::Done(Json(Retried {
                retried: c.applied,
                skipped: c.skipped,
                not_found: c.not_found,
            })),
            Applied::Started(a) => {
                RetryResponse::Started(Json(Box::new((*a).clone().into())), location(&a))
            }
        })
    }

    /// Discards failed items (same bodies as retry): they leave the failed
    /// lists and keep their status and history (a notification stays
    /// `failed` for its sender).
    #[oai(
        path = "/failed/discard",
        method = "post",
        operation_id = "ops.failed.discard"
    )]
    async fn discard(
        &self,
        cx: AdminCtx<'_>,
        body: StrictJson<SelectionBody>,
    ) -> Result<DiscardResponse, ApiError> {
        Ok(match apply(&cx, Action::Discard, &body.0).await? {
            Applied::Done(c) => DiscardResponse::Done(Json(Discarded {
                discarded: c.applied,
                skipped: c.skipped,
                not_found: c.not_found,
            })),
            Applied::Started(a) => {
                DiscardResponse::Started(Json(Box::new((*a).clone().into())), location(&a))
            }
        })
    }

    /// A retry or discard action and its progress.
    #[oai(
        path = "/actions/:id",
        method = "get",
        operation_id = "ops.actions.get"
    )]
    async fn action(
        &self,
        cx: AdminCtx<'_>,
        id: Path<PathId<OpsActionId>>,
    ) -> Result<ActionResponse, ApiError> {
        let p = cx.principal().await?;
        let act = cx.acting(&p, "ops.actions.get", "ops_action");
        let id = id.0.get("action")?;
        let found = ops_actions::get(&cx.state.pool, p.reach(), id)
            .await?
            .ok_or(ApiError::NotFound("action"));
        let a = act.refused(Some(&id.to_string()), found).await?;
        Ok(ActionResponse::Ok(Json(a.into())))
    }

    /// Cancels a running action: no step starts after this answer (items
    /// already handled stay handled). A finished action is returned as it
    /// is.
    #[oai(
        path = "/actions/:id/cancel",
        method = "post",
        operation_id = "ops.actions.cancel"
    )]
    async fn cancel(
        &self,
        cx: AdminCtx<'_>,
        id: Path<PathId<OpsActionId>>,
    ) -> Result<ActionResponse, ApiError> {
        let p = cx.principal().await?;
        let act = cx.acting(&p, "ops.actions.cancel", "ops_action");
        let id = id.0.get("action")?;
        let found = ops_actions::cancel(&cx.state.pool, p.reach(), id)
            .await?
            .ok_or(ApiError::NotFound("action"));
        let a = act.refused(Some(&id.to_string()), found).await?;
        act.audit(
            &cx.state.pool,
            a.tenant_id,
            a.id,
            json!({"status": a.status, "processed": a.processed, "matched": a.matched}),
        )
        .await?;
        Ok(ActionResponse::Ok(Json(a.into())))
    }
}
