//! Batches under `/api/v1/services/notifications`: a caller streams a large
//! audience in numbered chunks of up to 1,000 recipients.
//!
//! `send-batch` creates the batch (template, channels, default data, and
//! optionally chunk 0); `send-chunk` adds a chunk; `close` says no more will
//! come; `cancel` stops everything not yet sent. Each chunk is stored with
//! its first answer and expanded into notifications by one `batch_chunk`
//! job; the notifications then go through the channel queues under the
//! dispatcher's window. A batch is `completed` when it is closed and every
//! notification is final.

use chrono::{DateTime, Utc};
use poem_openapi::{
    ApiResponse, Object, OpenApi,
    param::{Header, Path, Query},
    payload::Json,
};
use serde_json::Value;
use shared::{
    db::batches::{self, ChunkAdded, ChunkAnswer, Counts, Created, NewBatch, StoredRecipient},
    domain::{BatchId, Channel, NotificationId, NotificationStatus, Problems, key_ok, recipient},
    jobs::{ExpandBatchChunk, QueueName},
    outbox::Enqueued,
    templates::requested_locale,
};

use crate::{
    AppState,
    body::StrictJson,
    error::ApiError,
    extract::ServiceCtx,
    extract::{Cursor, PageSize, PathId, page},
    routes::ApiTags,
    services::batches::default_batch_channels,
};

mod views;
pub use views::*;

/// Most recipients in one chunk.
pub const MAX_CHUNK: usize = 1_000;
/// Highest chunk sequence number.
const MAX_SEQ: i32 = 1_000_000;
/// Most keys in `defaults`, `metadata` or a recipient's `data`.
const MAX_KEYS: usize = 50;
/// Largest `data` of one recipient, as JSON.
const MAX_DATA_BYTES: usize = 16 * 1024;

/// The batch endpoints.
#[derive(Debug)]
pub struct BatchesApi;

fn status_url(id: BatchId) -> String {
    format!("/api/v1/services/notifications/batches/{id}")
}

/// Checks a chunk's recipients against the batch's channels, and returns
/// them normalised (addresses parsed) as they are stored.
fn recipients(
    channels: &[Channel],
    field: &str,
    given: &[BatchRecipient],
) -> Result<Vec<StoredRecipient>, ApiError> {
    if given.is_empty() || given.len() > MAX_CHUNK {
        return Err(ApiError::invalid(
            field,
            format!("must hold 1 to {MAX_CHUNK} recipients"),
        ));
    }
    let mut p = Problems::default();
    let mut out = Vec::with_capacity(given.len());
    for (i, r) in given.iter().enumerate() {
        let at = |f: &str| format!("{field}[{i}].{f}");
        // Each address is checked as a single send to it would be.
        let subscriber_id = p.opt(at("subscriber_id"), r.subscriber_id.as_deref(), |s| {
            recipient(Channel::InApp, s)
        });
        let email = p.opt(at("email"), r.email.as_deref(), |e| {
            recipient(Channel::Email, e)
        });
        let phone = p.opt(at("phone"), r.phone.as_deref(), |n| {
            recipient(Channel::Sms, n)
        });
        let data = p.object(&at("data"), r.data.as_ref(), MAX_KEYS);
        if serde_json::to_vec(&data).map_or(0, |v| v.len()) > MAX_DATA_BYTES {
            p.add(at("data"), "must be at most 16 KiB as JSON");
        }
        for channel in channels {
            let (missing, name) = match channel {
                Channel::Email => (r.email.is_none(), "email"),
                Channel::Sms | Channel::WhatsApp => (r.phone.is_none(), "phone"),
                Channel::InApp => (r.subscriber_id.is_none(), "subscriber_id"),
                Channel::Push => (false, ""),
            };
            if missing {
                p.add(
                    at(name),
                    format!("is required: the batch sends {}", channel.as_str()),
                );
            }
        }
        out.push(StoredRecipient {
            subscriber_id,
            email,
            phone,
            data: Some(data).filter(|d| d.as_object().is_some_and(|m| !m.is_empty())),
        });
    }
    p.into_result(out).map_err(ApiError::fields)
}

fn chunk_accepted(id: BatchId, seq: i32, answer: ChunkAnswer) -> ChunkAccepted {
    ChunkAccepted {
        batch_id: id.to_string(),
        seq,
        recipients: answer.recipients,
        accepted_at: answer.accepted_at,
        status_url: status_url(id),
    }
}

/// What a chunk of `recipients` counts against the send quotas: one
/// notification per recipient and channel of its batch (recipients later
/// skipped for want of an address or by their preferences still count).
fn chunk_counts(channels: &[Channel], recipients: usize) -> Vec<(Channel, u64)> {
    channels.iter().map(|c| (*c, recipients as u64)).collect()
}

