//! CSV bulk jobs: an uploaded file of recipients, one notification per valid
//! row and channel. The route in [`crate::routes::bulk`] reads the multipart
//! form (its text fields, then the file as a stream) and shapes the answer;
//! the rules are here.
//!
//! The form is checked before anything is stored; the file is then streamed
//! into Postgres in 1 MiB parts as it arrives, never held whole in memory,
//! and refused with 413 once it passes `MAX_CSV_BYTES`. Once stored whole,
//! the job's `bulk_csv` job is pushed; a worker parses the file. An upload
//! under an idempotency key another upload holds is read and hashed, not
//! stored, and answered as that upload was.

use std::future::Future;

use sha2::{Digest, Sha256};
use shared::{
    db::bulk::{self, Mapping, NewJob, PART_BYTES},
    domain::{BulkJobId, Channel, TenantId},
};
use tokio::io::{AsyncRead, AsyncReadExt};

use crate::{AppState, error::ApiError};

/// Most variables a mapping's `data` maps.
const MAX_DATA_VARIABLES: usize = 50;

/// An upload as the form carries it.
#[derive(Debug)]
pub struct Upload<R, E> {
    /// The request's idempotency key.
    pub key: Option<String>,
    /// The form's text fields before the file, by name, in order.
    pub fields: Vec<(String, String)>,
    /// The file's name as the form gives it.
    pub file_name: Option<String>,
    /// The file, read as it arrives.
    pub file: R,
    /// Whether the form ends after the file (an error if another field
    /// follows it); awaited only once `file` has been read and dropped.
    pub end: E,
}

/// An upload stored and queued, or the one an earlier upload with the same
/// idempotency key stored.
#[derive(Debug)]
pub struct Uploaded {
    /// The job.
    pub id: BulkJobId,
    /// `queued`; a replay's status now.
    pub status: String,
    /// Bytes received.
    pub size_bytes: i64,
    /// Whether it is the earlier upload's job.
    pub replayed: bool,
}

/// Checks an upload's form, creates its job, stores its file and queues it
/// for parsing. Under an idempotency key another job holds, the file is read
/// and compared with that job's: the same form and file answer with it, a
/// different one is 422, and one still streaming 409.
pub async fn upload<R, E>(
    state: &AppState,
    tenant_id: TenantId,
    upload: Upload<R, E>,
) -> Result<Uploaded, ApiError>
where
    R: AsyncRead + Unpin,
    E: Future<Output = Result<(), ApiError>>,
{
    let Upload {
        key,
        fields,
        file_name,
        file,
        end,
    } = upload;
    let file_name = file_name.map(|n| {
        n.chars()
            .filter(|c| !c.is_control())
            .take(255)
            .collect::<String>()
    });
    let hasher = key
        .as_ref()
        .map(|_| request_hasher(&fields, file_name.as_deref()));
    let form = form(state, tenant_id, fields).await?;
    let mapping = serde_json::to_value(&form.mapping).map_err(anyhow::Error::from)?;
    let created = bulk::create(
        &state.pool,
        tenant_id,
        NewJob {
            template_key: &form.template,
            channels: &form.channels,
            locale: form.locale.as_deref(),
            mapping,
            file_name: file_name.as_deref(),
            idempotency_key: key.as_deref(),
        },
    )
    .await?;
    let id = match (created, &key, &hasher) {
        (Some(id), _, _) => id,
        // Another upload holds the key: this one is a replay, or a reuse.
        (None, Some(k), Some(h)) => return replay(state, tenant_id, k, file, end, h.clone()).await,
        (None, _, _) => {
            return Err(ApiError::Internal(anyhow::anyhow!(
                "a bulk job without a key was not created"
            )));
        }
    };
    store(state, tenant_id, id, file, end, hasher).await
}

/// Stores the file of new job `id` and queues the job; the job is
/// discarded when the file breaks off, is too large or empty, or is not
/// the form's last field.
async fn store<R, E>(
    state: &AppState,
    tenant_id: TenantId,
    id: BulkJobId,
    file: R,
    end: E,
    mut hasher: Option<Sha256>,
) -> Result<Uploaded, ApiError>
where
    R: AsyncRead + Unpin,
    E: Future<Output = Result<(), ApiError>>,
{
    let stored = async {
        let size = store_file(state, id, file, hasher.as_mut()).await?;
        if size == 0 {
            return Err(ApiError::invalid("file", "is empty"));
        }
        end.await?;
        Ok(size)
    }
    .await;
    let size = match stored {
        Ok(size) => size,
        Err(e) => {
            bulk::discard(&state.pool, tenant_id, id).await?;
            return Err(e);
        }
    };
    let hash = hasher.map(|h| h.finalize().to_vec());
    bulk::finish_upload(&state.pool, tenant_id, id, size, hash.as_deref())
        .await?
        .push(&state.queues, &state.pool)
        .await?;
    tracing::info!(bulk_job_id = %id, size, "CSV upload stored");
    metrics::counter!("bulk_csv_bytes_received_total").increment(size);
    Ok(Uploaded {
        id,
        status: "queued".into(),
        size_bytes: size as i64,
        replayed: false,
    })
}

