//! System broadcasts: a platform admin's message to every subscriber of
//! every organisation, or of the ones named, stored with its notifications
//! in one transaction and announced live to each organisation after the
//! commit. The route in [`crate::routes::broadcasts`] checks the request's
//! fields and shapes the answer.

use chrono::Utc;
use serde_json::json;
use shared::{
    db::topics::{self, Broadcast, Broadcasted, NewBroadcast},
    domain::{Channel, TenantId},
    events::Event,
    jobs::QueueName,
};

use crate::{
    AppState,
    access::Acting,
    error::{ApiError, InvalidParam},
};

/// A broadcast's message, its fields checked.
#[derive(Debug)]
pub struct Message {
    /// The title: one line.
    pub title: String,
    /// The message.
    pub body: String,
    /// `info`, `warning` or `critical`.
    pub severity: String,
    /// Where a click leads.
    pub action_url: Option<String>,
    /// The email's subject when it also emails.
    pub email_subject: Option<String>,
    /// The organisations addressed, each once; `None`: every organisation.
    pub organizations: Option<Vec<TenantId>>,
}

/// A broadcast stored, or the one an earlier request with the same
/// idempotency key stored.
#[derive(Debug)]
pub struct Sent {
    /// The broadcast.
    pub broadcast: Broadcast,
    /// Whether it is the earlier request's.
    pub replayed: bool,
}

/// Stores `message` as a broadcast from `actor` with its notifications (one
/// in-app per subscriber, and one email per subscriber with an address when
/// it emails), audits it, and after the commit tells every organisation
/// addressed on its `org` topic (`system.alert`). `idempotency` is the key
/// and the request's hash: a request already stored under the key answers
/// that broadcast again (422 when its body differed). An organisation that
/// does not exist is a 400 naming its place in the list.
pub async fn send(
    state: &AppState,
    act: &Acting<'_>,
    actor: &str,
    message: Message,
    idempotency: Option<(String, Vec<u8>)>,
) -> Result<Sent, ApiError> {
    if let Some(orgs) = &message.organizations {
        let unknown = topics::unknown_organizations(&state.pool, orgs).await?;
        if !unknown.is_empty() {
            return Err(ApiError::Invalid(
                orgs.iter()
                    .enumerate()
                    .filter(|(_, id)| unknown.contains(id))
                    .map(|(i, _)| InvalidParam {
                        name: format!("organizations[{i}]"),
                        reason: "no organisation with this id".into(),
                    })
                    .collect(),
            ));
        }
    }
    let attempts = |c: Channel| state.jobs.queue(QueueName::for_channel(c)).max_attempts as i32;
    let mut tx = state.pool.begin().await?;
    let done = topics::broadcast(
        &mut tx,
        NewBroadcast {
            actor,
            title: &message.title,
            body: &message.body,
            severity: &message.severity,
            action_url: message.action_url.as_deref(),
            email_subject: message.email_subject.as_deref(),
            organizations: message.organizations.as_deref(),
            max_attempts: (attempts(Channel::InApp), attempts(Channel::Email)),
            idempotency: idempotency.as_ref().map(|(k, h)| (k.as_str(), h.clone())),
        },
    )
    .await?;
    let (broadcast, targets) = match done {
        Broadcasted::New(b, targets) => (b, targets),
        Broadcasted::Existing {
            broadcast,
            same_request: true,
        } => {
            return Ok(Sent {
                broadcast,
                replayed: true,
            });
        }
        Broadcasted::Existing { .. } => return Err(ApiError::IdempotencyKeyReused),
    };
    let organizations = message
        .organizations
        .as_ref()
        .map_or(json!("all"), |o| json!(o.len()));
    act.audit(
        &mut *tx,
        None,
        broadcast.id,
        json!({
            "organizations": organizations,
            "severity": message.severity,
            "inapp": broadcast.inapp_count,
            "email": broadcast.email_count,
        }),
    )
    .await?;
    tx.commit().await?;
    tracing::info!(broadcast_id = %broadcast.id, organizations = targets.len(),
        inapp = broadcast.inapp_count, email = broadcast.email_count, "broadcast sent");
    announce(state, &broadcast, &message, targets).await;
    Ok(Sent {
        broadcast,
        replayed: false,
    })
}

/// Tells each organisation in `targets` about the broadcast on its `org`
/// topic. A failure is logged: the inbox entries still arrive; only the
/// live alert is lost.
async fn announce(
    state: &AppState,
    broadcast: &Broadcast,
    message: &Message,
    targets: Vec<TenantId>,
) {
    let at = Utc::now();
    let data = json!({
        "broadcast_id": broadcast.id,
        "title": message.title,
        "body": message.body,
        "severity": message.severity,
        "action_url": message.action_url,
    });
    let events: Vec<Event> = targets
        .into_iter()
        .map(|tenant_id| Event {
            tenant_id,
            topic: "org".into(),
            kind: "system.alert".into(),
            id: None,
            data: data.clone(),
            at,
        })
        .collect();
    if let Err(error) = shared::events::publish(&state.queues, &events).await {
        tracing::warn!(%error, "cannot publish the system alert");
    }
}
