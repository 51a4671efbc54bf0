//! Subscribers' real-time events, kept for catch-up after a reconnect.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::{PgConnection, PgExecutor, PgPool, types::Json};

use crate::domain::{NotificationId, SubscriberId, TenantId};

/// A stored event.
#[derive(Debug, Clone)]
pub struct StoredEvent {
    /// Its number for the subscriber, increasing by one.
    pub seq: i64,
    /// Its type, e.g. `notification.created`.
    pub kind: String,
    /// Its data.
    pub payload: Json<Value>,
    /// When it happened.
    pub created_at: DateTime<Utc>,
}

/// Locks the subscriber for the rest of the transaction, so changes to their
/// inbox and the events that report them happen in one order. The lock is
/// `for no key update`: it orders inbox changes without holding up inserts
/// of new notifications that merely reference the subscriber.
#[tracing::instrument(skip_all)]
pub async fn lock_subscriber(
    tx: &mut PgConnection,
    tenant_id: TenantId,
    subscriber_id: SubscriberId,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        r#"select 1 as "locked" from subscribers where tenant_id = $1 and id = $2
         for no key update"#,
        tenant_id as _,
        subscriber_id as _,
    )
    .fetch_optional(tx)
    .await?;
    Ok(())
}

/// Locks several subscribers, as [`lock_subscriber`] does, in id order (the
/// order every inbox change takes them, so two writers never wait on each
/// other crosswise). Repeated ids are fine.
#[tracing::instrument(skip_all, fields(count = ids.len()))]
pub async fn lock_subscribers(
    tx: &mut PgConnection,
    tenant_id: TenantId,
    mut ids: Vec<SubscriberId>,
) -> Result<(), sqlx::Error> {
    ids.sort_unstable();
    ids.dedup();
    if ids.is_empty() {
        return Ok(());
    }
    sqlx::query!(
        r#"select 1 as "locked" from subscribers where tenant_id = $1 and id = any($2)
         order by id for no key update"#,
        tenant_id as _,
        &ids as _,
    )
    .fetch_all(tx)
    .await?;
    Ok(())
}

/// The subscribers of `tenant_id` known as `external_ids`, by external id;
/// those that do not exist are absent (see
/// [`super::subscribers::create_missing`]). Repeated names are fine. When
/// `lock`, they are locked together with the subscribers `ids` (which are
/// only locked, not looked up otherwise), in id order as
/// [`lock_subscribers`] locks them.
#[tracing::instrument(skip_all, fields(ids = ids.len(), external_ids = external_ids.len()))]
pub async fn subscribers_named(
    tx: &mut PgConnection,
    tenant_id: TenantId,
    ids: &[SubscriberId],
    external_ids: &[String],
    lock: bool,
) -> Result<HashMap<String, SubscriberId>, sqlx::Error> {
    if external_ids.is_empty() && (ids.is_empty() || !lock) {
        return Ok(HashMap::new());
    }
    let rows = if lock {
        sqlx::query!(
            r#"select id as "id: SubscriberId", external_id from subscribers
             where tenant_id = $1 and (id = any($2) or external_id = any($3))
             order by id for no key update"#,
            tenant_id as _,
            ids as _,
            external_ids,
        )
        .fetch_all(tx)
        .await?
        .into_iter()
        .map(|r| (r.external_id, r.id))
        .collect()
    } else {
        sqlx::query!(
            r#"select id as "id: SubscriberId", external_id from subscribers
             where tenant_id = $1 and external_id = any($2)"#,
            tenant_id as _,
            external_ids,
        )
        .fetch_all(tx)
        .await?
        .into_iter()
        .map(|r| (r.external_id, r.id))
        .collect()
    };
    Ok(rows)
}

