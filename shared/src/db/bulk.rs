//! CSV bulk jobs: the uploaded file in parts, the parse's resume cursor and
//! counters, row errors, the chunks that hold the valid rows'
//! notifications, and the notifications they expand into.
//!
//! ```text
//! uploading ──▶ queued ──claim──▶ parsing ──whole file parsed──▶ sending ──all final──▶ completed
//!                                   └──file-level error──▶ failed (nothing sent)
//! any but completed/failed ──cancel──▶ cancelled
//! ```
//!
//! Bulk in, bulk out. A parser first reads the whole file without storing
//! anything, to find the errors that refuse a file, and records that it did
//! ([`extend_lease`]). Then, per part of the file, it commits the part's
//! valid rows as *chunks* of up to 1,000 rows' rendered notifications (one
//! `bulk_chunks` row each, keyed by the file row of its first notification),
//! its row errors, the counters and the resume cursor ([`commit_chunk`]):
//! a few rows per part, none in `notifications` and its indexes. Each chunk
//! is then expanded ([`take_chunk`], [`expand_chunk`]) by a `bulk_chunk`
//! job, pushed after the commit and swept like a batch's chunks
//! ([`take_pending_chunks`]): its notifications are inserted in one
//! statement in the transaction that marks it expanded, so a repeated job
//! does nothing and a killed one is rolled back and swept again.
//!
//! Until it is expanded, a chunk's notifications count as `queued` (or
//! `cancelled`, once the job is) in [`get`], so the counts never move
//! backwards and a job completes only when every chunk is expanded and
//! every notification final. Cancel, release and fail change the job first
//! and then touch its unexpanded chunks, which waits for expansions in
//! flight; an expansion reads the job's status only after it holds its
//! chunk, so it either finishes before the change reaches notifications or
//! sees the new status.
//!
//! A job that started committing before files were checked first expands
//! its chunks *held* (`queued` with `run_at = 'infinity'`, which the
//! dispatcher never finds due) and [`release`] makes them due once the
//! whole file has parsed. Jobs in flight from before chunks keep the
//! notifications they inserted directly.

use std::{collections::HashMap, time::Duration};

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::{PgConnection, PgExecutor, types::Json};

use crate::domain::{BulkJobId, Channel, NotificationId, SubscriberId, TenantId};

/// Size of one stored part of an upload.
pub const PART_BYTES: usize = 1024 * 1024;

/// A job to create while its file uploads.
#[derive(Debug, Clone)]
pub struct NewJob<'a> {
    /// The template every notification is rendered from.
    pub template_key: &'a str,
    /// The channels each valid row gets a notification on.
    pub channels: &'a [Channel],
    /// The locale to render.
    pub locale: Option<&'a str>,
    /// Which columns hold what (see the API).
    pub mapping: Value,
    /// The uploaded file's name.
    pub file_name: Option<&'a str>,
    /// The caller's `Idempotency-Key`, if any.
    pub idempotency_key: Option<&'a str>,
}

/// Creates a job in `uploading`; `None` when another job of the tenant
/// already holds the idempotency key.
#[tracing::instrument(skip_all)]
pub async fn create(
    db: impl PgExecutor<'_>,
    tenant_id: TenantId,
    new: NewJob<'_>,
) -> Result<Option<BulkJobId>, sqlx::Error> {
    let channels: Vec<&str> = new.channels.iter().map(|c| c.as_str()).collect();
    sqlx::query_scalar(
        "insert into bulk_jobs
             (id, tenant_id, template_key, channels, locale, mapping, file_name, idempotency_key)
         values ($1, $2, $3, $4, $5, $6, $7, $8)
         on conflict (tenant_id, idempotency_key) where idempotency_key is not null do nothing
         returning id",
    )
    .bind(BulkJobId::new())
    .bind(tenant_id)
    .bind(new.template_key)
    .bind(&channels)
    .bind(new.locale)
    .bind(&new.mapping)
    .bind(new.file_name)
    .bind(new.idempotency_key)
    .fetch_optional(db)
    .await
}

/// The job an idempotency key was used for.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Keyed {
    /// Its id.
    pub id: BulkJobId,
    /// Its status.
    pub status: String,
    /// The file's size.
    pub size_bytes: i64,
    /// The hash of the form and file; `None` while the upload is running.
    pub request_hash: Option<Vec<u8>>,
}

/// The tenant's job that holds `key`, if any.
#[tracing::instrument(skip_all)]
pub async fn by_idempotency_key(
    db: impl PgExecutor<'_>,
    tenant_id: TenantId,
    key: &str,
) -> Result<Option<Keyed>, sqlx::Error> {
    sqlx::query_as(
        "select id, status, size_bytes, request_hash from bulk_jobs
         where tenant_id = $1 and idempotency_key = $2",
    )
    .bind(tenant_id)
    .bind(key)
    .fetch_optional(db)
    .await
}

/// Stores part `part` of an upload.
#[tracing::instrument(skip_all)]
pub async fn put_part(
    db: impl PgExecutor<'_>,
    id: BulkJobId,
    part: i32,
    data: &[u8],
) -> Result<(), sqlx::Error> {
    sqlx::query("insert into bulk_parts (job_id, part, data) values ($1, $2, $3)")
        .bind(id)
        .bind(part)
        .bind(data)
        .execute(db)
        .await?;
    Ok(())
}

