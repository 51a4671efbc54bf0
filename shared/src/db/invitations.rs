//! Invitations. The row is the unit of work: the `invitation` job claims a
//! `pending` row, gives it a fresh token (only its SHA-256 is stored) and
//! queues the email in the same transaction, making it `sent`. Accepting is
//! one conditional update, so a token is used once however many accepts
//! race. Resending puts the row back to `pending` with no token, so the old
//! token stops working at once.
//!
//! The status shown is the stored one, except that a `sent` invitation whose
//! email failed or bounced shows `failed`.

use chrono::{DateTime, Utc};
use sqlx::PgExecutor;
use uuid::Uuid;

use super::scope::Reach;
use crate::domain::{InvitationId, NotificationId, TenantId, UserId};

/// The unique index allowing one open invitation per address and
/// organisation.
pub const OPEN_EMAIL_CONSTRAINT: &str = "invitations_open_email_key";

/// An invitation.
#[derive(Debug, Clone)]
pub struct Invitation {
    /// Its id.
    pub id: InvitationId,
    /// The organisation invited into.
    pub tenant_id: TenantId,
    /// The invited address.
    pub email: String,
    /// The invitation type.
    pub invitation_type: String,
    /// Given name.
    pub first_name: Option<String>,
    /// Family name.
    pub last_name: Option<String>,
    /// A note from the inviter.
    pub message: Option<String>,
    /// Status, as shown.
    pub status: String,
    /// The email's delivery status, once queued.
    pub email_status: Option<String>,
    /// The email notification.
    pub notification_id: Option<Uuid>,
    /// When the token stops working.
    pub expires_at: DateTime<Utc>,
    /// Audit actor of the inviter.
    pub invited_by: String,
    /// The user created by accepting.
    pub user_id: Option<UserId>,
    /// Emails sent so far.
    pub send_count: i32,
    /// Last sent.
    pub sent_at: Option<DateTime<Utc>>,
    /// Accepted.
    pub accepted_at: Option<DateTime<Utc>>,
    /// Cancelled.
    pub cancelled_at: Option<DateTime<Utc>>,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Last changed.
    pub updated_at: DateTime<Utc>,
}

// Every read shows an invitation as `get` selects it: its stored status,
// except `failed` for a `sent` one whose email failed or bounced.

/// A new invitation's fields.
#[derive(Debug, Clone)]
pub struct NewInvitation<'a> {
    /// Organisation.
    pub tenant_id: TenantId,
    /// Address.
    pub email: &'a str,
    /// Type.
    pub invitation_type: &'a str,
    /// Given name.
    pub first_name: Option<&'a str>,
    /// Family name.
    pub last_name: Option<&'a str>,
    /// Note.
    pub message: Option<&'a str>,
    /// Expiry.
    pub expires_at: DateTime<Utc>,
    /// Inviter.
    pub invited_by: &'a str,
}

/// Inserts a `pending` invitation (marked dispatched: the caller pushes its
/// job after commit through [`crate::outbox::Enqueued`]).
#[tracing::instrument(skip_all)]
pub async fn insert(
    db: &mut sqlx::PgConnection,
    n: NewInvitation<'_>,
) -> Result<Invitation, sqlx::Error> {
    let id = InvitationId::new();
    sqlx::query!(
        "insert into invitations (id, tenant_id, email, invitation_type, first_name, last_name,
            message, expires_at, invited_by, dispatched_at)
         values ($1, $2, $3, $4, $5, $6, $7, $8, $9, now())",
        id.0,
        n.tenant_id as _,
        n.email,
        n.invitation_type,
        n.first_name,
        n.last_name,
        n.message,
        n.expires_at,
        n.invited_by,
    )
    .execute(&mut *db)
    .await?;
    get(&mut *db, Reach::Tenant(n.tenant_id), id)
        .await?
        .ok_or(sqlx::Error::RowNotFound)
}

/// Reads an invitation within `reach`.
#[tracing::instrument(skip_all)]
pub async fn get(
    db: impl PgExecutor<'_>,
    reach: Reach,
    id: InvitationId,
) -> Result<Option<Invitation>, sqlx::Error> {
    sqlx::query_as!(
        Invitation,
        r#"select i.id as "id: InvitationId", i.tenant_id as "tenant_id: TenantId", i.email,
                i.invitation_type, i.first_name, i.last_name, i.message,
                case when i.status = 'sent' and n.status in ('failed', 'bounced') then 'failed'
                     else i.status end as "status!",
                n.status as "email_status?", i.notification_id, i.expires_at, i.invited_by,
                i.user_id as "user_id: UserId", i.send_count, i.sent_at, i.accepted_at, i.cancelled_at, i.created_at,
                i.updated_at
         from invitations i left join notifications n on n.id = i.notification_id
         where i.id = $1 and ($2::uuid is null or i.tenant_id = $2)"#,
        id.0,
        reach.param(),
    )
    .fetch_optional(db)
    .await
}

