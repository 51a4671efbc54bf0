//! Permissions: permission names as sent, the users a change names, how a
//! change is recorded, and delegating one's own permissions. The routes in
//! [`crate::routes::permissions`] parse requests and shape answers.
//!
//! Every change is written to the audit log and recorded as a
//! `permission.changed` security event ([`changed`]). A delegation lends
//! only what its delegator holds through its set or grants, for a window of
//! at most [`MAX_WINDOW_DAYS`], judged by
//! [`AppState::permissions_clock`].

use std::collections::BTreeSet;

use chrono::{DateTime, Duration, Utc};
use serde_json::{Value, json};
use shared::{
    db::{permissions as db, scope::Reach, security_events, users},
    domain::{TenantId, UserId},
    permissions::Permission,
};

use crate::{
    AppState,
    access::{Act, Principal},
    error::{ApiError, InvalidParam},
    middleware::RequestId,
};

/// Most permissions a set lists, or a delegation lends.
pub const MAX_PERMISSIONS: usize = 64;

/// Longest delegation window.
pub const MAX_WINDOW_DAYS: i64 = 365;

/// Parses permission names, each at `field[i]`; duplicates collapse.
pub fn parse_permissions(field: &str, names: &[String]) -> Result<Vec<Permission>, ApiError> {
    if names.len() > MAX_PERMISSIONS {
        return Err(ApiError::invalid(
            field,
            format!("at most {MAX_PERMISSIONS} permissions"),
        ));
    }
    let mut out = BTreeSet::new();
    let mut problems = Vec::new();
    for (i, name) in names.iter().enumerate() {
        match Permission::parse(name) {
            Some(p) => {
                out.insert(p);
            }
            None => problems.push(InvalidParam {
                name: format!("{field}[{i}]"),
                reason: format!(
                    "unknown permission {:?}: expected resource:action such as notifications:send",
                    name.chars().take(64).collect::<String>()
                ),
            }),
        }
    }
    if problems.is_empty() {
        Ok(out.into_iter().collect())
    } else {
        Err(ApiError::Invalid(problems))
    }
}

/// A user of the caller's organisation, or 404.
pub async fn member(
    state: &AppState,
    tenant: TenantId,
    raw: &str,
) -> Result<users::User, ApiError> {
    let id = crate::extract::id(raw, "user")?;
    users::get(&state.pool, Reach::Tenant(tenant), id)
        .await?
        .ok_or(ApiError::NotFound("user"))
}

/// Records a permission change: the audit row and the security event, in
/// `tx`.
pub async fn changed(
    tx: &mut sqlx::PgConnection,
    p: &Principal,
    request_id: &RequestId,
    act: Act<'_>,
    id: impl std::fmt::Display,
    user: Option<UserId>,
    details: Value,
) -> Result<(), ApiError> {
    p.audit(&mut *tx, request_id, None, act, &id, details.clone())
        .await?;
    let event = security_events::Event::new(
        Some(p.caller.tenant_id),
        security_events::PERMISSION_CHANGED,
        user,
        None,
        None,
    )
    .details(json!({"action": act.action, "resource_id": id.to_string(), "actor": p.caller.actor, "change": details}));
    security_events::record(&mut *tx, &[event]).await?;
    Ok(())
}

/// A delegation as sent.
#[derive(Debug)]
pub struct Lending {
    /// The user who receives (its id as sent).
    pub delegate_id: String,
    /// What to lend.
    pub permissions: Vec<String>,
    /// From (default: now).
    pub starts_at: Option<DateTime<Utc>>,
    /// Until.
    pub ends_at: DateTime<Utc>,
    /// Why.
    pub reason: Option<String>,
}