/// Marks an upload complete: the job is `queued` and marked pushed, with
/// the hash of its form and file when it was given an idempotency key.
#[tracing::instrument(skip_all)]
pub async fn finish_upload(
    db: impl PgExecutor<'_>,
    tenant_id: TenantId,
    id: BulkJobId,
    size: u64,
    request_hash: Option<&[u8]>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "update bulk_jobs set status = 'queued', size_bytes = $3, dispatched_at = now(),
             request_hash = $4
         where tenant_id = $1 and id = $2 and status = 'uploading'",
    )
    .bind(tenant_id)
    .bind(id)
    .bind(size as i64)
    .bind(request_hash)
    .execute(db)
    .await?;
    Ok(())
}

/// Deletes a job whose upload was refused or cut off, with its parts.
#[tracing::instrument(skip_all)]
pub async fn discard(
    db: impl PgExecutor<'_>,
    tenant_id: TenantId,
    id: BulkJobId,
) -> Result<(), sqlx::Error> {
    sqlx::query("delete from bulk_jobs where tenant_id = $1 and id = $2 and status = 'uploading'")
        .bind(tenant_id)
        .bind(id)
        .execute(db)
        .await?;
    Ok(())
}

/// Marks a job as not in Redis (its push failed).
#[tracing::instrument(skip_all)]
pub async fn release_dispatch(
    db: impl PgExecutor<'_>,
    tenant_id: TenantId,
    id: BulkJobId,
) -> Result<(), sqlx::Error> {
    sqlx::query("update bulk_jobs set dispatched_at = null where tenant_id = $1 and id = $2")
        .bind(tenant_id)
        .bind(id)
        .execute(db)
        .await?;
    Ok(())
}

/// Picks up to `limit` jobs waiting for a parser (never pushed, pushed more
/// than `after` ago, or whose parser's lease ran out: it died) and marks
/// them pushed. Works across tenants.
#[tracing::instrument(skip_all)]
pub async fn take_pending(
    db: impl PgExecutor<'_>,
    after: Duration,
    limit: usize,
) -> Result<Vec<(TenantId, BulkJobId)>, sqlx::Error> {
    sqlx::query_as(
        "with due as (
             select id from bulk_jobs
             where status in ('queued', 'parsing')
               and (lease_until is null or lease_until < now())
               and (dispatched_at is null or dispatched_at < now() - make_interval(secs => $1))
             limit $2
             for update skip locked
         )
         update bulk_jobs j set dispatched_at = now() from due where j.id = due.id
         returning j.tenant_id, j.id",
    )
    .bind(after.as_secs_f64())
    .bind(limit as i64)
    .fetch_all(db)
    .await
}

/// Forgets which waiting jobs and unexpanded chunks were pushed, after
/// Redis lost its data.
#[tracing::instrument(skip_all)]
pub async fn forget_dispatched(db: &sqlx::PgPool) -> Result<u64, sqlx::Error> {
    let jobs = sqlx::query(
        "update bulk_jobs set dispatched_at = null
         where status in ('queued', 'parsing') and dispatched_at is not null",
    )
    .execute(db)
    .await?;
    let chunks = sqlx::query(
        "update bulk_chunks set dispatched_at = null
         where expanded_at is null and dispatched_at is not null",
    )
    .execute(db)
    .await?;
    Ok(jobs.rows_affected() + chunks.rows_affected())
}

/// Picks up to `limit` unexpanded chunks that are not in Redis (never
/// pushed, or pushed longer than `redispatch_after` ago) and marks them
/// pushed. Works across tenants.
#[tracing::instrument(skip_all)]
pub async fn take_pending_chunks(
    db: impl PgExecutor<'_>,
    limit: usize,
    redispatch_after: Duration,
) -> Result<Vec<(TenantId, BulkJobId, i64)>, sqlx::Error> {
    sqlx::query_as(
        "with due as (
             select job_id, seq from bulk_chunks
             where expanded_at is null
               and (dispatched_at is null or dispatched_at < now() - make_interval(secs => $1))
             order by dispatched_at nulls first
             limit $2
             for update skip locked
         )
         update bulk_chunks c set dispatched_at = now()
         from due where c.job_id = due.job_id and c.seq = due.seq
         returning c.tenant_id, c.job_id, c.seq",
    )
    .bind(redispatch_after.as_secs_f64())
    .bind(limit as i64)
    .fetch_all(db)
    .await
}

/// Marks chunks as not in Redis (their push failed), so the sweep pushes
/// them.
#[tracing::instrument(skip_all)]
pub async fn release_chunks(
    db: impl PgExecutor<'_>,
    tenant_id: TenantId,
    id: BulkJobId,
    seqs: &[i64],
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "update bulk_chunks set dispatched_at = null
         where tenant_id = $1 and job_id = $2 and seq = any($3) and expanded_at is null",
    )
    .bind(tenant_id)
    .bind(id)
    .bind(seqs)
    .execute(db)
    .await?;
    Ok(())
}

