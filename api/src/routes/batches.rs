//! Batches under `/api/v1/services/notifications`: a caller streams a large
//! audience in numbered chunks of up to 1,000 recipients.
//!
//! `send-batch` creates the batch (template, channels, default data, and
//! optionally chunk 0); `send-chunk` adds a chunk; `close` says no more will
//! come; `cancel` stops everything not yet sent. Each chunk is stored with
//! its first answer and expanded into notifications by one `batch_chunk`
//! job; the notifications then go through the channel queues under the
//! dispatcher's window. A batch is `completed` when it is closed and every
//! notification is final. Creating a batch and adding a chunk follow the
//! rules in [`crate::services::batches`].

use chrono::{DateTime, Utc};
use poem_openapi::{
    ApiResponse, Object, OpenApi,
    param::{Header, Path, Query},
    payload::Json,
};
use serde_json::Value;
use shared::{
    db::batches::{self, ChunkAnswer, Counts},
    domain::{BatchId, NotificationId, NotificationStatus},
};

use crate::{
    AppState,
    body::StrictJson,
    error::ApiError,
    extract::ServiceCtx,
    extract::{Cursor, PageSize, PathId, idempotency_key, page, request_hash},
    routes::ApiTags,
    services::batches::{self as service, NewBatchRequest, Recipient},
};

mod views;
pub use views::*;

pub use service::MAX_CHUNK;

/// The batch endpoints.
#[derive(Debug)]
pub struct BatchesApi;

fn status_url(id: BatchId) -> String {
    format!("/api/v1/services/notifications/batches/{id}")
}

/// A new batch as the batches service reads it.
fn new_batch(req: &SendBatchRequest) -> NewBatchRequest<'_> {
    NewBatchRequest {
        template: &req.template,
        channels: req.channels.as_deref(),
        locale: req.locale.as_deref(),
        defaults: req.defaults.as_ref(),
        metadata: req.metadata.as_ref(),
        recipients: req.recipients.as_deref().map(given),
    }
}

/// A chunk's recipients as the batches service reads them.
fn given(recipients: &[BatchRecipient]) -> Vec<Recipient<'_>> {
    recipients
        .iter()
        .map(|r| Recipient {
            subscriber_id: r.subscriber_id.as_deref(),
            email: r.email.as_deref(),
            phone: r.phone.as_deref(),
            data: r.data.as_ref(),
        })
        .collect()
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
        let key = idempotency_key(key.0)?;
        let req = &body.0;
        let idempotency = key.map(|k| (k, request_hash(req)));
        let tenant_id = cx.auth.0.tenant_id;
        let new = new_batch(req);
        let created =
            service::create(cx.state, tenant_id, &cx.request_id.0, new, idempotency).await?;
        let id = created.id;
        Ok(SendBatchResponse::Accepted(
            Json(BatchAccepted {
                batch_id: id.to_string(),
                status: created.status,
                status_url: status_url(id),
                chunk: created.chunk.map(|answer| chunk_accepted(id, 0, answer)),
            }),
            status_url(id),
            created.replayed.then(|| "true".to_owned()),
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
        let req = &body.0;
        let id = crate::extract::id(&req.batch_id, "batch")?;
        let recipients = given(&req.recipients);
        let (answer, replayed) = service::add(
            cx.state,
            cx.auth.0.tenant_id,
            &cx.request_id.0,
            id,
            req.seq,
            &recipients,
        )
        .await?;
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