/// The form's fields before the file, checked.
struct Form {
    template: String,
    channels: Vec<Channel>,
    locale: Option<String>,
    mapping: Mapping,
}

/// The form's fields by name, each given at most once.
#[derive(Default)]
struct Named {
    template: Option<String>,
    channels: Option<String>,
    locale: Option<String>,
    mapping: Option<String>,
}

/// Checks the form's fields: a template that exists, its channels (the
/// template's when none are named; never push), the locale, and a mapping
/// that names a column for each channel's recipient.
async fn form(
    state: &AppState,
    tenant_id: TenantId,
    fields: Vec<(String, String)>,
) -> Result<Form, ApiError> {
    let named = by_name(fields)?;
    let template = named
        .template
        .ok_or_else(|| ApiError::invalid("template", "is required"))?;
    let stored = shared::db::templates::get_by_key(&state.pool, tenant_id, template.trim())
        .await?
        .ok_or_else(|| ApiError::invalid("template", "no template with this key"))?
        .template;
    let channels = match &named.channels {
        Some(raw) => channels(raw)?,
        None => crate::services::batches::default_batch_channels(&stored),
    };
    if channels.is_empty() {
        return Err(ApiError::invalid(
            "channels",
            "must name at least one channel",
        ));
    }
    if let Some(l) = &named.locale {
        shared::templates::requested_locale(l).map_err(|e| ApiError::invalid("locale", e.0))?;
    }
    let mapping = mapping(named.mapping, &channels)?;
    Ok(Form {
        template: template.trim().to_owned(),
        channels,
        locale: named.locale,
        mapping,
    })
}

/// Sorts the form's fields by name; an unknown or repeated one is refused.
fn by_name(fields: Vec<(String, String)>) -> Result<Named, ApiError> {
    let mut named = Named::default();
    for (name, value) in fields {
        let slot = match name.as_str() {
            "template" => &mut named.template,
            "channels" => &mut named.channels,
            "locale" => &mut named.locale,
            "mapping" => &mut named.mapping,
            other => {
                return Err(ApiError::invalid(
                    other,
                    "is not a field of this form (template, channels, locale, mapping, file)",
                ));
            }
        };
        if slot.replace(value).is_some() {
            return Err(ApiError::invalid(name, "is given twice"));
        }
    }
    Ok(named)
}

/// The comma-separated channels named, each once and none of them push.
fn channels(raw: &str) -> Result<Vec<Channel>, ApiError> {
    let mut channels = Vec::new();
    for c in raw.split(',').map(str::trim) {
        match Channel::parse(c) {
            Some(Channel::Push) => {
                return Err(ApiError::invalid(
                    "channels",
                    "push is not offered for bulk jobs: devices belong to subscribers",
                ));
            }
            Some(c) if !channels.contains(&c) => channels.push(c),
            Some(_) => {
                return Err(ApiError::invalid(
                    "channels",
                    format!("`{c}` is listed twice"),
                ));
            }
            None => {
                return Err(ApiError::invalid(
                    "channels",
                    format!("`{c}` is not a channel"),
                ));
            }
        }
    }
    Ok(channels)
}

/// Checks the mapping: JSON, column names of 1 to 200 characters, at most
/// 50 variables, and a column for the recipient of each of `channels`.
fn mapping(raw: Option<String>, channels: &[Channel]) -> Result<Mapping, ApiError> {
    let raw = raw.ok_or_else(|| ApiError::invalid("mapping", "is required"))?;
    let mapping: Mapping = serde_json::from_str(&raw)
        .map_err(|e| ApiError::invalid("mapping", format!("is not a valid mapping: {e}")))?;
    for column in mapping.columns() {
        if column.contains('\0') {
            return Err(ApiError::invalid("mapping", crate::input::NUL_REASON));
        }
        if column.is_empty() || column.chars().count() > 200 {
            return Err(ApiError::invalid(
                "mapping",
                "column names must be 1 to 200 characters",
            ));
        }
    }
    if mapping.data.len() > MAX_DATA_VARIABLES {
        return Err(ApiError::invalid(
            "mapping",
            "`data` maps at most 50 variables",
        ));
    }
    for channel in channels {
        if mapping.column_for(*channel).is_none() {
            let key = match channel {
                Channel::Email => "email",
                Channel::InApp => "subscriber_id",
                _ => "phone",
            };
            return Err(ApiError::invalid(
                "mapping",
                format!(
                    "`{key}` must name a column: the job sends {}",
                    channel.as_str()
                ),
            ));
        }
    }
    Ok(mapping)
}

