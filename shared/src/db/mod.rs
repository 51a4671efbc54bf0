//! Postgres access, one module per aggregate.
//!
//! Each function is a plain async fn over a `PgExecutor` (a pool or a
//! transaction) with its SQL beside it. Tenant-owned data is always read and
//! written with the tenant id as the first argument, so no query can cross
//! tenants by accident. Functions that work across tenants (the dispatcher's
//! sweeps, maintenance) say so in their names and docs. The operators' reads
//! and changes that may span organisations take a [`scope::Reach`] first
//! instead: one organisation's, or every one's with the
//! [`scope::PlatformWide`] witness that only an operator's task can make.
//!
//! Behind those filters, row-level security walls each session to the
//! organisation of its [`scope`]: the pool acts as the role `notify_app`
//! and sets the scope on every connection it hands out.
//!
//! Besides the aggregates' modules, some hold the statements of one
//! computation: the delivery rollups' upkeep ([`delivery_rollups`]) and
//! the reports' and forecasts' reads of them ([`delivery_reports`]), the
//! alert evaluator's metric readings ([`alert_metrics`]), which
//! organisations got their default alert rules ([`alert_rule_defaults`])
//! and alert rules' names ([`alert_rule_names`]). SQL lives under `db/`
//! only.

pub mod alert_metrics;
pub mod alert_rule_defaults;
pub mod alert_rule_names;
pub mod alerts;
pub mod api_keys;
pub mod audit;
pub mod batches;
pub mod bulk;
mod chunks;
pub mod cron_ticks;
pub mod delivery_reports;
pub mod delivery_rollups;
pub mod errors;
pub mod events;
pub mod failed_work;
pub mod fleet;
pub mod group_counts;
pub mod inbox;
pub mod invitations;
pub mod jwt_secrets;
pub mod limits;
pub mod locks;
pub mod login_throttle;
pub mod lookups;
pub mod notifications;
pub mod ops_actions;
pub mod ops_search;
pub mod organizations;
pub mod permissions;
pub mod preferences;
pub mod provider_events;
pub mod providers;
pub mod queue_ops;
pub mod quota_notices;
pub mod report_schedules;
pub mod report_templates;
pub mod scope;
pub mod sealed;
pub mod security_events;
pub mod send_windows;
pub mod sessions;
pub mod shipments;
pub mod subscribers;
pub mod templates;
pub mod tenants;
pub mod topics;
pub mod users;
pub mod webhooks;
pub mod workflow_runs;
pub mod workflows;

use std::time::Duration;

use secrecy::ExposeSecret;
use sqlx::{
    Connection, PgConnection, PgPool, Postgres,
    migrate::Migrator,
    postgres::{PgConnectOptions, PgPoolOptions, PgRow, PgSslMode},
};

use crate::{config::Settings, domain::TenantId};

/// The schema migrations, embedded at build time.
pub static MIGRATOR: Migrator = sqlx::migrate!("../migrations");

/// Opens the connection pool; `fallback` is the scope of database work in
/// a task without one ([`scope::Fallback`]).
pub async fn connect(
    settings: &Settings,
    fallback: scope::Fallback,
) -> Result<PgPool, sqlx::Error> {
    connect_url(
        settings.database_url.expose_secret(),
        settings.database_max_connections,
        fallback,
    )
    .await
}

/// Opens a pool on `url` with at most `max` connections.
///
/// Each connection acts as `notify_app` when the login role would bypass
/// row-level security (a superuser or a `BYPASSRLS` role; see
/// [`enter_app_role`]), and carries the [`scope`] of the task that acquires
/// it, or `fallback`'s for a task without one. Setting the scope replaces
/// the pool's liveness ping: one round trip per acquire either way.
pub async fn connect_url(
    url: &str,
    max: u32,
    fallback: scope::Fallback,
) -> Result<PgPool, sqlx::Error> {
    fallback.declare();
    PgPoolOptions::new()
        .max_connections(max)
        .acquire_timeout(Duration::from_secs(5))
        .test_before_acquire(false)
        .after_connect(move |conn, _| {
            Box::pin(async move {
                enter_app_role(&mut *conn).await?;
                apply_scope(conn, fallback).await
            })
        })
        .before_acquire(move |conn, _| {
            Box::pin(async move { apply_scope(conn, fallback).await.map(|()| true) })
        })
        .connect_with(connect_options(url)?)
        .await
}

/// The role the application acts as; it owns nothing and cannot bypass
/// row-level security.
pub const APP_ROLE: &str = "notify_app";

