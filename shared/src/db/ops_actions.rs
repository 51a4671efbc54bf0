//! Operators' retries and discards of everything a filter matches, done in
//! the background in bounded steps.
//!
//! An action is a row (`ops_actions`) before any work happens. Each
//! [`step`] locks one running action (`for update skip locked`, so
//! schedulers side by side take different ones), handles the next
//! [`STEP_ROWS`] items it matches — kinds in [`super::failed_work::KINDS`]
//! order, then failure time and id — and records how far it got, all in one
//! short transaction. A process that dies mid-step loses nothing: the step
//! rolls back and the next one does it again. Cancelling sets the status;
//! the next step sees it and stops. Items that fail after the action was
//! created are left alone, so a retry that fails again is not retried
//! forever.

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use sqlx::{PgExecutor, PgPool, QueryBuilder};
use uuid::Uuid;

use super::failed_work::{self, Action, Filter, Kind};
use super::scope::{self, Reach};
use crate::domain::{OpsActionId, TenantId};

/// Most items one step handles.
pub const STEP_ROWS: i64 = 1000;

/// One action.
#[derive(Debug, Clone)]
pub struct OpsAction {
    /// Its id.
    pub id: OpsActionId,
    /// The organisation it is confined to (`None`: every one).
    pub tenant_id: Option<TenantId>,
    /// `retry` or `discard`.
    pub action: String,
    /// `running`, `completed`, `cancelled` or `failed`.
    pub status: String,
    /// The filter, as stored.
    pub filter: sqlx::types::Json<Filter>,
    /// Items that failed after this are left alone.
    pub upto: DateTime<Utc>,
    /// Items the filter matched when it was created.
    pub matched: i64,
    /// Items handled so far.
    pub processed: i64,
    /// Of those, retried or discarded.
    pub applied: i64,
    /// Of those, left as they were (no longer failed, or not retryable).
    pub skipped: i64,
    /// The kind the next step starts in (index into `KINDS`).
    pub cursor_kind: i32,
    /// The failure time the next step starts after.
    pub cursor_at: Option<DateTime<Utc>>,
    /// The id the next step starts after.
    pub cursor_id: Option<Uuid>,
    /// Why it failed.
    pub error: Option<String>,
    /// Who created it (`user:<id>`, `api_key:<id>`, `cli`).
    pub created_by: String,
    /// The organisation of who created it.
    pub actor_tenant_id: Option<TenantId>,
    /// When it ended.
    pub finished_at: Option<DateTime<Utc>>,
    /// When it was created.
    pub created_at: DateTime<Utc>,
}

/// Creates a running action over what `filter` matches within `reach`
/// now, counting it; its steps stay within `reach`.
#[tracing::instrument(skip_all)]
pub async fn create(
    pool: &PgPool,
    reach: Reach,
    action: Action,
    filter: &Filter,
    created_by: &str,
    actor_tenant: Option<TenantId>,
) -> Result<OpsAction, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let upto: DateTime<Utc> = sqlx::query_scalar!(r#"select now() as "now!""#)
        .fetch_one(&mut *tx)
        .await?;
    let matched = failed_work::count(&mut *tx, reach, filter, upto).await?;
    let row = sqlx::query_as!(
        OpsAction,
        r#"insert into ops_actions (id, tenant_id, action, filter, upto, matched, created_by, actor_tenant_id)
         values ($1, $2, $3, $4, $5, $6, $7, $8)
         returning id as "id: OpsActionId", tenant_id as "tenant_id: TenantId", action, status,
             filter as "filter: sqlx::types::Json<Filter>", upto, matched, processed, applied,
             skipped, cursor_kind, cursor_at, cursor_id, error, created_by,
             actor_tenant_id as "actor_tenant_id: TenantId", finished_at, created_at"#,
        OpsActionId::new().0,
        reach.param(),
        action.as_str(),
        sqlx::types::Json(filter) as _,
        upto,
        matched,
        created_by,
        actor_tenant.map(|t| t.0),
    )
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(row)
}

/// One action within `reach`.
#[tracing::instrument(skip_all)]
pub async fn get(
    db: impl PgExecutor<'_>,
    reach: Reach,
    id: OpsActionId,
) -> Result<Option<OpsAction>, sqlx::Error> {
    sqlx::query_as!(
        OpsAction,
        r#"select id as "id: OpsActionId", tenant_id as "tenant_id: TenantId", action, status,
             filter as "filter: sqlx::types::Json<Filter>", upto, matched, processed, applied,
             skipped, cursor_kind, cursor_at, cursor_id, error, created_by,
             actor_tenant_id as "actor_tenant_id: TenantId", finished_at, created_at
         from ops_actions where id = $1 and ($2::uuid is null or tenant_id = $2)"#,
        id.0,
        reach.param(),
    )
    .fetch_optional(db)
    .await
}

