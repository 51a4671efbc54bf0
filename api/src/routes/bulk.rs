//! CSV bulk jobs under `/api/v1/services/notifications/bulk`: an uploaded
//! file of recipients, one notification per valid row and channel.
//!
//! The upload (multipart: `template`, optional `channels` and `locale`,
//! `mapping`, then `file` last) is streamed into Postgres in 1 MiB parts as
//! it arrives, never held whole in memory, and refused with 413 once it
//! passes `MAX_CSV_BYTES`. A `bulk_csv` job on any worker then parses it
//! (see `worker/src/jobs/parse_bulk_csv.rs`). Invalid rows are recorded with
//! their row, column and reason and do not stop valid ones; a file-level
//! error fails the job and sends nothing. The rules of an upload are in
//! [`crate::services::bulk`]; this module reads the form.

use crate::extract::PathId;
use crate::extract::ServiceCtx;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use poem::web::{Field, Multipart};
use poem_openapi::{
    ApiResponse, Object, OpenApi,
    param::{Header, Path},
    payload::{Binary, Json},
};
use shared::{
    db::bulk,
    domain::{BulkJobId, CsvQuoting, csv_cell},
};
use tokio::io::AsyncReadExt;

use crate::{
    AppState,
    error::ApiError,
    routes::{ApiTags, views::StatusCounts},
    services::bulk::{self as service, Upload, Uploaded},
};

mod form;
use form::CsvForm;

/// The upload's path; the edge middleware lets its body stream.
pub const UPLOAD_PATH: &str = "/api/v1/services/notifications/bulk/csv";
/// Largest text field of the upload form.
const MAX_FIELD_BYTES: u64 = 64 * 1024;
/// Row errors read from Postgres at a time for the download.
const ERROR_PAGE: i64 = 5_000;

/// The bulk endpoints.
#[derive(Debug)]
pub struct BulkApi;

/// An upload was accepted.
#[derive(Debug, Clone, Object)]
pub struct BulkAccepted {
    /// The job's id.
    pub job_id: String,
    /// `queued` (a replayed upload: the job's status now).
    pub status: String,
    /// Bytes received.
    pub size_bytes: i64,
    /// Where to poll it.
    pub status_url: String,
}

/// A bulk job's state.
#[derive(Debug, Clone, Object)]
pub struct BulkView {
    /// Its id.
    pub id: String,
    /// `queued`, `parsing`, `sending`, `completed`, `failed` or `cancelled`.
    pub status: String,
    /// Why it failed (a file-level error); nothing was sent.
    pub failure: Option<String>,
    /// The template's key.
    pub template: String,
    /// The channels.
    pub channels: Vec<String>,
    /// The uploaded file's name.
    pub file_name: Option<String>,
    /// The file's size.
    pub size_bytes: i64,
    /// Bytes parsed so far.
    pub bytes_read: i64,
    /// Rows read (after the header).
    pub rows_read: i64,
    /// Valid rows: each becomes a notification per channel.
    pub rows_valid: i64,
    /// Invalid rows (see `errors_url`).
    pub rows_invalid: i64,
    /// Rows repeating an earlier recipient: reported, sent once.
    pub rows_duplicate: i64,
    /// Notifications created.
    pub notifications: i64,
    /// Notifications per status.
    pub counts: StatusCounts,
    /// Parsing progress, 0 to 1.
    pub parse_progress: f64,
    /// Sending progress (final notifications over all), 0 to 1.
    pub send_progress: f64,
    /// The invalid rows as CSV.
    pub errors_url: String,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When the whole file was checked and found free of file-level errors
    /// (missing header, invalid UTF-8, unbalanced quotes, no rows); rows are
    /// committed and sent only after this.
    pub checked_at: Option<DateTime<Utc>>,
    /// When parsing finished.
    pub parsed_at: Option<DateTime<Utc>>,
    /// When the last notification finished.
    pub completed_at: Option<DateTime<Utc>>,
    /// When it was cancelled.
    pub cancelled_at: Option<DateTime<Utc>>,
    /// When it failed.
    pub failed_at: Option<DateTime<Utc>>,
}