/// Switches the session to [`APP_ROLE`] when its login role would bypass
/// row-level security (a superuser or `BYPASSRLS`) and the role exists (the
/// first migration of a new cluster creates it). A login role that may not
/// become it is refused here rather than left bypassing the wall. Any other
/// login role stays itself: tables it owns are walled by `FORCE ROW LEVEL
/// SECURITY`.
pub async fn enter_app_role(conn: &mut PgConnection) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "select set_config('role', $1, false)
         from pg_roles r
         where r.rolname = current_user and (r.rolsuper or r.rolbypassrls)
           and exists (select 1 from pg_roles a where a.rolname = $1)",
        APP_ROLE,
    )
    .fetch_optional(conn)
    .await?;
    Ok(())
}

/// Writes the current task's [`scope`] (or `fallback`'s) into the session
/// (`app.tenant_id`).
async fn apply_scope(
    conn: &mut PgConnection,
    fallback: scope::Fallback,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "select set_config('app.tenant_id', $1, false)",
        scope::effective(fallback).setting(),
    )
    .fetch_one(conn)
    .await?;
    Ok(())
}

/// The connection options `url` gives, with one change: a Postgres on this
/// machine (loopback or a Unix socket) is reached without TLS unless the URL
/// asks for it with `sslmode`. The client's default (`prefer`) would
/// otherwise encrypt every byte to a server on the same host, which costs
/// CPU and protects nothing.
pub fn connect_options(url: &str) -> Result<PgConnectOptions, sqlx::Error> {
    let options: PgConnectOptions = url.parse()?;
    let asks_for_tls = url::Url::parse(url).is_ok_and(|u| {
        u.query_pairs()
            .any(|(k, _)| k.eq_ignore_ascii_case("sslmode") || k.eq_ignore_ascii_case("ssl-mode"))
    });
    let host = options.get_host();
    let local = options.get_socket().is_some()
        || host.starts_with('/')
        || matches!(host, "localhost" | "127.0.0.1" | "::1" | "[::1]")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    Ok(if local && !asks_for_tls {
        options.ssl_mode(PgSslMode::Disable)
    } else {
        options
    })
}

/// Makes the transaction read from one snapshot, read-only: what it reads
/// in several statements agrees, whatever commits meanwhile.
pub async fn read_snapshot(tx: &mut PgConnection) -> Result<(), sqlx::Error> {
    sqlx::query!("set transaction isolation level repeatable read, read only")
        .execute(tx)
        .await?;
    Ok(())
}

/// Answers when Postgres does (the readiness probe).
pub async fn ping(db: impl sqlx::PgExecutor<'_>) -> Result<(), sqlx::Error> {
    sqlx::query!("select 1 as one").fetch_one(db).await?;
    Ok(())
}

/// How many rows of `tenant_id` `table` holds.
pub(crate) async fn count_owned(
    db: impl sqlx::PgExecutor<'_>,
    table: &str,
    tenant_id: TenantId,
) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(&format!(
        "select count(*) from {table} where tenant_id = $1"
    ))
    .bind(tenant_id)
    .fetch_one(db)
    .await
}

/// The row `id` of `tenant_id` in `table`, read as `columns`: for the
/// aggregates whose rows are addressed by their organisation and id.
pub(crate) async fn get_owned<T, I>(
    db: impl sqlx::PgExecutor<'_>,
    columns: &str,
    table: &str,
    tenant_id: TenantId,
    id: I,
) -> Result<Option<T>, sqlx::Error>
where
    T: for<'r> sqlx::FromRow<'r, PgRow> + Send + Unpin,
    I: for<'q> sqlx::Encode<'q, Postgres> + sqlx::Type<Postgres> + Send,
{
    get_owned_by(db, columns, table, tenant_id, "id", id).await
}

/// The row of `tenant_id` in `table` whose `key` column holds `value`
/// (unique in the organisation), read as `columns`.
pub(crate) async fn get_owned_by<T, V>(
    db: impl sqlx::PgExecutor<'_>,
    columns: &str,
    table: &str,
    tenant_id: TenantId,
    key: &str,
    value: V,
) -> Result<Option<T>, sqlx::Error>
where
    T: for<'r> sqlx::FromRow<'r, PgRow> + Send + Unpin,
    V: for<'q> sqlx::Encode<'q, Postgres> + sqlx::Type<Postgres> + Send,
{
    sqlx::query_as(&format!(
        "select {columns} from {table} where tenant_id = $1 and {key} = $2"
    ))
    .bind(tenant_id)
    .bind(value)
    .fetch_optional(db)
    .await
}

