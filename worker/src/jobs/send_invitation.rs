//! `SendInvitation`: issue an invitation's token and queue its email.
//!
//! The handler claims the `pending` invitation, gives it a fresh 256-bit
//! token (only its SHA-256 is stored) and queues the email notice in the same
//! transaction, making the invitation `sent`. A duplicate job finds nothing
//! pending and does nothing; a crash before commit leaves it `pending` for
//! the next push (the dispatcher pushes stale ones again).
//! The email is the organisation's `platform.invitation` template when it
//! has one, the built-in one otherwise; its data holds `token`,
//! `accept_path`, `organization`, `first_name`, `invitation_type`, `role`,
//! `message` and `expires_at`.

use std::sync::{Arc, LazyLock};

use apalis_core::{error::BoxDynError, task::data::Data, task::task_id::TaskId};
use base64::Engine as _;
use rand::RngCore;
use serde_json::json;
use sha2::{Digest, Sha256};
use shared::{
    db::invitations,
    domain::{Channel, EmailAddress},
    jobs::{Job, SendInvitation},
    notices::{self, Notice},
    roles::InvitationType,
    templates::Template,
};
use tracing::Instrument;

use crate::WorkerState;

/// The template key an organisation overrides the invitation email with.
pub const TEMPLATE_KEY: &str = "platform.invitation";

static INVITATION: LazyLock<Template> = LazyLock::new(|| {
    notices::builtin(json!({
        "key": TEMPLATE_KEY,
        "name": "Invitation",
        "category": "account",
        "critical": true,
        "default_locale": "en",
        "default_channels": ["email"],
        "locales": {"en": {"email": {
            "subject": "You are invited to join {{organization}}",
            "text": "Hello{{#if first_name}} {{first_name}}{{/if}},\n\nYou are invited to join {{organization}} as {{invitation_label}}.\n{{#if message}}\n{{message}}\n{{/if}}\nAccept the invitation before {{expires_at}} with this code:\n\n{{token}}\n\n(or POST your new password to {{accept_path}})\n\nIf you did not expect this, ignore this email."
        }}}
    }))
});

/// Runs one `SendInvitation` job.
pub async fn handle(
    job: SendInvitation,
    state: Data<Arc<WorkerState>>,
    task_id: TaskId,
) -> Result<(), BoxDynError> {
    let span = tracing::info_span!("job", queue = %job.queue(), job = SendInvitation::NAME, job_id = %task_id, tenant_id = %job.tenant_id, invitation_id = %job.invitation_id);
    async move {
        metrics::counter!("jobs_started_total", "queue" => job.queue().as_str()).increment(1);
        let started = std::time::Instant::now();
        let sent = send(&state, &job).await;
        crate::jobs::count_job(
            &state,
            job.queue(),
            Some(job.tenant_id),
            sent.is_ok(),
            started,
        );
        match sent {
            Ok(sent) => {
                metrics::counter!("jobs_succeeded_total", "queue" => job.queue().as_str())
                    .increment(1);
                tracing::info!(sent, "invitation handled");
            }
            Err(error) => {
                // The invitation stays pending; it is pushed again later.
                metrics::counter!("jobs_failed_total", "queue" => job.queue().as_str())
                    .increment(1);
                tracing::error!(error = format!("{error:#}"), "invitation not sent");
            }
        }
        Ok(())
    }
    .instrument(span)
    .await
}

/// Claims and sends; false when there was nothing pending.
async fn send(state: &WorkerState, job: &SendInvitation) -> anyhow::Result<bool> {
    use anyhow::Context;
    let mut raw = [0u8; 32];
    rand::rng().fill_bytes(&mut raw);
    let token = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw);
    let hash = Sha256::digest(token.as_bytes()).to_vec();
    let mut tx = state.pool.begin().await.context("while starting")?;
    let Some(inv) = invitations::claim_for_send(&mut *tx, job.tenant_id, job.invitation_id, &hash)
        .await
        .context("while claiming the invitation")?
    else {
        return Ok(false);
    };
    let email =
        EmailAddress::parse(&inv.email).map_err(|e| anyhow::anyhow!("stored address: {e}"))?;
    let label = InvitationType::parse(&inv.invitation_type)
        .map(|t| t.as_str().replace('_', " "))
        .unwrap_or_else(|| inv.invitation_type.clone());
    let data = json!({
        "token": token,
        "accept_path": format!("/api/v1/invitations/accept/{token}"),
        "organization": inv.organization,
        "first_name": inv.first_name,
        "last_name": inv.last_name,
        "invitation_type": inv.invitation_type,
        "invitation_label": label,
        "role": InvitationType::parse(&inv.invitation_type).map(|t| t.role().as_str()),
        "message": inv.message,
        "expires_at": inv.expires_at.format("%Y-%m-%d %H:%M UTC").to_string(),
    });
    let key = format!(
        "invitation:{}:{}",
        job.invitation_id,
        hex::encode(&hash[..8])
    );
    let queued = notices::queue(
        &mut tx,
        &state.jobs,
        job.tenant_id,
        Notice {
            key: TEMPLATE_KEY,
            default: &INVITATION,
            data: &data,
            channels: &[Channel::Email],
            subscriber: None,
            email: Some(&email),
            phone: None,
            locale: None,
            metadata: json!({"invitation_id": job.invitation_id}),
            idempotency_key: Some(&key),
        },
    )
    .await
    .context("while queueing the invitation email")?;
    if let Some((_, id)) = queued.notifications.first() {
        invitations::set_notification(&mut *tx, job.tenant_id, job.invitation_id, *id)
            .await
            .context("while linking the email")?;
    }
    tx.commit().await.context("while committing")?;
    Ok(true)
}
