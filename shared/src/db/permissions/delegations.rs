//! Delegations as stored: made, read, listed and revoked. Whether one
//! counts is decided by [`super::effective`] when it is used.

use chrono::{DateTime, Utc};
use sqlx::PgExecutor;
use uuid::Uuid;

use crate::domain::{TenantId, UserId};

/// A delegation as stored.
#[derive(Debug, Clone)]
pub struct Delegation {
    /// Its id.
    pub id: Uuid,
    /// The organisation.
    pub tenant_id: TenantId,
    /// Who lends.
    pub delegator_id: UserId,
    /// Who receives.
    pub delegate_id: UserId,
    /// What is lent.
    pub permissions: Vec<String>,
    /// From.
    pub starts_at: DateTime<Utc>,
    /// Until.
    pub ends_at: DateTime<Utc>,
    /// Why.
    pub reason: Option<String>,
    /// When it was revoked.
    pub revoked_at: Option<DateTime<Utc>>,
    /// Who revoked it.
    pub revoked_by: Option<String>,
    /// Who made it.
    pub created_by: String,
    /// Created.
    pub created_at: DateTime<Utc>,
}

/// A new delegation's fields (already checked against what the delegator
/// holds).
#[derive(Debug, Clone)]
pub struct NewDelegation<'a> {
    /// Who lends.
    pub delegator_id: UserId,
    /// Who receives.
    pub delegate_id: UserId,
    /// What.
    pub permissions: Vec<String>,
    /// From.
    pub starts_at: DateTime<Utc>,
    /// Until.
    pub ends_at: DateTime<Utc>,
    /// Why.
    pub reason: Option<&'a str>,
    /// Audit actor.
    pub created_by: &'a str,
}

/// Records a delegation.
#[tracing::instrument(skip_all)]
pub async fn create_delegation(
    db: impl PgExecutor<'_>,
    tenant: TenantId,
    d: &NewDelegation<'_>,
) -> Result<Delegation, sqlx::Error> {
    sqlx::query_as!(
        Delegation,
        r#"insert into permission_delegations (id, tenant_id, delegator_id, delegate_id, permissions,
             starts_at, ends_at, reason, created_by)
         values ($1, $2, $3, $4, $5, $6, $7, $8, $9)
         returning id, tenant_id as "tenant_id: TenantId", delegator_id as "delegator_id: UserId",
             delegate_id as "delegate_id: UserId", permissions,
             starts_at, ends_at, reason, revoked_at, revoked_by, created_by, created_at"#,
        Uuid::now_v7(),
        tenant.0,
        d.delegator_id.0,
        d.delegate_id.0,
        &d.permissions,
        d.starts_at,
        d.ends_at,
        d.reason,
        d.created_by,
    )
    .fetch_one(db)
    .await
}

/// Delegation `id` of `tenant`.
#[tracing::instrument(skip_all)]
pub async fn get_delegation(
    db: impl PgExecutor<'_>,
    tenant: TenantId,
    id: Uuid,
) -> Result<Option<Delegation>, sqlx::Error> {
    sqlx::query_as!(
        Delegation,
        r#"select id, tenant_id as "tenant_id: TenantId", delegator_id as "delegator_id: UserId",
             delegate_id as "delegate_id: UserId", permissions,
             starts_at, ends_at, reason, revoked_at, revoked_by, created_by, created_at
         from permission_delegations where tenant_id = $1 and id = $2"#,
        tenant.0,
        id,
    )
    .fetch_optional(db)
    .await
}

/// Which delegations of a user a list holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Those it lent.
    Given,
    /// Those lent to it.
    Received,
    /// Both.
    Both,
}

/// Which delegations a list holds: those `user` gave or received
/// (`direction`), or every one of the organisation when `user` is `None`;
/// with `active` only those in force at `now` (in their window and not
/// revoked) or, when false, only those that are not.
#[derive(Debug, Clone, Copy)]
pub struct DelegationFilter {
    /// Whose delegations.
    pub user: Option<UserId>,
    /// Given, received or both.
    pub direction: Direction,
    /// In force or not (at `now`), or either.
    pub active: Option<bool>,
    /// The time `active` is judged at.
    pub now: DateTime<Utc>,
}

/// Delegations of `tenant` that `filter` holds, newest first (id order,
/// descending) before `before`.
#[tracing::instrument(skip_all)]
pub async fn list_delegations(
    db: impl PgExecutor<'_>,
    tenant: TenantId,
    filter: &DelegationFilter,
    before: Option<Uuid>,
    limit: i64,
) -> Result<Vec<Delegation>, sqlx::Error> {
    let DelegationFilter {
        user,
        direction,
        active,
        now,
    } = *filter;
    let (given, received) = match direction {
        Direction::Given => (true, false),
        Direction::Received => (false, true),
        Direction::Both => (true, true),
    };
    sqlx::query_as!(
        Delegation,
        r#"select id, tenant_id as "tenant_id: TenantId", delegator_id as "delegator_id: UserId",
             delegate_id as "delegate_id: UserId", permissions,
             starts_at, ends_at, reason, revoked_at, revoked_by, created_by, created_at
         from permission_delegations
         where tenant_id = $1
           and ($2::uuid is null or ($3 and delegator_id = $2) or ($4 and delegate_id = $2))
           and ($5::bool is null
                or $5 = (revoked_at is null and starts_at <= $6 and ends_at > $6))
           and ($7::uuid is null or id < $7)
         order by id desc limit $8"#,
        tenant.0,
        user.map(|u| u.0),
        given,
        received,
        active,
        now,
        before,
        limit,
    )
    .fetch_all(db)
    .await
}

/// Revokes delegation `id` of `tenant` unless it already was; the
/// delegation as it is now.
#[tracing::instrument(skip_all)]
pub async fn revoke_delegation(
    db: impl PgExecutor<'_>,
    tenant: TenantId,
    id: Uuid,
    by: &str,
) -> Result<Option<Delegation>, sqlx::Error> {
    sqlx::query_as!(
        Delegation,
        r#"update permission_delegations set revoked_at = coalesce(revoked_at, now()),
             revoked_by = coalesce(revoked_by, $3)
         where tenant_id = $1 and id = $2
         returning id, tenant_id as "tenant_id: TenantId", delegator_id as "delegator_id: UserId",
             delegate_id as "delegate_id: UserId", permissions,
             starts_at, ends_at, reason, revoked_at, revoked_by, created_by, created_at"#,
        tenant.0,
        id,
        by,
    )
    .fetch_optional(db)
    .await
}
