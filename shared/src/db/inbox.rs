//! A subscriber's in-app inbox: the in-app notifications delivered to them.
//!
//! Every function takes the tenant and the subscriber first; a notification
//! of anyone else is simply not found. Counts are counted, not kept, so they
//! cannot drift from the rows.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::{PgConnection, PgExecutor, types::Json};

use crate::domain::{NotificationId, SubscriberId, TenantId};

// Every inbox query is limited to the tenant's (`$1`) subscriber's (`$2`)
// sent in-app notifications that are not deleted:
//   tenant_id = $1 and subscriber_id = $2 and channel = 'inapp'
//   and status = 'sent' and deleted_at is null

/// One inbox entry.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Item {
    /// The notification's id.
    pub id: NotificationId,
    /// Its category, if the sender gave one.
    pub category: Option<String>,
    /// Title, body, action URL and data.
    pub content: Json<Value>,
    /// When it was read.
    pub read_at: Option<DateTime<Utc>>,
    /// When it was archived.
    pub archived_at: Option<DateTime<Utc>>,
    /// When it was sent.
    pub created_at: DateTime<Utc>,
}

/// Which entries to list.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Only read (true) or unread (false) ones.
    pub read: Option<bool>,
    /// Archived ones instead of the rest.
    pub archived: bool,
    /// Only this category.
    pub category: Option<String>,
}

/// Entries older than `before` (a `(created_at, id)` cursor), newest first.
#[tracing::instrument(skip_all)]
pub async fn list(
    db: impl PgExecutor<'_>,
    tenant_id: TenantId,
    subscriber_id: SubscriberId,
    filter: &Filter,
    before: Option<(DateTime<Utc>, NotificationId)>,
    limit: i64,
) -> Result<Vec<Item>, sqlx::Error> {
    let (at, id) = before.unzip();
    sqlx::query_as!(
        Item,
        r#"select id as "id: NotificationId", category, content as "content: Json<Value>", read_at,
                archived_at, created_at
         from notifications where tenant_id = $1 and subscriber_id = $2 and channel = 'inapp' and status = 'sent' and deleted_at is null
           and ($3::boolean is null or (read_at is not null) = $3)
           and (archived_at is not null) = $4
           and ($5::text is null or category = $5)
           and ($6::timestamptz is null or (created_at, id) < ($6, $7))
         order by created_at desc, id desc limit $8"#,
        tenant_id as _,
        subscriber_id as _,
        filter.read,
        filter.archived,
        filter.category,
        at,
        id as _,
        limit,
    )
    .fetch_all(db)
    .await
}

/// One entry.
#[tracing::instrument(skip_all)]
pub async fn get(
    db: impl PgExecutor<'_>,
    tenant_id: TenantId,
    subscriber_id: SubscriberId,
    id: NotificationId,
) -> Result<Option<Item>, sqlx::Error> {
    sqlx::query_as!(
        Item,
        r#"select id as "id: NotificationId", category, content as "content: Json<Value>", read_at,
                archived_at, created_at
         from notifications where tenant_id = $1 and subscriber_id = $2 and channel = 'inapp' and status = 'sent' and deleted_at is null and id = $3"#,
        tenant_id as _,
        subscriber_id as _,
        id as _,
    )
    .fetch_optional(db)
    .await
}

/// How an entry changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// Mark read (keeps the first read time).
    Read,
    /// Mark unread.
    Unread,
    /// Archive.
    Archive,
}

/// Changes one entry; the entry as it is afterwards, if it exists.
#[tracing::instrument(skip_all)]
pub async fn change(
    db: impl PgExecutor<'_>,
    tenant_id: TenantId,
    subscriber_id: SubscriberId,
    id: NotificationId,
    change: Change,
) -> Result<Option<Item>, sqlx::Error> {
    macro_rules! changed {
        ($sql:tt) => {
            sqlx::query_as!(Item, $sql, tenant_id as _, subscriber_id as _, id as _)
                .fetch_optional(db)
                .await
        };
    }
    match change {
        Change::Read => changed!(
            r#"update notifications set read_at = coalesce(read_at, now())
             where tenant_id = $1 and subscriber_id = $2 and channel = 'inapp' and status = 'sent' and deleted_at is null and id = $3
             returning id as "id: NotificationId", category, content as "content: Json<Value>", read_at,
                archived_at, created_at"#
        ),
        Change::Unread => changed!(
            r#"update notifications set read_at = null
             where tenant_id = $1 and subscriber_id = $2 and channel = 'inapp' and status = 'sent' and deleted_at is null and id = $3
             returning id as "id: NotificationId", category, content as "content: Json<Value>", read_at,
                archived_at, created_at"#
        ),
        Change::Archive => changed!(
            r#"update notifications set archived_at = coalesce(archived_at, now())
             where tenant_id = $1 and subscriber_id = $2 and channel = 'inapp' and status = 'sent' and deleted_at is null and id = $3
             returning id as "id: NotificationId", category, content as "content: Json<Value>", read_at,
                archived_at, created_at"#
        ),
    }
}

