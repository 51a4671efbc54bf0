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

use crate::{
    domain::{BulkJobId, Channel, NotificationId, SubscriberId, TenantId},
    jobs::ParseBulkCsv,
    outbox::Enqueued,
};

mod read;
pub use read::*;

mod chunks;
pub use chunks::*;

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
    sqlx::query_scalar!(
        r#"insert into bulk_jobs
             (id, tenant_id, template_key, channels, locale, mapping, file_name, idempotency_key)
         values ($1, $2, $3, $4, $5, $6, $7, $8)
         on conflict (tenant_id, idempotency_key) where idempotency_key is not null do nothing
         returning id as "id: BulkJobId""#,
        BulkJobId::new() as _,
        tenant_id as _,
        new.template_key,
        channels.as_slice() as &[&str],
        new.locale,
        &new.mapping,
        new.file_name,
        new.idempotency_key,
    )
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
    sqlx::query_as!(
        Keyed,
        r#"select id as "id: BulkJobId", status, size_bytes, request_hash from bulk_jobs
         where tenant_id = $1 and idempotency_key = $2"#,
        tenant_id as _,
        key,
    )
    .fetch_optional(db)
    .await
}

/// Stores part `part` of an upload, then gives back the connection's
/// buffers: a part grows them to its size, and a pooled connection would
/// otherwise keep a part's worth of memory for as long as it lives (each
/// connection of the pool, as an upload's parts go round them).
#[tracing::instrument(skip_all)]
pub async fn put_part(
    db: &mut PgConnection,
    id: BulkJobId,
    part: i32,
    data: &[u8],
) -> Result<(), sqlx::Error> {
    let stored = sqlx::query!(
        "insert into bulk_parts (job_id, part, data) values ($1, $2, $3)",
        id as _,
        part,
        data,
    )
    .execute(&mut *db)
    .await;
    sqlx::Connection::shrink_buffers(db);
    stored?;
    Ok(())
}

/// Marks an upload complete: the job is `queued` and marked pushed, with
/// the hash of its form and file when it was given an idempotency key.
/// Returns its parse job, for the caller to push after the commit.
#[tracing::instrument(skip_all)]
pub async fn finish_upload(
    db: impl PgExecutor<'_>,
    tenant_id: TenantId,
    id: BulkJobId,
    size: u64,
    request_hash: Option<&[u8]>,
) -> Result<Enqueued<ParseBulkCsv>, sqlx::Error> {
    let done = sqlx::query!(
        "update bulk_jobs set status = 'queued', size_bytes = $3, dispatched_at = now(),
             request_hash = $4
         where tenant_id = $1 and id = $2 and status = 'uploading'",
        tenant_id as _,
        id as _,
        size as i64,
        request_hash,
    )
    .execute(db)
    .await?;
    Ok(if done.rows_affected() == 1 {
        Enqueued::one(ParseBulkCsv {
            tenant_id,
            job_id: id,
        })
    } else {
        Enqueued::none()
    })
}

/// Deletes a job whose upload was refused or cut off, with its parts.
#[tracing::instrument(skip_all)]
pub async fn discard(
    db: impl PgExecutor<'_>,
    tenant_id: TenantId,
    id: BulkJobId,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "delete from bulk_jobs where tenant_id = $1 and id = $2 and status = 'uploading'",
        tenant_id as _,
        id as _,
    )
    .execute(db)
    .await?;
    Ok(())
}