/// Filters for [`list`].
#[derive(Debug, Clone, Default)]
pub struct Filter<'a> {
    /// Status as shown.
    pub status: Option<&'a str>,
    /// Type.
    pub invitation_type: Option<&'a str>,
    /// Address (case-insensitive, exact).
    pub email: Option<&'a str>,
    /// After this id.
    pub after: Option<InvitationId>,
}

/// Invitations within `reach` in id (creation) order.
#[tracing::instrument(skip_all)]
pub async fn list(
    db: impl PgExecutor<'_>,
    reach: Reach,
    f: Filter<'_>,
    limit: i64,
) -> Result<Vec<Invitation>, sqlx::Error> {
    sqlx::query_as!(
        Invitation,
        r#"select v.id as "id!: InvitationId", v.tenant_id as "tenant_id!: TenantId", v.email as "email!",
                v.invitation_type as "invitation_type!", v.first_name, v.last_name, v.message,
                v.status as "status!", v.email_status as "email_status?", v.notification_id,
                v.expires_at as "expires_at!", v.invited_by as "invited_by!", v.user_id as "user_id: UserId",
                v.send_count as "send_count!", v.sent_at, v.accepted_at, v.cancelled_at,
                v.created_at as "created_at!", v.updated_at as "updated_at!"
         from (select i.id, i.tenant_id, i.email, i.invitation_type, i.first_name, i.last_name,
                i.message,
                case when i.status = 'sent' and n.status in ('failed', 'bounced') then 'failed'
                     else i.status end as status,
                n.status as email_status, i.notification_id, i.expires_at, i.invited_by,
                i.user_id, i.send_count, i.sent_at, i.accepted_at, i.cancelled_at, i.created_at,
                i.updated_at
             from invitations i left join notifications n on n.id = i.notification_id
            where ($1::uuid is null or i.tenant_id = $1) and ($3::text is null or i.invitation_type = $3)
              and ($4::text is null or lower(i.email) = lower($4)) and ($5::uuid is null or i.id > $5)) v
         where ($2::text is null or v.status = $2)
         order by v.id limit $6"#,
        reach.param(),
        f.status,
        f.invitation_type,
        f.email,
        f.after.map(|id| id.0),
        limit,
    )
    .fetch_all(db)
    .await
}

/// Changes an open invitation's names, note or expiry; `None` when there is
/// no such open invitation.
#[tracing::instrument(skip_all)]
pub async fn update(
    db: &mut sqlx::PgConnection,
    tenant_id: TenantId,
    id: InvitationId,
    first_name: Option<&str>,
    last_name: Option<&str>,
    message: Option<&str>,
    expires_at: Option<DateTime<Utc>>,
) -> Result<Option<Invitation>, sqlx::Error> {
    let done = sqlx::query!(
        "update invitations set first_name = coalesce($3, first_name),
            last_name = coalesce($4, last_name), message = coalesce($5, message),
            expires_at = coalesce($6, expires_at)
         where id = $1 and tenant_id = $2 and status in ('pending', 'sent')",
        id.0,
        tenant_id as _,
        first_name,
        last_name,
        message,
        expires_at,
    )
    .execute(&mut *db)
    .await?;
    if done.rows_affected() == 0 {
        return Ok(None);
    }
    get(&mut *db, Reach::Tenant(tenant_id), id).await
}

