//! Invitations: inviting someone, accepting an invitation with its token,
//! and what happens once one is committed. The routes in
//! [`crate::routes::invitations`] parse requests and shape answers.
//!
//! Who may invite whom follows [`shared::roles`]. Tokens are 256 bits sent
//! as 43 URL-safe base64 characters; only their SHA-256 is stored. An
//! accept is single use however many requests race (one conditional update
//! in the transaction that creates the user).

use chrono::{DateTime, Duration, Utc};
use serde_json::json;
use sha2::{Digest, Sha256};
use shared::{
    db::{audit, invitations, scope, subscribers, users},
    domain::{InvitationId, TenantId},
    jobs::SendInvitation,
    outbox::Enqueued,
    permissions::Permission,
    roles::InvitationType,
};

use crate::{
    AppState,
    access::{self, Principal},
    error::ApiError,
    extract::{Cursor, PageSize, page},
    middleware::RequestId,
    services::users::{check_email, check_name},
};

/// Why an invitation token is looked up in platform scope: it names no
/// organisation until it is found.
pub const INVITATION_TOKEN: &str = "invitation_token";

/// An invitation as sent.
#[derive(Debug)]
pub struct Invite {
    /// The address to invite.
    pub email: String,
    /// The invitation type's name.
    pub invitation_type: Option<String>,
    /// Given name.
    pub first_name: Option<String>,
    /// Family name.
    pub last_name: Option<String>,
    /// A note for the email.
    pub message: Option<String>,
    /// Days the token is valid (default from `jobs.toml`).
    pub expires_in_days: Option<u32>,
    /// The organisation (platform admins; the caller's own otherwise).
    pub organization_id: Option<String>,
}

/// The filters of the invitation list, as sent.
#[derive(Debug)]
pub struct ListFilter {
    /// Status as shown.
    pub status: Option<String>,
    /// Type.
    pub invitation_type: Option<String>,
    /// Address (case-insensitive, exact).
    pub email: Option<String>,
}

/// An accept as sent.
#[derive(Debug)]
pub struct Acceptance {
    /// The new user's password.
    pub password: String,
    /// Given name (else the invitation's).
    pub first_name: Option<String>,
    /// Family name (else the invitation's).
    pub last_name: Option<String>,
}

/// When an invitation valid for `days` (1 to 30; default from
/// `jobs.toml`) from now expires.
pub fn expiry(state: &AppState, days: Option<u32>) -> Result<DateTime<Utc>, ApiError> {
    let days = days.unwrap_or(state.jobs.invitations.expiry_days);
    if !(1..=30).contains(&days) {
        return Err(ApiError::invalid("expires_in_days", "must be 1 to 30"));
    }
    Ok(Utc::now() + Duration::days(i64::from(days)))
}

