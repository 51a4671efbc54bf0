//! Invitations: what happens once one is committed.

use shared::{
    domain::{InvitationId, TenantId},
    jobs::SendInvitation,
    outbox::Enqueued,
};

use crate::AppState;

/// Pushes the invitation's job after its commit; if that fails the row is
/// released and the dispatcher's next sweep pushes it.
pub async fn push(state: &AppState, tenant_id: TenantId, invitation_id: InvitationId) {
    let enqueued = Enqueued::one(SendInvitation {
        tenant_id,
        invitation_id,
    });
    if let Err(error) = enqueued.push(&state.queues, &state.pool).await {
        // The row's dispatch mark runs out and the dispatcher pushes it then.
        tracing::warn!(%error, %invitation_id, "cannot release the invitation's dispatch mark");
    }
}
