//! Batches, their chunks, and the notifications chunks expand into.
//!
//! ```text
//! open ──close──▶ closed ──every notification final──▶ completed
//!   └──────┴──cancel──▶ cancelled  (everything not yet sent is cancelled)
//! ```
//!
//! A chunk row keeps the first answer: a repeated chunk number finds it and
//! creates nothing. Expansion ([`expand`]) inserts every notification of a
//! chunk in one statement, keyed by (batch, seq, index, channel), and marks
//! the chunk expanded in the same transaction, so it happens exactly once.

use std::{collections::HashMap, time::Duration};

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::{PgConnection, PgExecutor, types::Json};

use crate::domain::{BatchId, Channel, NotificationId, NotificationStatus, SubscriberId, TenantId};

mod expand;
pub use expand::*;

/// Statuses after which a notification does not change on its own.
pub const FINAL: &[&str] = &[
    "sent",
    "delivered",
    "read",
    "failed",
    "bounced",
    "suppressed",
    "cancelled",
];

/// A batch to create.
#[derive(Debug, Clone)]
pub struct NewBatch<'a> {
    /// The template every notification is rendered from.
    pub template_key: &'a str,
    /// The channels each recipient gets a notification on.
    pub channels: &'a [Channel],
    /// The locale to render; the template's default when `None`.
    pub locale: Option<&'a str>,
    /// Template data every recipient starts from; theirs overrides it.
    pub defaults: Value,
    /// The caller's metadata, copied to every notification.
    pub metadata: Value,
    /// The caller's `Idempotency-Key` and a hash of the request.
    pub idempotency: Option<(&'a str, Vec<u8>)>,
}

/// What [`create`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Created {
    /// A new batch.
    New(BatchId),
    /// The idempotency key was used before.
    Existing {
        /// The batch the first request created.
        id: BatchId,
        /// Whether the first request had the same body.
        same_request: bool,
    },
}

/// Creates a batch, or finds the one an earlier request with the same key
/// created.
#[tracing::instrument(skip_all)]
pub async fn create(
    db: &mut PgConnection,
    tenant_id: TenantId,
    new: NewBatch<'_>,
) -> Result<Created, sqlx::Error> {
    let (key, hash) = match &new.idempotency {
        Some((k, h)) => (Some(*k), Some(h.as_slice())),
        None => (None, None),
    };
    let channels: Vec<&str> = new.channels.iter().map(|c| c.as_str()).collect();
    let created: Option<BatchId> = sqlx::query_scalar!(
        r#"insert into batches (id, tenant_id, template_key, channels, locale, defaults, metadata,
                              idempotency_key, request_hash)
         values ($1, $2, $3, $4, $5, $6, $7, $8, $9)
         on conflict (tenant_id, idempotency_key) where idempotency_key is not null do nothing
         returning id as "id: BatchId""#,
        BatchId::new() as _,
        tenant_id as _,
        new.template_key,
        channels.as_slice() as &[&str],
        new.locale,
        &new.defaults,
        &new.metadata,
        key,
        hash,
    )
    .fetch_optional(&mut *db)
    .await?;
    if let Some(id) = created {
        return Ok(Created::New(id));
    }
    let row = sqlx::query!(
        r#"select id as "id: BatchId", request_hash from batches where tenant_id = $1 and idempotency_key = $2"#,
        tenant_id as _,
        key,
    )
    .fetch_one(&mut *db)
    .await?;
    let (id, stored) = (row.id, row.request_hash);
    Ok(Created::Existing {
        id,
        same_request: stored.as_deref() == hash,
    })
}

/// A batch as its tenant sees it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Batch {
    /// Its id.
    pub id: BatchId,
    /// The template's key.
    pub template_key: String,
    /// The channels.
    pub channels: Vec<String>,
    /// The locale, if one was given.
    pub locale: Option<String>,
    /// Default template data.
    pub defaults: Json<Value>,
    /// The caller's metadata.
    pub metadata: Json<Value>,
    /// `open`, `closed`, `cancelled` or `completed`.
    pub status: String,
    /// When it was closed.
    pub closed_at: Option<DateTime<Utc>>,
    /// When it was cancelled.
    pub cancelled_at: Option<DateTime<Utc>>,
    /// When its last notification became final (after it was closed).
    pub completed_at: Option<DateTime<Utc>>,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
}