/// Answers to an upload.
#[derive(Debug, ApiResponse)]
pub enum UploadResponse {
    /// Stored and queued for parsing. The same `Idempotency-Key` with the
    /// same form and file answers with the first job again, with
    /// `Idempotent-Replayed: true`.
    #[oai(status = 202)]
    Accepted(
        Json<BulkAccepted>,
        #[oai(header = "Location")] String,
        #[oai(header = "Idempotent-Replayed")] Option<String>,
    ),
}

/// Answers with a job's state.
#[derive(Debug, ApiResponse)]
pub enum BulkResponse {
    /// The job.
    #[oai(status = 200)]
    Ok(Json<BulkView>),
}

/// Answers with the errors file.
#[derive(Debug, ApiResponse)]
pub enum ErrorsResponse {
    /// `row,column,reason,value`; row 1 is the first row after the header.
    #[oai(status = 200, content_type = "text/csv; charset=utf-8")]
    Csv(
        Binary<poem::Body>,
        #[oai(header = "Content-Disposition")] String,
    ),
}

fn status_url(id: BulkJobId) -> String {
    format!("/api/v1/services/notifications/bulk/{id}")
}

/// Reads a small text field, bounded.
async fn text(field: Field, name: &str) -> Result<String, ApiError> {
    let mut buf = Vec::new();
    field
        .into_async_read()
        .take(MAX_FIELD_BYTES + 1)
        .read_to_end(&mut buf)
        .await
        .map_err(|e| ApiError::invalid(name, format!("cannot be read: {e}")))?;
    if buf.len() as u64 > MAX_FIELD_BYTES {
        return Err(ApiError::invalid(name, "must be at most 64 KiB"));
    }
    let text = String::from_utf8(buf).map_err(|_| ApiError::invalid(name, "must be UTF-8 text"))?;
    if text.contains('\0') {
        return Err(ApiError::invalid(name, crate::input::NUL_REASON));
    }
    Ok(text)
}

fn view(job: bulk::Job, counts: &[(String, i64)]) -> BulkView {
    let by = StatusCounts::from_rows(counts);
    let notifications: i64 = counts.iter().map(|(_, n)| n).sum();
    let finished: i64 = counts
        .iter()
        .filter(|(s, _)| shared::db::batches::FINAL.contains(&s.as_str()))
        .map(|(_, n)| n)
        .sum();
    let parse_progress = match job.status.as_str() {
        "sending" | "completed" => 1.0,
        _ if job.size_bytes > 0 => job.cursor_offset as f64 / job.size_bytes as f64,
        _ => 0.0,
    };
    BulkView {
        id: job.id.to_string(),
        errors_url: format!("{}/errors", status_url(job.id)),
        status: job.status,
        failure: job.failure,
        template: job.template_key,
        channels: job.channels,
        file_name: job.file_name,
        size_bytes: job.size_bytes,
        bytes_read: job.cursor_offset,
        rows_read: job.rows_read,
        rows_valid: job.rows_valid,
        rows_invalid: job.rows_invalid,
        rows_duplicate: job.rows_duplicate,
        notifications,
        counts: by,
        parse_progress,
        send_progress: if notifications == 0 {
            0.0
        } else {
            finished as f64 / notifications as f64
        },
        created_at: job.created_at,
        checked_at: job.checked_at,
        parsed_at: job.parsed_at,
        completed_at: job.completed_at,
        cancelled_at: job.cancelled_at,
        failed_at: job.failed_at,
    }
}

async fn load(
    state: &AppState,
    tenant_id: shared::domain::TenantId,
    id: BulkJobId,
) -> Result<BulkView, ApiError> {
    let mut conn = state.pool.acquire().await?;
    let (job, counts) = bulk::get(&mut conn, tenant_id, id)
        .await?
        .ok_or(ApiError::NotFound("bulk job"))?;
    Ok(view(job, &counts))
}