/// A job a parser holds.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Claimed {
    /// The template key.
    pub template_key: String,
    /// The channels.
    pub channels: Vec<String>,
    /// The locale.
    pub locale: Option<String>,
    /// The column mapping.
    pub mapping: Json<Value>,
    /// The file's size.
    pub size_bytes: i64,
    /// Where the next unread row starts.
    pub cursor_offset: i64,
    /// Rows before it.
    pub cursor_row: i64,
    /// The header, once read.
    pub header: Option<Vec<String>>,
    /// When the whole file was found free of file-level errors.
    pub checked_at: Option<DateTime<Utc>>,
}

/// Claims a queued job, or one whose parser's lease ran out, for `lease`.
#[tracing::instrument(skip_all)]
pub async fn claim(
    db: impl PgExecutor<'_>,
    tenant_id: TenantId,
    id: BulkJobId,
    lease: Duration,
) -> Result<Option<Claimed>, sqlx::Error> {
    sqlx::query_as(
        "update bulk_jobs set status = 'parsing', lease_until = now() + make_interval(secs => $3),
             dispatched_at = null
         where tenant_id = $1 and id = $2 and status in ('queued', 'parsing')
           and (lease_until is null or lease_until < now())
         returning template_key, channels, locale, mapping, size_bytes, cursor_offset, cursor_row, header,
             checked_at",
    )
    .bind(tenant_id)
    .bind(id)
    .bind(lease.as_secs_f64())
    .fetch_optional(db)
    .await
}

/// Extends the parser's lease, and records that the whole file was checked
/// and holds no file-level error when `checked`; false if the job is no
/// longer `parsing` (cancelled meanwhile), and the parser should stop.
#[tracing::instrument(skip_all)]
pub async fn extend_lease(
    db: impl PgExecutor<'_>,
    tenant_id: TenantId,
    id: BulkJobId,
    lease: Duration,
    checked: bool,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "update bulk_jobs set lease_until = now() + make_interval(secs => $3),
             checked_at = case when $4 then now() else checked_at end
         where tenant_id = $1 and id = $2 and status = 'parsing'",
    )
    .bind(tenant_id)
    .bind(id)
    .bind(lease.as_secs_f64())
    .bind(checked)
    .execute(db)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Part `part` of a job's file.
#[tracing::instrument(skip_all)]
pub async fn part(
    db: impl PgExecutor<'_>,
    id: BulkJobId,
    part: i32,
) -> Result<Option<Vec<u8>>, sqlx::Error> {
    sqlx::query_scalar("select data from bulk_parts where job_id = $1 and part = $2")
        .bind(id)
        .bind(part)
        .fetch_optional(db)
        .await
}

/// The recipients (the first channel's) already taken by valid rows, with
/// their rows, whether still held in chunks or expanded (one snapshot): a
/// resumed parser reports later copies as duplicates.
#[tracing::instrument(skip_all)]
pub async fn seen_recipients(
    db: impl PgExecutor<'_>,
    id: BulkJobId,
    channel: Channel,
) -> Result<Vec<(String, i64)>, sqlx::Error> {
    sqlx::query_as(
        "select recipient, bulk_row from notifications where bulk_job_id = $1 and channel = $2
         union all
         select r.t, r.r from bulk_chunks c
             cross join lateral json_to_recordset(c.notifications) as r(r int8, c text, t text)
         where c.job_id = $1 and c.notifications is not null and r.c = $2",
    )
    .bind(id)
    .bind(channel)
    .fetch_all(db)
    .await
}

/// One notification a row becomes, as a chunk holds it (short keys: a
/// million of them are written and read once).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct HeldNotification {
    /// The row (1 = the first after the header).
    #[serde(rename = "r")]
    pub row: i64,
    /// The channel.
    #[serde(rename = "c")]
    pub channel: Channel,
    /// Where it goes.
    #[serde(rename = "t")]
    pub recipient: String,
    /// Rendered content.
    #[serde(rename = "b")]
    pub content: Value,
    /// The subscriber's external id, if the file maps one.
    #[serde(rename = "s", default, skip_serializing_if = "Option::is_none")]
    pub subscriber: Option<String>,
    /// Attempts allowed.
    #[serde(rename = "a")]
    pub max_attempts: i32,
}

/// Most valid rows one chunk holds.
pub const CHUNK_ROWS: usize = 1_000;

/// Splits notifications (in row order) into chunks of up to
/// [`CHUNK_ROWS`] rows, never splitting a row: `(seq, rows, notifications)`
/// with `seq` the first notification's row.
pub fn chunks_of(notifications: &[HeldNotification]) -> Vec<(i64, i32, &[HeldNotification])> {
    let mut out = Vec::new();
    let mut start = 0;
    while start < notifications.len() {
        let mut rows = 0;
        let mut end = start;
        while end < notifications.len() {
            let row = notifications[end].row;
            if end == start || row != notifications[end - 1].row {
                if rows == CHUNK_ROWS {
                    break;
                }
                rows += 1;
            }
            end += 1;
        }
        out.push((
            notifications[start].row,
            rows as i32,
            &notifications[start..end],
        ));
        start = end;
    }
    out
}

/// One problem with a row.
#[derive(Debug, Clone)]
pub struct RowError {
    /// The row (1 = the first after the header).
    pub row: i64,
    /// The column.
    pub column: String,
    /// Why.
    pub reason: String,
    /// The value as given, if any.
    pub value: Option<String>,
}

