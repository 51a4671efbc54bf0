//! Permission sets, their assignment to users, single grants and
//! delegations, and the effective-permission calculation
//! ([`effective`]), made at check time from the rows as they are: a
//! revoked delegation, or one whose delegator lost a permission, stops
//! counting at once, without a job.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use sqlx::PgExecutor;
use uuid::Uuid;

use crate::{
    domain::{PermissionSetId, TenantId, UserId},
    permissions::Permission,
};

mod delegations;

pub use delegations::*;

/// A permission set as stored.
#[derive(Debug, Clone)]
pub struct PermissionSet {
    /// Its id.
    pub id: PermissionSetId,
    /// Its organisation; `None` for a built-in set.
    pub tenant_id: Option<TenantId>,
    /// Its key, unique in its organisation.
    pub key: String,
    /// Display name.
    pub name: String,
    /// What it is for.
    pub description: Option<String>,
    /// The permissions it adds to what it includes.
    pub permissions: Vec<String>,
    /// The sets it includes.
    pub includes: Vec<PermissionSetId>,
    /// Who made it.
    pub created_by: String,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Last changed.
    pub updated_at: DateTime<Utc>,
}

/// The sets `tenant` sees (built-ins, then its own), in id order after
/// `after`.
#[tracing::instrument(skip_all)]
pub async fn list_sets(
    db: impl PgExecutor<'_>,
    tenant: TenantId,
    after: Option<PermissionSetId>,
    limit: i64,
) -> Result<Vec<PermissionSet>, sqlx::Error> {
    sqlx::query_as!(
        PermissionSet,
        r#"select s.id as "id: PermissionSetId", s.tenant_id as "tenant_id: TenantId", s.key, s.name,
             s.description, s.permissions,
             coalesce((select array_agg(i.included_id order by i.included_id)
                 from permission_set_includes i where i.set_id = s.id), '{}')
                 as "includes!: Vec<PermissionSetId>",
             s.created_by, s.created_at, s.updated_at
         from permission_sets s
         where (s.tenant_id is null or s.tenant_id = $1) and ($2::uuid is null or s.id > $2)
         order by s.id limit $3"#,
        tenant.0,
        after.map(|id| id.0),
        limit,
    )
    .fetch_all(db)
    .await
}

/// Set `id` if `tenant` sees it.
#[tracing::instrument(skip_all)]
pub async fn get_set(
    db: impl PgExecutor<'_>,
    tenant: TenantId,
    id: PermissionSetId,
) -> Result<Option<PermissionSet>, sqlx::Error> {
    sqlx::query_as!(
        PermissionSet,
        r#"select s.id as "id: PermissionSetId", s.tenant_id as "tenant_id: TenantId", s.key, s.name,
             s.description, s.permissions,
             coalesce((select array_agg(i.included_id order by i.included_id)
                 from permission_set_includes i where i.set_id = s.id), '{}')
                 as "includes!: Vec<PermissionSetId>",
             s.created_by, s.created_at, s.updated_at
         from permission_sets s
         where s.id = $2 and (s.tenant_id is null or s.tenant_id = $1)"#,
        tenant.0,
        id.0,
    )
    .fetch_optional(db)
    .await
}

/// Every permission of set `id` with what it includes, sorted.
#[tracing::instrument(skip_all)]
pub async fn set_closure(
    db: impl PgExecutor<'_>,
    id: PermissionSetId,
) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar!(
        r#"with recursive closure(set_id) as (
             select $1::uuid
             union
             select i.included_id from closure c join permission_set_includes i on i.set_id = c.set_id
         )
         select distinct p as "p!" from closure c join permission_sets s on s.id = c.set_id,
             unnest(s.permissions) p order by p"#,
        id.0,
    )
    .fetch_all(db)
    .await
}