/// A note for the email: at most 2,000 characters.
pub fn check_message(v: Option<&str>) -> Result<Option<String>, ApiError> {
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
pub fn token_hash(token: &str) -> Option<Vec<u8>> {
    let well_formed = token.len() == 43
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    well_formed.then(|| Sha256::digest(token.as_bytes()).to_vec())
}

/// The type an invitation asks for: `fixed` by the route when it fixes one,
/// else the one sent (`allowed`, when given, limits it and defaults to
/// medical staff).
fn invitation_type(
    fixed: Option<InvitationType>,
    raw: Option<&str>,
    allowed: Option<&[InvitationType]>,
) -> Result<InvitationType, ApiError> {
    let ty = match (fixed, raw) {
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
    Ok(ty)
}

/// The organisation `p` invites into, when its role may send `ty`.
fn inviting_tenant(
    p: &Principal,
    organization_id: Option<&str>,
    ty: InvitationType,
) -> Result<TenantId, ApiError> {
    let tenant = p.target_tenant(organization_id)?;
    // A caller without a known role (a token with no roles) holds
    // users:invite through the Member fallback, but invites nobody.
    if !p.role.is_some_and(|role| role.may_invite().contains(&ty)) {
        return Err(ApiError::Forbidden(
            "your role may not send this type of invitation",
        ));
    }
    Ok(tenant)
}

/// Stores `invite` as `p`'s (of type `fixed`, or one of `allowed`, see
/// [`invitation_type`]), audits it and pushes its job after the commit.
/// Malformed fields are refused before anything else; refusals after them
/// (a role that may not invite the type, an unknown or inactive
/// organisation, an address already invited) are audited.
pub async fn create(
    state: &AppState,
    p: &Principal,
    request_id: &RequestId,
    invite: Invite,
    fixed: Option<InvitationType>,
    allowed: Option<&[InvitationType]>,
) -> Result<invitations::Invitation, ApiError> {
    let ty = invitation_type(fixed, invite.invitation_type.as_deref(), allowed)?;
    let email = check_email("email", &invite.email)?;
    let first = check_name("first_name", invite.first_name.as_deref())?;
    let last = check_name("last_name", invite.last_name.as_deref())?;
    let message = check_message(invite.message.as_deref())?;
    let expires_at = expiry(state, invite.expires_in_days)?;
    let act = p
        .at(state, request_id)
        .acting("invitation.create", "invitation");
    let checks = inviting_tenant(p, invite.organization_id.as_deref(), ty);
    let tenant = act.refused(None, checks).await?;
    let org = shared::db::organizations::get(&state.pool, tenant)
        .await?
        .filter(|o| o.status == "active" && o.kind != "platform");
    act.refused(
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
    let inv = act.refused(None, inv).await?;
    act.audit(
        &mut *tx,
        Some(tenant),
        inv.id,
        json!({"invitation_type": ty.as_str()}),
    )
    .await?;
    tx.commit().await?;
    push(state, tenant, inv.id).await;
    Ok(inv)
}

/// Accepts the invitation `token` names: creates its user, in the inviting
/// organisation with the invitation's role and `a`'s password, and links
/// it. An unknown token is 404 (not audited: anyone can send one), a used
/// one 409 and an expired or cancelled one 410 (both audited).
/// `request_id` is what the audit rows name.
pub async fn accept(
    state: &AppState,
    request_id: &str,
    token: &str,
    a: Acceptance,
) -> Result<users::User, ApiError> {
    let hash = token_hash(token).ok_or(ApiError::NotFound("invitation"))?;
    access::check_password("password", &a.password)?;
    let first = check_name("first_name", a.first_name.as_deref())?;
    let last = check_name("last_name", a.last_name.as_deref())?;
    let password_hash = access::hash_password(a.password).await?;
    // The token names no organisation until it is found; the rest is
    // walled to the inviting organisation.
    let lookup = invitations::by_token(&state.pool, &hash);
    let Some(invited) = scope::platform(INVITATION_TOKEN, lookup).await? else {
        // Unknown tokens are not recorded: anyone can send them.
        return Err(ApiError::NotFound("invitation"));
    };
    crate::auth::wall_to(state, invited.tenant_id, false).await?;
    let mut tx = state.pool.begin().await?;
    let Some(inv) = invitations::accept(&mut *tx, &hash).await? else {
        drop(tx);
        return Err(not_acceptable(state, request_id, &hash).await?);
    };
    let ty = InvitationType::parse(&inv.invitation_type)
        .ok_or_else(|| anyhow::anyhow!("stored invitation type {}", inv.invitation_type))?;
    let actor = format!("invitation:{}", inv.id);
    let user = users::insert(
        &mut *tx,
        users::NewUser {
            tenant_id: inv.tenant_id,
            email: &inv.email,
            first_name: first.as_deref().or(inv.first_name.as_deref()),
            last_name: last.as_deref().or(inv.last_name.as_deref()),
            role: ty.role().as_str(),
            password_hash: Some(&password_hash),
            must_change_password: false,
            created_by: &actor,
        },
    )
    .await?;
    invitations::set_user(&mut *tx, inv.tenant_id, inv.id, user.id).await?;
    subscribers::link_user(&mut *tx, &user).await?;
    audit::record(
        &mut *tx,
        audit::Entry {
            tenant_id: Some(inv.tenant_id),
            actor: &format!("user:{}", user.id),
            action: "invitation.accept",
            resource_type: "invitation",
            resource_id: Some(inv.id.to_string()),
            result: "success",
            request_id: Some(request_id),
            details: json!({"user_id": user.id, "role": ty.role().as_str()}),
        },
    )
    .await?;
    tx.commit().await?;
    Ok(user)
}

/// Why the invitation with token hash `hash` could not be accepted (409
/// used, 410 expired or cancelled), audited as an anonymous failure; 404,
/// not audited, when it is gone.
async fn not_acceptable(
    state: &AppState,
    request_id: &str,
    hash: &[u8],
) -> Result<ApiError, ApiError> {
    let Some(found) = invitations::by_token(&state.pool, hash).await? else {
        // Unknown tokens are not recorded: anyone can send them.
        return Err(ApiError::NotFound("invitation"));
    };
    let (why, status) = if found.status == "accepted" {
        (
            ApiError::Conflict("this invitation was already accepted".into()),
            409,
        )
    } else {
        (
            ApiError::Gone("this invitation has expired or was cancelled"),
            410,
        )
    };
    audit::record(
        &state.pool,
        audit::Entry {
            tenant_id: Some(found.tenant_id),
            actor: "anonymous",
            action: "invitation.accept",
            resource_type: "invitation",
            resource_id: Some(found.id.to_string()),
            result: "failure",
            request_id: Some(request_id),
            details: json!({"status": status}),
        },
    )
    .await?;
    Ok(why)
}

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

/// Statuses an invitation is shown with.
const STATUSES: &[&str] = &[
    "pending",
    "sent",
    "accepted",
    "failed",
    "cancelled",
    "expired",
];

/// One page (`limit`, after `cursor`) of the invitations within `p`'s reach
/// that match `f` and `p` may manage ([`check_can_manage`]), with the
/// cursor of the next. The filters are checked before the cursor.
pub async fn list(
    state: &AppState,
    p: &Principal,
    f: ListFilter,
    cursor: Option<Cursor<InvitationId>>,
    limit: PageSize,
) -> Result<(Vec<invitations::Invitation>, Option<String>), ApiError> {
    if f.status.as_deref().is_some_and(|s| !STATUSES.contains(&s)) {
        return Err(ApiError::invalid(
            "status",
            format!("must be one of {}", STATUSES.join(", ")),
        ));
    }
    if f.invitation_type
        .as_deref()
        .is_some_and(|t| InvitationType::parse(t).is_none())
    {
        return Err(ApiError::invalid(
            "invitation_type",
            "is not an invitation type",
        ));
    }
    if f.email.as_ref().is_some_and(|e| e.len() > 254) {
        return Err(ApiError::invalid("email", "must be at most 254 characters"));
    }
    let mut rows = Vec::new();
    let mut after = cursor.map(Cursor::get).transpose()?;
    // Non-admins see only what they sent: filter while paging.
    loop {
        let batch = invitations::list(
            &state.pool,
            p.reach(),
            invitations::Filter {
                status: f.status.as_deref(),
                invitation_type: f.invitation_type.as_deref(),
                email: f.email.as_deref(),
                after,
            },
            limit.fetch(),
        )
        .await?;
        let exhausted = batch.len() <= limit.get();
        after = batch.last().map(|i| i.id);
        rows.extend(batch.into_iter().filter(|i| check_can_manage(p, i).is_ok()));
        if exhausted || rows.len() > limit.get() {
            break;
        }
    }
    Ok(page(rows, limit, |i| i.id))
}

/// Admins manage every invitation in scope; others only those they sent.
pub fn check_can_manage(p: &Principal, inv: &invitations::Invitation) -> Result<(), ApiError> {
    if p.holds(Permission::UsersManage) || inv.invited_by == p.caller.actor {
        Ok(())
    } else {
        Err(ApiError::NotFound("invitation"))
    }
}