/// Cancels an open invitation; its token stops working. `false` when it is
/// not open (or not there).
#[tracing::instrument(skip_all)]
pub async fn cancel(
    db: impl PgExecutor<'_>,
    tenant_id: TenantId,
    id: InvitationId,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query!(
        "update invitations set status = 'cancelled', cancelled_at = now()
         where id = $1 and tenant_id = $2 and status in ('pending', 'sent')",
        id.0,
        tenant_id as _,
    )
    .execute(db)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Puts an invitation that was not accepted or cancelled back to `pending`
/// with no token (the old one stops working) and a new expiry; `false` when
/// it cannot be resent.
#[tracing::instrument(skip_all)]
pub async fn reopen(
    db: impl PgExecutor<'_>,
    tenant_id: TenantId,
    id: InvitationId,
    expires_at: DateTime<Utc>,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query!(
        "update invitations set status = 'pending', token_hash = null, expires_at = $3,
            dispatched_at = now()
         where id = $1 and tenant_id = $2
           and status in ('pending', 'sent', 'failed', 'expired')",
        id.0,
        tenant_id as _,
        expires_at,
    )
    .execute(db)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// What the email needs, from a claimed invitation.
#[derive(Debug, Clone)]
pub struct Claimed {
    /// Address.
    pub email: String,
    /// Type.
    pub invitation_type: String,
    /// Given name.
    pub first_name: Option<String>,
    /// Family name.
    pub last_name: Option<String>,
    /// Note.
    pub message: Option<String>,
    /// Expiry.
    pub expires_at: DateTime<Utc>,
    /// The organisation's name.
    pub organization: String,
}

/// Claims a `pending`, unexpired invitation for sending: stores the new
/// token's hash and makes it `sent`. `None` when there is nothing to send.
#[tracing::instrument(skip_all)]
pub async fn claim_for_send(
    db: impl PgExecutor<'_>,
    tenant: TenantId,
    id: InvitationId,
    token_hash: &[u8],
) -> Result<Option<Claimed>, sqlx::Error> {
    sqlx::query_as!(
        Claimed,
        "update invitations i set status = 'sent', token_hash = $3, sent_at = now(),
            send_count = send_count + 1
         from tenants t
         where i.id = $1 and i.tenant_id = $2 and t.id = i.tenant_id
           and i.status = 'pending' and i.expires_at > now()
         returning i.email, i.invitation_type, i.first_name, i.last_name, i.message,
            i.expires_at, t.name as organization",
        id.0,
        tenant as _,
        token_hash,
    )
    .fetch_optional(db)
    .await
}

/// Links the email notification.
#[tracing::instrument(skip_all)]
pub async fn set_notification(
    db: impl PgExecutor<'_>,
    tenant_id: TenantId,
    id: InvitationId,
    notification: NotificationId,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "update invitations set notification_id = $2 where id = $1 and tenant_id = $3",
        id.0,
        notification as _,
        tenant_id as _,
    )
    .execute(db)
    .await?;
    Ok(())
}

/// An invitation found by its token.
#[derive(Debug, Clone)]
pub struct ByToken {
    /// Its id.
    pub id: InvitationId,
    /// Organisation.
    pub tenant_id: TenantId,
    /// Stored status.
    pub status: String,
    /// Expiry.
    pub expires_at: DateTime<Utc>,
    /// Address.
    pub email: String,
    /// Type.
    pub invitation_type: String,
    /// Given name.
    pub first_name: Option<String>,
    /// Family name.
    pub last_name: Option<String>,
    /// Inviter.
    pub invited_by: String,
    /// Whether the organisation is active.
    pub tenant_active: bool,
}

/// The invitation whose current token hashes to `hash`.
#[tracing::instrument(skip_all)]
pub async fn by_token(
    db: impl PgExecutor<'_>,
    hash: &[u8],
) -> Result<Option<ByToken>, sqlx::Error> {
    sqlx::query_as!(
        ByToken,
        r#"select i.id as "id: InvitationId", i.tenant_id as "tenant_id: TenantId", i.status,
                i.expires_at, i.email,
                i.invitation_type, i.first_name, i.last_name, i.invited_by,
                t.status = 'active' as "tenant_active!"
         from invitations i join tenants t on t.id = i.tenant_id
         where i.token_hash = $1"#,
        hash,
    )
    .fetch_optional(db)
    .await
}

/// Uses the token: the one conditional update that makes an accept single
/// use. `None` when the token is not (or no longer) acceptable.
#[tracing::instrument(skip_all)]
pub async fn accept(db: impl PgExecutor<'_>, hash: &[u8]) -> Result<Option<ByToken>, sqlx::Error> {
    sqlx::query_as!(
        ByToken,
        r#"update invitations i set status = 'accepted', accepted_at = now()
         from tenants t
         where i.token_hash = $1 and t.id = i.tenant_id and t.status = 'active'
           and i.status = 'sent' and i.expires_at > now()
         returning i.id as "id: InvitationId", i.tenant_id as "tenant_id: TenantId", i.status,
                i.expires_at, i.email,
                i.invitation_type, i.first_name, i.last_name, i.invited_by,
                t.status = 'active' as "tenant_active!""#,
        hash,
    )
    .fetch_optional(db)
    .await
}

/// The latest invitation of `email` in the organisation that may still be
/// sent again (pending, sent or expired), if any.
#[tracing::instrument(skip_all)]
pub async fn resendable(
    db: impl PgExecutor<'_>,
    tenant_id: TenantId,
    email: &str,
) -> Result<Option<InvitationId>, sqlx::Error> {
    sqlx::query_scalar!(
        r#"select id as "id: InvitationId" from invitations where tenant_id = $1 and lower(email) = lower($2)
           and status in ('pending', 'sent', 'expired') order by created_at desc limit 1"#,
        tenant_id as _,
        email,
    )
    .fetch_optional(db)
    .await
}

/// Links the user an accept created.
#[tracing::instrument(skip_all)]
pub async fn set_user(
    db: impl PgExecutor<'_>,
    tenant_id: TenantId,
    id: InvitationId,
    user: UserId,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "update invitations set user_id = $2 where id = $1 and tenant_id = $3",
        id.0,
        user.0,
        tenant_id as _,
    )
    .execute(db)
    .await?;
    Ok(())
}