/// Locks the subscribers of the notifications `ids`, as
/// [`lock_subscribers`] does, in id order.
#[tracing::instrument(skip_all, fields(count = ids.len()))]
pub async fn lock_subscribers_of(
    tx: &mut PgConnection,
    tenant_id: TenantId,
    ids: &[NotificationId],
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        r#"select 1 as "locked" from subscribers where tenant_id = $1 and id in (
             select subscriber_id from notifications where tenant_id = $1 and id = any($2))
         order by id for no key update"#,
        tenant_id as _,
        ids as _,
    )
    .fetch_all(tx)
    .await?;
    Ok(())
}

/// Moves each subscriber's event number on by its count (`counts[i]` for
/// `subscribers[i]`), so the caller can number that many events; returns
/// each subscriber's new last number and external id. The caller holds the
/// subscribers' locks.
#[tracing::instrument(skip_all, fields(count = subscribers.len()))]
pub async fn advance_seqs(
    tx: &mut PgConnection,
    tenant_id: TenantId,
    subscribers: &[SubscriberId],
    counts: &[i64],
) -> Result<BTreeMap<SubscriberId, (i64, String)>, sqlx::Error> {
    let rows = sqlx::query!(
        r#"update subscribers s set event_seq = s.event_seq + c.k
         from unnest($2::uuid[], $3::int8[]) as c(id, k)
         where s.id = c.id and s.tenant_id = $1
         returning s.id as "id: SubscriberId", s.event_seq, s.external_id"#,
        tenant_id as _,
        subscribers as _,
        counts,
    )
    .fetch_all(tx)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| (r.id, (r.event_seq, r.external_id)))
        .collect())
}

/// Appends an event for a subscriber and returns its number and time. Call
/// in the transaction that made the change it reports.
#[tracing::instrument(skip_all)]
pub async fn append(
    tx: &mut PgConnection,
    tenant_id: TenantId,
    subscriber_id: SubscriberId,
    kind: &str,
    payload: &Value,
) -> Result<(i64, DateTime<Utc>), sqlx::Error> {
    let row = sqlx::query!(
        "with next as (
             update subscribers set event_seq = event_seq + 1
             where tenant_id = $1 and id = $2 returning event_seq
         )
         insert into subscriber_events (subscriber_id, seq, tenant_id, kind, payload)
         select $2, event_seq, $1, $3, $4 from next
         returning seq, created_at",
        tenant_id as _,
        subscriber_id as _,
        kind,
        payload,
    )
    .fetch_one(tx)
    .await?;
    Ok((row.seq, row.created_at))
}

/// The kind of a stored row that stands for the events of one placement of
/// new inbox entries (see [`append_placed`]).
pub const PLACED: &str = "inbox.placed";

/// The most entries one [`PLACED`] row holds, so a replay knows how far
/// before its starting number a row covering it can begin.
pub const PLACED_SPAN: usize = 1_000;

/// What a [`PLACED`] row keeps: the new entries, oldest first, and the
/// unread count after them when the placement ends with it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Placed {
    /// The entries' notifications, one `notification.created` each.
    pub ids: Vec<NotificationId>,
    /// The `unread_count.changed` that follows them, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unread: Option<i64>,
}

impl Placed {
    /// How many event numbers the row takes.
    pub fn span(&self) -> i64 {
        self.ids.len() as i64 + i64::from(self.unread.is_some())
    }
}