const BATCH_COLUMNS: &str = "id, template_key, channels, locale, defaults, metadata, status, \
                             closed_at, cancelled_at, completed_at, created_at, updated_at";

super::owned_rows! {
    "batches", id: BatchId;
    /// Reads one batch of `tenant_id`.
    get -> Batch, BATCH_COLUMNS;
}

/// The first answer to a chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkAnswer {
    /// Recipients it carried.
    pub recipients: i32,
    /// When it was first accepted.
    pub accepted_at: DateTime<Utc>,
}

/// What [`add_chunk`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChunkAdded {
    /// Stored; its job must be pushed.
    New(ChunkAnswer),
    /// This number was sent before; nothing was stored.
    Existing {
        /// The first answer.
        answer: ChunkAnswer,
        /// Whether the first request had the same recipients.
        same_request: bool,
    },
    /// The batch no longer takes chunks; its status.
    NotOpen(String),
    /// No such batch for this tenant.
    NotFound,
}

/// Stores chunk `seq` of an open batch, marked as pushed (`dispatched`), or
/// finds the earlier one. The batch row is read `for share`, so a chunk
/// either commits before a close or cancel, or sees the batch closed.
/// Concurrent duplicates: the primary key makes the later one wait and find
/// the first.
#[tracing::instrument(skip_all)]
pub async fn add_chunk(
    db: &mut PgConnection,
    tenant_id: TenantId,
    batch_id: BatchId,
    seq: i32,
    recipients: &Value,
    count: i32,
    hash: &[u8],
) -> Result<ChunkAdded, sqlx::Error> {
    let status: Option<String> = sqlx::query_scalar!(
        "select status from batches where tenant_id = $1 and id = $2 for share",
        tenant_id as _,
        batch_id as _,
    )
    .fetch_optional(&mut *db)
    .await?;
    let Some(status) = status else {
        return Ok(ChunkAdded::NotFound);
    };
    if status != "open" {
        // A retry of a chunk that was accepted still gets its first answer.
        return Ok(match earlier_chunk(db, batch_id, seq).await? {
            Some((recipients, accepted_at, stored)) => ChunkAdded::Existing {
                answer: ChunkAnswer {
                    recipients,
                    accepted_at,
                },
                same_request: stored == hash,
            },
            None => ChunkAdded::NotOpen(status),
        });
    }
    let created: Option<DateTime<Utc>> = sqlx::query_scalar!(
        "insert into batch_chunks (batch_id, seq, tenant_id, recipients, recipient_count, request_hash, dispatched_at)
         values ($1, $2, $3, $4, $5, $6, now())
         on conflict (batch_id, seq) do nothing
         returning created_at",
        batch_id as _,
        seq,
        tenant_id as _,
        recipients,
        count,
        hash,
    )
    .fetch_optional(&mut *db)
    .await?;
    if let Some(accepted_at) = created {
        return Ok(ChunkAdded::New(ChunkAnswer {
            recipients: count,
            accepted_at,
        }));
    }
    let (recipients, accepted_at, stored) = earlier_chunk(db, batch_id, seq)
        .await?
        .ok_or(sqlx::Error::RowNotFound)?;
    Ok(ChunkAdded::Existing {
        answer: ChunkAnswer {
            recipients,
            accepted_at,
        },
        same_request: stored == hash,
    })
}

async fn earlier_chunk(
    db: &mut PgConnection,
    batch_id: BatchId,
    seq: i32,
) -> Result<Option<(i32, DateTime<Utc>, Vec<u8>)>, sqlx::Error> {
    let row = sqlx::query!(
        "select recipient_count, created_at, request_hash from batch_chunks
         where batch_id = $1 and seq = $2",
        batch_id as _,
        seq,
    )
    .fetch_optional(db)
    .await?;
    Ok(row.map(|r| (r.recipient_count, r.created_at, r.request_hash)))
}

