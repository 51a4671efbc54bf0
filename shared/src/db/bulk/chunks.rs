//! A CSV job's rows held in chunks: committed as they are parsed, taken by
//! the expander and expanded into notifications.

use super::*;

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

/// One piece of the parse, ready to commit.
#[derive(Debug, Clone, Copy)]
pub struct Part<'a> {
    /// The job's cursor the piece was read from; the commit is refused
    /// unless the job is still there.
    pub from_offset: i64,
    /// What the piece yielded.
    pub chunk: &'a Chunk,
    /// The template's category.
    pub category: Option<&'a str>,
    /// Whether the template is critical.
    pub critical: bool,
}

/// Commits one piece of the parse in one transaction: its notifications,
/// held in chunks of up to [`CHUNK_ROWS`] rows (marked pushed: the caller
/// pushes their jobs after the commit), row errors, counters and the
/// cursor. Returns the chunks' keys, or `None` (nothing written) unless the
/// job is still `parsing` at cursor `from_offset`: it was cancelled, or
/// another parser moved on.
#[tracing::instrument(skip_all, fields(rows = part.chunk.rows))]
pub async fn commit_chunk(
    db: &mut PgConnection,
    tenant_id: TenantId,
    id: BulkJobId,
    part: &Part<'_>,
    lease: Duration,
) -> Result<Option<Vec<i64>>, sqlx::Error> {
    let Part {
        from_offset,
        chunk,
        category,
        critical,
    } = *part;
    // No key update: expansions of this job's chunks never wait for it.
    let ours: Option<i64> = sqlx::query_scalar!(
        "select cursor_offset from bulk_jobs
         where tenant_id = $1 and id = $2 and status = 'parsing' for no key update",
        tenant_id as _,
        id as _,
    )
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
        sqlx::query!(
            "insert into bulk_chunks
                 (job_id, seq, tenant_id, row_count, notification_count, notifications, category,
                  critical, dispatched_at)
             select $1, c.seq, $2, c.rows, c.n, c.payload::json, $3, $4, now()
             from unnest($5::int8[], $6::int4[], $7::int4[], $8::text[]) as c(seq, rows, n, payload)
             on conflict (job_id, seq) do nothing",
            id as _,
            tenant_id as _,
            category,
            critical,
            &seqs,
            &rows,
            &counts,
            &payloads,
        )
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
        sqlx::query!(
            "insert into bulk_row_errors (job_id, row_number, position, column_name, reason, value)
             select $1, r.row, r.position, r.col, r.reason, r.value
             from unnest($2::int8[], $3::int2[], $4::text[], $5::text[], $6::text[])
                  as r(row, position, col, reason, value)
             on conflict do nothing",
            id as _,
            &rows,
            &positions,
            columns.as_slice() as &[&str],
            reasons.as_slice() as &[&str],
            &values as _,
        )
        .execute(&mut *db)
        .await?;
    }
    sqlx::query!(
        "update bulk_jobs set cursor_offset = $3, cursor_row = cursor_row + $4,
             rows_read = rows_read + $4, rows_valid = rows_valid + $5,
             rows_invalid = rows_invalid + $6, rows_duplicate = rows_duplicate + $7,
             header = coalesce($8, header), lease_until = now() + make_interval(secs => $9)
         where tenant_id = $1 and id = $2",
        tenant_id as _,
        id as _,
        chunk.next_offset,
        chunk.rows,
        chunk.valid,
        chunk.invalid,
        chunk.duplicates,
        chunk.header.as_deref(),
        lease.as_secs_f64(),
    )
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
    let chunk: Option<(Option<String>, Option<String>, bool)> = sqlx::query!(
        r#"select notifications::text as "notifications?", category, critical from bulk_chunks
         where tenant_id = $1 and job_id = $2 and seq = $3 and expanded_at is null
         for update"#,
        tenant_id as _,
        id as _,
        seq,
    )
    .fetch_optional(&mut *db)
    .await?
    .map(|r| (r.notifications, r.category, r.critical));
    let Some((payload, category, critical)) = chunk else {
        return Ok(None);
    };
    let job = sqlx::query!(
        r#"select status, status = 'parsing' and checked_at is null as "hold!" from bulk_jobs
         where tenant_id = $1 and id = $2"#,
        tenant_id as _,
        id as _,
    )
    .fetch_one(&mut *db)
    .await?;
    let (job_status, hold) = (job.status, job.hold);
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