/// Stores a chunk in `tx` and commits; pushes its job if it is new.
async fn add_chunk(
    state: &AppState,
    mut tx: sqlx::Transaction<'_, sqlx::Postgres>,
    tenant_id: shared::domain::TenantId,
    id: BatchId,
    seq: i32,
    stored: &[StoredRecipient],
) -> Result<(ChunkAnswer, bool), ApiError> {
    let json = serde_json::to_value(stored).map_err(anyhow::Error::from)?;
    let hash = request_hash(&json);
    let added = batches::add_chunk(
        &mut tx,
        tenant_id,
        id,
        seq,
        &json,
        stored.len() as i32,
        &hash,
    )
    .await?;
    tx.commit().await?;
    match added {
        ChunkAdded::New(answer) => {
            let enqueued = Enqueued::one(ExpandBatchChunk {
                tenant_id,
                batch_id: id,
                seq,
            });
            if state.window.reserve(QueueName::BatchChunk).await {
                enqueued.push(&state.queues, &state.pool).await?;
            } else {
                enqueued.release(&state.pool).await?;
            }
            metrics::counter!("batch_chunks_accepted_total").increment(1);
            Ok((answer, false))
        }
        ChunkAdded::Existing {
            answer,
            same_request: true,
        } => Ok((answer, true)),
        ChunkAdded::Existing {
            same_request: false,
            ..
        } => Err(ApiError::Conflict(format!(
            "chunk {seq} was already accepted with different recipients"
        ))),
        ChunkAdded::NotOpen(status) => Err(ApiError::Conflict(format!(
            "the batch is {status} and takes no more chunks"
        ))),
        ChunkAdded::NotFound => Err(ApiError::NotFound("batch")),
    }
}

/// Reads a batch with its counts (completing it when it is due).
async fn load(
    state: &AppState,
    tenant_id: shared::domain::TenantId,
    id: BatchId,
) -> Result<BatchView, ApiError> {
    let mut conn = state.pool.acquire().await?;
    if batches::get(&mut *conn, tenant_id, id).await?.is_none() {
        return Err(ApiError::NotFound("batch"));
    }
    let (counts, _) = batches::counts(&mut conn, tenant_id, id).await?;
    let batch = batches::get(&mut *conn, tenant_id, id)
        .await?
        .ok_or(ApiError::NotFound("batch"))?;
    Ok(view(batch, &counts))
}

use crate::extract::{accepted_before, idempotency_key, request_hash};

