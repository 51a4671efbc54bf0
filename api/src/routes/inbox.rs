//! `/api/v1/users/me/notifications`: the signed-in user's in-app inbox.
//!
//! The user is the JWT's subject in the JWT's tenant; a notification of
//! anyone else, in this tenant or another, answers 404. Lists are newest
//! first, paginated by an opaque cursor.

use chrono::{DateTime, Utc};
use poem_openapi::{
    ApiResponse, Object, OpenApi,
    param::{Path, Query},
    payload::Json,
};
use serde_json::{Value, json};
use shared::{
    db::{
        events,
        inbox::{self, Change, Filter, Item},
        subscribers,
    },
    domain::{NotificationId, SubscriberId},
    events::{entry_view, record_inbox_events},
};
use sqlx::{Postgres, Transaction};

use crate::{
    AppState,
    error::ApiError,
    extract::UserCtx,
    extract::{Cursor, PageSize, Params, PathId, page},
    identity::Identity,
    routes::ApiTags,
};

/// Most ids in one bulk delete.
const MAX_BULK: usize = 100;

/// The inbox endpoints.
#[derive(Debug)]
pub struct InboxApi;

/// One inbox entry.
#[derive(Debug, Object)]
pub struct InboxEntry {
    /// The notification's id.
    pub id: String,
    /// Its title.
    pub title: String,
    /// Its message.
    pub body: Option<String>,
    /// Where a click leads.
    pub action_url: Option<String>,
    /// Data for the app.
    pub data: Value,
    /// Its category.
    pub category: Option<String>,
    /// Whether it was read.
    pub read: bool,
    /// When it was read.
    pub read_at: Option<DateTime<Utc>>,
    /// Whether it is archived.
    pub archived: bool,
    /// When it arrived.
    pub created_at: DateTime<Utc>,
}

impl From<Item> for InboxEntry {
    fn from(item: Item) -> Self {
        let c = item.content.0;
        let text = |k: &str| c.get(k).and_then(Value::as_str).map(str::to_owned);
        Self {
            id: item.id.to_string(),
            title: text("title").unwrap_or_default(),
            body: text("body"),
            action_url: text("action_url"),
            data: c
                .get("data")
                .cloned()
                .unwrap_or(Value::Object(Default::default())),
            category: item.category,
            read: item.read_at.is_some(),
            read_at: item.read_at,
            archived: item.archived_at.is_some(),
            created_at: item.created_at,
        }
    }
}

/// A page of the inbox.
#[derive(Debug, Object)]
pub struct InboxPage {
    /// Entries, newest first.
    pub items: Vec<InboxEntry>,
    /// Pass as `cursor` for the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

/// The unread count.
#[derive(Debug, Object)]
pub struct UnreadCount {
    /// Unread entries that are not archived.
    pub unread: i64,
}

/// How many entries an operation changed.
#[derive(Debug, Object)]
pub struct Changed {
    /// The number of entries.
    pub count: u64,
}

/// Answers with a page.
#[derive(Debug, ApiResponse)]
pub enum PageResponse {
    /// A page.
    #[oai(status = 200)]
    Ok(Json<InboxPage>),
}

/// Answers with one entry.
#[derive(Debug, ApiResponse)]
pub enum EntryResponse {
    /// The entry.
    #[oai(status = 200)]
    Ok(Json<InboxEntry>),
}

/// Answers with the unread count.
#[derive(Debug, ApiResponse)]
pub enum CountResponse {
    /// The count.
    #[oai(status = 200)]
    Ok(Json<UnreadCount>),
}

/// Answers with how many changed.
#[derive(Debug, ApiResponse)]
pub enum ChangedResponse {
    /// The count.
    #[oai(status = 200)]
    Ok(Json<Changed>),
}

/// Answers to a delete.
#[derive(Debug, ApiResponse)]
pub enum DeletedResponse {
    /// Deleted.
    #[oai(status = 204)]
    NoContent,
}

/// The signed-in user's subscriber row, if they ever received anything.
async fn subscriber(state: &AppState, who: &Identity) -> Result<Option<SubscriberId>, ApiError> {
    Ok(subscribers::find(&state.pool, who.tenant_id, &who.subject).await?)
}

crate::query_params! {
    /// The filters and page of the inbox.
    pub struct ListQuery {
        /// Only read (`true`) or unread (`false`) entries.
        read: Option<bool>,
        /// Archived entries instead of the rest.
        archived: bool = false,
        /// Only this category.
        category: Option<String>,
        /// From `next_cursor` of the previous page.
        cursor: Option<Cursor<(DateTime<Utc>, NotificationId)>>,
        /// Entries per page.
        limit: PageSize,
    }
}

#[OpenApi(prefix_path = "/api/v1/users/me/notifications", tag = "ApiTags::Users")]
impl InboxApi {
    /// List the inbox, newest first.
    #[oai(path = "/", method = "get", operation_id = "inbox.list")]
    async fn list(
        &self,
        cx: UserCtx<'_>,
        query: Params<ListQuery>,
    ) -> Result<PageResponse, ApiError> {
        let ListQuery {
            read,
            archived,
            category,
            cursor,
            limit,
        } = query.0;
        let before = cursor.map(Cursor::get).transpose()?;
        let Some(subscriber_id) = subscriber(cx.state, &cx.auth.0).await? else {
            return Ok(PageResponse::Ok(Json(InboxPage {
                items: vec![],
                next_cursor: None,
            })));
        };
        let filter = Filter {
            read,
            archived,
            category,
        };
        let items = inbox::list(
            &cx.state.pool,
            cx.auth.0.tenant_id,
            subscriber_id,
            &filter,
            before,
            limit.fetch(),
        )
        .await?;
        let (items, next_cursor) = page(items, limit, |i: &Item| (i.created_at, i.id));
        Ok(PageResponse::Ok(Json(InboxPage {
            items: items.into_iter().map(Into::into).collect(),
            next_cursor,
        })))
    }