fn file_too_large(state: &AppState) -> ApiError {
    ApiError::TooLarge(format!(
        "the file is larger than {} bytes",
        state.max_csv_bytes
    ))
}

/// A hash of the form's text fields (in name order) and the file's name,
/// to which the file's bytes are added as they arrive.
fn request_hasher(fields: &[(String, String)], file_name: Option<&str>) -> Sha256 {
    let mut sorted: Vec<&(String, String)> = fields.iter().collect();
    sorted.sort();
    let mut hasher = Sha256::new();
    let mut put = |bytes: &[u8]| {
        hasher.update((bytes.len() as u64).to_le_bytes());
        hasher.update(bytes);
    };
    for (name, value) in sorted {
        put(name.as_bytes());
        put(value.as_bytes());
    }
    put(file_name.unwrap_or_default().as_bytes());
    hasher
}

/// An upload under idempotency `key`, which a job already holds: the file
/// is read (and hashed, not stored) so the caller gets an answer rather than
/// a broken connection, then compared with the first upload.
async fn replay<R, E>(
    state: &AppState,
    tenant_id: TenantId,
    key: &str,
    mut file: R,
    end: E,
    mut hasher: Sha256,
) -> Result<Uploaded, ApiError>
where
    R: AsyncRead + Unpin,
    E: Future<Output = Result<(), ApiError>>,
{
    let prior = bulk::by_idempotency_key(&state.pool, tenant_id, key)
        .await?
        .ok_or_else(|| {
            ApiError::Conflict(
                "the upload that held this Idempotency-Key was just refused; retry".into(),
            )
        })?;
    let mut buf = vec![0u8; 64 * 1024];
    let mut total: u64 = 0;
    loop {
        let n = file
            .read(&mut buf)
            .await
            .map_err(|e| ApiError::invalid("file", format!("the upload broke off: {e}")))?;
        if n == 0 {
            break;
        }
        total += n as u64;
        if total > state.max_csv_bytes {
            return Err(file_too_large(state));
        }
        hasher.update(&buf[..n]);
    }
    // The file must let go of the form before the next field is read.
    drop(file);
    end.await?;
    let Some(first) = prior.request_hash else {
        return Err(ApiError::Conflict(
            "an upload with this Idempotency-Key is still in progress; retry when it has finished"
                .into(),
        ));
    };
    if first != hasher.finalize().as_slice() {
        return Err(ApiError::IdempotencyKeyReused);
    }
    Ok(Uploaded {
        id: prior.id,
        status: prior.status,
        size_bytes: prior.size_bytes,
        replayed: true,
    })
}

/// Streams the file into parts, adding it to `hasher` when there is one;
/// the job is discarded on any error. The file is dropped on return.
async fn store_file<R: AsyncRead + Unpin>(
    state: &AppState,
    id: BulkJobId,
    mut file: R,
    mut hasher: Option<&mut Sha256>,
) -> Result<u64, ApiError> {
    let mut buf = vec![0u8; PART_BYTES];
    let mut total: u64 = 0;
    let mut part = 0;
    loop {
        let mut filled = 0;
        while filled < PART_BYTES {
            let n = file
                .read(&mut buf[filled..])
                .await
                .map_err(|e| ApiError::invalid("file", format!("the upload broke off: {e}")))?;
            if n == 0 {
                break;
            }
            filled += n;
        }
        total += filled as u64;
        if total > state.max_csv_bytes {
            return Err(file_too_large(state));
        }
        if filled == 0 {
            return Ok(total);
        }
        if let Some(h) = hasher.as_deref_mut() {
            h.update(&buf[..filled]);
        }
        let mut conn = state.pool.acquire().await?;
        bulk::put_part(&mut conn, id, part, &buf[..filled]).await?;
        part += 1;
        if filled < PART_BYTES {
            return Ok(total);
        }
    }
}
