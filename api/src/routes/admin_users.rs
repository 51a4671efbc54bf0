//! `/api/v1/admin/users`: the people who sign in to the platform.
//!
//! Platform admins manage every organisation's users; an organisation admin
//! only its own (another organisation's user answers 404). Anyone may change
//! their own password. Passwords are hashed with argon2id and must pass
//! [`access::check_password`]; a password an admin sets is temporary: the
//! user's next token may only change it. Deactivating a user, or changing
//! its password, ends every token it was issued before.
//!
//! Admins may also end every sign-in session of a user
//! (`DELETE /{id}/sessions`: its tokens stop working, its WebSockets close)
//! and lift a sign-in lock (`POST /{id}/unlock`); both are audited and
//! recorded as security events.
//!
//! Each user has a subscriber whose external id is the user's id and whose
//! email is the user's sign-in address, so notices (BAA reminders, shipment
//! updates) reach its inbox and its mailbox.

use crate::extract::{Cursor, PageSize, Params, PathId};
use chrono::Utc;
use poem::Request;
use poem_openapi::{ApiResponse, Object, OpenApi, param::Path, payload::Json};
use serde_json::json;
use shared::{
    db::{
        invitations, login_throttle,
        security_events::{self as events, Event},
        users,
    },
    domain::UserId,
    permissions::Permission,
    roles::Role,
};

use crate::body::StrictJson;
use crate::{
    error::ApiError,
    extract::AdminCtx,
    routes::{ApiTags, views::UserView},
    services::{
        sessions::end_sessions,
        users::{self as users_service, check_name, check_role},
    },
};

mod status;
use status::*;

mod views;
pub use views::*;

/// The user endpoints.
#[derive(Debug)]
pub struct AdminUsersApi;

crate::query_params! {
    /// The filters and page of the user list.
    pub struct ListQuery {
        role: Option<String>,
        status: Option<String>,
        organization_id: Option<String>,
        cursor: Option<Cursor<UserId>>,
        limit: PageSize,
    }
}

#[OpenApi(prefix_path = "/api/v1/admin/users", tag = "ApiTags::Admin")]
impl AdminUsersApi {
    /// Create a user with a temporary password (admins).
    #[oai(path = "/", method = "post", operation_id = "users.create")]
    async fn create(
        &self,
        cx: AdminCtx<'_>,
        body: StrictJson<CreateUser>,
    ) -> Result<UserResponse, ApiError> {
        let p = cx.principal().await?;
        let b = body.0;
        let new = users_service::NewUser {
            email: b.email,
            first_name: b.first_name,
            last_name: b.last_name,
            role: b.role,
            temporary_password: b.temporary_password,
            organization_id: b.organization_id,
        };
        let user = users_service::create(cx.state, &p, cx.request_id, new).await?;
        let location = format!("/api/v1/admin/users/{}", user.id);
        Ok(UserResponse::Created(Json(user.into()), location))
    }

    /// List users (admins), filtered by `role`, `status` and, for platform
    /// admins, `organization_id`.
    #[oai(path = "/", method = "get", operation_id = "users.list")]
    async fn list(
        &self,
        cx: AdminCtx<'_>,
        query: Params<ListQuery>,
    ) -> Result<PageResponse, ApiError> {
        let ListQuery {
            role,
            status,
            organization_id,
            cursor,
            limit,
        } = query.0;
        let p = cx.principal().await?;
        let filter = users_service::ListFilter {
            role,
            status,
            organization_id,
        };
        let (rows, next_cursor) =
            users_service::list(cx.state, &p, cx.request_id, filter, cursor, limit).await?;
        Ok(PageResponse::Ok(Json(UserPage {
            items: rows.into_iter().map(Into::into).collect(),
            next_cursor,
        })))
    }

    /// Users per role and status (admins: their organisation; platform
    /// admins: every organisation).
    #[oai(path = "/stats", method = "get", operation_id = "users.stats")]
    async fn stats(&self, cx: AdminCtx<'_>) -> Result<StatsResponse, ApiError> {
        let p = cx.principal().await?;
        let rows = users::stats(&cx.state.pool, p.reach()).await?;
        Ok(StatsResponse::Ok(Json(
            rows.into_iter()
                .map(|(key, status, count)| Count { key, status, count })
                .collect(),
        )))
    }

