//! Batches: the rules a batch follows whichever route creates it (a
//! `send-batch` call or a CSV upload), and creating one and adding its
//! chunks. The routes in [`crate::routes::batches`] parse requests and shape
//! answers.
//!
//! Each chunk is stored with its first answer and expanded into
//! notifications by one `batch_chunk` job, pushed after the commit when the
//! dispatcher's window has room (else the dispatcher pushes it later).
//! Every chunk is counted against the organisation's send quotas: one
//! notification per recipient and channel.

use serde_json::Value;
use shared::{
    db::batches::{self, ChunkAdded, ChunkAnswer, Created, NewBatch, StoredRecipient},
    domain::{BatchId, Channel, Problems, TenantId, key_ok, recipient},
    jobs::{ExpandBatchChunk, QueueName},
    outbox::Enqueued,
    templates::requested_locale,
};

use crate::{
    AppState,
    error::ApiError,
    extract::{accepted_before, request_hash},
    limits::QuotaTicket,
};

/// Most recipients in one chunk.
pub const MAX_CHUNK: usize = 1_000;
/// Highest chunk sequence number.
pub const MAX_SEQ: i32 = 1_000_000;
/// Most keys in `defaults`, `metadata` or a recipient's `data`.
const MAX_KEYS: usize = 50;
/// Largest `data` of one recipient, as JSON.
const MAX_DATA_BYTES: usize = 16 * 1024;

/// The channels a batch of `template` goes out on when it names none: the
/// template's default channels but push, which batches do not send.
pub fn default_batch_channels(template: &shared::templates::Template) -> Vec<Channel> {
    template
        .default_channels()
        .iter()
        .copied()
        .filter(|c| *c != Channel::Push)
        .collect()
}

/// One recipient of a chunk, as sent.
#[derive(Debug, Clone, Copy)]
pub struct Recipient<'a> {
    /// The subscriber's external id.
    pub subscriber_id: Option<&'a str>,
    /// The email address.
    pub email: Option<&'a str>,
    /// The E.164 number.
    pub phone: Option<&'a str>,
    /// Template data for this recipient.
    pub data: Option<&'a Value>,
}

/// A new batch, as sent.
#[derive(Debug)]
pub struct NewBatchRequest<'a> {
    /// The template's key.
    pub template: &'a str,
    /// The channels; `None`: the template's default channels.
    pub channels: Option<&'a [String]>,
    /// The locale to render.
    pub locale: Option<&'a str>,
    /// Template data every recipient starts from.
    pub defaults: Option<&'a Value>,
    /// The caller's key/value data.
    pub metadata: Option<&'a Value>,
    /// Optionally, the first chunk (sequence number 0).
    pub recipients: Option<Vec<Recipient<'a>>>,
}

/// A batch created, or the one an earlier request with the same idempotency
/// key created.
#[derive(Debug)]
pub struct BatchCreated {
    /// The batch.
    pub id: BatchId,
    /// Its status now.
    pub status: String,
    /// The first chunk's answer, when the request carried one.
    pub chunk: Option<ChunkAnswer>,
    /// Whether it is the earlier request's batch.
    pub replayed: bool,
}

