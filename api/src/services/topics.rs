//! Topics: named lists of an organisation's subscribers that sends and
//! workflow triggers fan out to, and sends to a topic or to the whole
//! organisation. The routes in [`crate::routes::topics`] parse requests and
//! shape answers.
//!
//! A send to an audience is a batch whose recipients the platform reads
//! itself: it is created closed, with its chunks cut from the audience in
//! one statement in the request's transaction (see
//! [`shared::db::topics::cut_chunks`]), and counted against the send quotas
//! for what it holds.

use serde_json::Value;
use shared::{
    db::{
        batches::{self, Created, NewBatch},
        topics::{self, Audience, Topic},
    },
    domain::{BatchId, Channel, Problems, TenantId, key_ok},
    templates::requested_locale,
};

use crate::{AppState, error::ApiError, services::batches::channels_or_default};

/// Most keys in `defaults` or `metadata`.
const MAX_KEYS: usize = 50;

/// Topic `key` of `tenant_id`, or 404 (a malformed key names no topic).
pub async fn find(state: &AppState, tenant_id: TenantId, key: &str) -> Result<Topic, ApiError> {
    if !key_ok(key) {
        return Err(ApiError::NotFound("topic"));
    }
    topics::get(&state.pool, tenant_id, key)
        .await?
        .ok_or(ApiError::NotFound("topic"))
}

/// Whom a send to an audience reaches.
#[derive(Debug, Clone, Copy)]
pub enum Target<'a> {
    /// Every member of the topic with this key.
    Topic(&'a str),
    /// Every subscriber of the organisation.
    Organization,
}

/// A send to an audience, as sent.
#[derive(Debug)]
pub struct AudienceSend<'a> {
    /// The template's key.
    pub template: &'a str,
    /// The channels; `None`: the template's default channels.
    pub channels: Option<&'a [String]>,
    /// The locale to render.
    pub locale: Option<&'a str>,
    /// Template data every recipient gets.
    pub defaults: Option<&'a Value>,
    /// The caller's key/value data.
    pub metadata: Option<&'a Value>,
}

/// A send to an audience accepted, or the one an earlier request with the
/// same idempotency key accepted.
#[derive(Debug)]
pub struct AudienceSent {
    /// The batch that carries it.
    pub batch_id: BatchId,
    /// The batch's status now.
    pub status: String,
    /// `topic:<key>` or `organization`.
    pub audience: String,
    /// Recipients read from the audience when it was accepted.
    pub recipients: i64,
    /// Whether it is the earlier request's.
    pub replayed: bool,
}

/// Sends `send` to `target`: checks the fields, creates the batch closed
/// with its chunks cut from the audience, takes the quota for what it holds,
/// and commits. `idempotency` is the request's key and the hash of its body:
/// a key already used with the same body answers with that batch and sends
/// nothing more, with another body 422. A malformed topic key is a 400, an
/// unknown topic a 404, both before the other fields are checked.
pub async fn send(
    state: &AppState,
    tenant_id: TenantId,
    request_id: &str,
    target: Target<'_>,
    send: AudienceSend<'_>,
    idempotency: Option<(String, Vec<u8>)>,
) -> Result<AudienceSent, ApiError> {
    let (audience, label) = audience(state, tenant_id, target).await?;
    let (defaults, metadata, channels) = check(&send)?;
    let channels = channels_or_default(state, tenant_id, send.template, channels).await?;
    let (key, hash) = idempotency.unzip();
    let mut tx = state.pool.begin().await?;
    let created = batches::create(
        &mut tx,
        tenant_id,
        NewBatch {
            template_key: send.template,
            channels: &channels,
            locale: send.locale,
            defaults,
            metadata,
            idempotency: key.as_deref().zip(hash),
        },
    )
    .await?;
    let (id, recipients, replayed) = match created {
        Created::New(id) => {
            let cut = Cut {
                tenant_id,
                request_id,
                id,
                audience,
                channels: &channels,
            };
            (id, cut_and_commit(state, tx, cut).await?, false)
        }
        Created::Existing {
            id,
            same_request: true,
        } => {
            drop(tx);
            let counts = {
                let mut conn = state.pool.acquire().await?;
                batches::counts(&mut conn, tenant_id, id).await?.0
            };
            (id, counts.recipients, true)
        }
        Created::Existing { .. } => return Err(ApiError::IdempotencyKeyReused),
    };
    let status = batches::get(&state.pool, tenant_id, id)
        .await?
        .map(|b| b.status)
        .unwrap_or_default();
    Ok(AudienceSent {
        batch_id: id,
        status,
        audience: label,
        recipients,
        replayed,
    })
}