    /// Read a user (admins; anyone may read themselves).
    #[oai(path = "/:id", method = "get", operation_id = "users.get")]
    async fn get(
        &self,
        cx: AdminCtx<'_>,
        id: Path<PathId<UserId>>,
    ) -> Result<UserResponse, ApiError> {
        let p = cx.principal().await?;
        let act = cx.acting(&p, "user.read", "user");
        let result = async {
            let uid = id.0.get("user")?;
            if !p.holds(Permission::UsersRead) && p.user_id != Some(uid) {
                return Err(ApiError::Forbidden(Permission::UsersRead.required()));
            }
            users::get(&cx.state.pool, p.reach(), uid)
                .await?
                .ok_or(ApiError::NotFound("user"))
        }
        .await;
        let user = act.refused(Some(id.0.raw()), result).await?;
        Ok(UserResponse::Ok(Json(user.into())))
    }

    /// Change a user's names or role (admins).
    #[oai(path = "/:id", method = "patch", operation_id = "users.update")]
    async fn update(
        &self,
        cx: AdminCtx<'_>,
        id: Path<PathId<UserId>>,
        body: StrictJson<UpdateUser>,
    ) -> Result<UserResponse, ApiError> {
        let p = cx.principal().await?;
        let act = cx.acting(&p, "user.update", "user");
        let uid = act.id(&id.0, "user").await?;
        let b = body.0;
        let first = check_name("first_name", b.first_name.as_deref())?;
        let last = check_name("last_name", b.last_name.as_deref())?;
        let role = b.role.as_deref().map(check_role).transpose()?;
        let mut tx = cx.state.pool.begin().await?;
        let found = users::update(
            &mut *tx,
            p.reach(),
            uid,
            first.as_deref(),
            last.as_deref(),
            role.map(Role::as_str),
        )
        .await?;
        let user = act.found(&id.0, "user", found).await?;
        act.audit(
            &mut *tx,
            Some(user.tenant_id),
            uid,
            json!({"role": role.map(Role::as_str)}),
        )
        .await?;
        tx.commit().await?;
        Ok(UserResponse::Ok(Json(user.into())))
    }

