//! The rules a platform user's fields follow, for the user administration
//! endpoints and for invitations that create users; creating and listing
//! users, and setting a user's password.

use serde_json::json;
use shared::{
    db::{scope::Reach, subscribers, users},
    domain::{EmailAddress, UserId},
    permissions::Permission,
    roles::Role,
};

use crate::{
    AppState,
    access::{self, Acting, Principal},
    error::ApiError,
    extract::{Cursor, PageSize, page},
    middleware::RequestId,
    services::sessions::end_sessions,
};

/// A new user as sent.
#[derive(Debug)]
pub struct NewUser {
    /// Sign-in address.
    pub email: String,
    /// Given name.
    pub first_name: Option<String>,
    /// Family name.
    pub last_name: Option<String>,
    /// The role's name.
    pub role: String,
    /// A password the user must change at the next sign-in.
    pub temporary_password: String,
    /// The organisation (platform admins; the caller's own otherwise).
    pub organization_id: Option<String>,
}

/// The filters of the user list, as sent.
#[derive(Debug)]
pub struct ListFilter {
    /// The role's name.
    pub role: Option<String>,
    /// `active` or `inactive`.
    pub status: Option<String>,
    /// The organisation (platform admins).
    pub organization_id: Option<String>,
}

/// A role by name: one of [`Role::ALL`].
pub fn check_role(v: &str) -> Result<Role, ApiError> {
    Role::parse(v).ok_or_else(|| {
        ApiError::invalid(
            "role",
            format!(
                "must be one of {}",
                Role::ALL
                    .iter()
                    .map(|r| r.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )
    })
}

/// Creates `new` as `p`'s, with a temporary password, links its
/// subscriber and audits it as `user.create`. The organisation `p` may
/// target is checked first, then the fields, then that the organisation
/// exists, then the insert (refusals of the first, third and last
/// audited).
pub async fn create(
    state: &AppState,
    p: &Principal,
    request_id: &RequestId,
    new: NewUser,
) -> Result<users::User, ApiError> {
    let act = p.at(state, request_id).acting("user.create", "user");
    let target = act
        .refused(None, p.target_tenant(new.organization_id.as_deref()))
        .await?;
    let email = check_email("email", &new.email)?;
    let first = check_name("first_name", new.first_name.as_deref())?;
    let last = check_name("last_name", new.last_name.as_deref())?;
    let role = check_role(&new.role)?;
    access::check_password("temporary_password", &new.temporary_password)?;
    let org = shared::db::organizations::get(&state.pool, target).await?;
    act.refused(
        None,
        org.ok_or(ApiError::NotFound("organization")).map(|_| ()),
    )
    .await?;
    let hash = access::hash_password(new.temporary_password).await?;
    let mut tx = state.pool.begin().await?;
    let user = users::insert(
        &mut *tx,
        users::NewUser {
            tenant_id: target,
            email: email.as_str(),
            first_name: first.as_deref(),
            last_name: last.as_deref(),
            role: role.as_str(),
            password_hash: Some(&hash),
            must_change_password: true,
            created_by: &p.caller.actor,
        },
    )
    .await;
    let user = act.refused(None, user.map_err(ApiError::from)).await?;
    subscribers::link_user(&mut *tx, &user).await?;
    act.audit(
        &mut *tx,
        Some(target),
        user.id,
        json!({"role": role.as_str()}),
    )
    .await?;
    tx.commit().await?;
    Ok(user)
}

/// One page (`limit`, after `cursor`) of the users within the reach `p`
/// names with `f.organization_id` (refusals audited as `user.list`) that
/// match `f`, with the cursor of the next. The filters are checked before
/// the cursor.
pub async fn list(
    state: &AppState,
    p: &Principal,
    request_id: &RequestId,
    f: ListFilter,
    cursor: Option<Cursor<UserId>>,
    limit: PageSize,
) -> Result<(Vec<users::User>, Option<String>), ApiError> {
    let act = p.at(state, request_id).acting("user.list", "user");
    let reach = act
        .refused(None, p.reach_of(f.organization_id.as_deref()))
        .await?;
    let role = f.role.as_deref().map(check_role).transpose()?;
    if let Some(s) = f.status.as_deref()
        && !["active", "inactive"].contains(&s)
    {
        return Err(ApiError::invalid("status", "must be active or inactive"));
    }
    let after = cursor.map(Cursor::get).transpose()?;
    let rows = users::list(
        &state.pool,
        reach,
        users::Filter {
            role: role.map(Role::as_str),
            status: f.status.as_deref(),
            after,
        },
        limit.fetch(),
    )
    .await?;
    Ok(page(rows, limit, |u| u.id))
}

/// Checks an optional name field.
pub fn check_name(field: &str, v: Option<&str>) -> Result<Option<String>, ApiError> {
    match v.map(str::trim) {
        None => Ok(None),
        Some(s) if s.is_empty() || s.chars().count() > 100 || s.chars().any(char::is_control) => {
            Err(ApiError::invalid(
                field,
                "must be 1 to 100 characters without control characters",
            ))
        }
        Some(s) => Ok(Some(s.to_owned())),
    }
}

/// Parses an email address field.
pub fn check_email(field: &str, v: &str) -> Result<EmailAddress, ApiError> {
    EmailAddress::parse(v.trim()).map_err(|e| ApiError::invalid(field, e.0))
}

/// A password to set, as sent.
#[derive(Debug)]
pub struct NewPassword {
    /// The new password.
    pub password: String,
    /// The current one: required to change one's own.
    pub current_password: Option<String>,
}

/// Sets user `uid`'s password (`raw`: its id as in the path) for `p`:
/// users change their own with the current password; an admin
/// (`users:manage`) sets a temporary one, to be changed at the next
/// sign-in. Every earlier session ends. Refusals before the password's own
/// checks are recorded as `act`'s.
pub async fn set_password(
    state: &AppState,
    p: &Principal,
    act: &Acting<'_>,
    raw: &str,
    uid: UserId,
    new: NewPassword,
) -> Result<users::User, ApiError> {
    let own = p.user_id == Some(uid);
    let allowed = if own || p.holds(Permission::UsersManage) {
        Ok(())
    } else {
        Err(ApiError::Forbidden(Permission::UsersManage.required()))
    };
    act.refused(Some(raw), allowed).await?;
    access::check_password("password", &new.password)?;
    let scope = if own {
        Reach::Tenant(p.caller.tenant_id)
    } else {
        p.reach()
    };
    let existing = users::get(&state.pool, scope, uid).await?;
    let existing = act
        .refused(Some(raw), existing.ok_or(ApiError::NotFound("user")))
        .await?;
    if own {
        check_own_change(state, &existing.email, &new).await?;
    }
    let hash = access::hash_password(new.password).await?;
    let mut tx = state.pool.begin().await?;
    let user = users::set_password(&mut *tx, scope, uid, &hash, !own)
        .await?
        .ok_or(ApiError::NotFound("user"))?;
    let ended = end_sessions(&mut tx, &user, "password_changed", None).await?;
    act.audit(
        &mut *tx,
        Some(user.tenant_id),
        uid,
        json!({"temporary": !own}),
    )
    .await?;
    tx.commit().await?;
    crate::signin::announce_revoked(state, &ended).await;
    Ok(user)
}

/// A user changing its own password (signing in as `email`) must give the
/// current one, and the new one must differ from it.
async fn check_own_change(
    state: &AppState,
    email: &str,
    new: &NewPassword,
) -> Result<(), ApiError> {
    let current = new.current_password.clone().ok_or_else(|| {
        ApiError::invalid(
            "current_password",
            "is required to change your own password",
        )
    })?;
    let creds = users::credentials(&state.pool, email).await?;
    if !access::verify_password(current, creds.and_then(|c| c.password_hash)).await {
        return Err(ApiError::invalid("current_password", "does not match"));
    }
    if new.password.len() <= access::MAX_PASSWORD
        && access::verify_password(
            new.password.clone(),
            users::credentials(&state.pool, email)
                .await?
                .and_then(|c| c.password_hash),
        )
        .await
    {
        return Err(ApiError::invalid(
            "password",
            "must differ from the current password",
        ));
    }
    Ok(())
}