/// Up to `limit` rows of `tenant_id` in `table`, read as `columns`, in the
/// order of their `key` (unique in the organisation), after the key
/// `after` when given.
pub(crate) async fn page_by_key<T>(
    db: impl sqlx::PgExecutor<'_>,
    columns: &str,
    table: &str,
    tenant_id: TenantId,
    after: Option<&str>,
    limit: i64,
) -> Result<Vec<T>, sqlx::Error>
where
    T: for<'r> sqlx::FromRow<'r, PgRow> + Send + Unpin,
{
    sqlx::query_as(&format!(
        "select {columns} from {table}
         where tenant_id = $1 and ($2::text is null or key > $2)
         order by key limit $3"
    ))
    .bind(tenant_id)
    .bind(after)
    .bind(limit)
    .fetch_all(db)
    .await
}

/// The status of the row `id` of `tenant_id` in `table`: what a refused
/// change of it reports.
pub(crate) async fn status_owned<T, I>(
    db: impl sqlx::PgExecutor<'_>,
    table: &str,
    tenant_id: TenantId,
    id: I,
) -> Result<Option<T>, sqlx::Error>
where
    T: for<'r> sqlx::Decode<'r, Postgres> + sqlx::Type<Postgres> + Send + Unpin,
    I: for<'q> sqlx::Encode<'q, Postgres> + sqlx::Type<Postgres> + Send,
{
    sqlx::query_scalar(&format!(
        "select status from {table} where tenant_id = $1 and id = $2"
    ))
    .bind(tenant_id)
    .bind(id)
    .fetch_optional(db)
    .await
}

