//! Deactivating and reactivating a user, and ending their sessions.

use super::*;

pub(super) async fn set_status(
    cx: &AdminCtx<'_>,
    raw: &str,
    status: &str,
    action: &str,
) -> Result<UserResponse, ApiError> {
    let p = cx.principal().await?;
    let act = cx.acting(&p, action, "user");
    let uid = act
        .refused(Some(raw), crate::extract::id(raw, "user"))
        .await?;
    let mut tx = cx.state.pool.begin().await?;
    let result = users::set_status(&mut *tx, p.reach(), uid, status)
        .await?
        .ok_or(ApiError::NotFound("user"));
    let user = act.refused(Some(raw), result).await?;
    let ended = if status == "active" {
        Vec::new()
    } else {
        end_sessions(&mut tx, &user, "deactivated", None).await?
    };
    act.audit(
        &mut *tx,
        Some(user.tenant_id),
        uid,
        json!({"status": status}),
    )
    .await?;
    tx.commit().await?;
    crate::signin::announce_revoked(cx.state, &ended).await;
    Ok(UserResponse::Ok(Json(user.into())))
}

/// Revokes every live session of `user` (a password change, a
/// deactivation, an admin's revocation `by` an actor from a client),
/// recording a security event for each; their ids, to announce after the
/// commit.
pub(super) async fn end_sessions(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    user: &users::User,
    reason: &str,
    by: Option<(&crate::signin::Client, &str)>,
) -> Result<Vec<Uuid>, ApiError> {
    let ended = sessions::revoke(
        &mut **tx,
        user.tenant_id,
        user.id,
        sessions::Which::All,
        reason,
    )
    .await?;
    let recorded: Vec<Event> = ended
        .iter()
        .map(|sid| {
            let (ip, user_agent, details) = match by {
                Some((client, actor)) => (
                    client.ip.as_deref(),
                    client.user_agent.as_deref(),
                    json!({"reason": reason, "by": actor}),
                ),
                None => (None, None, json!({"reason": reason})),
            };
            Event::new(
                Some(user.tenant_id),
                events::SESSION_REVOKED,
                Some(user.id),
                ip,
                user_agent,
            )
            .session(*sid)
            .details(details)
        })
        .collect();
    events::record(&mut **tx, &recorded).await?;
    Ok(ended)
}