/// What one committed piece of the parse holds.
#[derive(Debug, Clone, Default)]
pub struct Chunk {
    /// The notifications of its valid rows.
    pub notifications: Vec<HeldNotification>,
    /// Its row errors (invalid rows and duplicates).
    pub errors: Vec<RowError>,
    /// Rows read.
    pub rows: i64,
    /// Valid rows.
    pub valid: i64,
    /// Invalid rows.
    pub invalid: i64,
    /// Duplicate rows.
    pub duplicates: i64,
    /// Where the next unread row starts.
    pub next_offset: i64,
    /// The header, when this piece read it.
    pub header: Option<Vec<String>>,
}

/// Commits one piece of the parse in one transaction: its notifications,
/// held in chunks of up to [`CHUNK_ROWS`] rows (marked pushed: the caller
/// pushes their jobs after the commit), row errors, counters and the
/// cursor. Returns the chunks' keys, or `None` (nothing written) unless the
/// job is still `parsing` at cursor `from_offset`: it was cancelled, or
/// another parser moved on.
#[expect(clippy::too_many_arguments)]
#[tracing::instrument(skip_all, fields(rows = chunk.rows))]
pub async fn commit_chunk(
    db: &mut PgConnection,
    tenant_id: TenantId,
    id: BulkJobId,
    from_offset: i64,
    chunk: &Chunk,
    category: Option<&str>,
    critical: bool,
    lease: Duration,
) -> Result<Option<Vec<i64>>, sqlx::Error> {
    // No key update: expansions of this job's chunks never wait for it.
    let ours: Option<i64> = sqlx::query_scalar(
        "select cursor_offset from bulk_jobs
         where tenant_id = $1 and id = $2 and status = 'parsing' for no key update",
    )
    .bind(tenant_id)
    .bind(id)
    .fetch_optional(&mut *db)
    .await?;
    if ours != Some(from_offset) {
        return Ok(None);
    }
    let pieces = chunks_of(&chunk.notifications);
    let seqs: Vec<i64> = pieces.iter().map(|p| p.0).collect();
    if !pieces.is_empty() {
        let rows: Vec<i32> = pieces.iter().map(|p| p.1).collect();
        let counts: Vec<i32> = pieces.iter().map(|p| p.2.len() as i32).collect();
        let payloads = pieces
            .iter()
            .map(|p| serde_json::to_string(p.2))
            .collect::<Result<Vec<String>, _>>()
            .map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
        sqlx::query(
            "insert into bulk_chunks
                 (job_id, seq, tenant_id, row_count, notification_count, notifications, category,
                  critical, dispatched_at)
             select $1, c.seq, $2, c.rows, c.n, c.payload::json, $3, $4, now()
             from unnest($5::int8[], $6::int4[], $7::int4[], $8::text[]) as c(seq, rows, n, payload)
             on conflict (job_id, seq) do nothing",
        )
        .bind(id)
        .bind(tenant_id)
        .bind(category)
        .bind(critical)
        .bind(&seqs)
        .bind(&rows)
        .bind(&counts)
        .bind(&payloads)
        .execute(&mut *db)
        .await?;
    }
    if !chunk.errors.is_empty() {
        let e = &chunk.errors;
        let rows: Vec<i64> = e.iter().map(|x| x.row).collect();
        let mut positions = Vec::with_capacity(e.len());
        let mut last = (-1, 0i16);
        for x in e {
            last = if x.row == last.0 {
                (x.row, last.1 + 1)
            } else {
                (x.row, 0)
            };
            positions.push(last.1);
        }
        let columns: Vec<&str> = e.iter().map(|x| x.column.as_str()).collect();
        let reasons: Vec<&str> = e.iter().map(|x| x.reason.as_str()).collect();
        let values: Vec<Option<&str>> = e.iter().map(|x| x.value.as_deref()).collect();
        sqlx::query(
            "insert into bulk_row_errors (job_id, row_number, position, column_name, reason, value)
             select $1, r.row, r.position, r.col, r.reason, r.value
             from unnest($2::int8[], $3::int2[], $4::text[], $5::text[], $6::text[])
                  as r(row, position, col, reason, value)
             on conflict do nothing",
        )
        .bind(id)
        .bind(&rows)
        .bind(&positions)
        .bind(&columns)
        .bind(&reasons)
        .bind(&values)
        .execute(&mut *db)
        .await?;
    }
    sqlx::query(
        "update bulk_jobs set cursor_offset = $3, cursor_row = cursor_row + $4,
             rows_read = rows_read + $4, rows_valid = rows_valid + $5,
             rows_invalid = rows_invalid + $6, rows_duplicate = rows_duplicate + $7,
             header = coalesce($8, header), lease_until = now() + make_interval(secs => $9)
         where tenant_id = $1 and id = $2",
    )
    .bind(tenant_id)
    .bind(id)
    .bind(chunk.next_offset)
    .bind(chunk.rows)
    .bind(chunk.valid)
    .bind(chunk.invalid)
    .bind(chunk.duplicates)
    .bind(&chunk.header)
    .bind(lease.as_secs_f64())
    .execute(&mut *db)
    .await?;
    Ok(Some(seqs))
}

/// A chunk locked for expansion, with its job's state read after the lock.
#[derive(Debug, Clone)]
pub struct PendingChunk {
    /// Its notifications.
    pub notifications: Vec<HeldNotification>,
    /// The template's category when they were rendered.
    pub category: Option<String>,
    /// Whether the template was critical.
    pub critical: bool,
    /// The job's status.
    pub job_status: String,
    /// Whether the job holds its notifications until its file has parsed
    /// (it started committing before files were checked first).
    pub hold: bool,
}