/// The form's text fields, by name in order, up to the file, which must
/// come last.
async fn fields(multipart: &mut Multipart) -> Result<(Vec<(String, String)>, Field), ApiError> {
    let mut fields = Vec::new();
    loop {
        let Some(field) = multipart.next_field().await.map_err(bad_form)? else {
            return Err(ApiError::invalid("file", "is required (as the last field)"));
        };
        let name = field.name().unwrap_or_default().to_owned();
        if name == "file" {
            return Ok((fields, field));
        }
        if fields.len() >= 8 {
            return Err(ApiError::invalid(name, "too many fields"));
        }
        let value = text(field, &name).await?;
        fields.push((name, value));
    }
}

/// Whether the form ends after the file: an error if another field follows.
async fn end(mut multipart: Multipart) -> Result<(), ApiError> {
    if multipart.next_field().await.map_err(bad_form)?.is_some() {
        return Err(ApiError::invalid("file", "must be the last field"));
    }
    Ok(())
}

fn bad_form(e: poem::error::ParseMultipartError) -> ApiError {
    ApiError::invalid("body", format!("is not a valid multipart form: {e}"))
}

/// The 202 for an upload.
fn accepted(up: Uploaded) -> UploadResponse {
    UploadResponse::Accepted(
        Json(BulkAccepted {
            job_id: up.id.to_string(),
            status: up.status,
            size_bytes: up.size_bytes,
            status_url: status_url(up.id),
        }),
        status_url(up.id),
        up.replayed.then(|| "true".to_owned()),
    )
}

