//! The workflow runner: on every scheduler tick it wakes the runs whose
//! watched notification reached its status (queued by a trigger on the
//! notification's update, so a tick costs nothing per waiting run), then
//! claims due runs
//! one at a time (`for update skip locked`, so schedulers side by side
//! split them) and executes their steps.
//!
//! Exactly once: a run's row stays locked from its claim until the
//! transaction that executed its step(s) and moved it on commits; every
//! executed step is recorded under the primary key `(run, step)` before it
//! acts, and a send step only inserts notifications in that same
//! transaction (the dispatcher feeds them to the channel queues after the
//! commit). Nothing leaves the process before the commit, so no lease is
//! needed: a runner killed mid-step rolls back and the run is claimed again.
//!
//! Sends go through the platform's send path: notification rows born
//! undispatched, so the workers apply the subscriber's preferences, quiet
//! hours and the organisation's send windows when they claim them. Each
//! channel's notifications are charged to the organisation's send quotas
//! (the same Redis counters the API's sends use) before they are inserted;
//! a channel over quota is skipped, and the step's detail names the quota.
//!
//! `now` is an argument everywhere, so tests move time.

use std::sync::Arc;

use anyhow::Context;
use chrono::{DateTime, Duration, Utc};
use redis::aio::ConnectionManager;
use serde_json::json;
use shared::quotas::Charged;
use shared::{
    config::JobsConfig,
    db::{
        notifications::{self, Inserted, NewNotification},
        workflow_runs::{self as runs, Claimed, Executed, Next},
    },
    domain::Channel,
    jobs::QueueName,
    workflows::{self, Condition, END, OnLimit, Step, StepKind, WaitOn},
};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

/// Most runs one [`Runner::advance`] call executes, so a tick stays short.
const RUNS_PER_TICK: usize = 500;
/// How often the scheduler's runner looks for due runs.
pub const INTERVAL: std::time::Duration = std::time::Duration::from_millis(500);

/// How long a quota charge may wait for Redis before the send goes
/// uncounted.
const QUOTA_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// Executes due workflow steps.
#[derive(Clone)]
pub struct Runner {
    pool: PgPool,
    jobs: Arc<JobsConfig>,
    quotas: Option<(ConnectionManager, String)>,
}

impl std::fmt::Debug for Runner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runner")
            .field("quotas", &self.quotas.as_ref().map(|(_, prefix)| prefix))
            .finish_non_exhaustive()
    }
}

impl Runner {
    /// A runner on `pool`; `jobs` gives each channel's attempts.
    pub fn new(pool: PgPool, jobs: JobsConfig) -> Self {
        Self {
            pool,
            jobs: Arc::new(jobs),
            quotas: None,
        }
    }

    /// Charges send steps to the organisations' send quotas, counted in
    /// Redis on `conn` under the deployment's `prefix` (as the API counts
    /// them). Without it nothing is counted.
    pub fn with_quotas(mut self, conn: ConnectionManager, prefix: &str) -> Self {
        self.quotas = Some((conn, prefix.to_owned()));
        self
    }

    /// Charges `add` notifications on `channel` to the run's organisation;
    /// `Some(why)` when a quota refuses them. While Redis does not answer,
    /// the send goes uncounted, as the API's do.
    async fn charge(
        &self,
        quotas: &[shared::db::limits::Quota],
        run: &Claimed,
        channel: Channel,
        add: u64,
        now: DateTime<Utc>,
    ) -> Option<String> {
        let (conn, prefix) = self.quotas.as_ref()?;
        let mut conn = conn.clone();
        let charged = tokio::time::timeout(
            QUOTA_TIMEOUT,
            shared::quotas::charge(&mut conn, prefix, run.tenant_id, quotas, channel, add, now),
        )
        .await;
        match charged {
            Ok(Ok(Charged::Counted)) => None,
            Ok(Ok(Charged::Refused { name, detail })) => {
                metrics::counter!("workflow_send_quota_refusals_total", "channel" => channel.as_str())
                    .increment(1);
                Some(format!("over the `{name}` quota: {detail}"))
            }
            Ok(Err(error)) => {
                metrics::counter!("send_quota_unavailable_total").increment(1);
                tracing::warn!(%error, "send quotas unavailable; the workflow send is not counted");
                None
            }
            Err(_) => {
                metrics::counter!("send_quota_unavailable_total").increment(1);
                tracing::warn!("send quotas timed out; the workflow send is not counted");
                None
            }
        }
    }