/// Marks jobs (`(tenant, job)`) as not in Redis (their push failed, the
/// window was full, or a parser handed its job back). Called through
/// [`crate::outbox`].
#[tracing::instrument(skip_all)]
pub async fn release_dispatch(
    db: impl PgExecutor<'_>,
    jobs: &[(TenantId, BulkJobId)],
) -> Result<(), sqlx::Error> {
    let (tenants, ids): (Vec<TenantId>, Vec<BulkJobId>) = jobs.iter().copied().unzip();
    // Whatever the job's status.
    super::release_dispatched(db, "bulk_jobs", "true", &tenants, ids).await
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
    let rows = sqlx::query!(
        r#"with due as (
             select id from bulk_jobs
             where status in ('queued', 'parsing')
               and (lease_until is null or lease_until < now())
               and (dispatched_at is null or dispatched_at < now() - make_interval(secs => $1))
             limit $2
             for update skip locked
         )
         update bulk_jobs j set dispatched_at = now() from due where j.id = due.id
         returning j.tenant_id as "tenant_id: TenantId", j.id as "id: BulkJobId""#,
        after.as_secs_f64(),
        limit as i64,
    )
    .fetch_all(db)
    .await?;
    Ok(rows.into_iter().map(|r| (r.tenant_id, r.id)).collect())
}

/// Forgets which waiting jobs were pushed, after Redis lost its data.
/// Works across tenants.
#[tracing::instrument(skip_all)]
pub async fn forget_dispatched(db: impl PgExecutor<'_>) -> Result<u64, sqlx::Error> {
    super::forget_dispatched(db, "bulk_jobs", "status in ('queued', 'parsing')").await
}

/// Forgets which unexpanded chunks were pushed, after Redis lost its data.
/// Works across tenants.
#[tracing::instrument(skip_all)]
pub async fn forget_dispatched_chunks(db: impl PgExecutor<'_>) -> Result<u64, sqlx::Error> {
    super::chunks::BULK.forget_dispatched(db).await
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
    super::chunks::BULK
        .take_pending(db, limit, redispatch_after)
        .await
}

