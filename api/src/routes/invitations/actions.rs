//! What creating, resending and cancelling an invitation does, one at a time
//! or in bulk, and the rules on who may manage it.

use super::*;
use crate::access::Acting;
use crate::extract::AdminCtx;
use crate::services::invitations::{check_can_manage, push};

/// `body` as the invitations service takes it.
pub(super) fn invite(body: CreateInvitation) -> service::Invite {
    service::Invite {
        email: body.email,
        invitation_type: body.invitation_type,
        first_name: body.first_name,
        last_name: body.last_name,
        message: body.message,
        expires_in_days: body.expires_in_days,
        organization_id: body.organization_id,
    }
}

pub(super) async fn created(
    cx: &AdminCtx<'_>,
    body: CreateInvitation,
    fixed: Option<InvitationType>,
    allowed: Option<&[InvitationType]>,
) -> Result<InvitationResponse, ApiError> {
    let p = cx.principal().await?;
    let inv = service::create(cx.state, &p, cx.request_id, invite(body), fixed, allowed).await?;
    let location = format!("/api/v1/invitations/{}", inv.id);
    Ok(InvitationResponse::Created(Json(inv.into()), location))
}

pub(super) fn bulk_ids(ids: &[String]) -> Result<(), ApiError> {
    if ids.is_empty() || ids.len() > MAX_BULK {
        return Err(ApiError::invalid(
            "ids",
            format!("must hold 1 to {MAX_BULK} ids"),
        ));
    }
    Ok(())
}

pub(super) fn item(
    index: usize,
    result: Result<(u16, InvitationId), ApiError>,
) -> InvitationBulkItem {
    use poem::error::ResponseError;
    match result {
        Ok((status, id)) => InvitationBulkItem {
            index: index as u32,
            status,
            id: Some(id.to_string()),
            error: None,
        },
        Err(e) => {
            let error = match &e {
                ApiError::Invalid(params) => params
                    .iter()
                    .map(|p| format!("{}: {}", p.name, p.reason))
                    .collect::<Vec<_>>()
                    .join("; "),
                ApiError::Internal(_) => "an internal error occurred".to_owned(),
                other => other.to_string(),
            };
            InvitationBulkItem {
                index: index as u32,
                status: e.status().as_u16(),
                id: None,
                error: Some(error),
            }
        }
    }
}

pub(super) fn summarise(results: Vec<InvitationBulkItem>) -> BulkResponse {
    let succeeded = results.iter().filter(|r| r.status < 300).count() as u32;
    let failed = results.len() as u32 - succeeded;
    BulkResponse::MultiStatus(Json(InvitationBulkResult {
        results,
        succeeded,
        failed,
    }))
}

pub(super) async fn resend_one(
    state: &AppState,
    p: &Principal,
    request_id: &RequestId,
    raw: &str,
    days: Option<u32>,
) -> Result<InvitationId, ApiError> {
    let act = p
        .at(state, request_id)
        .acting("invitation.resend", "invitation");
    let inv = managed(state, p, &act, raw).await?;
    let expires_at = expiry(state, days)?;
    let mut tx = state.pool.begin().await?;
    let reopened = invitations::reopen(&mut *tx, inv.tenant_id, inv.id, expires_at).await?;
    let reopened = if reopened {
        Ok(())
    } else {
        Err(ApiError::Conflict(format!(
            "an invitation that is {} cannot be resent",
            inv.status
        )))
    };
    act.refused(Some(raw), reopened).await?;
    act.audit(&mut *tx, Some(inv.tenant_id), inv.id, json!({}))
        .await?;
    tx.commit().await?;
    push(state, inv.tenant_id, inv.id).await;
    Ok(inv.id)
}

pub(super) async fn cancel_one(
    state: &AppState,
    p: &Principal,
    request_id: &RequestId,
    raw: &str,
) -> Result<InvitationId, ApiError> {
    let act = p
        .at(state, request_id)
        .acting("invitation.cancel", "invitation");
    let inv = managed(state, p, &act, raw).await?;
    let mut tx = state.pool.begin().await?;
    let done = if invitations::cancel(&mut *tx, inv.tenant_id, inv.id).await? {
        Ok(())
    } else {
        Err(ApiError::Conflict(format!(
            "an invitation that is {} cannot be cancelled",
            inv.status
        )))
    };
    act.refused(Some(raw), done).await?;
    act.audit(&mut *tx, Some(inv.tenant_id), inv.id, json!({}))
        .await?;
    tx.commit().await?;
    Ok(inv.id)
}

/// The invitation `raw` names, when `p` may manage it ([`check_can_manage`]:
/// another's answers 404, as one that does not exist); refusals recorded as
/// `act`'s.
pub(super) async fn managed(
    state: &AppState,
    p: &Principal,
    act: &Acting<'_>,
    raw: &str,
) -> Result<invitations::Invitation, ApiError> {
    let result = async {
        let id = crate::extract::id(raw, "invitation")?;
        let inv = invitations::get(&state.pool, p.reach(), id)
            .await?
            .ok_or(ApiError::NotFound("invitation"))?;
        check_can_manage(p, &inv)?;
        Ok(inv)
    }
    .await;
    act.refused(Some(raw), result).await
}

/// Answers a bulk body (207): `each` applied to every id in turn, an item
/// for each.
pub(super) async fn bulk_each<'a, F, Fut>(
    ids: &'a [String],
    each: F,
) -> Result<BulkResponse, ApiError>
where
    F: Fn(&'a str) -> Fut,
    Fut: Future<Output = Result<InvitationId, ApiError>>,
{
    bulk_ids(ids)?;
    let mut results = Vec::new();
    for (i, raw) in ids.iter().enumerate() {
        results.push(item(i, each(raw).await.map(|id| (200, id))));
    }
    Ok(summarise(results))
}
