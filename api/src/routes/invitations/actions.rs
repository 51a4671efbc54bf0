//! What creating, resending and cancelling an invitation does, one at a time
//! or in bulk, and the rules on who may manage it.

use super::*;
use crate::access::{Act, Acting};
use crate::extract::AdminCtx;
use crate::services::invitations::push;

pub(super) fn expiry(state: &AppState, days: Option<u32>) -> Result<DateTime<Utc>, ApiError> {
    let days = days.unwrap_or(state.jobs.invitations.expiry_days);
    if !(1..=30).contains(&days) {
        return Err(ApiError::invalid("expires_in_days", "must be 1 to 30"));
    }
    Ok(Utc::now() + Duration::days(i64::from(days)))
}

pub(super) fn check_message(v: Option<&str>) -> Result<Option<String>, ApiError> {
    match v {
        Some(m) if m.chars().count() > 2000 => Err(ApiError::invalid(
            "message",
            "must be at most 2,000 characters",
        )),
        Some(m) => Ok(Some(m.to_owned())),
        None => Ok(None),
    }
}

/// A token as issued: 43 URL-safe base64 characters (256 bits). Anything
/// else is not looked up.
pub(super) fn token_hash(token: &str) -> Option<Vec<u8>> {
    let well_formed = token.len() == 43
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    well_formed.then(|| Sha256::digest(token.as_bytes()).to_vec())
}

/// What [`create_one`] refuses with, before anything is written.
pub(super) async fn create_one(
    state: &AppState,
    p: &Principal,
    request_id: &RequestId,
    body: CreateInvitation,
    fixed: Option<InvitationType>,
    allowed: Option<&[InvitationType]>,
) -> Result<invitations::Invitation, ApiError> {
    let ty = match (fixed, body.invitation_type.as_deref()) {
        (Some(t), None) => t,
        (Some(t), Some(raw)) if raw == t.as_str() => t,
        (Some(t), Some(_)) => {
            return Err(ApiError::invalid(
                "invitation_type",
                format!("this route invites {} only", t.as_str()),
            ));
        }
        (None, None) if allowed.is_some() => InvitationType::MedicalStaff,
        (None, None) => return Err(ApiError::invalid("invitation_type", "is required")),
        (None, Some(raw)) => InvitationType::parse(raw).ok_or_else(|| {
            ApiError::invalid(
                "invitation_type",
                format!(
                    "must be one of {}",
                    InvitationType::ALL
                        .iter()
                        .map(|t| t.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            )
        })?,
    };
    if let Some(allowed) = allowed
        && !allowed.contains(&ty)
    {
        return Err(ApiError::invalid(
            "invitation_type",
            "must be office_admin or medical_staff",
        ));
    }
    let email = check_email("email", &body.email)?;
    let first = check_name("first_name", body.first_name.as_deref())?;
    let last = check_name("last_name", body.last_name.as_deref())?;
    let message = check_message(body.message.as_deref())?;
    let expires_at = expiry(state, body.expires_in_days)?;
    let checks = (|| {
        let tenant = p.target_tenant(body.organization_id.as_deref())?;
        // A caller without a known role (a token with no roles) holds
        // users:invite through the Member fallback, but invites nobody.
        if !p.role.is_some_and(|role| role.may_invite().contains(&ty)) {
            return Err(ApiError::Forbidden(
                "your role may not send this type of invitation",
            ));
        }
        Ok(tenant)
    })();
    let tenant = p
        .at(state, request_id)
        .acting("invitation.create", "invitation")
        .refused(None, checks)
        .await?;
    let org = shared::db::organizations::get(&state.pool, tenant)
        .await?
        .filter(|o| o.status == "active" && o.kind != "platform");
    p.at(state, request_id)
        .acting("invitation.create", "invitation")
        .refused(
            None,
            org.map(|_| ()).ok_or(ApiError::NotFound("organization")),
        )
        .await?;
    let mut tx = state.pool.begin().await?;
    let inv = invitations::insert(
        &mut tx,
        invitations::NewInvitation {
            tenant_id: tenant,
            email: email.as_str(),
            invitation_type: ty.as_str(),
            first_name: first.as_deref(),
            last_name: last.as_deref(),
            message: message.as_deref(),
            expires_at,
            invited_by: &p.caller.actor,
        },
    )
    .await
    .map_err(ApiError::from);
    let inv = p
        .at(state, request_id)
        .acting("invitation.create", "invitation")
        .refused(None, inv)
        .await?;
    p.audit(
        &mut *tx,
        request_id,
        Some(tenant),
        Act {
            action: "invitation.create",
            resource_type: "invitation",
        },
        inv.id,
        json!({"invitation_type": ty.as_str()}),
    )
    .await?;
    tx.commit().await?;
    push(state, tenant, inv.id).await;
    Ok(inv)
}

pub(super) async fn created(
    cx: &AdminCtx<'_>,
    body: CreateInvitation,
    fixed: Option<InvitationType>,
    allowed: Option<&[InvitationType]>,
) -> Result<InvitationResponse, ApiError> {
    let p = cx.principal().await?;
    let inv = create_one(cx.state, &p, cx.request_id, body, fixed, allowed).await?;
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

/// Admins manage every invitation in scope; others only those they sent.
pub(super) fn check_can_manage(
    p: &Principal,
    inv: &invitations::Invitation,
) -> Result<(), ApiError> {
    if p.holds(Permission::UsersManage) || inv.invited_by == p.caller.actor {
        Ok(())
    } else {
        Err(ApiError::NotFound("invitation"))
    }
}