/// Every include edge among the sets `tenant` sees: (set, included).
#[tracing::instrument(skip_all)]
pub async fn include_edges(
    db: impl PgExecutor<'_>,
    tenant: TenantId,
) -> Result<Vec<(PermissionSetId, PermissionSetId, String)>, sqlx::Error> {
    let rows = sqlx::query!(
        r#"select i.set_id as "set_id: PermissionSetId", i.included_id as "included_id: PermissionSetId",
             s.key
         from permission_set_includes i
         join permission_sets s on s.id = i.set_id
         where s.tenant_id is null or s.tenant_id = $1"#,
        tenant.0,
    )
    .fetch_all(db)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| (r.set_id, r.included_id, r.key))
        .collect())
}

/// A custom set's fields.
#[derive(Debug, Clone)]
pub struct SetFields<'a> {
    /// Key.
    pub key: &'a str,
    /// Name.
    pub name: &'a str,
    /// Description.
    pub description: Option<&'a str>,
    /// Permissions (already validated).
    pub permissions: Vec<String>,
    /// Included sets (already checked: visible, no cycle).
    pub includes: Vec<PermissionSetId>,
}

/// The unique index on an organisation's set keys.
pub const SET_KEY_CONSTRAINT: &str = "permission_sets_key";

/// Creates a custom set of `tenant`. Run in a transaction (two statements).
#[tracing::instrument(skip_all)]
pub async fn create_set(
    conn: &mut sqlx::PgConnection,
    tenant: TenantId,
    fields: &SetFields<'_>,
    created_by: &str,
) -> Result<PermissionSetId, sqlx::Error> {
    let id = PermissionSetId::new();
    sqlx::query!(
        "insert into permission_sets (id, tenant_id, key, name, description, permissions, created_by)
         values ($1, $2, $3, $4, $5, $6, $7)",
        id.0,
        tenant.0,
        fields.key,
        fields.name,
        fields.description,
        &fields.permissions,
        created_by,
    )
    .execute(&mut *conn)
    .await?;
    set_includes(conn, id, &fields.includes).await?;
    Ok(id)
}

/// Replaces custom set `id` of `tenant`; false when it has no such set
/// (built-in sets are not its own). Run in a transaction.
#[tracing::instrument(skip_all)]
pub async fn update_set(
    conn: &mut sqlx::PgConnection,
    tenant: TenantId,
    id: PermissionSetId,
    fields: &SetFields<'_>,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query!(
        "update permission_sets set key = $3, name = $4, description = $5, permissions = $6
         where id = $2 and tenant_id = $1",
        tenant.0,
        id.0,
        fields.key,
        fields.name,
        fields.description,
        &fields.permissions,
    )
    .execute(&mut *conn)
    .await?;
    if done.rows_affected() == 0 {
        return Ok(false);
    }
    sqlx::query!(
        "delete from permission_set_includes where set_id = $1",
        id.0
    )
    .execute(&mut *conn)
    .await?;
    set_includes(conn, id, &fields.includes).await?;
    Ok(true)
}

/// The foreign key an assignment violates when its set was deleted while
/// [`delete_set`] held it.
pub const SET_ASSIGNED_CONSTRAINT: &str = "user_permission_sets_set_id_fkey";
/// The foreign key an include edge violates when the included set was
/// deleted meanwhile.
pub const SET_INCLUDED_CONSTRAINT: &str = "permission_set_includes_included_id_fkey";

/// What deleting a custom set did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SetDeletion {
    /// Deleted (with its own include edges).
    Deleted,
    /// `tenant` has no such custom set (built-in sets are nobody's).
    NotFound,
    /// Kept: this many users have it assigned.
    Assigned(i64),
    /// Kept: these sets (keys) include it.
    Included(Vec<String>),
}