#[OpenApi(
    prefix_path = "/api/v1/services/notifications",
    tag = "ApiTags::Notifications"
)]
impl BatchesApi {
    /// Create a batch: the template, the channels, default data and,
    /// optionally, the first chunk (sequence number 0). Add chunks with
    /// `send-chunk`, then `close` the batch. `Idempotency-Key` makes retries
    /// safe.
    #[oai(
        path = "/send-batch",
        method = "post",
        operation_id = "notifications.send_batch"
    )]
    async fn send_batch(
        &self,
        cx: ServiceCtx<'_>,
        #[oai(name = "Idempotency-Key")] key: Header<Option<String>>,
        body: StrictJson<SendBatchRequest>,
    ) -> Result<SendBatchResponse, ApiError> {
        let tenant_id = cx.auth.0.tenant_id;
        let key = idempotency_key(key.0)?;
        let req = &body.0;
        let mut p = Problems::default();
        if !key_ok(&req.template) {
            p.add("template", "must be a template key");
        }
        p.opt("locale", req.locale.as_deref(), requested_locale);
        let defaults = p.object("defaults", req.defaults.as_ref(), MAX_KEYS);
        let metadata = p.object("metadata", req.metadata.as_ref(), MAX_KEYS);
        let mut channels = Vec::new();
        if req.channels.as_ref().is_some_and(Vec::is_empty) {
            p.add("channels", "must not be empty");
        }
        for (i, c) in req.channels.iter().flatten().enumerate() {
            let name = format!("channels[{i}]");
            match Channel::parse(c) {
                Some(Channel::Push) => p.add(
                    name,
                    "push is not offered for batches: devices belong to subscribers; send per subscriber",
                ),
                Some(c) if !channels.contains(&c) => channels.push(c),
                Some(_) => p.add(name, "is listed twice"),
                None => p.add(name, format!("`{c}` is not a channel")),
            }
        }
        if !p.is_empty() {
            return Err(p.into());
        }
        let template = shared::db::templates::get_by_key(&cx.state.pool, tenant_id, &req.template)
            .await?
            .ok_or_else(|| ApiError::invalid("template", "no template with this key"))?
            .template;
        if channels.is_empty() {
            channels = default_batch_channels(&template);
            if channels.is_empty() {
                return Err(ApiError::invalid(
                    "channels",
                    "the template's default channels are push only; name the channels",
                ));
            }
        }
        let first = req
            .recipients
            .as_deref()
            .map(|r| recipients(&channels, "recipients", r))
            .transpose()?;
        let counts = chunk_counts(&channels, first.as_ref().map_or(0, Vec::len));
        let replayed = accepted_before(key.as_deref(), |k| {
            shared::db::limits::batch_accepted(&cx.state.pool, tenant_id, k)
        });
        let quota = cx.take_quota(tenant_id, &counts, replayed).await?;
        let hash = key.as_ref().map(|_| request_hash(req));
        let mut tx = cx.state.pool.begin().await?;
        let created = batches::create(
            &mut tx,
            tenant_id,
            NewBatch {
                template_key: &req.template,
                channels: &channels,
                locale: req.locale.as_deref(),
                defaults,
                metadata,
                idempotency: key.as_deref().zip(hash),
            },
        )
        .await?;
        let (id, replayed) = match created {
            Created::New(id) => (id, false),
            Created::Existing {
                id,
                same_request: true,
            } => (id, true),
            Created::Existing {
                same_request: false,
                ..
            } => {
                quota.give_back().await;
                return Err(ApiError::IdempotencyKeyReused);
            }
        };
        let chunk = match &first {
            Some(stored) => match add_chunk(cx.state, tx, tenant_id, id, 0, stored).await {
                Ok((answer, chunk_replayed)) => {
                    if chunk_replayed {
                        quota.give_back().await;
                    }
                    Some(chunk_accepted(id, 0, answer))
                }
                Err(e) => {
                    quota.give_back().await;
                    return Err(e);
                }
            },
            None => {
                tx.commit().await?;
                None
            }
        };
        if !replayed {
            tracing::info!(batch_id = %id, "batch created");
        }
        let status = batches::get(&cx.state.pool, tenant_id, id)
            .await?
            .map(|b| b.status)
            .unwrap_or_default();
        Ok(SendBatchResponse::Accepted(
            Json(BatchAccepted {
                batch_id: id.to_string(),
                status,
                status_url: status_url(id),
                chunk,
            }),
            status_url(id),
            replayed.then(|| "true".to_owned()),
        ))
    }

    /// Add one chunk (up to 1,000 recipients) to an open batch. The same
    /// sequence number again is a no-op that returns the first answer (409
    /// if its recipients differ); a new chunk after the batch is closed or
    /// cancelled answers 409.
    #[oai(
        path = "/send-chunk",
        method = "post",
        operation_id = "notifications.send_chunk"
    )]
    async fn send_chunk(
        &self,
        cx: ServiceCtx<'_>,
        body: StrictJson<SendChunkRequest>,
    ) -> Result<SendChunkResponse, ApiError> {
        let tenant_id = cx.auth.0.tenant_id;
        let req = &body.0;
        let id = crate::extract::id(&req.batch_id, "batch")?;
        if !(0..=MAX_SEQ).contains(&req.seq) {
            return Err(ApiError::invalid("seq", format!("must be 0 to {MAX_SEQ}")));
        }
        let batch = batches::get(&cx.state.pool, tenant_id, id)
            .await?
            .ok_or(ApiError::NotFound("batch"))?;
        let channels: Vec<Channel> = batch
            .channels
            .iter()
            .filter_map(|c| Channel::parse(c))
            .collect();
        let stored = recipients(&channels, "recipients", &req.recipients)?;
        let counts = chunk_counts(&channels, stored.len());
        let replayed = shared::db::limits::chunk_accepted(&cx.state.pool, tenant_id, id, req.seq);
        let quota = cx.take_quota(tenant_id, &counts, replayed).await?;
        let tx = cx.state.pool.begin().await?;
        let (answer, replayed) =
            match add_chunk(cx.state, tx, tenant_id, id, req.seq, &stored).await {
                Ok(added) => added,
                Err(e) => {
                    quota.give_back().await;
                    return Err(e);
                }
            };
        if replayed {
            quota.give_back().await;
        }
        Ok(SendChunkResponse::Accepted(
            Json(chunk_accepted(id, req.seq, answer)),
            status_url(id),
            replayed.then(|| "true".to_owned()),
        ))
    }

    /// Close a batch: no more chunks. It becomes `completed` once every
    /// notification is final. Closing a closed or completed batch is a
    /// no-op (a retried close may find its batch already finished); a
    /// cancelled one answers 409.
    #[oai(
        path = "/batches/:id/close",
        method = "post",
        operation_id = "notifications.close_batch"
    )]
    async fn close(
        &self,
        cx: ServiceCtx<'_>,
        id: Path<PathId<BatchId>>,
    ) -> Result<BatchResponse, ApiError> {
        let tenant_id = cx.auth.0.tenant_id;
        let id = id.0.get("batch")?;
        let mut conn = cx.state.pool.acquire().await?;
        match batches::close(&mut conn, tenant_id, id).await? {
            batches::Transition::Done => tracing::info!(batch_id = %id, "batch closed"),
            batches::Transition::Refused(s) if s == "closed" || s == "completed" => {}
            batches::Transition::Refused(s) => {
                return Err(ApiError::Conflict(format!(
                    "the batch is {s} and cannot be closed"
                )));
            }
            batches::Transition::NotFound => return Err(ApiError::NotFound("batch")),
        }
        drop(conn);
        Ok(BatchResponse::Ok(Json(
            load(cx.state, tenant_id, id).await?,
        )))
    }

    /// Cancel a batch: every notification not yet sent is `cancelled`,
    /// those a worker holds (waiting for their turn or a rate limit)
    /// included, and chunks not yet expanded become cancelled notifications.
    /// Only a message a provider already has can still be accepted; it then
    /// shows `sent`. Cancelling a cancelled batch is a no-op; a completed one
    /// answers 409.
    #[oai(
        path = "/batches/:id/cancel",
        method = "post",
        operation_id = "notifications.cancel_batch"
    )]
    async fn cancel(
        &self,
        cx: ServiceCtx<'_>,
        id: Path<PathId<BatchId>>,
    ) -> Result<BatchResponse, ApiError> {
        let tenant_id = cx.auth.0.tenant_id;
        let id = id.0.get("batch")?;
        let mut tx = cx.state.pool.begin().await?;
        let (done, cancelled) = batches::cancel(&mut tx, tenant_id, id).await?;
        tx.commit().await?;
        match done {
            batches::Transition::Done => {
                tracing::info!(batch_id = %id, cancelled, "batch cancelled")
            }
            batches::Transition::Refused(s) if s == "cancelled" => {}
            batches::Transition::Refused(s) => {
                return Err(ApiError::Conflict(format!(
                    "the batch is {s} and cannot be cancelled"
                )));
            }
            batches::Transition::NotFound => return Err(ApiError::NotFound("batch")),
        }
        Ok(BatchResponse::Ok(Json(
            load(cx.state, tenant_id, id).await?,
        )))
    }

    /// Read a batch: its state, counts per status, progress and timestamps.
    #[oai(
        path = "/batches/:id",
        method = "get",
        operation_id = "notifications.get_batch"
    )]
    async fn get(
        &self,
        cx: ServiceCtx<'_>,
        id: Path<PathId<BatchId>>,
    ) -> Result<BatchResponse, ApiError> {
        let id = id.0.get("batch")?;
        Ok(BatchResponse::Ok(Json(
            load(cx.state, cx.auth.0.tenant_id, id).await?,
        )))
    }

    /// List a batch's notifications, oldest first, by cursor; optionally of
    /// one status.
    #[oai(
        path = "/batches/:id/notifications",
        method = "get",
        operation_id = "notifications.list_batch"
    )]
    async fn list(
        &self,
        cx: ServiceCtx<'_>,
        id: Path<PathId<BatchId>>,
        /// Only this status.
        status: Query<Option<String>>,
        /// From `next_cursor` of the previous page.
        cursor: Query<Option<Cursor<NotificationId>>>,
        /// Notifications per page.
        limit: Query<PageSize>,
    ) -> Result<ItemsResponse, ApiError> {
        let tenant_id = cx.auth.0.tenant_id;
        let id = id.0.get("batch")?;
        let status = match status.0.as_deref() {
            None => None,
            Some(s) => Some(
                NotificationStatus::ALL
                    .iter()
                    .copied()
                    .find(|st| st.as_str() == s)
                    .ok_or_else(|| ApiError::invalid("status", format!("`{s}` is not a status")))?,
            ),
        };
        let after = cursor.0.map(Cursor::get).transpose()?;
        if batches::get(&cx.state.pool, tenant_id, id).await?.is_none() {
            return Err(ApiError::NotFound("batch"));
        }
        let items = batches::notifications(
            &cx.state.pool,
            tenant_id,
            id,
            status,
            after,
            limit.0.fetch(),
        )
        .await?;
        let (items, next_cursor) = page(items, limit.0, |i| i.id);
        Ok(ItemsResponse::Ok(Json(BatchItemsPage {
            items: items
                .into_iter()
                .map(|i| BatchItem {
                    id: i.id.to_string(),
                    seq: i.seq,
                    index: i.index,
                    channel: i.channel.as_str().into(),
                    to: i.recipient,
                    status: i.status.as_str().into(),
                    last_error: i.last_error,
                    created_at: i.created_at,
                    updated_at: i.updated_at,
                })
                .collect(),
            next_cursor,
        })))
    }
}
