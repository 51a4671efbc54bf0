//! Postgres access, one module per aggregate.
//!
//! Each function is a plain async fn over a `PgExecutor` (a pool or a
//! transaction) with its SQL beside it. Tenant-owned data is always read and
//! written with the tenant id as the first argument, so no query can cross
//! tenants by accident. Functions that work across tenants (the dispatcher's
//! sweeps, maintenance) say so in their names and docs.

pub mod alerts;
pub mod api_keys;
pub mod audit;
pub mod batches;
pub mod bulk;
pub mod cron_ticks;
pub mod errors;
pub mod events;
pub mod failed_work;
pub mod fleet;
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
    PgPool,
    migrate::Migrator,
    postgres::{PgConnectOptions, PgPoolOptions, PgSslMode},
};

use crate::config::Settings;

/// The schema migrations, embedded at build time.
pub static MIGRATOR: Migrator = sqlx::migrate!("../migrations");

/// Opens the connection pool.
pub async fn connect(settings: &Settings) -> Result<PgPool, sqlx::Error> {
    connect_url(
        settings.database_url.expose_secret(),
        settings.database_max_connections,
    )
    .await
}

/// Opens a pool on `url` with at most `max` connections.
pub async fn connect_url(url: &str, max: u32) -> Result<PgPool, sqlx::Error> {
    PgPoolOptions::new()
        .max_connections(max)
        .acquire_timeout(Duration::from_secs(5))
        .connect_with(connect_options(url)?)
        .await
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

/// Applies every pending migration; safe to run from several processes.
pub async fn migrate(pool: &PgPool) -> Result<(), sqlx::migrate::MigrateError> {
    MIGRATOR.run(pool).await
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