/// Cancels a running action within `reach`; returns it as it is now
/// (`None`: no such action). A finished one is returned unchanged.
#[tracing::instrument(skip_all)]
pub async fn cancel(
    pool: &PgPool,
    reach: Reach,
    id: OpsActionId,
) -> Result<Option<OpsAction>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    // Waits for a step in progress, so what is returned is final.
    let found: Option<OpsAction> = sqlx::query_as!(
        OpsAction,
        r#"select id as "id: OpsActionId", tenant_id as "tenant_id: TenantId", action, status,
             filter as "filter: sqlx::types::Json<Filter>", upto, matched, processed, applied,
             skipped, cursor_kind, cursor_at, cursor_id, error, created_by,
             actor_tenant_id as "actor_tenant_id: TenantId", finished_at, created_at
         from ops_actions
         where id = $1 and ($2::uuid is null or tenant_id = $2) for update"#,
        id.0,
        reach.param(),
    )
    .fetch_optional(&mut *tx)
    .await?;
    let Some(found) = found else {
        return Ok(None);
    };
    let row = if found.status == "running" {
        sqlx::query_as!(
            OpsAction,
            r#"update ops_actions set status = 'cancelled', finished_at = now()
             where id = $1
             returning id as "id: OpsActionId", tenant_id as "tenant_id: TenantId", action, status,
             filter as "filter: sqlx::types::Json<Filter>", upto, matched, processed, applied,
             skipped, cursor_kind, cursor_at, cursor_id, error, created_by,
             actor_tenant_id as "actor_tenant_id: TenantId", finished_at, created_at"#,
            id.0,
        )
        .fetch_one(&mut *tx)
        .await?
    } else {
        found
    };
    tx.commit().await?;
    Ok(Some(row))
}

/// Runs one step of one running action; returns its id, or `None` when no
/// action is waiting.
#[tracing::instrument(skip_all)]
pub async fn step(pool: &PgPool) -> Result<Option<OpsActionId>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let found: Option<OpsAction> = sqlx::query_as!(
        OpsAction,
        r#"select id as "id: OpsActionId", tenant_id as "tenant_id: TenantId", action, status,
             filter as "filter: sqlx::types::Json<Filter>", upto, matched, processed, applied,
             skipped, cursor_kind, cursor_at, cursor_id, error, created_by,
             actor_tenant_id as "actor_tenant_id: TenantId", finished_at, created_at
         from ops_actions where status = 'running'
         order by created_at limit 1 for update skip locked"#
    )
    .fetch_optional(&mut *tx)
    .await?;
    let Some(a) = found else {
        return Ok(None);
    };
    let Some(action) = Action::parse(&a.action) else {
        return Ok(None);
    };
    let Some(kind) = Kind::ALL.get(a.cursor_kind.max(0) as usize).copied() else {
        sqlx::query!(
            "update ops_actions set status = 'completed', finished_at = now() where id = $1",
            a.id.0,
        )
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        return Ok(Some(a.id));
    };
    let reach = match a.tenant_id {
        Some(t) => Reach::Tenant(t),
        // An operator's action across organisations, stepped where every
        // organisation's rows are seen (the scheduler's platform scope).
        None => Reach::Platform(scope::platform_wide().ok_or_else(|| {
            sqlx::Error::Configuration(
                "an action across organisations is stepped walled to one".into(),
            )
        })?),
    };
    let mut qb = QueryBuilder::new("select id, failed_at from failed_work");
    a.filter.0.push_where(reach, &mut qb);
    qb.push(" and kind = ")
        .push_bind(kind.as_str())
        .push(" and failed_at <= ")
        .push_bind(a.upto);
    if let (Some(at), Some(id)) = (a.cursor_at, a.cursor_id) {
        qb.push(" and (failed_at, id) > (")
            .push_bind(at)
            .push(", ")
            .push_bind(id)
            .push(")");
    }
    qb.push(" order by failed_at, id limit ")
        .push_bind(STEP_ROWS);
    let rows: Vec<(Uuid, DateTime<Utc>)> = qb.build_query_as().fetch_all(&mut *tx).await?;
    let ids: Vec<Uuid> = rows.iter().map(|r| r.0).collect();
    let changed = failed_work::apply(&mut tx, reach, action, kind, &ids).await?;
    let n = rows.len() as i64;
    let applied = changed.len() as i64;
    let (next_kind, at, id) = match rows.last() {
        Some((id, at)) if n == STEP_ROWS => (a.cursor_kind, Some(*at), Some(*id)),
        _ => (a.cursor_kind + 1, None, None),
    };
    let done = next_kind as usize >= Kind::ALL.len();
    sqlx::query!(
        "update ops_actions
         set processed = processed + $2, applied = applied + $3, skipped = skipped + $4,
             cursor_kind = $5, cursor_at = $6, cursor_id = $7,
             status = case when $8 then 'completed' else status end,
             finished_at = case when $8 then now() else finished_at end
         where id = $1",
        a.id.0,
        n,
        applied,
        n - applied,
        next_kind,
        at,
        id,
        done,
    )
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    if n > 0 {
        tracing::info!(action_id = %a.id, kind = kind.as_str(), handled = n, applied, "ops action step");
    }
    Ok(Some(a.id))
}

/// Runs steps until no action waits or `budget` is spent; returns how many
/// ran. Called from the scheduler's loop.
pub async fn advance(pool: &PgPool, budget: Duration) -> Result<usize, sqlx::Error> {
    let started = Instant::now();
    let mut steps = 0;
    while started.elapsed() < budget {
        match step(pool).await? {
            Some(_) => steps += 1,
            None => break,
        }
    }
    Ok(steps)
}

/// [`advance`] for a quarter of a second, logging a failure rather than
/// returning it: one line in a service's loop.
pub async fn advance_logged(pool: &PgPool) {
    if let Err(error) = advance(pool, Duration::from_millis(250)).await {
        tracing::warn!(
            error = &error as &dyn std::error::Error,
            "cannot advance operator actions; retrying"
        );
    }
}
