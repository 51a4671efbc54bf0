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