/// Creates a batch for `tenant_id` and stores its first chunk when `req`
/// carries one. `idempotency` is the request's key and the hash of its body:
/// a key already used with the same body answers with that batch, with
/// another body 422. In order: the fields (400), the template, the first
/// chunk's recipients, the quotas (429), then the key.
pub async fn create(
    state: &AppState,
    tenant_id: TenantId,
    request_id: &str,
    req: NewBatchRequest<'_>,
    idempotency: Option<(String, Vec<u8>)>,
) -> Result<BatchCreated, ApiError> {
    let (defaults, metadata, channels) = check(&req)?;
    let channels = channels_or_default(state, tenant_id, req.template, channels).await?;
    let first = req
        .recipients
        .as_deref()
        .map(|r| recipients(&channels, "recipients", r))
        .transpose()?;
    let counts = chunk_counts(&channels, first.as_ref().map_or(0, Vec::len));
    let (key, hash) = idempotency.unzip();
    let replayed = accepted_before(key.as_deref(), |k| {
        shared::db::limits::batch_accepted(&state.pool, tenant_id, k)
    });
    let quota = state
        .limits
        .take_quota_unless_replayed(tenant_id, request_id, &counts, replayed)
        .await?;
    let mut tx = state.pool.begin().await?;
    let created = batches::create(
        &mut tx,
        tenant_id,
        NewBatch {
            template_key: req.template,
            channels: &channels,
            locale: req.locale,
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
        Some(stored) => Some(
            store_chunk(state, tx, tenant_id, id, 0, stored, quota)
                .await?
                .0,
        ),
        None => {
            tx.commit().await?;
            None
        }
    };
    if !replayed {
        tracing::info!(batch_id = %id, "batch created");
    }
    let status = batches::get(&state.pool, tenant_id, id)
        .await?
        .map(|b| b.status)
        .unwrap_or_default();
    Ok(BatchCreated {
        id,
        status,
        chunk,
        replayed,
    })
}

/// Adds chunk `seq` of `given` recipients to open batch `id`; its answer,
/// and whether it is the first answer again (the same sequence number sent
/// before with the same recipients). The quotas are taken for it unless it
/// was.
pub async fn add(
    state: &AppState,
    tenant_id: TenantId,
    request_id: &str,
    id: BatchId,
    seq: i32,
    given: &[Recipient<'_>],
) -> Result<(ChunkAnswer, bool), ApiError> {
    if !(0..=MAX_SEQ).contains(&seq) {
        return Err(ApiError::invalid("seq", format!("must be 0 to {MAX_SEQ}")));
    }
    let batch = batches::get(&state.pool, tenant_id, id)
        .await?
        .ok_or(ApiError::NotFound("batch"))?;
    let channels: Vec<Channel> = batch
        .channels
        .iter()
        .filter_map(|c| Channel::parse(c))
        .collect();
    let stored = recipients(&channels, "recipients", given)?;
    let counts = chunk_counts(&channels, stored.len());
    let replayed = shared::db::limits::chunk_accepted(&state.pool, tenant_id, id, seq);
    let quota = state
        .limits
        .take_quota_unless_replayed(tenant_id, request_id, &counts, replayed)
        .await?;
    let tx = state.pool.begin().await?;
    store_chunk(state, tx, tenant_id, id, seq, &stored, quota).await
}

/// A new batch's own fields, checked: its `defaults`, its `metadata` and
/// the channels it names; every problem named.
fn check(req: &NewBatchRequest<'_>) -> Result<(Value, Value, Vec<Channel>), ApiError> {
    let mut p = Problems::default();
    if !key_ok(req.template) {
        p.add("template", "must be a template key");
    }
    p.opt("locale", req.locale, requested_locale);
    let defaults = p.object("defaults", req.defaults, MAX_KEYS);
    let metadata = p.object("metadata", req.metadata, MAX_KEYS);
    let channels = named_channels(&mut p, req.channels);
    if !p.is_empty() {
        return Err(p.into());
    }
    Ok((defaults, metadata, channels))
}

/// Stores a chunk (see [`add_chunk`]) for which `quota` was taken, and
/// gives the quota back when the chunk was stored before or is refused.
async fn store_chunk(
    state: &AppState,
    tx: sqlx::Transaction<'_, sqlx::Postgres>,
    tenant_id: TenantId,
    id: BatchId,
    seq: i32,
    stored: &[StoredRecipient],
    quota: QuotaTicket,
) -> Result<(ChunkAnswer, bool), ApiError> {
    match add_chunk(state, tx, tenant_id, id, seq, stored).await {
        Ok((answer, replayed)) => {
            if replayed {
                quota.give_back().await;
            }
            Ok((answer, replayed))
        }
        Err(e) => {
            quota.give_back().await;
            Err(e)
        }
    }
}

/// The channels a new batch names, each once and none of them push; every
/// problem named in `p`.
fn named_channels(p: &mut Problems, named: Option<&[String]>) -> Vec<Channel> {
    let mut channels = Vec::new();
    if named.is_some_and(<[String]>::is_empty) {
        p.add("channels", "must not be empty");
    }
    for (i, c) in named.unwrap_or_default().iter().enumerate() {
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
    channels
}

/// `channels`, or when none are named the default channels of template
/// `key` (which must exist: 400).
pub async fn channels_or_default(
    state: &AppState,
    tenant_id: TenantId,
    key: &str,
    channels: Vec<Channel>,
) -> Result<Vec<Channel>, ApiError> {
    let template = shared::db::templates::get_by_key(&state.pool, tenant_id, key)
        .await?
        .ok_or_else(|| ApiError::invalid("template", "no template with this key"))?
        .template;
    if !channels.is_empty() {
        return Ok(channels);
    }
    let channels = default_batch_channels(&template);
    if channels.is_empty() {
        return Err(ApiError::invalid(
            "channels",
            "the template's default channels are push only; name the channels",
        ));
    }
    Ok(channels)
}

/// Checks a chunk's recipients against the batch's channels, and returns
/// them normalised (addresses parsed) as they are stored.
fn recipients(
    channels: &[Channel],
    field: &str,
    given: &[Recipient<'_>],
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
        let subscriber_id = p.opt(at("subscriber_id"), r.subscriber_id, |s| {
            recipient(Channel::InApp, s)
        });
        let email = p.opt(at("email"), r.email, |e| recipient(Channel::Email, e));
        let phone = p.opt(at("phone"), r.phone, |n| recipient(Channel::Sms, n));
        let data = p.object(&at("data"), r.data, MAX_KEYS);
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
    tenant_id: TenantId,
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
