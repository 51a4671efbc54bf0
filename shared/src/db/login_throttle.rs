//! Failed sign-ins per key, for throttling: `account:<hash>` per sign-in
//! address (known or not, by the SHA-256 of the normalised address) and
//! `ip:<address>` per client. The policy (delays, thresholds, locks) is the
//! API's; this module stores its state. Times are the caller's clock, passed
//! in, never Postgres's `now()`, so tests can move time.

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use sqlx::{PgExecutor, Postgres, Transaction};

use crate::domain::{TenantId, UserId};

/// The key of a sign-in address: the same for every spelling that signs in
/// as the same user (case and surrounding blanks), whether a user has it or
/// not.
pub fn account_key(email: &str) -> String {
    let normalised = email.trim().to_lowercase();
    format!(
        "account:{}",
        hex::encode(Sha256::digest(normalised.as_bytes()))
    )
}

/// The key of a client address.
pub fn ip_key(ip: &str) -> String {
    format!("ip:{}", ip.chars().take(64).collect::<String>())
}

/// One key's state.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct State {
    /// The key.
    pub key: String,
    /// Failures in the current window.
    pub failures: i32,
    /// When the current window began.
    pub window_started_at: Option<DateTime<Utc>>,
    /// The last failure.
    pub last_failure_at: Option<DateTime<Utc>>,
    /// No attempt is checked before this (a growing delay).
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// Locked until then.
    pub locked_until: Option<DateTime<Utc>>,
    /// Locks so far (each doubles the next).
    pub locks: i32,
    /// The organisation of the user with this address, when known.
    pub tenant_id: Option<TenantId>,
    /// The user with this address, when known.
    pub user_id: Option<UserId>,
}

impl State {
    /// Until when an attempt is refused unchecked, if it is at `now`.
    pub fn blocked_until(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        [self.locked_until, self.next_attempt_at]
            .into_iter()
            .flatten()
            .filter(|t| *t > now)
            .max()
    }
}

/// The stored states of `keys` (absent keys have none).
#[tracing::instrument(skip_all)]
pub async fn states(db: impl PgExecutor<'_>, keys: &[String]) -> Result<Vec<State>, sqlx::Error> {
    sqlx::query_as!(
        State,
        r#"select key, failures, window_started_at, last_failure_at, next_attempt_at, locked_until, locks,
             tenant_id as "tenant_id: TenantId", user_id as "user_id: UserId"
         from login_throttle where key = any($1)"#,
        keys,
    )
    .fetch_all(db)
    .await
}

/// The state of `key`, locked until the transaction ends (a fresh one when
/// there was none).
#[tracing::instrument(skip_all)]
pub async fn lock(tx: &mut Transaction<'_, Postgres>, key: &str) -> Result<State, sqlx::Error> {
    sqlx::query!(
        "insert into login_throttle (key) values ($1) on conflict (key) do nothing",
        key,
    )
    .execute(&mut **tx)
    .await?;
    sqlx::query_as!(
        State,
        r#"select key, failures, window_started_at, last_failure_at, next_attempt_at, locked_until, locks,
             tenant_id as "tenant_id: TenantId", user_id as "user_id: UserId"
         from login_throttle where key = $1 for update"#,
        key,
    )
    .fetch_one(&mut **tx)
    .await
}

/// Stores `state`.
#[tracing::instrument(skip_all)]
pub async fn save(db: impl PgExecutor<'_>, s: &State) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "update login_throttle set failures = $2, window_started_at = $3, last_failure_at = $4,
            next_attempt_at = $5, locked_until = $6, locks = $7,
            tenant_id = coalesce($8, tenant_id), user_id = coalesce($9, user_id)
         where key = $1",
        s.key,
        s.failures,
        s.window_started_at,
        s.last_failure_at,
        s.next_attempt_at,
        s.locked_until,
        s.locks,
        s.tenant_id as _,
        s.user_id.map(|u| u.0),
    )
    .execute(db)
    .await?;
    Ok(())
}

/// Forgets `key` (a successful sign-in, an admin's unlock); the state it
/// had, if any.
#[tracing::instrument(skip_all)]
pub async fn clear(db: impl PgExecutor<'_>, key: &str) -> Result<Option<State>, sqlx::Error> {
    sqlx::query_as!(
        State,
        r#"delete from login_throttle where key = $1
         returning key, failures, window_started_at, last_failure_at, next_attempt_at, locked_until, locks,
             tenant_id as "tenant_id: TenantId", user_id as "user_id: UserId""#,
        key,
    )
    .fetch_optional(db)
    .await
}

/// Deletes up to `limit` keys whose last failure is older than `before` and
/// that are no longer locked at `now`, so addresses tried once do not pile
/// up.
#[tracing::instrument(skip_all)]
pub async fn prune(
    db: impl PgExecutor<'_>,
    before: DateTime<Utc>,
    now: DateTime<Utc>,
    limit: i64,
) -> Result<u64, sqlx::Error> {
    let done = sqlx::query!(
        "delete from login_throttle where key in (
            select key from login_throttle
            where last_failure_at < $1 and (locked_until is null or locked_until <= $2)
            limit $3 for update skip locked)",
        before,
        now,
        limit,
    )
    .execute(db)
    .await?;
    Ok(done.rows_affected())
}
