//! The statements every delivery job makes, asked together with those of
//! the jobs running beside it (see [`crate::coalesce`]): the tenant's
//! providers and webhook subscriptions, its send rules (kept for
//! [`RULES_TTL`]), the claim, the claim checks before
//! the providers are called, and the outcomes. Each keeps its rules: a
//! row is claimed by one job only (the one that asked first, when two jobs
//! carry it), a check is read after it was asked, an outcome is written
//! only while its claim holds, and writes wait for Postgres as long as
//! their askers would have.

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
    time::Duration,
};

use shared::{
    cache::TtlCache,
    config::JobsConfig,
    crypto::Keyring,
    db::{
        notifications::{self, Claimed, GroupAttempt, Outcome},
        webhooks,
    },
    domain::{Channel, NotificationId, TenantId},
    jobs::QueueName,
    send_windows::SendRules,
};
use sqlx::PgPool;
use tokio::time::Instant;

use crate::{
    coalesce::Coalesce,
    jobs::persist,
    providers::chain::{self, LoadError, Provider},
};

/// Questions of one key answered by one statement at most.
const AT_MOST: usize = 64;

/// Statements of one kind running at once (each holds a connection).
const IN_FLIGHT: usize = 2;

/// How long an organisation's send rules (time zone, send windows) are used
/// before they are read again: a change to its settings reaches deliveries
/// within this.
pub const RULES_TTL: Duration = Duration::from_secs(10);

/// Organisations whose send rules are kept at once.
const RULES_KEPT: usize = 10_000;

/// What a job reads before it claims: its providers and the webhook events
/// its tenant listens for.
pub type Setup = (Vec<Provider>, Vec<String>);

/// A job's claim checks (row and attempt), and until when it waits for an
/// answer.
pub type Checks = (Vec<(NotificationId, i32)>, Instant);

/// One attempt to record, owned.
#[derive(Debug, Clone)]
pub struct Attempt {
    /// The notification.
    pub id: NotificationId,
    /// The attempt number its claim returned.
    pub attempt: i32,
    /// The provider that answered last.
    pub provider: String,
    /// How long the delivery took.
    pub latency: Duration,
    /// The worker's name.
    pub worker: String,
    /// The provider's status code.
    pub code: Option<u16>,
    /// How it ended.
    pub outcome: Outcome,
}

/// Gives back at once, unattempted, rows claimed for a job that was gone
/// before the claim was answered, waiting for Postgres while their lease
/// lasts (then the lease sweep puts them back).
async fn give_back_unheard(pool: PgPool, tenant_id: TenantId, lease: Duration, rows: Vec<Claimed>) {
    let until = Instant::now() + lease;
    let ids: Vec<NotificationId> = rows.iter().map(|r| r.id).collect();
    let attempts: Vec<i32> = rows.iter().map(|r| r.attempts).collect();
    let released = persist::patiently("release", until, || {
        notifications::release(&pool, tenant_id, &ids, &attempts)
    })
    .await;
    match released {
        Ok(n) => tracing::warn!(
            %tenant_id,
            released = n,
            "a job was gone before its claim was answered; gave its rows back"
        ),
        Err(error) => tracing::error!(
            %tenant_id,
            error = &error as &dyn std::error::Error,
            "cannot give back the rows of a job gone before its claim was answered; they wait for their lease"
        ),
    }
}

/// The delivery statements of this process, asked together.
#[derive(Debug)]
pub struct Together {
    setup: Coalesce<(TenantId, Channel), (), Setup>,
    rules: Coalesce<TenantId, (), Arc<SendRules>>,
    known_rules: TtlCache<TenantId, Arc<SendRules>>,
    claims: Coalesce<(TenantId, Duration), Vec<NotificationId>, Vec<Claimed>>,
    checks: Coalesce<TenantId, Checks, HashSet<NotificationId>>,
    records: Coalesce<TenantId, (Vec<Attempt>, Instant), HashSet<NotificationId>>,
}

