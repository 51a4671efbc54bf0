//! What the batch endpoints take and answer: recipients, batches, chunks,
//! their counts and items.

use super::*;
use crate::routes::views::StatusCounts;

/// One recipient of a chunk.
#[derive(Debug, Clone, Object, serde::Serialize, serde::Deserialize)]
#[oai(deny_unknown_fields)]
#[serde(deny_unknown_fields)]
pub struct BatchRecipient {
    /// The user's id at your identity provider. Required for in-app; on the
    /// other channels it makes the user's preferences apply.
    pub subscriber_id: Option<String>,
    /// The email address; required when the batch sends email.
    pub email: Option<String>,
    /// The E.164 number; required when the batch sends sms or whatsapp.
    pub phone: Option<String>,
    /// Template data for this recipient (a JSON object, at most 50 keys and
    /// 16 KiB), over the batch's `defaults`.
    pub data: Option<Value>,
}

/// A new batch.
#[derive(Debug, Clone, Object, serde::Serialize, serde::Deserialize)]
#[oai(deny_unknown_fields)]
#[serde(deny_unknown_fields)]
pub struct SendBatchRequest {
    /// The key of one of your templates; every notification is rendered from
    /// it.
    pub template: String,
    /// The channels each recipient gets a notification on (`email`, `sms`,
    /// `whatsapp`, `inapp`); default: the template's default channels.
    pub channels: Option<Vec<String>>,
    /// The locale to render (default: the template's).
    pub locale: Option<String>,
    /// Template data every recipient starts from (a JSON object).
    pub defaults: Option<Value>,
    /// Your key/value data, copied to every notification (a JSON object).
    pub metadata: Option<Value>,
    /// Optionally, the first chunk (sequence number 0): up to 1,000
    /// recipients.
    pub recipients: Option<Vec<BatchRecipient>>,
}

/// One chunk of a batch.
#[derive(Debug, Clone, Object, serde::Serialize, serde::Deserialize)]
#[oai(deny_unknown_fields)]
#[serde(deny_unknown_fields)]
pub struct SendChunkRequest {
    /// The batch, from `send-batch`.
    pub batch_id: String,
    /// The chunk's sequence number, 0 to 1,000,000. Sending the same number
    /// again is a no-op that returns the first answer.
    pub seq: i32,
    /// 1 to 1,000 recipients.
    pub recipients: Vec<BatchRecipient>,
}

/// A chunk was accepted.
#[derive(Debug, Clone, Object)]
pub struct ChunkAccepted {
    /// The batch.
    pub batch_id: String,
    /// The chunk's sequence number.
    pub seq: i32,
    /// Recipients it carried.
    pub recipients: i32,
    /// When it was first accepted.
    pub accepted_at: DateTime<Utc>,
    /// Where to poll the batch.
    pub status_url: String,
}

/// A batch was created.
#[derive(Debug, Clone, Object)]
pub struct BatchAccepted {
    /// Its id.
    pub batch_id: String,
    /// `open`.
    pub status: String,
    /// Where to poll it.
    pub status_url: String,
    /// The first chunk, when the request carried one.
    pub chunk: Option<ChunkAccepted>,
}

/// A batch's state.
#[derive(Debug, Clone, Object)]
pub struct BatchView {
    /// Its id.
    pub id: String,
    /// `open`, `closed`, `cancelled` or `completed`.
    pub status: String,
    /// The template's key.
    pub template: String,
    /// The channels.
    pub channels: Vec<String>,
    /// Chunks accepted.
    pub chunks: i64,
    /// Chunks not yet expanded into notifications.
    pub chunks_pending: i64,
    /// Recipients accepted, over every chunk.
    pub recipients: i64,
    /// Notifications expected: recipients times channels.
    pub expected: i64,
    /// Notifications created so far.
    pub notifications: i64,
    /// Notifications in a final status.
    pub finished: i64,
    /// `finished / expected`, 0 to 1.
    pub progress: f64,
    /// Notifications per status; they add up to `notifications`.
    pub counts: StatusCounts,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When it was closed.
    pub closed_at: Option<DateTime<Utc>>,
    /// When it was cancelled.
    pub cancelled_at: Option<DateTime<Utc>>,
    /// When its last notification finished.
    pub completed_at: Option<DateTime<Utc>>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
}

/// One notification of a batch.
#[derive(Debug, Clone, Object)]
pub struct BatchItem {
    /// Its id.
    pub id: String,
    /// The chunk it came from.
    pub seq: i32,
    /// The recipient's place in the chunk.
    pub index: i32,
    /// Its channel.
    pub channel: String,
    /// Address, number or subscriber id.
    pub to: String,
    /// Its status.
    pub status: String,
    /// The last error.
    pub last_error: Option<String>,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
}

/// A page of a batch's notifications.
#[derive(Debug, Clone, Object)]
pub struct BatchItemsPage {
    /// The notifications, oldest first.
    pub items: Vec<BatchItem>,
    /// Pass as `cursor` for the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

/// Answers to `send-batch`.
#[derive(Debug, ApiResponse)]
pub enum SendBatchResponse {
    /// Created (with its first chunk, if given). With the same
    /// `Idempotency-Key` and body the first answer is returned again, with
    /// `Idempotent-Replayed: true`.
    #[oai(status = 202)]
    Accepted(
        Json<BatchAccepted>,
        #[oai(header = "Location")] String,
        #[oai(header = "Idempotent-Replayed")] Option<String>,
    ),
}

/// Answers to `send-chunk`.
#[derive(Debug, ApiResponse)]
pub enum SendChunkResponse {
    /// Accepted. A chunk number sent before answers its first answer with
    /// `Idempotent-Replayed: true`.
    #[oai(status = 202)]
    Accepted(
        Json<ChunkAccepted>,
        #[oai(header = "Location")] String,
        #[oai(header = "Idempotent-Replayed")] Option<String>,
    ),
}

/// Answers with a batch's state.
#[derive(Debug, ApiResponse)]
pub enum BatchResponse {
    /// The batch.
    #[oai(status = 200)]
    Ok(Json<BatchView>),
}

/// Answers with a page of notifications.
#[derive(Debug, ApiResponse)]
pub enum ItemsResponse {
    /// The page.
    #[oai(status = 200)]
    Ok(Json<BatchItemsPage>),
}

pub(super) fn view(batch: batches::Batch, counts: &Counts) -> BatchView {
    let by = StatusCounts::from_rows(&counts.by_status);
    let expected = counts.recipients * batch.channels.len() as i64;
    let finished = counts.finished();
    BatchView {
        id: batch.id.to_string(),
        status: batch.status,
        template: batch.template_key,
        channels: batch.channels,
        chunks: counts.chunks,
        chunks_pending: counts.chunks_pending,
        recipients: counts.recipients,
        expected,
        notifications: counts.notifications(),
        finished,
        progress: if expected == 0 {
            0.0
        } else {
            finished as f64 / expected as f64
        },
        counts: by,
        created_at: batch.created_at,
        closed_at: batch.closed_at,
        cancelled_at: batch.cancelled_at,
        completed_at: batch.completed_at,
        updated_at: batch.updated_at,
    }
}
