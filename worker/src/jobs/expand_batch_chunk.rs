//! `ExpandBatchChunk`: turn one chunk of a batch (up to 1,000 recipients)
//! into notifications.
//!
//! The chunk row is locked, every recipient is rendered on every channel of
//! the batch, and all the notifications are inserted in one statement in the
//! same transaction that marks the chunk expanded. A repeated or concurrent
//! job finds the chunk expanded and does nothing; a crash rolls everything
//! back and the chunk is swept again. In-app notifications that leave
//! nothing to decide are written once, already in their subscribers'
//! inboxes with their real-time events; the other rows are born
//! undispatched, so the scheduler's dispatcher feeds them to the channel
//! queues under its window.

use std::sync::Arc;

use apalis_core::{error::BoxDynError, task::data::Data, task::task_id::TaskId};
use serde_json::{Value, json};
use shared::{
    db::batches::{self, Expanded, StoredRecipient},
    domain::{Channel, NotificationStatus},
    events::Event,
    jobs::{ExpandBatchChunk, Job, QueueName},
};
use tracing::Instrument;

use super::expansion;
use crate::WorkerState;

/// Runs one `ExpandBatchChunk` job.
pub async fn handle(
    job: ExpandBatchChunk,
    state: Data<Arc<WorkerState>>,
    task_id: TaskId,
) -> Result<(), BoxDynError> {
    let span = tracing::info_span!(
        "job",
        queue = %QueueName::BatchChunk,
        job = ExpandBatchChunk::NAME,
        job_id = %task_id,
        tenant_id = %job.tenant_id,
        batch_id = %job.batch_id,
        seq = job.seq,
    );
    async move {
        let created = expansion::run(
            &state,
            QueueName::BatchChunk,
            &job,
            job.tenant_id,
            expand(&state, &job),
        )
        .await;
        if let Some(created) = created {
            metrics::counter!("batch_notifications_created_total").increment(created);
            tracing::info!(created, "chunk expanded");
            let event = Event {
                tenant_id: job.tenant_id,
                topic: format!("batch:{}", job.batch_id),
                kind: "batch.progress".into(),
                id: None,
                data: json!({
                    "batch_id": job.batch_id,
                    "seq": job.seq,
                    "notifications_created": created,
                }),
                at: chrono::Utc::now(),
            };
            if let Err(error) = shared::events::publish(&state.queues, &[event]).await {
                tracing::warn!(%error, "cannot publish batch progress");
            }
        }
        Ok(())
    }
    .instrument(span)
    .await
}

/// Expands the chunk; `None` if it was already expanded.
async fn expand(state: &WorkerState, job: &ExpandBatchChunk) -> anyhow::Result<Option<u64>> {
    use anyhow::Context;
    let mut tx = state.pool.begin().await.context("while starting")?;
    let Some(chunk) = batches::take_chunk(&mut tx, job.tenant_id, job.batch_id, job.seq)
        .await
        .context("while locking the chunk")?
    else {
        return Ok(None);
    };
    let recipients: Vec<StoredRecipient> =
        serde_json::from_value(chunk.recipients.0).context("while reading the recipients")?;
    let channels: Vec<Channel> = chunk
        .channels
        .iter()
        .filter_map(|c| Channel::parse(c))
        .collect();
    let template = shared::db::templates::get_by_key(&mut *tx, job.tenant_id, &chunk.template_key)
        .await
        .context("while reading the template")?
        .map(|t| shared::templates::Prepared::new(t.template));
    let external_ids: Vec<String> = {
        let mut ids: Vec<String> = recipients
            .iter()
            .filter_map(|r| r.subscriber_id.clone())
            .collect();
        ids.sort_unstable();
        ids.dedup();
        ids
    };
    let cancelled = chunk.status == "cancelled";
    let mut rows = Vec::with_capacity(recipients.len() * channels.len());
    for (index, r) in recipients.iter().enumerate() {
        let data = merged(&chunk.defaults.0, r.data.as_ref());
        for &channel in &channels {
            let rendered = match (&template, r.address(channel)) {
                (None, _) => Err("the batch's template no longer exists".to_owned()),
                (_, None) => Err(format!(
                    "the recipient has no address for {}",
                    channel.as_str()
                )),
                (Some(t), Some(_)) => t
                    .render(channel, chunk.locale.as_deref(), &data)
                    .map(|r| r.content.to_stored())
                    .map_err(|e| format!("template: {e}")),
            };
            let (status, content, error) = match rendered {
                _ if cancelled => (
                    NotificationStatus::Cancelled,
                    Value::Object(Default::default()),
                    Some("the batch was cancelled".to_owned()),
                ),
                Ok(content) => (NotificationStatus::Queued, content, None),
                Err(e) => (
                    NotificationStatus::Failed,
                    Value::Object(Default::default()),
                    Some(e),
                ),
            };
            rows.push(Expanded {
                index: index as i32,
                channel,
                recipient: r.address(channel).unwrap_or_default().to_owned(),
                content,
                subscriber_id: None,
                status,
                error,
                max_attempts: state
                    .jobs
                    .queue(QueueName::for_channel(channel))
                    .max_attempts as i32,
            });
        }
    }
    let place_inapp = expansion::place_inapp(&mut tx, job.tenant_id).await?;
    // Each row's recipient, in the order the rows were built.
    let owners = || {
        recipients
            .iter()
            .flat_map(|r| channels.iter().map(move |_| r.subscriber_id.as_deref()))
    };
    let entries = batches::first_entries(&rows, owners(), place_inapp);
    let subscribers = batches::subscriber_ids(&mut tx, job.tenant_id, &external_ids, &entries)
        .await
        .context("while finding the subscribers")?;
    for (row, owner) in rows.iter_mut().zip(owners()) {
        row.subscriber_id = owner.and_then(|s| subscribers.ids.get(s).copied());
    }
    let how = batches::Written {
        metadata: &chunk.metadata.0,
        category: template.as_ref().and_then(|t| t.template().category()),
        critical: template.as_ref().is_some_and(|t| t.template().critical()),
        place_inapp,
    };
    let written = batches::expand(
        &mut tx,
        job.tenant_id,
        job.batch_id,
        job.seq,
        &rows,
        &how,
        &subscribers,
    )
    .await
    .context("while inserting the notifications")?;
    expansion::commit(state, tx, job.tenant_id, written).await
}

/// The batch's default data with the recipient's keys over it.
fn merged(defaults: &Value, own: Option<&Value>) -> Value {
    let mut data = match defaults {
        Value::Object(m) => m.clone(),
        _ => Default::default(),
    };
    if let Some(Value::Object(m)) = own {
        for (k, v) in m {
            data.insert(k.clone(), v.clone());
        }
    }
    Value::Object(data)
}