/// Deletes custom set `id` of `tenant` unless a user has it assigned or
/// another set includes it. Run in a transaction: the set's row is locked
/// first, so an assignment racing the delete waits and then fails on
/// [`SET_ASSIGNED_CONSTRAINT`].
#[tracing::instrument(skip_all)]
pub async fn delete_set(
    conn: &mut sqlx::PgConnection,
    tenant: TenantId,
    id: PermissionSetId,
) -> Result<SetDeletion, sqlx::Error> {
    let found: Option<Uuid> = sqlx::query_scalar!(
        "select id from permission_sets where id = $2 and tenant_id = $1 for update",
        tenant.0,
        id.0,
    )
    .fetch_optional(&mut *conn)
    .await?;
    if found.is_none() {
        return Ok(SetDeletion::NotFound);
    }
    let assigned: i64 = sqlx::query_scalar!(
        r#"select count(*) as "count!" from user_permission_sets where set_id = $1"#,
        id.0,
    )
    .fetch_one(&mut *conn)
    .await?;
    if assigned > 0 {
        return Ok(SetDeletion::Assigned(assigned));
    }
    let including: Vec<String> = sqlx::query_scalar!(
        "select s.key from permission_set_includes i join permission_sets s on s.id = i.set_id
         where i.included_id = $1 order by s.key",
        id.0,
    )
    .fetch_all(&mut *conn)
    .await?;
    if !including.is_empty() {
        return Ok(SetDeletion::Included(including));
    }
    sqlx::query!(
        "delete from permission_sets where id = $2 and tenant_id = $1",
        tenant.0,
        id.0,
    )
    .execute(&mut *conn)
    .await?;
    Ok(SetDeletion::Deleted)
}

async fn set_includes(
    conn: &mut sqlx::PgConnection,
    id: PermissionSetId,
    includes: &[PermissionSetId],
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "insert into permission_set_includes (set_id, included_id)
         select $1, unnest($2::uuid[]) on conflict do nothing",
        id.0,
        includes as _,
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// Assigns set `set` to user `user` of `tenant` (replacing the base set
/// its role gave it).
#[tracing::instrument(skip_all)]
pub async fn assign_set(
    db: impl PgExecutor<'_>,
    tenant: TenantId,
    user: UserId,
    set: PermissionSetId,
    by: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "insert into user_permission_sets (user_id, tenant_id, set_id, assigned_by)
         values ($2, $1, $3, $4)
         on conflict (user_id) do update set set_id = excluded.set_id, assigned_by = excluded.assigned_by",
        tenant.0,
        user.0,
        set.0,
        by,
    )
    .execute(db)
    .await?;
    Ok(())
}

/// The set assigned to user `user` of `tenant`, if any.
#[tracing::instrument(skip_all)]
pub async fn assigned_set(
    db: impl PgExecutor<'_>,
    tenant: TenantId,
    user: UserId,
) -> Result<Option<PermissionSetId>, sqlx::Error> {
    sqlx::query_scalar!(
        r#"select set_id as "set_id: PermissionSetId" from user_permission_sets
         where tenant_id = $1 and user_id = $2"#,
        tenant.0,
        user.0,
    )
    .fetch_optional(db)
    .await
}