/// The checked window `[starts_at, ends_at)` at `now`: not starting in the
/// past, ending in the future after it starts, at most
/// [`MAX_WINDOW_DAYS`] long.
pub fn window(
    starts_at: Option<DateTime<Utc>>,
    ends_at: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<(DateTime<Utc>, DateTime<Utc>), ApiError> {
    let starts = starts_at.unwrap_or(now);
    if starts < now - Duration::minutes(1) {
        return Err(ApiError::invalid("starts_at", "must not be in the past"));
    }
    if ends_at <= now {
        return Err(ApiError::invalid("ends_at", "must be in the future"));
    }
    if ends_at <= starts {
        return Err(ApiError::invalid("ends_at", "must be after starts_at"));
    }
    if ends_at - starts > Duration::days(MAX_WINDOW_DAYS) {
        return Err(ApiError::invalid(
            "ends_at",
            format!("must be at most {MAX_WINDOW_DAYS} days after starts_at"),
        ));
    }
    Ok((starts, ends_at))
}

/// The permissions `l` lends, checked: at least one, every name known.
fn lent_permissions(l: &Lending) -> Result<Vec<Permission>, ApiError> {
    let permissions = parse_permissions("permissions", &l.permissions)?;
    if permissions.is_empty() {
        return Err(ApiError::invalid(
            "permissions",
            "must name at least one permission",
        ));
    }
    if l.reason.as_ref().is_some_and(|r| r.chars().count() > 500) {
        return Err(ApiError::invalid(
            "reason",
            "must be at most 500 characters",
        ));
    }
    Ok(permissions)
}

/// Lends `l` from `p`, a signed-in user, to another user of its
/// organisation: the delegation, and the time its window was judged at.
/// Lending a permission `p` does not hold directly is 403 naming it; an
/// unknown delegate is 404; both are audited.
pub async fn delegate(
    state: &AppState,
    p: &Principal,
    request_id: &RequestId,
    l: Lending,
) -> Result<(db::Delegation, DateTime<Utc>), ApiError> {
    let act = p
        .at(state, request_id)
        .acting("permission.delegate", "user");
    let tenant = p.caller.tenant_id;
    let Some(me) = p.user_id else {
        return Err(ApiError::Forbidden(
            "only a signed-in user can delegate its permissions",
        ));
    };
    let permissions = lent_permissions(&l)?;
    let now = state.permissions_clock.now();
    let (starts_at, ends_at) = window(l.starts_at, l.ends_at, now)?;
    if l.delegate_id.eq_ignore_ascii_case(&me.to_string()) {
        return Err(ApiError::invalid("delegate_id", "cannot be yourself"));
    }
    let delegate = member(state, tenant, &l.delegate_id).await;
    let delegate = act.refused(Some(&l.delegate_id), delegate).await?;
    let me_user = member(state, tenant, &me.to_string()).await?;
    let held = db::direct(&state.pool, tenant, Some(me), &[me_user.role]).await?;
    let allowed = match permissions.iter().find(|p| !held.contains_key(p)) {
        Some(p) => Err(ApiError::Forbidden(p.not_held())),
        None => Ok(()),
    };
    act.refused(Some(&l.delegate_id), allowed).await?;
    let names: Vec<String> = permissions.iter().map(|p| p.as_str().to_owned()).collect();
    let mut tx = state.pool.begin().await?;
    let d = db::create_delegation(
        &mut *tx,
        tenant,
        &db::NewDelegation {
            delegator_id: me,
            delegate_id: delegate.id,
            permissions: names.clone(),
            starts_at,
            ends_at,
            reason: l.reason.as_deref(),
            created_by: &p.caller.actor,
        },
    )
    .await?;
    let what = Act {
        action: "permission.delegate",
        resource_type: "permission_delegation",
    };
    let details = json!({"delegate_id": delegate.id, "permissions": names,
        "starts_at": starts_at, "ends_at": ends_at});
    changed(
        &mut tx,
        p,
        request_id,
        what,
        d.id,
        Some(delegate.id),
        details,
    )
    .await?;
    tx.commit().await?;
    Ok((d, now))
}