    /// Unread entries that are not archived.
    #[oai(
        path = "/unread-count",
        method = "get",
        operation_id = "inbox.unread_count"
    )]
    async fn unread_count(&self, cx: UserCtx<'_>) -> Result<CountResponse, ApiError> {
        let unread = match subscriber(cx.state, &cx.auth.0).await? {
            Some(s) => inbox::unread_count(&cx.state.pool, cx.auth.0.tenant_id, s).await?,
            None => 0,
        };
        Ok(CountResponse::Ok(Json(UnreadCount { unread })))
    }

    /// Mark every entry read.
    #[oai(
        path = "/mark-all-read",
        method = "post",
        operation_id = "inbox.mark_all_read"
    )]
    async fn mark_all_read(&self, cx: UserCtx<'_>) -> Result<ChangedResponse, ApiError> {
        let Some(subscriber_id) = subscriber(cx.state, &cx.auth.0).await? else {
            return Ok(ChangedResponse::Ok(Json(Changed { count: 0 })));
        };
        let mut tx = begin_change(cx.state, &cx.auth.0, subscriber_id).await?;
        let count = inbox::mark_all_read(&mut *tx, cx.auth.0.tenant_id, subscriber_id).await?;
        let changes = if count > 0 {
            vec![(
                "notification.updated",
                json!({"all_read": true, "count": count}),
            )]
        } else {
            vec![]
        };
        finish_change(cx.state, tx, &cx.auth.0, subscriber_id, changes).await?;
        Ok(ChangedResponse::Ok(Json(Changed { count })))
    }

    /// Delete several entries: `?ids=<id>,<id>` (at most 100). Ids that are
    /// not in this inbox are skipped; the answer counts what was deleted.
    #[oai(path = "/", method = "delete", operation_id = "inbox.delete_many")]
    async fn delete_many(
        &self,
        cx: UserCtx<'_>,
        /// Comma-separated notification ids.
        ids: Query<String>,
    ) -> Result<ChangedResponse, ApiError> {
        let raw: Vec<&str> = ids
            .0
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .collect();
        if raw.is_empty() || raw.len() > MAX_BULK {
            return Err(ApiError::invalid(
                "ids",
                format!("must list 1 to {MAX_BULK} ids"),
            ));
        }
        let parsed: Vec<NotificationId> = raw
            .iter()
            .map(|s| {
                s.parse().map_err(|_| {
                    ApiError::invalid("ids", format!("`{s}` is not a notification id"))
                })
            })
            .collect::<Result<_, _>>()?;
        let Some(subscriber_id) = subscriber(cx.state, &cx.auth.0).await? else {
            return Ok(ChangedResponse::Ok(Json(Changed { count: 0 })));
        };
        let mut tx = begin_change(cx.state, &cx.auth.0, subscriber_id).await?;
        let deleted = inbox::delete(&mut *tx, cx.auth.0.tenant_id, subscriber_id, &parsed).await?;
        let count = deleted.len() as u64;
        let changes = deleted
            .into_iter()
            .map(|id| ("notification.updated", json!({"id": id, "deleted": true})))
            .collect();
        finish_change(cx.state, tx, &cx.auth.0, subscriber_id, changes).await?;
        Ok(ChangedResponse::Ok(Json(Changed { count })))
    }

    /// One entry.
    #[oai(path = "/:id", method = "get", operation_id = "inbox.get")]
    async fn get(
        &self,
        cx: UserCtx<'_>,
        id: Path<PathId<NotificationId>>,
    ) -> Result<EntryResponse, ApiError> {
        let id = id.0.get("notification")?;
        let subscriber_id = subscriber(cx.state, &cx.auth.0)
            .await?
            .ok_or(ApiError::NotFound("notification"))?;
        let item = inbox::get(&cx.state.pool, cx.auth.0.tenant_id, subscriber_id, id)
            .await?
            .ok_or(ApiError::NotFound("notification"))?;
        Ok(EntryResponse::Ok(Json(item.into())))
    }

    /// Mark an entry read.
    #[oai(path = "/:id/read", method = "patch", operation_id = "inbox.read")]
    async fn read(
        &self,
        cx: UserCtx<'_>,
        id: Path<PathId<NotificationId>>,
    ) -> Result<EntryResponse, ApiError> {
        change(cx.state, &cx.auth.0, id.0.raw(), Change::Read).await
    }

    /// Mark an entry unread.
    #[oai(path = "/:id/unread", method = "patch", operation_id = "inbox.unread")]
    async fn unread(
        &self,
        cx: UserCtx<'_>,
        id: Path<PathId<NotificationId>>,
    ) -> Result<EntryResponse, ApiError> {
        change(cx.state, &cx.auth.0, id.0.raw(), Change::Unread).await
    }

    /// Archive an entry.
    #[oai(
        path = "/:id/archive",
        method = "patch",
        operation_id = "inbox.archive"
    )]
    async fn archive(
        &self,
        cx: UserCtx<'_>,
        id: Path<PathId<NotificationId>>,
    ) -> Result<EntryResponse, ApiError> {
        change(cx.state, &cx.auth.0, id.0.raw(), Change::Archive).await
    }

    /// Delete an entry.
    #[oai(path = "/:id", method = "delete", operation_id = "inbox.delete")]
    async fn delete(
        &self,
        cx: UserCtx<'_>,
        id: Path<PathId<NotificationId>>,
    ) -> Result<DeletedResponse, ApiError> {
        let id = id.0.get("notification")?;
        let subscriber_id = subscriber(cx.state, &cx.auth.0)
            .await?
            .ok_or(ApiError::NotFound("notification"))?;
        let mut tx = begin_change(cx.state, &cx.auth.0, subscriber_id).await?;
        if inbox::delete(&mut *tx, cx.auth.0.tenant_id, subscriber_id, &[id])
            .await?
            .is_empty()
        {
            return Err(ApiError::NotFound("notification"));
        }
        let changes = vec![("notification.updated", json!({"id": id, "deleted": true}))];
        finish_change(cx.state, tx, &cx.auth.0, subscriber_id, changes).await?;
        Ok(DeletedResponse::NoContent)
    }
}