/// Stores placements numbered by [`advance_seqs`] or by the subscriber's
/// creation: `rows[i]` is a subscriber, the number of its first event and
/// what was placed (at most [`PLACED_SPAN`] entries). Returns their time, or
/// `None` when there were none.
#[tracing::instrument(skip_all, fields(count = rows.len()))]
pub async fn append_placed(
    tx: &mut PgConnection,
    tenant_id: TenantId,
    rows: &[(SubscriberId, i64, Placed)],
) -> Result<Option<DateTime<Utc>>, sqlx::Error> {
    debug_assert!(
        rows.iter()
            .all(|(_, _, p)| p.ids.len() <= PLACED_SPAN && p.span() > 0)
    );
    let subscribers: Vec<SubscriberId> = rows.iter().map(|r| r.0).collect();
    let seqs: Vec<i64> = rows.iter().map(|r| r.1).collect();
    let lasts: Vec<i64> = rows.iter().map(|r| r.1 + r.2.span() - 1).collect();
    let payloads: Vec<Json<&Placed>> = rows.iter().map(|r| Json(&r.2)).collect();
    let at = sqlx::query_scalar!(
        "insert into subscriber_events (subscriber_id, seq, last_seq, tenant_id, kind, payload)
         select e.subscriber_id, e.seq, e.last_seq, $1, $5, e.payload
         from unnest($2::uuid[], $3::int8[], $4::int8[], $6::jsonb[])
             as e(subscriber_id, seq, last_seq, payload)
         returning created_at",
        tenant_id as _,
        &subscribers as _,
        &seqs,
        &lasts,
        PLACED,
        &payloads as _,
    )
    .fetch_all(tx)
    .await?;
    Ok(at.into_iter().next())
}

/// One subscriber's new inbox entries for [`append_counted`].
#[derive(Debug, Clone)]
pub struct NewEntries {
    /// Whose inbox.
    pub subscriber_id: SubscriberId,
    /// The entries' notifications, oldest first (at most [`PLACED_SPAN`]).
    pub ids: Vec<NotificationId>,
}

/// What [`append_counted`] numbered for one subscriber.
#[derive(Debug, Clone)]
pub struct Counted {
    /// The subscriber's last event number now (the `unread_count.changed`).
    pub last_seq: i64,
    /// Their external id.
    pub external_id: String,
    /// Their unread count after the new entries.
    pub unread: i64,
}

/// What [`append_counted`] numbered, by subscriber, and the time of the
/// rows it stored (`None` when there were none).
pub type Announced = (BTreeMap<SubscriberId, Counted>, Option<DateTime<Utc>>);

/// Announces new inbox entries, already written in this transaction, of
/// subscribers it has locked (or created), in one statement: counts
/// each one's unread entries (the new ones among them), moves their event
/// number on by their entries and the count, and stores one [`PLACED`] row
/// each. Returns what was numbered per subscriber and the rows' time, or
/// `None` when there were none. The statement is the database function
/// `inbox_announce`, which keeps its index-probe plan per connection.
#[tracing::instrument(skip_all, fields(count = entries.len()))]
pub async fn append_counted(
    tx: &mut PgConnection,
    tenant_id: TenantId,
    entries: &[NewEntries],
) -> Result<Announced, sqlx::Error> {
    debug_assert!(
        entries
            .iter()
            .all(|e| !e.ids.is_empty() && e.ids.len() <= PLACED_SPAN)
    );
    let subscribers: Vec<SubscriberId> = entries.iter().map(|e| e.subscriber_id).collect();
    let counts: Vec<i64> = entries.iter().map(|e| e.ids.len() as i64).collect();
    let ids: Vec<Json<&Vec<NotificationId>>> = entries.iter().map(|e| Json(&e.ids)).collect();
    let rows = sqlx::query!(
        r#"select id as "id!: SubscriberId", event_seq as "event_seq!",
                external_id as "external_id!", unread as "unread!", at
         from inbox_announce($1, $2, $3, $4, $5)"#,
        tenant_id as _,
        &subscribers as _,
        &counts,
        &ids as _,
        PLACED,
    )
    .fetch_all(tx)
    .await?;
    let at = rows.first().and_then(|r| r.at);
    Ok((
        rows.into_iter()
            .map(|r| {
                (
                    r.id,
                    Counted {
                        last_seq: r.event_seq,
                        external_id: r.external_id,
                        unread: r.unread,
                    },
                )
            })
            .collect(),
        at,
    ))
}

/// A stored row as [`since`] reads it.
struct Row {
    seq: i64,
    kind: String,
    payload: Json<Value>,
    created_at: DateTime<Utc>,
}