/// Marks chunks (`(tenant, job, seq)`) as not in Redis (their push failed,
/// the window was full, or a worker handed their job back), so the sweep
/// pushes them. Called through [`crate::outbox`].
#[tracing::instrument(skip_all)]
pub async fn release_chunks(
    db: impl PgExecutor<'_>,
    chunks: &[(TenantId, BulkJobId, i64)],
) -> Result<(), sqlx::Error> {
    super::chunks::BULK.release(db, chunks).await
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
    sqlx::query_as!(
        Claimed,
        r#"update bulk_jobs set status = 'parsing', lease_until = now() + make_interval(secs => $3),
             dispatched_at = null
         where tenant_id = $1 and id = $2 and status in ('queued', 'parsing')
           and (lease_until is null or lease_until < now())
         returning template_key, channels, locale, mapping as "mapping: Json<Value>", size_bytes, cursor_offset, cursor_row, header,
             checked_at"#,
        tenant_id as _,
        id as _,
        lease.as_secs_f64(),
    )
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
    let done = sqlx::query!(
        "update bulk_jobs set lease_until = now() + make_interval(secs => $3),
             checked_at = case when $4 then now() else checked_at end
         where tenant_id = $1 and id = $2 and status = 'parsing'",
        tenant_id as _,
        id as _,
        lease.as_secs_f64(),
        checked,
    )
    .execute(db)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Part `part` of a job's file. The connection's buffers are given back
/// after the read, as [`put_part`] does after a write.
#[tracing::instrument(skip_all)]
pub async fn part(
    db: &mut PgConnection,
    tenant_id: TenantId,
    id: BulkJobId,
    part: i32,
) -> Result<Option<Vec<u8>>, sqlx::Error> {
    let data = sqlx::query_scalar!(
        "select p.data from bulk_parts p join bulk_jobs j on j.id = p.job_id
         where j.tenant_id = $1 and p.job_id = $2 and p.part = $3",
        tenant_id as _,
        id as _,
        part,
    )
    .fetch_optional(&mut *db)
    .await;
    sqlx::Connection::shrink_buffers(db);
    data
}

/// The recipients (the first channel's) already taken by valid rows, with
/// their rows, whether still held in chunks or expanded (one snapshot): a
/// resumed parser reports later copies as duplicates.
#[tracing::instrument(skip_all)]
pub async fn seen_recipients(
    db: impl PgExecutor<'_>,
    tenant_id: TenantId,
    id: BulkJobId,
    channel: Channel,
) -> Result<Vec<(String, i64)>, sqlx::Error> {
    let rows = sqlx::query!(
        r#"select recipient as "recipient!", bulk_row as "bulk_row!" from notifications
         where tenant_id = $3 and bulk_job_id = $1 and channel = $2
         union all
         select r.t, r.r from bulk_chunks c
             cross join lateral json_to_recordset(c.notifications) as r(r int8, c text, t text)
         where c.tenant_id = $3 and c.job_id = $1 and c.notifications is not null and r.c = $2"#,
        id as _,
        channel as _,
        tenant_id as _,
    )
    .fetch_all(db)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| (r.recipient, r.bulk_row))
        .collect())
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
    let done = sqlx::query!(
        "update bulk_jobs set status = 'sending', parsed_at = now(), lease_until = null
         where tenant_id = $1 and id = $2 and status = 'parsing'",
        tenant_id as _,
        id as _,
    )
    .execute(&mut *db)
    .await?;
    if done.rows_affected() == 0 {
        return Ok(false);
    }
    if !held {
        return Ok(true);
    }
    settle_chunks(db, tenant_id, id).await?;
    sqlx::query!(
        "update notifications set run_at = now()
         where tenant_id = $1 and bulk_job_id = $2 and status = 'queued' and run_at = 'infinity'",
        tenant_id as _,
        id as _,
    )
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
    let done = sqlx::query!(
        "update bulk_jobs set status = 'failed', failure = $3, failed_at = now(), lease_until = null
         where tenant_id = $1 and id = $2 and status in ('queued', 'parsing')",
        tenant_id as _,
        id as _,
        reason,
    )
    .execute(&mut *db)
    .await?;
    if done.rows_affected() == 1 {
        sqlx::query!(
            "delete from bulk_chunks where tenant_id = $1 and job_id = $2 and expanded_at is null",
            tenant_id as _,
            id as _,
        )
        .execute(&mut *db)
        .await?;
        sqlx::query!(
            "delete from notifications
             where tenant_id = $1 and bulk_job_id = $2 and status = 'queued' and run_at = 'infinity'",
            tenant_id as _,
            id as _,
        )
        .execute(&mut *db)
        .await?;
        sqlx::query!(
            "update notifications set status = 'cancelled', dispatched_at = null,
                 last_error = 'the bulk job failed: ' || $3
             where tenant_id = $1 and bulk_job_id = $2 and status in ('queued', 'deferred', 'sending')",
            tenant_id as _,
            id as _,
            reason,
        )
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
    let done = sqlx::query!(
        "update bulk_jobs set status = 'cancelled', cancelled_at = now(), lease_until = null
         where tenant_id = $1 and id = $2 and status in ('uploading', 'queued', 'parsing', 'sending')",
        tenant_id as _,
        id as _,
    )
    .execute(&mut *db)
    .await?;
    if done.rows_affected() == 0 {
        let status = super::status_owned(&mut *db, "bulk_jobs", tenant_id, id).await?;
        return Ok(status.map_or(Cancelled::NotFound, Cancelled::Refused));
    }
    settle_chunks(db, tenant_id, id).await?;
    let held: i64 = sqlx::query_scalar!(
        r#"select coalesce(sum(notification_count), 0)::int8 as "held!" from bulk_chunks
         where tenant_id = $1 and job_id = $2 and expanded_at is null"#,
        tenant_id as _,
        id as _,
    )
    .fetch_one(&mut *db)
    .await?;
    let n = sqlx::query!(
        "update notifications set status = 'cancelled', dispatched_at = null,
             last_error = 'the bulk job was cancelled'
         where tenant_id = $1 and bulk_job_id = $2 and status in ('queued', 'deferred', 'sending')",
        tenant_id as _,
        id as _,
    )
    .execute(&mut *db)
    .await?;
    Ok(Cancelled::Done(n.rows_affected() + held as u64))
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
mod tests;