async fn change(
    state: &AppState,
    who: &Identity,
    raw_id: &str,
    change: Change,
) -> Result<EntryResponse, ApiError> {
    let id = crate::extract::id(raw_id, "notification")?;
    let subscriber_id = subscriber(state, who)
        .await?
        .ok_or(ApiError::NotFound("notification"))?;
    let mut tx = begin_change(state, who, subscriber_id).await?;
    let item = inbox::change(&mut *tx, who.tenant_id, subscriber_id, id, change)
        .await?
        .ok_or(ApiError::NotFound("notification"))?;
    let changes = vec![("notification.updated", entry_view(&item))];
    finish_change(state, tx, who, subscriber_id, changes).await?;
    Ok(EntryResponse::Ok(Json(item.into())))
}

/// Starts a change to the user's inbox: a transaction holding their lock, so
/// the change and the events that report it keep one order.
async fn begin_change(
    state: &AppState,
    who: &Identity,
    subscriber_id: SubscriberId,
) -> Result<Transaction<'static, Postgres>, ApiError> {
    let mut tx = state.pool.begin().await?;
    events::lock_subscriber(&mut tx, who.tenant_id, subscriber_id).await?;
    Ok(tx)
}

/// Records the change's events and the new unread count, commits, and
/// publishes them to connected clients.
async fn finish_change(
    state: &AppState,
    mut tx: Transaction<'static, Postgres>,
    who: &Identity,
    subscriber_id: SubscriberId,
    changes: Vec<(&str, Value)>,
) -> Result<(), ApiError> {
    let published =
        record_inbox_events(&mut tx, who.tenant_id, subscriber_id, &who.subject, changes).await?;
    tx.commit().await?;
    if let Err(error) = shared::events::publish(&state.queues, &published).await {
        tracing::warn!(%error, "cannot publish inbox events; clients catch up on reconnect");
    }
    Ok(())
}