/// Locks an unexpanded chunk for expansion in the caller's transaction and
/// reads its job's status (after the lock, so a cancel or release that
/// settled the chunks first is seen). `None` when it is already expanded
/// (a duplicate job), or gone (its job failed). A concurrent duplicate
/// waits for the first and then finds it expanded.
#[tracing::instrument(skip_all)]
pub async fn take_chunk(
    db: &mut PgConnection,
    tenant_id: TenantId,
    id: BulkJobId,
    seq: i64,
) -> Result<Option<PendingChunk>, sqlx::Error> {
    let chunk: Option<(Option<String>, Option<String>, bool)> = sqlx::query_as(
        "select notifications::text, category, critical from bulk_chunks
         where tenant_id = $1 and job_id = $2 and seq = $3 and expanded_at is null
         for update",
    )
    .bind(tenant_id)
    .bind(id)
    .bind(seq)
    .fetch_optional(&mut *db)
    .await?;
    let Some((payload, category, critical)) = chunk else {
        return Ok(None);
    };
    let (job_status, hold): (String, bool) = sqlx::query_as(
        "select status, status = 'parsing' and checked_at is null from bulk_jobs
         where tenant_id = $1 and id = $2",
    )
    .bind(tenant_id)
    .bind(id)
    .fetch_one(&mut *db)
    .await?;
    let notifications = serde_json::from_str(payload.as_deref().unwrap_or("[]"))
        .map_err(|e| sqlx::Error::Decode(Box::new(e)))?;
    Ok(Some(PendingChunk {
        notifications,
        category,
        critical,
        job_status,
        hold,
    }))
}

/// Inserts a locked chunk's notifications in one statement (rows that exist
/// from an earlier run are left alone; due at once, held while the job
/// holds them, `cancelled` once the job is cancelled or failed) and marks
/// the chunk expanded, dropping its payload. With `place_inapp`, due in-app
/// rows that leave nothing to decide are inserted already in their inboxes,
/// as [`super::batches::expand`] does; the caller announces them.
#[tracing::instrument(skip_all, fields(rows = chunk.notifications.len()))]
pub async fn expand_chunk(
    db: &mut PgConnection,
    tenant_id: TenantId,
    id: BulkJobId,
    seq: i64,
    chunk: &PendingChunk,
    place_inapp: bool,
) -> Result<super::batches::ExpandedChunk, sqlx::Error> {
    let n = &chunk.notifications;
    let mut external: Vec<String> = n.iter().filter_map(|n| n.subscriber.clone()).collect();
    external.sort_unstable();
    external.dedup();
    let found = super::batches::subscriber_ids(db, tenant_id, &external).await?;
    let subscribers = &found.ids;
    let ids: Vec<NotificationId> = n.iter().map(|_| NotificationId::new()).collect();
    let rows: Vec<i64> = n.iter().map(|x| x.row).collect();
    let channels: Vec<&str> = n.iter().map(|x| x.channel.as_str()).collect();
    let recipients: Vec<&str> = n.iter().map(|x| x.recipient.as_str()).collect();
    let contents: Vec<&Value> = n.iter().map(|x| &x.content).collect();
    let subs: Vec<Option<SubscriberId>> = n
        .iter()
        .map(|x| {
            x.subscriber
                .as_ref()
                .and_then(|s| subscribers.get(s).copied())
        })
        .collect();
    let attempts: Vec<i32> = n.iter().map(|x| x.max_attempts).collect();
    let (status, error) = match chunk.job_status.as_str() {
        "cancelled" => ("cancelled", Some("the bulk job was cancelled")),
        "failed" => ("cancelled", Some("the bulk job failed")),
        _ => ("queued", None),
    };
    let held = chunk.hold && status == "queued";
    let place_inapp = place_inapp && status == "queued" && !held;
    if place_inapp {
        let inbox_owners = found.to_lock(
            n.iter()
                .zip(&subs)
                .filter(|(x, _)| x.channel == Channel::InApp)
                .filter_map(|(_, s)| *s),
        );
        super::events::lock_subscribers(db, tenant_id, inbox_owners).await?;
    }
    let written: Vec<(NotificationId, bool, DateTime<Utc>)> = sqlx::query_as(
        "with r as (
             -- Whether each row goes straight into its inbox, decided once per row.
             select r.*, ($15 and r.channel = 'inapp' and r.subscriber_id is not null
                          and ($4 or not exists (
                              select 1 from subscriber_preferences p
                              where p.tenant_id = $1 and p.subscriber_id = r.subscriber_id)))
                         as placed
             from unnest($5::uuid[], $6::int8[], $7::text[], $8::text[], $9::jsonb[],
                         $10::uuid[], $11::int4[])
                 as r(id, row, channel, recipient, content, subscriber_id, max_attempts)
         )
         insert into notifications
             (id, tenant_id, channel, recipient, content, max_attempts, subscriber_id, category,
              critical, send_id, status, last_error, run_at, bulk_job_id, bulk_row,
              attempts, provider_message_id, sent_at, template_key)
         select r.id, $1, r.channel, r.recipient, r.content, r.max_attempts, r.subscriber_id, $3,
                $4, null, case when r.placed then 'sent' else $12 end, $13,
                case when $14 then 'infinity'::timestamptz else now() end, $2, r.row,
                case when r.placed then 1 else 0 end,
                case when r.placed then 'inapp:' || r.id::text end,
                case when r.placed then now() end,
                (select j.template_key from bulk_jobs j where j.id = $2)
         from r
         on conflict (bulk_job_id, bulk_row, channel) where bulk_job_id is not null do nothing
         returning id, status = 'sent', created_at",
    )
    .bind(tenant_id)
    .bind(id)
    .bind(chunk.category.as_deref())
    .bind(chunk.critical)
    .bind(&ids)
    .bind(&rows)
    .bind(&channels)
    .bind(&recipients)
    .bind(&contents)
    .bind(&subs)
    .bind(&attempts)
    .bind(status)
    .bind(error)
    .bind(held)
    .bind(place_inapp)
    .fetch_all(&mut *db)
    .await?;
    sqlx::query(
        "update bulk_chunks set expanded_at = now(), notifications = null
         where tenant_id = $1 and job_id = $2 and seq = $3",
    )
    .bind(tenant_id)
    .bind(id)
    .bind(seq)
    .execute(&mut *db)
    .await?;
    let by_id: HashMap<NotificationId, usize> =
        ids.iter().enumerate().map(|(i, id)| (*id, i)).collect();
    let placed = written
        .iter()
        .filter(|(_, sent, _)| *sent)
        .filter_map(|(nid, _, created_at)| {
            let i = *by_id.get(nid)?;
            Some((
                subs[i]?,
                crate::db::inbox::Item {
                    id: *nid,
                    category: chunk.category.clone(),
                    content: Json(n[i].content.clone()),
                    read_at: None,
                    archived_at: None,
                    created_at: *created_at,
                },
            ))
        })
        .collect();
    Ok(super::batches::ExpandedChunk {
        inserted: written.len() as u64,
        placed,
    })
}

