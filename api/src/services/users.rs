//! The rules a platform user's fields follow, for the user administration
//! endpoints and for invitations that create users, and setting a user's
//! password.

use serde_json::json;
use shared::{
    db::{scope::Reach, users},
    domain::{EmailAddress, UserId},
    permissions::Permission,
};

use crate::{
    AppState,
    access::{self, Acting, Principal},
    error::ApiError,
    services::sessions::end_sessions,
};

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