    /// Runs [`Runner::advance`] every [`INTERVAL`] on a task of its own, so
    /// a backlog of runs never delays the dispatcher or the cron ticks.
    /// Aborting the task rolls back the step it was executing.
    pub fn spawn(self) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(INTERVAL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                if let Err(error) = self.advance(Utc::now()).await {
                    tracing::warn!(
                        error = format!("{error:#}"),
                        "workflow runner failed; retrying"
                    );
                }
            }
        })
    }

    /// Wakes finished waits and executes every run due at `now` (at most
    /// [`RUNS_PER_TICK`]). Returns how many runs were moved on.
    pub async fn advance(&self, now: DateTime<Utc>) -> anyhow::Result<usize> {
        runs::wake_queued(&self.pool, now)
            .await
            .context("while waking runs whose wait is over")?;
        let mut done = 0;
        while done < RUNS_PER_TICK {
            let mut tx = self.pool.begin().await.context("while starting")?;
            let Some(run) = runs::claim_due(&mut tx, now)
                .await
                .context("while claiming a due run")?
            else {
                break;
            };
            let result = self.execute(&mut tx, &run, now).await;
            match result {
                Ok(()) => tx.commit().await.context("while committing a run's step")?,
                Err(error) => {
                    // The step rolls back; the run fails on its own, so
                    // one bad run does not hold back the others.
                    drop(tx);
                    tracing::error!(run_id = %run.id, error = format!("{error:#}"), "workflow step failed");
                    let mut tx = self.pool.begin().await?;
                    runs::advance(
                        &mut tx,
                        &run,
                        Next::Finish("failed", Some("an internal error stopped this step".into())),
                        now,
                    )
                    .await?;
                    tx.commit().await?;
                }
            }
            done += 1;
        }
        if done > 0 {
            metrics::counter!("workflow_runs_advanced_total").increment(done as u64);
        }
        Ok(done)
    }

    /// Executes `run`'s steps from its current one until it parks or ends.
    async fn execute(
        &self,
        tx: &mut PgConnection,
        run: &Claimed,
        now: DateTime<Utc>,
    ) -> anyhow::Result<()> {
        let steps = &run.steps.0;
        let mut current = run.clone();
        let mut seq = run.executed;
        loop {
            let Some(step) = steps.get(current.step as usize) else {
                runs::advance(tx, &current, Next::Finish("completed", None), now).await?;
                return Ok(());
            };
            let next = self.step(tx, &current, step, seq, now).await?;
            match next {
                Next::Step(i) => {
                    runs::advance(tx, &current, Next::Step(i), now).await?;
                    seq += 1;
                    current.step = i;
                    current.step_started_at = now;
                    current.wait_until = None;
                    current.wait_notifications = None;
                    current.wait_status = None;
                    current.digest_key = None;
                    if i as usize >= steps.len() {
                        runs::advance(tx, &current, Next::Finish("completed", None), now).await?;
                        return Ok(());
                    }
                }
                other => {
                    runs::advance(tx, &current, other, now).await?;
                    return Ok(());
                }
            }
        }
    }

    /// Executes one step; returns how the run moves on.
    async fn step(
        &self,
        tx: &mut PgConnection,
        run: &Claimed,
        step: &Step,
        seq: i64,
        now: DateTime<Utc>,
    ) -> anyhow::Result<Next> {
        let after = Next::Step(run.step + 1);
        let record = |outcome: &'static str, detail: Option<String>| Executed {
            key: &step.key,
            kind: kind_name(&step.kind),
            outcome,
            detail,
            notifications: Vec::new(),
        };
        match &step.kind {
            StepKind::Send {
                template,
                channels,
                to,
            } => {
                // Recorded first: a step already recorded never sends again.
                if !runs::record(tx, run, seq, &record("sent", None), now).await? {
                    return Ok(after);
                }
                // A later step waiting for this one's status: its
                // notifications are born watched.
                let watched = steps_wait_on(&run.steps.0, &step.key);
                let send = SendStep {
                    template,
                    channels,
                    to: to.as_deref(),
                    watched,
                };
                match self.send(tx, run, &send, now).await? {
                    Ok((ids, skipped)) => {
                        let outcome = if ids.is_empty() { "skipped" } else { "sent" };
                        let detail = (!skipped.is_empty()).then(|| skipped.join("; "));
                        runs::set_notifications(
                            tx,
                            run,
                            &step.key,
                            &ids,
                            outcome,
                            detail.as_deref(),
                        )
                        .await?;
                        Ok(after)
                    }
                    Err(why) => {
                        let why = format!("step `{}`: {why}", step.key);
                        runs::set_notifications(tx, run, &step.key, &[], "failed", Some(&why))
                            .await?;
                        Ok(Next::Finish("failed", Some(why)))
                    }
                }
            }
            StepKind::Delay(delay) => match run.wait_until {
                Some(until) if until <= now => {
                    runs::record(tx, run, seq, &record("done", None), now).await?;
                    Ok(after)
                }
                Some(until) => Ok(Next::Sleep {
                    until,
                    digest_key: None,
                    digest_items: None,
                }),
                None => {
                    let zone = self.zone(tx, run).await?;
                    match workflows::delay_end(delay, &run.payload.0, zone, now) {
                        Ok(until) if until <= now => {
                            runs::record(tx, run, seq, &record("done", None), now).await?;
                            Ok(after)
                        }
                        Ok(until) => Ok(Next::Sleep {
                            until,
                            digest_key: None,
                            digest_items: None,
                        }),
                        Err(why) => {
                            let why = format!("step `{}`: {why}", step.key);
                            runs::record(tx, run, seq, &record("failed", Some(why.clone())), now)
                                .await?;
                            Ok(Next::Finish("failed", Some(why)))
                        }
                    }
                }
            },
            StepKind::WaitFor { on, timeout_secs } => {
                let Some(until) = run.wait_until else {
                    let until = now + Duration::seconds(*timeout_secs);
                    return Ok(match on {
                        WaitOn::Status { step, status } => {
                            let ids = runs::step_of(&mut *tx, run, step)
                                .await?
                                .map(|(_, ids)| ids)
                                .unwrap_or_default();
                            if runs::watch(tx, run, &ids, status.as_str()).await? {
                                runs::record(tx, run, seq, &record("met", None), now).await?;
                                return Ok(after);
                            }
                            Next::Wait {
                                until,
                                notifications: Some(ids),
                                status: Some(status.as_str()),
                                event: None,
                            }
                        }
                        WaitOn::Event { event } => Next::Wait {
                            until,
                            notifications: None,
                            status: None,
                            event: Some(event.clone()),
                        },
                    });
                };
                let met = match on {
                    WaitOn::Status { status, .. } => {
                        runs::reached(
                            &mut *tx,
                            run.tenant_id,
                            run.wait_notifications.as_deref().unwrap_or_default(),
                            run.wait_status.as_deref().unwrap_or(status.as_str()),
                        )
                        .await?
                    }
                    WaitOn::Event { .. } => run.event_payload.is_some(),
                };
                if met {
                    runs::record(tx, run, seq, &record("met", None), now).await?;
                    Ok(after)
                } else if until <= now {
                    runs::record(tx, run, seq, &record("timed_out", None), now).await?;
                    Ok(after)
                } else {
                    Ok(Next::Park(until))
                }
            }
            StepKind::Branch { condition, then } => {
                let holds = match condition {
                    Condition::Outcome { step, outcome } => runs::step_of(&mut *tx, run, step)
                        .await?
                        .is_some_and(|(o, _)| &o == outcome),
                    Condition::Field { field, op, value } => {
                        workflows::compare(&run.payload.0, field, *op, value.as_ref())
                    }
                };
                let outcome = if holds { "taken" } else { "not_taken" };
                runs::record(tx, run, seq, &record(outcome, None), now).await?;
                if !holds {
                    return Ok(after);
                }
                if then == END {
                    return Ok(Next::Finish("completed", None));
                }
                let target = run.steps.0.iter().position(|s| &s.key == then);
                Ok(Next::Step(target.unwrap_or(run.steps.0.len()) as i32))
            }
            StepKind::Digest {
                window_secs,
                group_by,
            } => {
                if let Some(until) = run.wait_until {
                    if until > now {
                        return Ok(Next::Park(until));
                    }
                    let count = run
                        .digest_items
                        .as_ref()
                        .and_then(|d| d.0.as_array().map(Vec::len))
                        .unwrap_or(1);
                    let detail = Some(format!("{count} triggers collected"));
                    runs::record(tx, run, seq, &record("collected", detail), now).await?;
                    return Ok(after);
                }
                let group = group_by
                    .as_deref()
                    .and_then(|p| workflows::lookup(&run.payload.0, p))
                    .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_owned))
                    .unwrap_or_default();
                runs::lock(
                    tx,
                    &format!(
                        "digest:{}:{}:{}:{group}",
                        run.workflow_id, run.subscriber_id, run.step
                    ),
                )
                .await?;
                if let Some(collector) = runs::join_digest(tx, run, &group, now).await? {
                    let detail = Some(format!("collected by run {collector}"));
                    runs::record(tx, run, seq, &record("merged", detail), now).await?;
                    return Ok(Next::Finish("merged", None));
                }
                Ok(Next::Sleep {
                    until: now + Duration::seconds(*window_secs),
                    digest_key: Some(group),
                    digest_items: Some(json!([run.payload.0])),
                })
            }
            StepKind::Throttle {
                limit,
                window_secs,
                on_limit,
            } => {
                runs::lock(
                    tx,
                    &format!(
                        "throttle:{}:{}:{}",
                        run.workflow_id, run.subscriber_id, step.key
                    ),
                )
                .await?;
                let since = now - Duration::seconds(*window_secs);
                if runs::passed(&mut *tx, run, &step.key, since).await? < *limit {
                    runs::record(tx, run, seq, &record("passed", None), now).await?;
                    return Ok(after);
                }
                let into = match on_limit {
                    OnLimit::Merge => runs::merge_into_latest(tx, run, &step.key).await?,
                    OnLimit::Drop => None,
                };
                match into {
                    Some(other) => {
                        let detail = Some(format!("merged into run {other}"));
                        runs::record(tx, run, seq, &record("merged", detail), now).await?;
                        Ok(Next::Finish("merged", None))
                    }
                    None => {
                        let detail = Some(format!("over {limit} in {window_secs} s"));
                        runs::record(tx, run, seq, &record("dropped", detail), now).await?;
                        Ok(Next::Finish("dropped", None))
                    }
                }
            }
        }
    }

    /// The zone a local-time delay reads: the subscriber's, else the
    /// organisation's, else UTC.
    async fn zone(&self, tx: &mut PgConnection, run: &Claimed) -> anyhow::Result<chrono_tz::Tz> {
        let own = shared::db::subscribers::contacts(&mut *tx, run.tenant_id, run.subscriber_id)
            .await?
            .and_then(|c| c.timezone);
        if let Some(tz) = own {
            return Ok(tz);
        }
        let rules = shared::db::send_windows::rules(&mut *tx, run.tenant_id).await?;
        Ok(rules.timezone.unwrap_or(chrono_tz::UTC))
    }

    /// Renders `template` for each channel and inserts the notifications,
    /// undispatched. `Ok(Err(why))` when the run cannot go on (the template
    /// is gone or does not render with the payload); channels the
    /// subscriber cannot be reached on are skipped and named.
    async fn send(
        &self,
        tx: &mut PgConnection,
        run: &Claimed,
        step: &SendStep<'_>,
        now: DateTime<Utc>,
    ) -> anyhow::Result<Result<(Vec<Uuid>, Vec<String>), String>> {
        let SendStep {
            template,
            channels,
            to,
            watched,
        } = *step;
        let Some(stored) =
            shared::db::templates::get_by_key(&mut *tx, run.tenant_id, template).await?
        else {
            return Ok(Err(format!("the template `{template}` no longer exists")));
        };
        let prepared = shared::templates::Prepared::new(stored.template);
        let contacts =
            shared::db::subscribers::contacts(&mut *tx, run.tenant_id, run.subscriber_id)
                .await?
                .unwrap_or_default();
        let data = workflows::template_data(
            &run.payload.0,
            run.digest_items.as_ref().map(|d| &d.0),
            run.event_payload.as_ref().map(|e| &e.0),
        );
        let locale = contacts.locale.as_ref().map(|l| l.as_str().to_owned());
        let metadata = json!({"workflow": run.workflow_key, "workflow_run_id": run.id});
        let quotas = match self.quotas {
            Some(_) => shared::db::limits::quotas(&mut *tx, run.tenant_id).await?,
            None => Vec::new(),
        };
        let (mut ids, mut skipped) = (Vec::new(), Vec::new());
        for &channel in channels {
            // Push goes to each of the subscriber's devices, as a single
            // send's does; the other channels to one address.
            let recipients: Vec<String> = match (to, channel) {
                (Some(to), _) => vec![to.to_owned()],
                (None, Channel::InApp) => vec![run.external_id.clone()],
                (None, Channel::Email) => contacts
                    .email
                    .iter()
                    .map(|e| e.as_str().to_owned())
                    .collect(),
                (None, Channel::Sms) => contacts
                    .phone
                    .iter()
                    .map(|p| p.as_str().to_owned())
                    .collect(),
                (None, Channel::WhatsApp) => contacts
                    .whatsapp
                    .iter()
                    .map(|p| p.as_str().to_owned())
                    .collect(),
                (None, Channel::Push) => contacts
                    .push_tokens
                    .iter()
                    .map(|t| t.as_str().to_owned())
                    .collect(),
            };
            if recipients.is_empty() {
                let why = match channel {
                    Channel::Push => "the subscriber has no registered device",
                    _ => "the subscriber has no address",
                };
                skipped.push(format!("{}: {why}", channel.as_str()));
                continue;
            }
            let rendered = match prepared.render(channel, locale.as_deref(), &data) {
                Ok(r) => r,
                Err(e) => return Ok(Err(format!("template `{template}`: {e}"))),
            };
            if !quotas.is_empty()
                && let Some(why) = self
                    .charge(&quotas, run, channel, recipients.len() as u64, now)
                    .await
            {
                skipped.push(format!("{}: {why}", channel.as_str()));
                continue;
            }
            let content = rendered.content.to_stored();
            for recipient in &recipients {
                let inserted = notifications::insert(
                    tx,
                    run.tenant_id,
                    NewNotification {
                        channel,
                        recipient,
                        content: content.clone(),
                        metadata: metadata.clone(),
                        max_attempts: self
                            .jobs
                            .queue(QueueName::for_channel(channel))
                            .max_attempts,
                        idempotency: None,
                        // A fixed address is not the subscriber: their
                        // preferences do not hold it back.
                        subscriber_id: to.is_none().then_some(run.subscriber_id),
                        category: prepared.template().category(),
                        critical: prepared.template().critical(),
                        dispatched: false,
                        send_id: None,
                        run_at: None,
                        template_key: Some(prepared.template().key()),
                        waited_by_run: watched.then_some(run.id),
                    },
                )
                .await?;
                if let Inserted::Created(id) = inserted {
                    ids.push(id.0);
                }
            }
        }
        Ok(Ok((ids, skipped)))
    }
}

/// Whether a step of `steps` waits for the status of step `key`'s sends.
fn steps_wait_on(steps: &[Step], key: &str) -> bool {
    steps.iter().any(|s| {
        matches!(&s.kind, StepKind::WaitFor { on: WaitOn::Status { step, .. }, .. } if step == key)
    })
}

fn kind_name(kind: &StepKind) -> &'static str {
    match kind {
        StepKind::Send { .. } => "send",
        StepKind::Delay(_) => "delay",
        StepKind::WaitFor { .. } => "wait_for",
        StepKind::Branch { .. } => "branch",
        StepKind::Digest { .. } => "digest",
        StepKind::Throttle { .. } => "throttle",
    }
}

/// A send step as the runner takes it.
#[derive(Debug, Clone, Copy)]
struct SendStep<'a> {
    /// The template's key.
    template: &'a str,
    /// The channels, each a notification of its own.
    channels: &'a [Channel],
    /// A fixed address instead of the subscriber's.
    to: Option<&'a str>,
    /// Whether a later step waits on the notifications' status.
    watched: bool,
}