/// Waits for the expansions in flight of a job's chunks, after the caller
/// changed the job: an expansion that starts later reads the new status.
async fn settle_chunks(
    db: &mut PgConnection,
    tenant_id: TenantId,
    id: BulkJobId,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "update bulk_chunks set dispatched_at = dispatched_at
         where tenant_id = $1 and job_id = $2 and expanded_at is null",
    )
    .bind(tenant_id)
    .bind(id)
    .execute(&mut *db)
    .await?;
    Ok(())
}

/// The whole file has parsed: moves the job to `sending` and, when it
/// `held` its notifications, releases them in one statement (chunks not yet
/// expanded then expand due). False if it is no longer `parsing`
/// (cancelled meanwhile).
#[tracing::instrument(skip_all)]
pub async fn release(
    db: &mut PgConnection,
    tenant_id: TenantId,
    id: BulkJobId,
    held: bool,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "update bulk_jobs set status = 'sending', parsed_at = now(), lease_until = null
         where tenant_id = $1 and id = $2 and status = 'parsing'",
    )
    .bind(tenant_id)
    .bind(id)
    .execute(&mut *db)
    .await?;
    if done.rows_affected() == 0 {
        return Ok(false);
    }
    if !held {
        return Ok(true);
    }
    settle_chunks(db, tenant_id, id).await?;
    sqlx::query(
        "update notifications set run_at = now()
         where tenant_id = $1 and bulk_job_id = $2 and status = 'queued' and run_at = 'infinity'",
    )
    .bind(tenant_id)
    .bind(id)
    .execute(&mut *db)
    .await?;
    Ok(true)
}

/// A file-level error: the job fails with `reason`. Its chunks not yet
/// expanded and its held notifications are deleted, and any due ones not
/// yet sent are cancelled. (A checked file has no file-level error left to
/// find, so in practice there are none.)
#[tracing::instrument(skip_all)]
pub async fn fail(
    db: &mut PgConnection,
    tenant_id: TenantId,
    id: BulkJobId,
    reason: &str,
) -> Result<(), sqlx::Error> {
    let done = sqlx::query(
        "update bulk_jobs set status = 'failed', failure = $3, failed_at = now(), lease_until = null
         where tenant_id = $1 and id = $2 and status in ('queued', 'parsing')",
    )
    .bind(tenant_id)
    .bind(id)
    .bind(reason)
    .execute(&mut *db)
    .await?;
    if done.rows_affected() == 1 {
        sqlx::query(
            "delete from bulk_chunks where tenant_id = $1 and job_id = $2 and expanded_at is null",
        )
        .bind(tenant_id)
        .bind(id)
        .execute(&mut *db)
        .await?;
        sqlx::query(
            "delete from notifications
             where tenant_id = $1 and bulk_job_id = $2 and status = 'queued' and run_at = 'infinity'",
        )
        .bind(tenant_id)
        .bind(id)
        .execute(&mut *db)
        .await?;
        sqlx::query(
            "update notifications set status = 'cancelled', dispatched_at = null,
                 last_error = 'the bulk job failed: ' || $3
             where tenant_id = $1 and bulk_job_id = $2 and status in ('queued', 'deferred', 'sending')",
        )
        .bind(tenant_id)
        .bind(id)
        .bind(reason)
        .execute(&mut *db)
        .await?;
    }
    Ok(())
}

