//! Session-level advisory locks, for work that one process at a time should
//! do (one dispatcher per queue). A lock dies with its connection, so a
//! crashed holder never blocks the others.

use sqlx::PgConnection;

/// The lock keys in use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockKey {
    /// Dispatching one queue.
    Dispatch(u16),
}

impl LockKey {
    fn id(self) -> i64 {
        match self {
            // "disp" in ASCII, then the queue's number.
            LockKey::Dispatch(n) => (0x6469_7370_i64 << 16) | i64::from(n),
        }
    }
}

/// Takes the lock if it is free; true when this connection now holds it.
pub async fn try_lock(conn: &mut PgConnection, key: LockKey) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar!(r#"select pg_try_advisory_lock($1) as "locked!""#, key.id())
        .fetch_one(conn)
        .await
}

/// Releases a lock this connection holds.
pub async fn unlock(conn: &mut PgConnection, key: LockKey) -> Result<(), sqlx::Error> {
    sqlx::query_scalar!(r#"select pg_advisory_unlock($1) as "unlocked!""#, key.id())
        .fetch_one(conn)
        .await?;
    Ok(())
}