/// The audience `target` names, and how the answer names it: 400 for a
/// malformed topic key, 404 for an unknown topic.
async fn audience(
    state: &AppState,
    tenant_id: TenantId,
    target: Target<'_>,
) -> Result<(Audience, String), ApiError> {
    match target {
        Target::Topic(key) => {
            if !key_ok(key) {
                return Err(ApiError::invalid(
                    "topic",
                    "must be a topic key (lower-case letters, digits, `.`, `_`, `-`)",
                ));
            }
            let topic = find(state, tenant_id, key).await?;
            Ok((Audience::Topic(topic.id), format!("topic:{}", topic.key)))
        }
        Target::Organization => Ok((Audience::Organization, "organization".to_owned())),
    }
}

/// A new batch to cut from its audience.
struct Cut<'a> {
    tenant_id: TenantId,
    request_id: &'a str,
    id: BatchId,
    audience: Audience,
    channels: &'a [Channel],
}

/// Cuts the new batch's chunks from its audience and closes it in `tx`,
/// takes the quota for what it holds and commits; its recipients.
async fn cut_and_commit(
    state: &AppState,
    mut tx: sqlx::Transaction<'_, sqlx::Postgres>,
    cut: Cut<'_>,
) -> Result<i64, ApiError> {
    let Cut {
        tenant_id,
        request_id,
        id,
        audience,
        channels,
    } = cut;
    let recipients = topics::cut_chunks(&mut tx, tenant_id, id, audience, channels).await?;
    topics::close_cut_batch(&mut *tx, tenant_id, id).await?;
    let counts: Vec<(Channel, u64)> = channels.iter().map(|c| (*c, recipients as u64)).collect();
    let quota = state
        .limits
        .take_quota(tenant_id, Some(request_id), &counts)
        .await?;
    if let Err(e) = tx.commit().await {
        quota.give_back().await;
        return Err(e.into());
    }
    tracing::info!(batch_id = %id, recipients, "audience send accepted");
    metrics::counter!("audience_sends_accepted_total").increment(1);
    Ok(recipients)
}

/// Checks a send's fields: its `defaults`, `metadata` and the channels it
/// names (each once, none of them push); every problem named.
fn check(send: &AudienceSend<'_>) -> Result<(Value, Value, Vec<Channel>), ApiError> {
    let mut p = Problems::default();
    if !key_ok(send.template) {
        p.add("template", "must be a template key");
    }
    p.opt("locale", send.locale, requested_locale);
    let defaults = p.object("defaults", send.defaults, MAX_KEYS);
    let metadata = p.object("metadata", send.metadata, MAX_KEYS);
    let mut channels = Vec::new();
    if send.channels.is_some_and(<[String]>::is_empty) {
        p.add("channels", "must not be empty");
    }
    for (i, c) in send.channels.unwrap_or_default().iter().enumerate() {
        let name = format!("channels[{i}]");
        let reason = match Channel::parse(c) {
            Some(Channel::Push) => "push is not offered for audiences: send per subscriber".into(),
            Some(c) if !channels.contains(&c) => {
                channels.push(c);
                continue;
            }
            Some(_) => "is listed twice".into(),
            None => format!("`{c}` is not a channel"),
        };
        p.add(name, reason);
    }
    p.into_result(()).map_err(ApiError::fields)?;
    Ok((defaults, metadata, channels))
}