/// The subscriber's events after `since`, oldest first, at most `limit`.
/// Placement rows are unfolded into their `notification.created` events
/// (each entry as it was placed: unread, not archived) and their
/// `unread_count.changed`; an entry whose notification is gone is left out.
#[tracing::instrument(skip_all)]
pub async fn since(
    db: &PgPool,
    tenant_id: TenantId,
    subscriber_id: SubscriberId,
    since: i64,
    limit: i64,
) -> Result<Vec<StoredEvent>, sqlx::Error> {
    // A placement row covering `since + 1` starts at most PLACED_SPAN
    // numbers earlier.
    let rows = sqlx::query_as!(
        Row,
        r#"select seq, kind, payload as "payload: Json<Value>", created_at from subscriber_events
         where tenant_id = $1 and subscriber_id = $2 and seq > $3::int8 - $5::int8
           and coalesce(last_seq, seq) > $3
         order by seq limit $4"#,
        tenant_id as _,
        subscriber_id as _,
        since,
        limit,
        PLACED_SPAN as i64 + 1,
    )
    .fetch_all(db)
    .await?;
    let placed: Vec<(usize, Placed)> = rows
        .iter()
        .enumerate()
        .filter(|(_, r)| r.kind == PLACED)
        .filter_map(|(i, r)| Some((i, serde_json::from_value(r.payload.0.clone()).ok()?)))
        .collect();
    let ids: Vec<NotificationId> = placed.iter().flat_map(|(_, p)| p.ids.clone()).collect();
    let entries: HashMap<NotificationId, crate::db::inbox::Item> = if ids.is_empty() {
        HashMap::new()
    } else {
        crate::db::inbox::placed(db, tenant_id, subscriber_id, &ids)
            .await?
            .into_iter()
            .map(|item| (item.id, item))
            .collect()
    };
    let mut placed = placed.into_iter().peekable();
    let mut out = Vec::new();
    for (i, row) in rows.into_iter().enumerate() {
        if placed.peek().is_none_or(|(at, _)| *at != i) {
            out.push(StoredEvent {
                seq: row.seq,
                kind: row.kind,
                payload: row.payload,
                created_at: row.created_at,
            });
            continue;
        }
        let Some((_, p)) = placed.next() else { break };
        let mut seq = row.seq;
        for id in &p.ids {
            if let Some(item) = entries.get(id) {
                out.push(StoredEvent {
                    seq,
                    kind: "notification.created".into(),
                    payload: Json(crate::events::entry_view(item)),
                    created_at: row.created_at,
                });
            }
            seq += 1;
        }
        if let Some(unread) = p.unread {
            out.push(StoredEvent {
                seq,
                kind: "unread_count.changed".into(),
                payload: Json(serde_json::json!({ "unread": unread })),
                created_at: row.created_at,
            });
        }
    }
    out.retain(|e| e.seq > since);
    out.truncate(limit.max(0) as usize);
    Ok(out)
}

/// The subscriber's last event number.
#[tracing::instrument(skip_all)]
pub async fn last_seq(
    db: impl PgExecutor<'_>,
    tenant_id: TenantId,
    subscriber_id: SubscriberId,
) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar!(
        "select event_seq from subscribers where tenant_id = $1 and id = $2",
        tenant_id as _,
        subscriber_id as _,
    )
    .fetch_optional(db)
    .await
    .map(Option::unwrap_or_default)
}

/// Drops events older than `hours` (across tenants); returns how many.
#[tracing::instrument(skip_all)]
pub async fn prune(db: impl PgExecutor<'_>, hours: u32) -> Result<u64, sqlx::Error> {
    let done = sqlx::query!(
        "delete from subscriber_events where created_at < now() - make_interval(hours => $1)",
        hours as i32,
    )
    .execute(db)
    .await?;
    Ok(done.rows_affected())
}