impl Together {
    /// Statements on `pool`; providers' credentials open with `keyring`
    /// and their default rates come from `jobs`. Within a Tokio runtime.
    pub fn new(pool: PgPool, keyring: Option<Keyring>, jobs: JobsConfig) -> Self {
        let setup = {
            let pool = pool.clone();
            Coalesce::new(
                AT_MOST,
                IN_FLIGHT,
                move |(tenant_id, channel), asked: Vec<()>| {
                    let (pool, keyring) = (pool.clone(), keyring.clone());
                    let rate = jobs.queue(QueueName::for_channel(channel)).rate_limit;
                    async move {
                        let providers =
                            chain::load(&pool, keyring.as_ref(), tenant_id, channel, rate)
                                .await
                                .map_err(|LoadError::Db(e)| e)?;
                        let hooked = webhooks::subscribed_events(&pool, tenant_id).await?;
                        Ok(vec![(providers, hooked); asked.len()])
                    }
                },
            )
        };
        let rules = {
            let pool = pool.clone();
            Coalesce::new(AT_MOST, IN_FLIGHT, move |tenant_id, asked: Vec<()>| {
                let pool = pool.clone();
                async move {
                    // One read shared by every asker.
                    let rules = Arc::new(shared::db::send_windows::rules(&pool, tenant_id).await?);
                    Ok(asked.iter().map(|()| rules.clone()).collect())
                }
            })
        };
        let claims = {
            let pool = pool.clone();
            let unclaim = pool.clone();
            Coalesce::with_unheard(
                AT_MOST,
                IN_FLIGHT,
                move |(tenant_id, lease), asked: Vec<Vec<NotificationId>>| {
                    let pool = pool.clone();
                    async move {
                        let ids: Vec<NotificationId> = asked.iter().flatten().copied().collect();
                        let claimed = notifications::claim(&pool, tenant_id, &ids, lease).await?;
                        // Each row to the first job that asked for it.
                        let mut rows: HashMap<NotificationId, Claimed> =
                            claimed.into_iter().map(|c| (c.id, c)).collect();
                        Ok(asked
                            .iter()
                            .map(|ids| ids.iter().filter_map(|id| rows.remove(id)).collect())
                            .collect())
                    }
                },
                // A job that was gone before its claim was answered never
                // sends those rows: they go back at once, not at the end of
                // their lease.
                move |(tenant_id, lease), rows: Vec<Claimed>| {
                    if rows.is_empty() {
                        return;
                    }
                    let pool = unclaim.clone();
                    tokio::spawn(give_back_unheard(pool, tenant_id, lease, rows));
                },
            )
        };
        let checks = {
            let pool = pool.clone();
            Coalesce::new(AT_MOST, IN_FLIGHT, move |tenant_id, asked: Vec<Checks>| {
                let pool = pool.clone();
                async move {
                    // No asker waits past its own bound.
                    let until = asked.iter().map(|a| a.1).min().unwrap_or_else(Instant::now);
                    let (ids, attempts): (Vec<NotificationId>, Vec<i32>) =
                        asked.iter().flat_map(|a| a.0.iter().copied()).unzip();
                    let held: HashSet<NotificationId> =
                        persist::patiently("claim check", until, || {
                            notifications::still_claimed_of(&pool, tenant_id, &ids, &attempts)
                        })
                        .await?
                        .into_iter()
                        .collect();
                    Ok(asked
                        .iter()
                        .map(|a| {
                            a.0.iter()
                                .map(|q| q.0)
                                .filter(|id| held.contains(id))
                                .collect()
                        })
                        .collect())
                }
            })
        };
        let records = Coalesce::new(
            AT_MOST,
            IN_FLIGHT,
            move |tenant_id, asked: Vec<(Vec<Attempt>, Instant)>| {
                let pool = pool.clone();
                async move {
                    // As long as the most patient asker would have waited.
                    let until = asked.iter().map(|a| a.1).max().unwrap_or_else(Instant::now);
                    let attempts: Vec<GroupAttempt<'_>> = asked
                        .iter()
                        .flat_map(|a| a.0.iter())
                        .map(|a| GroupAttempt {
                            id: a.id,
                            record: notifications::AttemptRecord {
                                attempt: a.attempt,
                                provider: &a.provider,
                                latency: a.latency,
                                worker: &a.worker,
                                code: a.code,
                            },
                            outcome: &a.outcome,
                        })
                        .collect();
                    let written: HashSet<NotificationId> =
                        persist::patiently("outcome", until, || {
                            notifications::record_attempts(&pool, tenant_id, &attempts)
                        })
                        .await?
                        .into_iter()
                        .collect();
                    Ok(asked
                        .iter()
                        .map(|a| {
                            a.0.iter()
                                .map(|r| r.id)
                                .filter(|id| written.contains(id))
                                .collect()
                        })
                        .collect())
                }
            },
        );
        Self {
            setup,
            rules,
            known_rules: TtlCache::new(RULES_TTL, RULES_KEPT),
            claims,
            checks,
            records,
        }
    }

    /// The providers of `channel` and the webhook events of the tenant.
    pub async fn setup(
        &self,
        tenant_id: TenantId,
        channel: Channel,
    ) -> Result<Setup, Arc<sqlx::Error>> {
        self.setup.ask((tenant_id, channel), ()).await
    }

    /// The organisation's send rules, read at most every [`RULES_TTL`].
    pub async fn rules(&self, tenant_id: TenantId) -> Result<Arc<SendRules>, Arc<sqlx::Error>> {
        if let Some(rules) = self.known_rules.get(&tenant_id) {
            return Ok(rules);
        }
        let rules = self.rules.ask(tenant_id, ()).await?;
        self.known_rules.insert(tenant_id, rules.clone());
        Ok(rules)
    }

    /// Claims the due rows among `ids` for `lease` ([`notifications::claim`]).
    pub async fn claim(
        &self,
        tenant_id: TenantId,
        ids: Vec<NotificationId>,
        lease: Duration,
    ) -> Result<Vec<Claimed>, Arc<sqlx::Error>> {
        self.claims.ask((tenant_id, lease), ids).await
    }

    /// Of the rows `asked` (id and attempt), those still held
    /// ([`notifications::still_claimed_of`]), waiting for Postgres until
    /// `until`.
    pub async fn still_claimed(
        &self,
        tenant_id: TenantId,
        asked: Vec<(NotificationId, i32)>,
        until: Instant,
    ) -> Result<HashSet<NotificationId>, Arc<sqlx::Error>> {
        self.checks.ask(tenant_id, (asked, until)).await
    }

    /// Records `attempts` ([`notifications::record_attempts`]), waiting for
    /// Postgres until `until`; returns the rows written.
    pub async fn record(
        &self,
        tenant_id: TenantId,
        attempts: Vec<Attempt>,
        until: Instant,
    ) -> Result<HashSet<NotificationId>, Arc<sqlx::Error>> {
        self.records.ask(tenant_id, (attempts, until)).await
    }
}