/// Deletes the row of `tenant_id` from `table` whose `key` column holds
/// `value` (unique in the organisation); false when there was none.
pub(crate) async fn delete_owned_by<V>(
    db: impl sqlx::PgExecutor<'_>,
    table: &str,
    tenant_id: TenantId,
    key: &str,
    value: V,
) -> Result<bool, sqlx::Error>
where
    V: for<'q> sqlx::Encode<'q, Postgres> + sqlx::Type<Postgres> + Send,
{
    let done = sqlx::query(&format!(
        "delete from {table} where tenant_id = $1 and {key} = $2"
    ))
    .bind(tenant_id)
    .bind(value)
    .execute(db)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Marks the rows `ids` of `tenants` in `table` that are `waiting` (an SQL
/// condition on the row) as not in Redis: their push failed, the window was
/// full, or a worker handed their job back, so the dispatcher's next sweep
/// pushes them. For the tables of queued work (see [`crate::outbox`]).
pub(crate) async fn release_dispatched<I>(
    db: impl sqlx::PgExecutor<'_>,
    table: &str,
    waiting: &str,
    tenants: &[TenantId],
    ids: I,
) -> Result<(), sqlx::Error>
where
    I: for<'q> sqlx::Encode<'q, Postgres> + sqlx::Type<Postgres> + Send,
{
    sqlx::query(&format!(
        "update {table} set dispatched_at = null
         where tenant_id = any($1) and id = any($2) and {waiting}"
    ))
    .bind(tenants)
    .bind(ids)
    .execute(db)
    .await?;
    Ok(())
}

/// Forgets which `waiting` rows of `table` (an SQL condition on the row)
/// were pushed, after Redis lost its data, so the next sweep pushes them
/// again; returns how many. Works across tenants.
pub(crate) async fn forget_dispatched(
    db: impl sqlx::PgExecutor<'_>,
    table: &str,
    waiting: &str,
) -> Result<u64, sqlx::Error> {
    let done = sqlx::query(&format!(
        "update {table} set dispatched_at = null where {waiting} and dispatched_at is not null"
    ))
    .execute(db)
    .await?;
    Ok(done.rows_affected())
}

/// Declares the functions of a module over rows of one organisation's
/// table, addressed by the organisation and a column unique in it (`id`, or
/// a text `key`), each with its own doc comment:
///
/// - `count`: how many rows the organisation has ([`count_owned`]);
/// - `get -> Row, COLUMNS`: one row, read as `COLUMNS` ([`get_owned_by`]);
/// - `delete`: deletes one row; false when there was none
///   ([`delete_owned_by`]);
/// - `list -> Row, COLUMNS` (by a text `key` only): up to `limit` rows in
///   key order, after the key `after` ([`page_by_key`]).
///
/// ```ignore
/// super::owned_rows! {
///     "webhook_endpoints", id: Uuid;
///     /// One endpoint of `tenant_id`.
///     get -> Endpoint, COLUMNS;
///     /// Deletes an endpoint and its deliveries.
///     delete;
/// }
/// ```
macro_rules! owned_rows {
    ($table:literal, $by:ident: $by_ty:ty;
     $($(#[$doc:meta])* $kind:ident $(-> $row:ty, $columns:expr)?;)*) => {
        $($crate::db::owned_rows!(@fn $table, $by, $by_ty, $(#[$doc])* $kind $(-> $row, $columns)?);)*
    };
    (@fn $table:literal, $by:ident, $by_ty:ty, $(#[$doc:meta])* count) => {
        $(#[$doc])*
        #[tracing::instrument(skip_all)]
        pub async fn count(
            db: impl sqlx::PgExecutor<'_>,
            tenant_id: $crate::domain::TenantId,
        ) -> Result<i64, sqlx::Error> {
            $crate::db::count_owned(db, $table, tenant_id).await
        }
    };
    (@fn $table:literal, $by:ident, $by_ty:ty, $(#[$doc:meta])* get -> $row:ty, $columns:expr) => {
        $(#[$doc])*
        #[tracing::instrument(skip_all)]
        pub async fn get(
            db: impl sqlx::PgExecutor<'_>,
            tenant_id: $crate::domain::TenantId,
            $by: $by_ty,
        ) -> Result<Option<$row>, sqlx::Error> {
            $crate::db::get_owned_by(db, $columns, $table, tenant_id, stringify!($by), $by).await
        }
    };
    (@fn $table:literal, $by:ident, $by_ty:ty, $(#[$doc:meta])* delete) => {
        $(#[$doc])*
        #[tracing::instrument(skip_all)]
        pub async fn delete(
            db: impl sqlx::PgExecutor<'_>,
            tenant_id: $crate::domain::TenantId,
            $by: $by_ty,
        ) -> Result<bool, sqlx::Error> {
            $crate::db::delete_owned_by(db, $table, tenant_id, stringify!($by), $by).await
        }
    };
    (@fn $table:literal, key, $by_ty:ty, $(#[$doc:meta])* list -> $row:ty, $columns:expr) => {
        $(#[$doc])*
        #[tracing::instrument(skip_all)]
        pub async fn list(
            db: impl sqlx::PgExecutor<'_>,
            tenant_id: $crate::domain::TenantId,
            after: Option<&str>,
            limit: i64,
        ) -> Result<Vec<$row>, sqlx::Error> {
            $crate::db::page_by_key(db, $columns, $table, tenant_id, after, limit).await
        }
    };
}
pub(crate) use owned_rows;

/// Applies every pending migration; safe to run from several processes.
///
/// Migrations change tables, which only their owner may do, so they run on
/// a connection of their own as the login role (never [`APP_ROLE`]), in
/// platform scope so that data they move is not hidden by the wall. Idle
/// pool connections opened before the migrations created [`APP_ROLE`] are
/// switched to it afterwards.
pub async fn migrate(pool: &PgPool) -> Result<(), sqlx::migrate::MigrateError> {
    let mut conn = PgConnection::connect_with(&pool.connect_options()).await?;
    sqlx::query!(
        "select set_config('app.tenant_id', $1, false)",
        scope::PLATFORM,
    )
    .fetch_one(&mut conn)
    .await?;
    let applied = MIGRATOR.run(&mut conn).await;
    let _ = conn.close().await;
    applied?;
    let mut idle = Vec::new();
    while let Some(c) = pool.try_acquire() {
        idle.push(c);
    }
    for mut c in idle {
        if enter_app_role(&mut c).await.is_err() {
            c.close_on_drop();
        }
    }
    Ok(())
}

/// The name of the constraint a database error violated, if any.
pub fn violated_constraint(err: &sqlx::Error) -> Option<&str> {
    match err {
        sqlx::Error::Database(db) => db.constraint(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(url: &str) -> String {
        format!("{:?}", connect_options(url).unwrap().get_ssl_mode())
    }

    #[test]
    fn a_local_postgres_is_reached_without_tls_unless_the_url_asks() {
        assert_eq!(mode("postgres://u@127.0.0.1:5432/db"), "Disable");
        assert_eq!(mode("postgres://u@localhost/db"), "Disable");
        assert_eq!(mode("postgres://u@[::1]:5432/db"), "Disable");
        assert_eq!(mode("postgres://u@127.0.0.1/db?sslmode=require"), "Require");
        assert_eq!(mode("postgres://u@db.internal:5432/db"), "Prefer");
    }
}
