//! Reading a CSV job: its status with the counts of its rows, and the errors
//! of the rows that did not parse.

use super::*;

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
    let job: Option<Job> =
        crate::db::get_owned(&mut *db, COLUMNS, "bulk_jobs", tenant_id, id).await?;
    let Some(mut job) = job else {
        return Ok(None);
    };
    // Notifications (their counts per status, kept as `db::group_counts`
    // keeps them) and the chunks not yet expanded, in one snapshot.
    let rows: Vec<(String, i64)> = sqlx::query!(
        r#"select status as "status!", sum(n)::int8 as "n!" from (
             select status, n from group_status_counts where group_id = $2 and tenant_id = $1
             union all
             select status, n from group_status_deltas where group_id = $2 and tenant_id = $1
         ) c
         group by status having sum(n) <> 0
         union all
         select '', coalesce(sum(notification_count), 0)::int8 from bulk_chunks
         where tenant_id = $1 and job_id = $2 and expanded_at is null"#,
        tenant_id as _,
        id as _,
    )
    .fetch_all(&mut *db)
    .await?
    .into_iter()
    .map(|r| (r.status, r.n))
    .collect();
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
pub(super) fn with_held(rows: Vec<(String, i64)>, job_status: &str) -> StatusCounts {
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
    tenant_id: TenantId,
    id: BulkJobId,
    after: (i64, i16),
    limit: i64,
) -> Result<Vec<ErrorRow>, sqlx::Error> {
    let rows = sqlx::query!(
        "select e.row_number, e.position, e.column_name, e.reason, e.value
         from bulk_row_errors e join bulk_jobs j on j.id = e.job_id
         where j.tenant_id = $5 and e.job_id = $1 and (e.row_number, e.position) > ($2, $3)
         order by e.row_number, e.position limit $4",
        id as _,
        after.0,
        after.1,
        limit,
        tenant_id as _,
    )
    .fetch_all(db)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| (r.row_number, r.position, r.column_name, r.reason, r.value))
        .collect())
}