    /// Activate a user (admins).
    #[oai(
        path = "/:id/activate",
        method = "patch",
        operation_id = "users.activate"
    )]
    async fn activate(
        &self,
        cx: AdminCtx<'_>,
        id: Path<PathId<UserId>>,
    ) -> Result<UserResponse, ApiError> {
        set_status(&cx, id.0.raw(), "active", "user.activate").await
    }

    /// Deactivate a user (admins): its tokens stop working at once.
    #[oai(
        path = "/:id/deactivate",
        method = "patch",
        operation_id = "users.deactivate"
    )]
    async fn deactivate(
        &self,
        cx: AdminCtx<'_>,
        id: Path<PathId<UserId>>,
    ) -> Result<UserResponse, ApiError> {
        set_status(&cx, id.0.raw(), "inactive", "user.deactivate").await
    }

    /// Set a password. Users change their own with `current_password`; an
    /// admin sets a temporary one, to be changed at the next sign-in. Earlier
    /// tokens stop working.
    #[oai(
        path = "/:id/password",
        method = "patch",
        operation_id = "users.password"
    )]
    async fn password(
        &self,
        cx: AdminCtx<'_>,
        id: Path<PathId<UserId>>,
        body: StrictJson<ChangePassword>,
    ) -> Result<UserResponse, ApiError> {
        let p = cx.principal().await?;
        let act = cx.acting(&p, "user.password", "user");
        let uid = act.id(&id.0, "user").await?;
        let ChangePassword {
            password,
            current_password,
        } = body.0;
        let new = users_service::NewPassword {
            password,
            current_password,
        };
        let user = users_service::set_password(cx.state, &p, &act, id.0.raw(), uid, new).await?;
        Ok(UserResponse::Ok(Json(user.into())))
    }

    /// Send the invitation that created this user's place again, with a new
    /// token (admins). 409 when none is open.
    #[oai(
        path = "/:id/resend-invitation",
        method = "post",
        operation_id = "users.resend_invitation"
    )]
    async fn resend_invitation(
        &self,
        cx: AdminCtx<'_>,
        id: Path<PathId<UserId>>,
    ) -> Result<AcceptedResponse, ApiError> {
        let p = cx.principal().await?;
        let result = async {
            let uid = id.0.get("user")?;
            let user = users::get(&cx.state.pool, p.reach(), uid)
                .await?
                .ok_or(ApiError::NotFound("user"))?;
            let inv = invitations::resendable(&cx.state.pool, user.tenant_id, &user.email)
                .await?
                .ok_or_else(|| {
                    ApiError::Conflict("this user has no invitation to resend".into())
                })?;
            Ok((user.tenant_id, inv))
        }
        .await;
        let (tenant, inv) = cx
            .acting(&p, "user.resend_invitation", "user")
            .refused(Some(id.0.raw()), result)
            .await?;
        let expires =
            Utc::now() + chrono::Duration::days(i64::from(cx.state.jobs.invitations.expiry_days));
        let mut tx = cx.state.pool.begin().await?;
        if !shared::db::invitations::reopen(&mut *tx, tenant, inv, expires).await? {
            return Err(ApiError::Conflict(
                "this invitation can no longer be resent".into(),
            ));
        }
        cx.acting(&p, "invitation.resend", "invitation")
            .audit(&mut *tx, Some(tenant), inv, json!({}))
            .await?;
        tx.commit().await?;
        crate::services::invitations::push(cx.state, tenant, inv).await;
        Ok(AcceptedResponse::Accepted)
    }

    /// End every sign-in session of a user (admins; another organisation's
    /// user answers 404): its access and refresh tokens stop working and its
    /// WebSockets are closed.
    #[oai(
        path = "/:id/sessions",
        method = "delete",
        operation_id = "users.sessions.revoke_all"
    )]
    async fn revoke_sessions(
        &self,
        req: &Request,
        cx: AdminCtx<'_>,
        id: Path<PathId<UserId>>,
    ) -> Result<SessionsRevokedResponse, ApiError> {
        let p = cx.principal().await?;
        let act = cx.acting(&p, "user.sessions.revoke", "user");
        let uid = act.id(&id.0, "user").await?;
        let found = users::get(&cx.state.pool, p.reach(), uid).await?;
        let user = act.found(&id.0, "user", found).await?;
        let client = crate::signin::Client::of(req);
        let mut tx = cx.state.pool.begin().await?;
        let by = Some((&client, p.caller.actor.as_str()));
        let revoked = end_sessions(&mut tx, &user, "revoked_by_admin", by).await?;
        act.audit(
            &mut *tx,
            Some(user.tenant_id),
            user.id,
            json!({"revoked": revoked.len()}),
        )
        .await?;
        tx.commit().await?;
        crate::signin::announce_revoked(cx.state, &revoked).await;
        Ok(SessionsRevokedResponse::Ok(Json(SessionsRevoked {
            revoked: revoked.len() as u64,
        })))
    }

    /// Lift a user's sign-in lock (admins; another organisation's user
    /// answers 404): its failed sign-ins are forgotten and it may sign in at
    /// once. Locks on client addresses stay.
    #[oai(path = "/:id/unlock", method = "post", operation_id = "users.unlock")]
    async fn unlock(
        &self,
        req: &Request,
        cx: AdminCtx<'_>,
        id: Path<PathId<UserId>>,
    ) -> Result<UnlockResponse, ApiError> {
        let p = cx.principal().await?;
        let act = cx.acting(&p, "user.unlock", "user");
        let uid = act.id(&id.0, "user").await?;
        let found = users::get(&cx.state.pool, p.reach(), uid).await?;
        let user = act.found(&id.0, "user", found).await?;
        let now = cx.state.signin.clock.now();
        let client = crate::signin::Client::of(req);
        let mut tx = cx.state.pool.begin().await?;
        let cleared =
            login_throttle::clear(&mut *tx, &login_throttle::account_key(&user.email)).await?;
        let was_locked = cleared.is_some_and(|s| s.blocked_until(now).is_some());
        events::record(
            &mut *tx,
            &[Event::new(
                Some(user.tenant_id),
                events::ACCOUNT_UNLOCKED,
                Some(user.id),
                client.ip.as_deref(),
                client.user_agent.as_deref(),
            )
            .details(json!({"by": p.caller.actor, "was_locked": was_locked}))],
        )
        .await?;
        act.audit(
            &mut *tx,
            Some(user.tenant_id),
            user.id,
            json!({"was_locked": was_locked}),
        )
        .await?;
        tx.commit().await?;
        Ok(UnlockResponse::Ok(Json(Unlocked { was_locked })))
    }
}