/// Marks open invitations past `now` expired; returns how many.
#[tracing::instrument(skip_all)]
pub async fn expire(db: impl PgExecutor<'_>, now: DateTime<Utc>) -> Result<u64, sqlx::Error> {
    let done = sqlx::query!(
        "update invitations set status = 'expired'
         where status in ('pending', 'sent') and expires_at <= $1",
        now,
    )
    .execute(db)
    .await?;
    Ok(done.rows_affected())
}

/// Picks up to `limit` `pending` invitations whose job is not in Redis
/// (never pushed, or pushed longer than `redispatch_after` ago and still
/// unclaimed) and marks them pushed. Concurrent dispatchers pick disjoint
/// rows. Works across tenants.
#[tracing::instrument(skip_all)]
pub async fn take_pending(
    db: impl PgExecutor<'_>,
    limit: usize,
    redispatch_after: std::time::Duration,
) -> Result<Vec<(TenantId, InvitationId)>, sqlx::Error> {
    let rows = sqlx::query!(
        r#"update invitations set dispatched_at = now()
         where id in (select id from invitations
                      where status = 'pending'
                        and (dispatched_at is null or dispatched_at < now() - make_interval(secs => $1))
                      order by created_at limit $2 for update skip locked)
         returning tenant_id as "tenant_id: TenantId", id as "id: InvitationId""#,
        redispatch_after.as_secs_f64(),
        limit as i64,
    )
    .fetch_all(db)
    .await?;
    Ok(rows.into_iter().map(|r| (r.tenant_id, r.id)).collect())
}

/// The invitations whose job may be in Redis.
const PENDING: &str = "status = 'pending'";

/// Marks invitations (`(tenant, id)`) as not in Redis (their push failed or
/// the window was full), so the dispatcher's next sweep pushes them. Called
/// through [`crate::outbox`].
#[tracing::instrument(skip_all)]
pub async fn release_dispatch(
    db: impl PgExecutor<'_>,
    invitations: &[(TenantId, InvitationId)],
) -> Result<(), sqlx::Error> {
    let (tenants, ids): (Vec<TenantId>, Vec<Uuid>) =
        invitations.iter().map(|&(t, id)| (t, id.0)).unzip();
    super::release_dispatched(db, "invitations", PENDING, &tenants, ids).await
}

/// Forgets which `pending` invitations were pushed, after Redis lost its
/// data. Works across tenants.
#[tracing::instrument(skip_all)]
pub async fn forget_dispatched(db: impl PgExecutor<'_>) -> Result<u64, sqlx::Error> {
    super::forget_dispatched(db, "invitations", PENDING).await
}

/// Counts per status (as shown) and type within `reach`: `(status, type,
/// count)`.
#[tracing::instrument(skip_all)]
pub async fn stats(
    db: impl PgExecutor<'_>,
    reach: Reach,
) -> Result<Vec<(String, String, i64)>, sqlx::Error> {
    let rows = sqlx::query!(
        r#"select v.status as "status!", v.invitation_type as "invitation_type!",
                count(*) as "count!"
         from (select i.id, i.tenant_id, i.email, i.invitation_type, i.first_name, i.last_name,
                i.message,
                case when i.status = 'sent' and n.status in ('failed', 'bounced') then 'failed'
                     else i.status end as status,
                n.status as email_status, i.notification_id, i.expires_at, i.invited_by,
                i.user_id as "user_id: UserId", i.send_count, i.sent_at, i.accepted_at, i.cancelled_at, i.created_at,
                i.updated_at
             from invitations i left join notifications n on n.id = i.notification_id
            where ($1::uuid is null or i.tenant_id = $1)) v
         group by v.status, v.invitation_type order by 1, 2"#,
        reach.param(),
    )
    .fetch_all(db)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| (r.status, r.invitation_type, r.count))
        .collect())
}