/// Inserts a locked chunk's notifications in one statement (written once,
/// as [`crate::db::batches::expand`] explains; due at once, held while the job
/// holds them, `cancelled` once the job is cancelled or failed) and marks
/// the chunk expanded, dropping its payload. With `place_inapp`, due in-app
/// rows that leave nothing to decide are inserted already in their inboxes,
/// as [`crate::db::batches::expand`] does; the caller announces them.
#[tracing::instrument(skip_all, fields(rows = chunk.notifications.len()))]
pub async fn expand_chunk(
    db: &mut PgConnection,
    tenant_id: TenantId,
    id: BulkJobId,
    seq: i64,
    chunk: &PendingChunk,
    place_inapp: bool,
) -> Result<crate::db::batches::ExpandedChunk, sqlx::Error> {
    let n = &chunk.notifications;
    let mut external: Vec<String> = n.iter().filter_map(|n| n.subscriber.clone()).collect();
    external.sort_unstable();
    external.dedup();
    let ids: Vec<NotificationId> = n.iter().map(|_| NotificationId::new()).collect();
    let rows: Vec<i64> = n.iter().map(|x| x.row).collect();
    let channels: Vec<&str> = n.iter().map(|x| x.channel.as_str()).collect();
    let recipients: Vec<&str> = n.iter().map(|x| x.recipient.as_str()).collect();
    let contents: Vec<&Value> = n.iter().map(|x| &x.content).collect();
    let attempts: Vec<i32> = n.iter().map(|x| x.max_attempts).collect();
    let (status, error) = match chunk.job_status.as_str() {
        "cancelled" => ("cancelled", Some("the bulk job was cancelled")),
        "failed" => ("cancelled", Some("the bulk job failed")),
        _ => ("queued", None),
    };
    let held = chunk.hold && status == "queued";
    let place_inapp = place_inapp && status == "queued" && !held;
    // A subscriber created here starts at the numbers its entries take.
    let mut entries: HashMap<String, i64> = HashMap::new();
    if place_inapp {
        for x in n.iter().filter(|x| x.channel == Channel::InApp) {
            if let Some(s) = &x.subscriber {
                *entries.entry(s.clone()).or_insert(1) += 1;
            }
        }
    }
    let found = crate::db::batches::subscriber_ids(db, tenant_id, &external, &entries).await?;
    let subs: Vec<Option<SubscriberId>> = n
        .iter()
        .map(|x| {
            x.subscriber
                .as_ref()
                .and_then(|s| found.ids.get(s).copied())
        })
        .collect();
    if place_inapp {
        let inbox_owners = found.to_lock(
            n.iter()
                .zip(&subs)
                .filter(|(x, _)| x.channel == Channel::InApp)
                .filter_map(|(_, s)| *s),
        );
        crate::db::events::lock_subscribers(db, tenant_id, inbox_owners).await?;
    }
    let written: Vec<(NotificationId, bool, DateTime<Utc>)> = sqlx::query!(
        r#"with r as (
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
         returning id as "id: NotificationId", status = 'sent' as "sent!", created_at"#,
        tenant_id as _,
        id as _,
        chunk.category.as_deref(),
        chunk.critical,
        &ids as _,
        &rows,
        channels.as_slice() as &[&str],
        recipients.as_slice() as &[&str],
        &contents as _,
        &subs as _,
        &attempts,
        status,
        error,
        held,
        place_inapp,
    )
    .fetch_all(&mut *db)
    .await?
    .into_iter()
    .map(|r| (r.id, r.sent, r.created_at))
    .collect();
    sqlx::query!(
        "update bulk_chunks set expanded_at = now(), notifications = null
         where tenant_id = $1 and job_id = $2 and seq = $3",
        tenant_id as _,
        id as _,
        seq,
    )
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
    Ok(crate::db::batches::ExpandedChunk {
        inserted: written.len() as u64,
        placed,
        created: found.created,
    })
}

/// Waits for the expansions in flight of a job's chunks, after the caller
/// changed the job: an expansion that starts later reads the new status.
pub(super) async fn settle_chunks(
    db: &mut PgConnection,
    tenant_id: TenantId,
    id: BulkJobId,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "update bulk_chunks set dispatched_at = dispatched_at
         where tenant_id = $1 and job_id = $2 and expanded_at is null",
        tenant_id as _,
        id as _,
    )
    .execute(&mut *db)
    .await?;
    Ok(())
}