/// What [`cancel`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cancelled {
    /// Cancelled now; this many notifications will not be sent.
    Done(u64),
    /// Already final in this status.
    Refused(String),
    /// No such job for this tenant.
    NotFound,
}

/// Cancels a job: the parser stops at its next commit, chunks not yet
/// expanded expand as `cancelled`, and every notification not yet sent
/// (held, queued, or `sending` in a worker that has not called a provider
/// yet) is cancelled, set-based; a worker sees it before calling a provider
/// (see [`super::notifications`]).
#[tracing::instrument(skip_all)]
pub async fn cancel(
    db: &mut PgConnection,
    tenant_id: TenantId,
    id: BulkJobId,
) -> Result<Cancelled, sqlx::Error> {
    let done = sqlx::query(
        "update bulk_jobs set status = 'cancelled', cancelled_at = now(), lease_until = null
         where tenant_id = $1 and id = $2 and status in ('uploading', 'queued', 'parsing', 'sending')",
    )
    .bind(tenant_id)
    .bind(id)
    .execute(&mut *db)
    .await?;
    if done.rows_affected() == 0 {
        let status: Option<String> =
            sqlx::query_scalar("select status from bulk_jobs where tenant_id = $1 and id = $2")
                .bind(tenant_id)
                .bind(id)
                .fetch_optional(&mut *db)
                .await?;
        return Ok(status.map_or(Cancelled::NotFound, Cancelled::Refused));
    }
    settle_chunks(db, tenant_id, id).await?;
    let held: i64 = sqlx::query_scalar(
        "select coalesce(sum(notification_count), 0)::int8 from bulk_chunks
         where tenant_id = $1 and job_id = $2 and expanded_at is null",
    )
    .bind(tenant_id)
    .bind(id)
    .fetch_one(&mut *db)
    .await?;
    let n = sqlx::query(
        "update notifications set status = 'cancelled', dispatched_at = null,
             last_error = 'the bulk job was cancelled'
         where tenant_id = $1 and bulk_job_id = $2 and status in ('queued', 'deferred', 'sending')",
    )
    .bind(tenant_id)
    .bind(id)
    .execute(&mut *db)
    .await?;
    Ok(Cancelled::Done(n.rows_affected() + held as u64))
}

/// A job as its tenant sees it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Job {
    /// Its id.
    pub id: BulkJobId,
    /// The status.
    pub status: String,
    /// Why it failed.
    pub failure: Option<String>,
    /// The template key.
    pub template_key: String,
    /// The channels.
    pub channels: Vec<String>,
    /// The uploaded file's name.
    pub file_name: Option<String>,
    /// Its size.
    pub size_bytes: i64,
    /// Bytes parsed so far.
    pub cursor_offset: i64,
    /// Rows read.
    pub rows_read: i64,
    /// Valid rows.
    pub rows_valid: i64,
    /// Invalid rows.
    pub rows_invalid: i64,
    /// Duplicate rows.
    pub rows_duplicate: i64,
    /// When the whole file was found free of file-level errors.
    pub checked_at: Option<DateTime<Utc>>,
    /// When parsing finished.
    pub parsed_at: Option<DateTime<Utc>>,
    /// When the last notification finished.
    pub completed_at: Option<DateTime<Utc>>,
    /// When it was cancelled.
    pub cancelled_at: Option<DateTime<Utc>>,
    /// When it failed.
    pub failed_at: Option<DateTime<Utc>>,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
}

/// Notifications per status, as `(status, count)`.
pub type StatusCounts = Vec<(String, i64)>;

/// A stored row error: row, position within the row, column, reason, value.
pub type ErrorRow = (i64, i16, String, String, Option<String>);

/// Reads a job of `tenant_id` with its notifications per status, and marks
/// a `sending` job `completed` once every notification is final.
#[tracing::instrument(skip_all)]
pub async fn get(
    db: &mut PgConnection,
    tenant_id: TenantId,
    id: BulkJobId,
) -> Result<Option<(Job, StatusCounts)>, sqlx::Error> {
    const COLUMNS: &str = "id, status, failure, template_key, channels, file_name, size_bytes, \
        cursor_offset, rows_read, rows_valid, rows_invalid, rows_duplicate, checked_at, parsed_at, \
        completed_at, cancelled_at, failed_at, created_at, updated_at";
    let job: Option<Job> = sqlx::query_as(&format!(
        "select {COLUMNS} from bulk_jobs where tenant_id = $1 and id = $2"
    ))
    .bind(tenant_id)
    .bind(id)
    .fetch_optional(&mut *db)
    .await?;
    let Some(mut job) = job else {
        return Ok(None);
    };
    // Notifications and the chunks not yet expanded, in one snapshot.
    let rows: Vec<(String, i64)> = sqlx::query_as(
        "select status, count(*) from notifications
         where tenant_id = $1 and bulk_job_id = $2 group by status
         union all
         select '', coalesce(sum(notification_count), 0)::int8 from bulk_chunks
         where tenant_id = $1 and job_id = $2 and expanded_at is null",
    )
    .bind(tenant_id)
    .bind(id)
    .fetch_all(&mut *db)
    .await?;
    let counts = with_held(rows, &job.status);
    let open = counts
        .iter()
        .filter(|(s, _)| matches!(s.as_str(), "queued" | "deferred" | "sending"))
        .count();
    if job.status == "sending" && open == 0 {
        let done: Option<Job> = sqlx::query_as(&format!(
            "update bulk_jobs set status = 'completed',
                 completed_at = greatest(parsed_at, (select max(updated_at) from notifications
                                                     where tenant_id = $1 and bulk_job_id = $2))
             where tenant_id = $1 and id = $2 and status = 'sending' returning {COLUMNS}"
        ))
        .bind(tenant_id)
        .bind(id)
        .fetch_optional(&mut *db)
        .await?;
        if let Some(done) = done {
            job = done;
        }
    }
    Ok(Some((job, counts)))
}