/// Marks chunks (`(tenant, batch, seq)`) as not in Redis (their push failed,
/// the window was full, or a worker handed their job back), so the sweep
/// pushes them. Called through [`crate::outbox`].
#[tracing::instrument(skip_all)]
pub async fn release_chunks(
    db: impl PgExecutor<'_>,
    chunks: &[(TenantId, BatchId, i32)],
) -> Result<(), sqlx::Error> {
    super::chunks::BATCH.release(db, chunks).await
}

/// Picks up to `limit` unexpanded chunks that are not in Redis (never pushed,
/// or pushed longer than `redispatch_after` ago) and marks them pushed.
/// Works across tenants.
#[tracing::instrument(skip_all)]
pub async fn take_pending_chunks(
    db: impl PgExecutor<'_>,
    limit: usize,
    redispatch_after: Duration,
) -> Result<Vec<(TenantId, BatchId, i32)>, sqlx::Error> {
    super::chunks::BATCH
        .take_pending(db, limit, redispatch_after)
        .await
}

/// Forgets that unexpanded chunks were pushed, after Redis lost its data.
/// Works across tenants.
#[tracing::instrument(skip_all)]
pub async fn forget_dispatched(db: impl PgExecutor<'_>) -> Result<u64, sqlx::Error> {
    super::chunks::BATCH.forget_dispatched(db).await
}

/// What a close or cancel found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transition {
    /// Done.
    Done,
    /// The batch is already in this status, which does not allow it.
    Refused(String),
    /// No such batch for this tenant.
    NotFound,
}

async fn status_of(
    db: &mut PgConnection,
    tenant_id: TenantId,
    id: BatchId,
) -> Result<Transition, sqlx::Error> {
    let status = super::status_owned(&mut *db, "batches", tenant_id, id).await?;
    Ok(status.map_or(Transition::NotFound, Transition::Refused))
}

/// Closes an open batch: no more chunks.
#[tracing::instrument(skip_all)]
pub async fn close(
    db: &mut PgConnection,
    tenant_id: TenantId,
    id: BatchId,
) -> Result<Transition, sqlx::Error> {
    let done = sqlx::query!(
        "update batches set status = 'closed', closed_at = now()
         where tenant_id = $1 and id = $2 and status = 'open'",
        tenant_id as _,
        id as _,
    )
    .execute(&mut *db)
    .await?;
    if done.rows_affected() == 1 {
        return Ok(Transition::Done);
    }
    status_of(db, tenant_id, id).await
}

/// Cancels an open or closed batch: every notification not yet sent
/// becomes `cancelled` (set-based), those a worker holds (`sending`, e.g.
/// waiting out a rate limit) included: the worker sees it before calling a
/// provider (see [`super::notifications`]). Chunks not yet expanded are
/// expanded as `cancelled`. Returns how many notifications were cancelled.
#[tracing::instrument(skip_all)]
pub async fn cancel(
    db: &mut PgConnection,
    tenant_id: TenantId,
    id: BatchId,
) -> Result<(Transition, u64), sqlx::Error> {
    // Waits for the chunk expansions in flight (they hold the batch `for
    // key share`), so the cancel below sees what they wrote.
    sqlx::query!(
        r#"select 1 as "locked" from batches where tenant_id = $1 and id = $2 for update"#,
        tenant_id as _,
        id as _,
    )
    .fetch_optional(&mut *db)
    .await?;
    let done = sqlx::query!(
        "update batches set status = 'cancelled', cancelled_at = now()
         where tenant_id = $1 and id = $2 and status in ('open', 'closed')",
        tenant_id as _,
        id as _,
    )
    .execute(&mut *db)
    .await?;
    if done.rows_affected() == 0 {
        return Ok((status_of(db, tenant_id, id).await?, 0));
    }
    let cancelled = sqlx::query!(
        "update notifications set status = 'cancelled', dispatched_at = null,
             last_error = 'the batch was cancelled'
         where tenant_id = $1 and batch_id = $2 and status in ('queued', 'deferred', 'sending')",
        tenant_id as _,
        id as _,
    )
    .execute(&mut *db)
    .await?;
    Ok((Transition::Done, cancelled.rows_affected()))
}