#[OpenApi(
    prefix_path = "/api/v1/services/notifications",
    tag = "ApiTags::Notifications"
)]
impl BulkApi {
    /// Upload a CSV of recipients (`multipart/form-data`): `template` (a
    /// template key), optional `channels` (comma-separated; default: the
    /// template's), optional `locale`, `mapping` (JSON: `{"email": "Email",
    /// "phone": "Mobile", "subscriber_id": "Patient ID", "data": {"name":
    /// "First name"}}`: which column holds each recipient and feeds each
    /// template variable), then `file` last. The first row must name the
    /// columns; a UTF-8 BOM is fine. At most `MAX_CSV_BYTES` (1 GiB by
    /// default; 413 above). Answers 202 with the job to poll.
    /// `Idempotency-Key` makes retries safe: the same key with the same form
    /// and file answers with the first job (`Idempotent-Replayed: true`);
    /// with another form or file, 422; while the first upload under the key
    /// is still streaming, 409.
    #[oai(
        path = "/bulk/csv",
        method = "post",
        operation_id = "notifications.bulk_csv"
    )]
    async fn upload(
        &self,
        cx: ServiceCtx<'_>,
        #[oai(name = "Idempotency-Key")] key: Header<Option<String>>,
        upload: CsvForm,
    ) -> Result<UploadResponse, ApiError> {
        let mut multipart = upload.0;
        let key = crate::extract::idempotency_key(key.0)?;
        let (fields, file) = fields(&mut multipart).await?;
        let upload = Upload {
            key,
            fields,
            file_name: file.file_name().map(str::to_owned),
            file: file.into_async_read(),
            end: end(multipart),
        };
        let uploaded = service::upload(cx.state, cx.auth.0.tenant_id, upload).await?;
        Ok(accepted(uploaded))
    }

    /// Read a bulk job: state, rows read, valid, invalid and duplicate
    /// counts, notifications per status, and progress.
    #[oai(
        path = "/bulk/:job_id",
        method = "get",
        operation_id = "notifications.get_bulk"
    )]
    async fn get(
        &self,
        cx: ServiceCtx<'_>,
        job_id: Path<PathId<BulkJobId>>,
    ) -> Result<BulkResponse, ApiError> {
        let id = job_id.0.get("bulk job")?;
        Ok(BulkResponse::Ok(Json(
            load(cx.state, cx.auth.0.tenant_id, id).await?,
        )))
    }

    /// Download the invalid and duplicate rows as CSV: `row,column,reason,value`.
    /// Cells that a spreadsheet would run as a formula are escaped.
    #[oai(
        path = "/bulk/:job_id/errors",
        method = "get",
        operation_id = "notifications.bulk_errors"
    )]
    async fn errors(
        &self,
        cx: ServiceCtx<'_>,
        job_id: Path<PathId<BulkJobId>>,
    ) -> Result<ErrorsResponse, ApiError> {
        let id = job_id.0.get("bulk job")?;
        let mut conn = cx.state.pool.acquire().await?;
        if bulk::get(&mut conn, cx.auth.0.tenant_id, id)
            .await?
            .is_none()
        {
            return Err(ApiError::NotFound("bulk job"));
        }
        drop(conn);
        let pool = cx.state.pool.clone();
        // The body is read after the handler returned, outside the
        // request's scope: each page is walled to the organisation again.
        let tenant = cx.auth.0.tenant_id;
        let header = futures::stream::once(async {
            Ok::<_, std::io::Error>("row,column,reason,value\n".to_owned())
        });
        let pages = futures::stream::unfold(Some((0i64, -1i16)), move |after| {
            let pool = pool.clone();
            async move {
                let after = after?;
                let page = bulk::errors(&pool, tenant, id, after, ERROR_PAGE);
                match shared::db::scope::tenant(tenant, page).await {
                    Ok(rows) if rows.is_empty() => None,
                    Ok(rows) => {
                        let next = rows.last().map(|r| (r.0, r.1));
                        let mut out = String::new();
                        for (row, _, column, reason, value) in &rows {
                            out.push_str(&format!(
                                "{row},{},{},{}\n",
                                csv_cell(column, CsvQuoting::Needed),
                                csv_cell(reason, CsvQuoting::Needed),
                                csv_cell(value.as_deref().unwrap_or_default(), CsvQuoting::Needed)
                            ));
                        }
                        let next = if rows.len() < ERROR_PAGE as usize {
                            None
                        } else {
                            next
                        };
                        Some((Ok(out), next))
                    }
                    Err(e) => Some((Err(std::io::Error::other(e)), None)),
                }
            }
        });
        let body = poem::Body::from_bytes_stream(header.chain(pages));
        Ok(ErrorsResponse::Csv(
            Binary(body),
            format!("attachment; filename=\"bulk-{id}-errors.csv\""),
        ))
    }

    /// Cancel a bulk job: parsing stops, and every notification not yet sent
    /// is cancelled. A cancelled job answers as it is; a completed or failed
    /// one answers 409.
    #[oai(
        path = "/bulk/:job_id/cancel",
        method = "post",
        operation_id = "notifications.cancel_bulk"
    )]
    async fn cancel(
        &self,
        cx: ServiceCtx<'_>,
        job_id: Path<PathId<BulkJobId>>,
    ) -> Result<BulkResponse, ApiError> {
        let tenant_id = cx.auth.0.tenant_id;
        let id = job_id.0.get("bulk job")?;
        let mut tx = cx.state.pool.begin().await?;
        let done = bulk::cancel(&mut tx, tenant_id, id).await?;
        tx.commit().await?;
        match done {
            bulk::Cancelled::Done(n) => {
                tracing::info!(bulk_job_id = %id, cancelled = n, "bulk job cancelled")
            }
            bulk::Cancelled::Refused(s) if s == "cancelled" => {}
            bulk::Cancelled::Refused(s) => {
                return Err(ApiError::Conflict(format!(
                    "the bulk job is {s} and cannot be cancelled"
                )));
            }
            bulk::Cancelled::NotFound => return Err(ApiError::NotFound("bulk job")),
        }
        Ok(BulkResponse::Ok(Json(load(cx.state, tenant_id, id).await?)))
    }
}