/// Counts per status with the notifications still held in chunks (status
/// `""`) counted as `queued`, or `cancelled` once the job is, sorted by
/// status.
fn with_held(rows: Vec<(String, i64)>, job_status: &str) -> StatusCounts {
    let mut counts: std::collections::BTreeMap<String, i64> = Default::default();
    for (status, n) in rows {
        let status = match status.as_str() {
            "" if job_status == "cancelled" => "cancelled".to_owned(),
            "" => "queued".to_owned(),
            _ => status,
        };
        if n > 0 {
            *counts.entry(status).or_default() += n;
        }
    }
    counts.into_iter().collect()
}

/// Up to `limit` row errors of a job after row `after` (errors of one row
/// come together).
#[tracing::instrument(skip_all)]
pub async fn errors(
    db: impl PgExecutor<'_>,
    id: BulkJobId,
    after: (i64, i16),
    limit: i64,
) -> Result<Vec<ErrorRow>, sqlx::Error> {
    sqlx::query_as(
        "select row_number, position, column_name, reason, value from bulk_row_errors
         where job_id = $1 and (row_number, position) > ($2, $3)
         order by row_number, position limit $4",
    )
    .bind(id)
    .bind(after.0)
    .bind(after.1)
    .bind(limit)
    .fetch_all(db)
    .await
}

/// Which columns of a file hold what.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mapping {
    /// The column with the subscriber's external id (required for in-app).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subscriber_id: Option<String>,
    /// The column with the email address (required for email).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// The column with the E.164 number (required for sms and whatsapp).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone: Option<String>,
    /// Template variable → the column that feeds it.
    #[serde(default)]
    pub data: std::collections::BTreeMap<String, String>,
}

impl Mapping {
    /// The column that holds `channel`'s recipient.
    pub fn column_for(&self, channel: Channel) -> Option<&str> {
        match channel {
            Channel::Email => self.email.as_deref(),
            Channel::Sms | Channel::WhatsApp => self.phone.as_deref(),
            Channel::InApp => self.subscriber_id.as_deref(),
            Channel::Push => None,
        }
    }

    /// Every column it names, once each, in a stable order.
    pub fn columns(&self) -> Vec<&str> {
        let mut out: Vec<&str> = Vec::new();
        let named = [&self.subscriber_id, &self.email, &self.phone]
            .into_iter()
            .flatten()
            .map(String::as_str)
            .chain(self.data.values().map(String::as_str));
        for c in named {
            if !out.contains(&c) {
                out.push(c);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn held(row: i64, channel: Channel) -> HeldNotification {
        HeldNotification {
            row,
            channel,
            recipient: format!("r{row}"),
            content: json!({"title": "t"}),
            subscriber: None,
            max_attempts: 3,
        }
    }

    #[test]
    fn chunks_hold_up_to_a_thousand_rows_and_never_split_a_row() {
        // 2,500 rows on two channels, with a gap (an invalid row) at 1,001.
        let n: Vec<HeldNotification> = (1..=2_501)
            .filter(|r| *r != 1_001)
            .flat_map(|r| [held(r, Channel::Email), held(r, Channel::Sms)])
            .collect();
        let chunks = chunks_of(&n);
        let shape: Vec<(i64, i32, usize)> = chunks.iter().map(|c| (c.0, c.1, c.2.len())).collect();
        assert_eq!(
            shape,
            vec![
                (1, 1_000, 2_000),
                (1_002, 1_000, 2_000),
                (2_002, 500, 1_000)
            ]
        );
        assert!(chunks_of(&[]).is_empty());
    }

    #[test]
    fn a_held_notification_reads_back_as_written() {
        let mut n = held(7, Channel::WhatsApp);
        n.subscriber = Some("patient-7".into());
        let text = serde_json::to_string(&[n.clone(), held(8, Channel::InApp)]).unwrap();
        let back: Vec<HeldNotification> = serde_json::from_str(&text).unwrap();
        assert_eq!(back, vec![n, held(8, Channel::InApp)]);
    }

    #[test]
    fn held_notifications_count_as_queued_until_the_job_is_cancelled() {
        let rows = vec![
            ("sent".to_owned(), 2),
            ("queued".to_owned(), 1),
            (String::new(), 5),
        ];
        assert_eq!(
            with_held(rows.clone(), "sending"),
            vec![("queued".to_owned(), 6), ("sent".to_owned(), 2)]
        );
        assert_eq!(
            with_held(rows, "cancelled"),
            vec![
                ("cancelled".to_owned(), 5),
                ("queued".to_owned(), 1),
                ("sent".to_owned(), 2)
            ]
        );
        assert!(with_held(vec![(String::new(), 0)], "sending").is_empty());
    }
}
