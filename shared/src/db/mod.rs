//! Postgres access, one module per aggregate.
//!
//! Each function is a plain async fn over a `PgExecutor` (a pool or a
//! transaction) with its SQL beside it. Tenant-owned data is always read and
//! written with the tenant id as the first argument, so no query can cross
//! tenants by accident. Functions that work across tenants (the dispatcher's
//! sweeps, maintenance) say so in their names and docs.

pub mod api_keys;
pub mod audit;
pub mod batches;
pub mod bulk;
pub mod cron_ticks;
pub mod events;
pub mod inbox;
pub mod invitations;
pub mod jwt_secrets;
pub mod locks;
pub mod notifications;
pub mod organizations;
pub mod preferences;
pub mod provider_events;
pub mod providers;
pub mod sealed;
pub mod shipments;
pub mod subscribers;
pub mod templates;
pub mod tenants;
pub mod users;
pub mod webhooks;

use std::time::Duration;

use secrecy::ExposeSecret;
use sqlx::{PgPool, migrate::Migrator, postgres::PgPoolOptions};

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
        .connect(url)
        .await
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