/// Grants `permission` to user `user` of `tenant`; false when it already
/// had that grant.
#[tracing::instrument(skip_all)]
pub async fn grant(
    db: impl PgExecutor<'_>,
    tenant: TenantId,
    user: UserId,
    permission: Permission,
    by: &str,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query!(
        "insert into user_permissions (id, user_id, tenant_id, permission, granted_by)
         values ($1, $2, $3, $4, $5) on conflict (user_id, permission) do nothing",
        Uuid::now_v7(),
        user.0,
        tenant.0,
        permission.as_str(),
        by,
    )
    .execute(db)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Removes the grant of `permission` from user `user`; false when it had
/// none.
#[tracing::instrument(skip_all)]
pub async fn remove_grant(
    db: impl PgExecutor<'_>,
    tenant: TenantId,
    user: UserId,
    permission: Permission,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query!(
        "delete from user_permissions where tenant_id = $1 and user_id = $2 and permission = $3",
        tenant.0,
        user.0,
        permission.as_str(),
    )
    .execute(db)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Where a permission comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A set: the base set `root` (reached through set `set`, which is
    /// `root` itself or one it includes), assigned or given by a role.
    Set {
        /// The base set's key.
        root: String,
        /// The set that lists the permission.
        set: String,
        /// `assigned`, `role:<ROLE>`, or `default` (Member, for a caller
        /// none of whose roles maps to a set, like a token without roles).
        via: String,
    },
    /// A single grant.
    Grant,
    /// A delegation still in force.
    Delegation {
        /// Its id.
        id: Uuid,
        /// Who lent it.
        delegator_id: UserId,
        /// Until when.
        ends_at: DateTime<Utc>,
    },
}

/// Effective permissions, each with every source it comes from.
pub type Effective = BTreeMap<Permission, Vec<Source>>;

/// The permissions user `user` of `tenant` holds without delegations: its
/// base set (the assigned one, else those of `roles`, else Member, as
/// [`crate::permissions::role_set`] maps any role but `ADMIN`) with what
/// it includes, and its grants. Names no longer in the vocabulary are skipped.
#[tracing::instrument(skip_all)]
pub async fn direct(
    db: impl PgExecutor<'_>,
    tenant: TenantId,
    user: Option<UserId>,
    roles: &[String],
) -> Result<Effective, sqlx::Error> {
    let rows = sqlx::query!(
        r#"with recursive base(set_id, via) as (
             select set_id, 'assigned' from user_permission_sets where user_id = $2 and tenant_id = $1
             union all
             select r.set_id, 'role:' || r.role from role_permission_sets r
             where r.role in (select upper(x) from unnest($3::text[]) x)
               and not exists (select 1 from user_permission_sets where user_id = $2 and tenant_id = $1)
             union all
             select s.id, 'default' from permission_sets s
             where s.tenant_id is null and s.key = 'member'
               and not exists (select 1 from user_permission_sets where user_id = $2 and tenant_id = $1)
               and not exists (select 1 from role_permission_sets r
                               where r.role in (select upper(x) from unnest($3::text[]) x))
         ), closure(set_id, root, via) as (
             select set_id, set_id, via from base
             union
             select i.included_id, c.root, c.via from closure c
             join permission_set_includes i on i.set_id = c.set_id
         )
         select 'set' as "kind!", c.via || ' ' || r.key as "via_root!", s.key as "set!",
             unnest(s.permissions) as "name!"
         from closure c join permission_sets s on s.id = c.set_id join permission_sets r on r.id = c.root
         union all
         select 'grant', '', '', permission from user_permissions where user_id = $2 and tenant_id = $1"#,
        tenant.0,
        user.map(|u| u.0),
        roles as &[String],
    )
    .fetch_all(db)
    .await?;
    let mut out = Effective::new();
    for row in rows {
        let (kind, via_root, set, name) = (row.kind, row.via_root, row.set, row.name);
        let Some(p) = Permission::parse(&name) else {
            continue;
        };
        let source = if kind == "grant" {
            Source::Grant
        } else {
            let (via, root) = via_root.split_once(' ').unwrap_or((&via_root, ""));
            Source::Set {
                root: root.to_owned(),
                set,
                via: via.to_owned(),
            }
        };
        let sources = out.entry(p).or_default();
        if !sources.contains(&source) {
            sources.push(source);
        }
    }
    Ok(out)
}

/// Everything user `user` of `tenant` holds at `now`: [`direct`] plus each
/// delegated permission whose delegation is in its window at `now`, not
/// revoked, and whose delegator (an active user of the same organisation)
/// holds it directly at this moment. Delegated permissions are never
/// passed on. `now` comes from the caller's clock, so tests move it.
#[tracing::instrument(skip_all)]
pub async fn effective(
    pool: &sqlx::PgPool,
    tenant: TenantId,
    user: Option<UserId>,
    roles: &[String],
    now: DateTime<Utc>,
) -> Result<Effective, sqlx::Error> {
    let mut out = direct(pool, tenant, user, roles).await?;
    let Some(user) = user else {
        return Ok(out);
    };
    let lent = sqlx::query!(
        r#"select d.id, d.delegator_id as "delegator_id: UserId", d.ends_at, d.permissions, u.role
         from permission_delegations d join users u on u.id = d.delegator_id
         where d.tenant_id = $1 and d.delegate_id = $2 and d.revoked_at is null
           and d.starts_at <= $3 and d.ends_at > $3
           and u.tenant_id = $1 and u.status = 'active'
         order by d.id"#,
        tenant.0,
        user.0,
        now,
    )
    .fetch_all(pool)
    .await?;
    let mut holders: BTreeMap<UserId, Effective> = BTreeMap::new();
    for d in lent {
        let (id, delegator, ends_at, permissions, role) =
            (d.id, d.delegator_id, d.ends_at, d.permissions, d.role);
        if let std::collections::btree_map::Entry::Vacant(e) = holders.entry(delegator) {
            e.insert(direct(pool, tenant, Some(delegator), &[role]).await?);
        }
        let held = &holders[&delegator];
        for p in permissions.iter().filter_map(|n| Permission::parse(n)) {
            if held.contains_key(&p) {
                out.entry(p).or_default().push(Source::Delegation {
                    id,
                    delegator_id: delegator,
                    ends_at,
                });
            }
        }
    }
    Ok(out)
}

/// How many users hold each set as their base (assigned, or by role
/// when none is assigned), for `tenant`.
#[derive(Debug, Clone)]
pub struct SetCount {
    /// The set.
    pub set_id: PermissionSetId,
    /// Its key.
    pub key: String,
    /// Users assigned it explicitly.
    pub assigned: i64,
    /// Users holding it through their role.
    pub by_role: i64,
}

/// Per-set counts and the other statistics of `tenant`.
#[derive(Debug, Clone)]
pub struct Statistics {
    /// Per set (every set `tenant` sees).
    pub sets: Vec<SetCount>,
    /// Custom sets.
    pub custom_sets: i64,
    /// Single grants.
    pub grants: i64,
    /// Delegations in their window and not revoked.
    pub active_delegations: i64,
    /// Delegations revoked.
    pub revoked_delegations: i64,
}

/// The statistics of `tenant` at `now`.
#[tracing::instrument(skip_all)]
pub async fn statistics(
    pool: &sqlx::PgPool,
    tenant: TenantId,
    now: DateTime<Utc>,
) -> Result<Statistics, sqlx::Error> {
    let sets = sqlx::query_as!(
        SetCount,
        r#"select s.id as "set_id: PermissionSetId", s.key,
             (select count(*) from user_permission_sets a where a.set_id = s.id and a.tenant_id = $1) as "assigned!",
             (select count(*) from users u join role_permission_sets r on r.role = u.role
              where r.set_id = s.id and u.tenant_id = $1
                and not exists (select 1 from user_permission_sets a where a.user_id = u.id)) as "by_role!"
         from permission_sets s where s.tenant_id is null or s.tenant_id = $1 order by s.id"#,
        tenant.0,
    )
    .fetch_all(pool)
    .await?;
    let counts = sqlx::query!(
        r#"select (select count(*) from permission_sets where tenant_id = $1) as "custom_sets!",
             (select count(*) from user_permissions where tenant_id = $1) as "grants!",
             (select count(*) from permission_delegations where tenant_id = $1
                and revoked_at is null and starts_at <= $2 and ends_at > $2) as "active_delegations!",
             (select count(*) from permission_delegations where tenant_id = $1
                and revoked_at is not null) as "revoked_delegations!""#,
        tenant.0,
        now,
    )
    .fetch_one(pool)
    .await?;
    Ok(Statistics {
        sets,
        custom_sets: counts.custom_sets,
        grants: counts.grants,
        active_delegations: counts.active_delegations,
        revoked_delegations: counts.revoked_delegations,
    })
}
