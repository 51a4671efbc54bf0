//! Writes a job must not give up on.
//!
//! Once a provider has answered, its answer has to reach Postgres: a send
//! whose outcome is dropped stays `sending` until its lease runs out, and the
//! lease sweep then queues it again, so the person gets it twice and late.
//! [`patiently`] retries such a write while Postgres is unreachable or the
//! pool has no free connection, with a bounded backoff, until the claim's
//! lease ends. Only the write is repeated, never the call to the provider.
//!
//! If the process dies before the write lands, the lease sweep is still the
//! backstop (at least once, never lost).

use std::time::Duration;

use tokio::time::Instant;

/// The first pause between two tries of a write.
const FIRST_PAUSE: Duration = Duration::from_millis(100);

/// The longest pause between two tries of a write.
const LONGEST_PAUSE: Duration = Duration::from_secs(2);

/// Whether a write that failed this way may succeed if tried again: no
/// connection (refused, dropped, no free one in the pool within its acquire
/// timeout), the server restarting or out of connection slots, or a
/// serialization failure or deadlock. A statement Postgres refused for what
/// it says is not.
pub fn is_transient(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::PoolTimedOut
        | sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(e) => e.code().is_some_and(|code| {
            // 08: connection exception; 53: insufficient resources (too many
            // connections); 57P: the server is shutting down or starting;
            // 40001 / 40P01: serialization failure / deadlock.
            code.starts_with("08")
                || code.starts_with("53")
                || code.starts_with("57P")
                || code == "40001"
                || code == "40P01"
        }),
        _ => false,
    }
}

/// Runs the write `op` until it succeeds, fails for a reason trying again
/// cannot fix, or `until` (the end of the claim's lease) has passed. `what`
/// names the write in logs and in the `db_write_retries_total` metric; the
/// caller's span carries the ids (never a recipient or content). Logs a
/// warning when a write first has to wait, and how long it waited once it
/// lands.
pub async fn patiently<T, F, Fut>(
    what: &'static str,
    until: Instant,
    mut op: F,
) -> Result<T, sqlx::Error>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, sqlx::Error>>,
{
    let started = Instant::now();
    let mut pause = FIRST_PAUSE;
    let mut retries = 0u32;
    loop {
        match op().await {
            Ok(done) => {
                if retries > 0 {
                    tracing::info!(
                        what,
                        retries,
                        waited_ms = started.elapsed().as_millis() as u64,
                        "recorded after waiting for Postgres"
                    );
                }
                return Ok(done);
            }
            Err(error) if is_transient(&error) && Instant::now() + pause < until => {
                if retries == 0 {
                    tracing::warn!(
                        what,
                        error = &error as &dyn std::error::Error,
                        "cannot reach Postgres; holding the write and trying again"
                    );
                }
                retries += 1;
                metrics::counter!("db_write_retries_total", "what" => what).increment(1);
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(LONGEST_PAUSE);
            }
            Err(error) => return Err(error),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_write_is_tried_again_while_the_pool_is_exhausted() {
        let mut tries = 0;
        let done = patiently("test", Instant::now() + Duration::from_secs(60), || {
            tries += 1;
            let result = if tries < 4 {
                Err(sqlx::Error::PoolTimedOut)
            } else {
                Ok(tries)
            };
            async move { result }
        })
        .await;
        assert_eq!(done.unwrap(), 4);
    }

    #[tokio::test]
    async fn a_write_postgres_refuses_is_not_tried_again() {
        let mut tries = 0;
        let done: Result<(), _> =
            patiently("test", Instant::now() + Duration::from_secs(60), || {
                tries += 1;
                async { Err(sqlx::Error::RowNotFound) }
            })
            .await;
        assert!(matches!(done, Err(sqlx::Error::RowNotFound)));
        assert_eq!(tries, 1);
    }

    #[tokio::test]
    async fn a_write_gives_up_when_the_lease_ends() {
        let until = Instant::now() + Duration::from_secs(1);
        let done: Result<(), _> =
            patiently("test", until, || async { Err(sqlx::Error::PoolTimedOut) }).await;
        assert!(matches!(done, Err(sqlx::Error::PoolTimedOut)));
        assert!(Instant::now() <= until);
    }
}