/// Deletes entries (they leave the inbox; the delivery record stays).
/// Returns the ids of `ids` that were in this inbox.
#[tracing::instrument(skip_all)]
pub async fn delete(
    db: impl PgExecutor<'_>,
    tenant_id: TenantId,
    subscriber_id: SubscriberId,
    ids: &[NotificationId],
) -> Result<Vec<NotificationId>, sqlx::Error> {
    sqlx::query_scalar!(
        r#"update notifications set deleted_at = now()
         where tenant_id = $1 and subscriber_id = $2 and channel = 'inapp' and status = 'sent' and deleted_at is null and id = any($3)
         returning id as "id: NotificationId""#,
        tenant_id as _,
        subscriber_id as _,
        ids as _,
    )
    .fetch_all(db)
    .await
}

/// Unread entries that are not archived.
#[tracing::instrument(skip_all)]
pub async fn unread_count(
    db: impl PgExecutor<'_>,
    tenant_id: TenantId,
    subscriber_id: SubscriberId,
) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar!(
        r#"select coalesce(sum(unread), 0)::int8 as "count!"
         from inbox_unread_counts($1, array[$2::uuid])"#,
        tenant_id as _,
        subscriber_id as _,
    )
    .fetch_one(db)
    .await
}

/// [`unread_count`] of several subscribers at once; a subscriber without
/// unread entries is absent.
#[tracing::instrument(skip_all, fields(count = subscribers.len()))]
pub async fn unread_counts(
    db: impl PgExecutor<'_>,
    tenant_id: TenantId,
    subscribers: &[SubscriberId],
) -> Result<BTreeMap<SubscriberId, i64>, sqlx::Error> {
    let rows = sqlx::query!(
        r#"select subscriber_id as "subscriber_id!: SubscriberId", unread as "count!"
         from inbox_unread_counts($1, $2)"#,
        tenant_id as _,
        subscribers as _,
    )
    .fetch_all(db)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| (r.subscriber_id, r.count))
        .collect())
}

/// Places the in-app notifications among `ids` that can go without a look
/// at preferences into their subscribers' inboxes: due, with attempts left,
/// with a subscriber, and critical or of a subscriber without stored
/// preferences. Claimed and delivered in one statement (no attempt row:
/// placing a message in an inbox has no provider answer to keep). Returns
/// each placed entry with its subscriber; rows not taken are left as they
/// are. The caller has locked the subscribers
/// ([`super::events::lock_subscribers_of`]).
#[tracing::instrument(skip_all, fields(count = ids.len()))]
pub async fn place_group(
    tx: &mut PgConnection,
    tenant_id: TenantId,
    ids: &[NotificationId],
) -> Result<Vec<(SubscriberId, Item)>, sqlx::Error> {
    let rows = sqlx::query!(
        r#"update notifications n
         set status = 'sent', attempts = n.attempts + 1, run_at = now(), dispatched_at = null,
             provider_message_id = 'inapp:' || n.id::text, last_error = null, sent_at = now()
         where n.tenant_id = $1 and n.id = any($2)
           and n.channel = 'inapp' and n.status in ('queued', 'deferred')
           and n.run_at <= now() and n.attempts < n.max_attempts
           and n.subscriber_id is not null
           and (n.critical or not exists (
               select 1 from subscriber_preferences p
               where p.tenant_id = $1 and p.subscriber_id = n.subscriber_id))
         returning n.subscriber_id as "subscriber_id!: SubscriberId",
                   n.id as "id: NotificationId", n.category, n.content as "content: Json<Value>",
                   n.read_at, n.archived_at, n.created_at"#,
        tenant_id as _,
        ids as _,
    )
    .fetch_all(tx)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| {
            let item = Item {
                id: r.id,
                category: r.category,
                content: r.content,
                read_at: r.read_at,
                archived_at: r.archived_at,
                created_at: r.created_at,
            };
            (r.subscriber_id, item)
        })
        .collect())
}

/// The subscriber's entries among `ids` as they were placed (unread, not
/// archived), whatever became of them since, for replaying the events that
/// announced them; ids of other subscribers or no longer kept are absent.
#[tracing::instrument(skip_all, fields(count = ids.len()))]
pub async fn placed(
    db: impl PgExecutor<'_>,
    tenant_id: TenantId,
    subscriber_id: SubscriberId,
    ids: &[NotificationId],
) -> Result<Vec<Item>, sqlx::Error> {
    sqlx::query_as!(
        Item,
        r#"select id as "id: NotificationId", category, content as "content: Json<Value>",
                null::timestamptz as "read_at?", null::timestamptz as "archived_at?", created_at
         from notifications
         where tenant_id = $1 and subscriber_id = $2 and id = any($3) and channel = 'inapp'"#,
        tenant_id as _,
        subscriber_id as _,
        ids as _,
    )
    .fetch_all(db)
    .await
}

/// Marks every unread entry read; returns how many changed.
#[tracing::instrument(skip_all)]
pub async fn mark_all_read(
    db: impl PgExecutor<'_>,
    tenant_id: TenantId,
    subscriber_id: SubscriberId,
) -> Result<u64, sqlx::Error> {
    let done = sqlx::query!(
        "update notifications set read_at = now()
         where tenant_id = $1 and subscriber_id = $2 and channel = 'inapp' and status = 'sent' and deleted_at is null and read_at is null",
        tenant_id as _,
        subscriber_id as _,
    )
    .execute(db)
    .await?;
    Ok(done.rows_affected())
}