/// A batch's counts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counts {
    /// Chunks accepted.
    pub chunks: i64,
    /// Chunks not yet expanded.
    pub chunks_pending: i64,
    /// Recipients accepted (in every chunk).
    pub recipients: i64,
    /// Notifications per status.
    pub by_status: Vec<(String, i64)>,
}

impl Counts {
    /// Notifications created so far.
    pub fn notifications(&self) -> i64 {
        self.by_status.iter().map(|(_, n)| n).sum()
    }

    /// Notifications in a final status.
    pub fn finished(&self) -> i64 {
        self.by_status
            .iter()
            .filter(|(s, _)| FINAL.contains(&s.as_str()))
            .map(|(_, n)| n)
            .sum()
    }
}

/// Counts a batch's chunks and notifications, and marks a closed batch
/// `completed` once every chunk is expanded and every notification is
/// final (its completion time is when the last one finished). Returns the
/// counts and whether it was completed now.
#[tracing::instrument(skip_all)]
pub async fn counts(
    db: &mut PgConnection,
    tenant_id: TenantId,
    id: BatchId,
) -> Result<(Counts, bool), sqlx::Error> {
    let row = sqlx::query!(
        r#"select count(*) as "chunks!", count(*) filter (where expanded_at is null) as "chunks_pending!",
                coalesce(sum(recipient_count), 0)::int8 as "recipients!"
         from batch_chunks where tenant_id = $1 and batch_id = $2"#,
        tenant_id as _,
        id as _,
    )
    .fetch_one(&mut *db)
    .await?;
    let (chunks, chunks_pending, recipients) = (row.chunks, row.chunks_pending, row.recipients);
    let by_status = super::group_counts::by_status(&mut *db, tenant_id, id.0).await?;
    let counts = Counts {
        chunks,
        chunks_pending,
        recipients,
        by_status,
    };
    let mut completed = false;
    if chunks_pending == 0 && counts.finished() == counts.notifications() {
        let done = sqlx::query!(
            "update batches b set status = 'completed',
                 completed_at = greatest(b.closed_at, (select max(updated_at) from notifications
                                                       where tenant_id = $1 and batch_id = $2))
             where tenant_id = $1 and id = $2 and status = 'closed'",
            tenant_id as _,
            id as _,
        )
        .execute(&mut *db)
        .await?;
        completed = done.rows_affected() == 1;
    }
    Ok((counts, completed))
}

/// One notification of a batch, for listing.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Item {
    /// Its id.
    pub id: NotificationId,
    /// The chunk it came from.
    pub seq: i32,
    /// Its place in the chunk.
    pub index: i32,
    /// Its channel.
    pub channel: Channel,
    /// Its recipient.
    pub recipient: String,
    /// Its status.
    pub status: NotificationStatus,
    /// The last error.
    pub last_error: Option<String>,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
}

/// Up to `limit` notifications of a batch after `after` (by id), optionally
/// of one status.
#[tracing::instrument(skip_all)]
pub async fn notifications(
    db: impl PgExecutor<'_>,
    tenant_id: TenantId,
    id: BatchId,
    status: Option<NotificationStatus>,
    after: Option<NotificationId>,
    limit: i64,
) -> Result<Vec<Item>, sqlx::Error> {
    sqlx::query_as!(
        Item,
        r#"select id as "id: NotificationId", batch_seq as "seq!", batch_index as "index!",
                channel as "channel: Channel", recipient, status as "status: NotificationStatus",
                last_error, created_at, updated_at
         from notifications
         where tenant_id = $1 and batch_id = $2 and ($3::text is null or status = $3)
           and ($4::uuid is null or id > $4)
         order by id limit $5"#,
        tenant_id as _,
        id as _,
        status as _,
        after as _,
        limit,
    )
    .fetch_all(db)
    .await
}
