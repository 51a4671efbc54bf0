//! Concurrent sends share one commit and one push.
//!
//! A send that needs nothing of its own in its transaction (no
//! `Idempotency-Key`, no `send_at`) hands its rows to the [`Acceptor`]. A
//! few flushers each take whatever sends are waiting, up to [`MAX_ROWS`],
//! insert them in one statement, commit once, answer every caller, and
//! hand the commit's Redis work (one delivery job per tenant and channel, up
//! to the dispatcher's group size, and the real-time events) to their own
//! publisher, which does it in commit order while the flusher goes on with
//! the next transaction. The in-app rows' owners are found by external id (and
//! created when new) and locked in one statement per tenant for the whole
//! group, not looked up per send; rows that leave nothing to decide are
//! written once, already in their inboxes, and their real-time events are
//! counted, numbered and written in one more statement of the same
//! transaction (see [`places_inapp_now`]). Nothing
//! waits for company: a flusher takes what is there when it is free, so a
//! lone send is committed at once, and under load the sends that arrived
//! while the previous commit was in flight go in the next one.
//!
//! A 202 still means committed: each caller is answered after the commit.
//! It does not mean pushed, as it never did (a push can fail): rows whose
//! push did not happen (Redis away, the process gone) keep their dispatch
//! mark until it runs out, and the dispatcher pushes them then.
//! When the shared transaction fails before its commit, each caller goes on
//! alone through the ordinary path (nothing of theirs was written), so a bad
//! row cannot take its neighbours' sends down with it; a failed commit
//! answers every caller with the error, as a lone commit would.

use std::{
    collections::{BTreeMap, BTreeSet, HashSet},
    sync::Arc,
};

use shared::{
    db::{
        notifications::{self, NewRow},
        subscribers,
    },
    domain::{Channel, NotificationId, SubscriberId, TenantId},
    jobs::{QueueName, Queues, SendNotifications},
    outbox::Enqueued,
};
use sqlx::PgPool;
use tokio::sync::{Mutex, mpsc, oneshot};

use crate::{error::ApiError, window::Window};

/// Most notifications committed together.
pub const MAX_ROWS: usize = 512;

/// Transactions in flight at once. Fewer flushers carry more sends each,
/// and every shared transaction pays for its statements, their triggers
/// and its commit once whatever it carries: on 2 cores, 64 callers of
/// templated in-app sends were accepted at 1,438–2,143/s with four
/// flushers (Postgres 55–69% of the CPU) and 1,683–2,372/s with two.
pub const FLUSHERS: usize = 2;

/// Commits a flusher may run ahead of its publisher before it waits.
const PUBLISH_BACKLOG: usize = 16;

/// What became of rows handed to [`Acceptor::accept`].
#[derive(Debug)]
pub enum Shared {
    /// Committed (and pushed, or left to the dispatcher); `placed` are the
    /// caller's in-app rows now in their inboxes (`sent`).
    Committed {
        /// In-app rows placed in their inboxes.
        placed: Vec<NotificationId>,
    },
    /// Nothing was written: the caller should send on its own.
    Alone,
}

struct Pending {
    rows: Vec<NewRow>,
    reply: oneshot::Sender<Result<Shared, ApiError>>,
}

impl std::fmt::Debug for Pending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pending")
            .field("rows", &self.rows.len())
            .finish()
    }
}

/// Hands concurrent sends to shared transactions.
#[derive(Debug, Clone)]
pub struct Acceptor {
    tx: mpsc::Sender<Pending>,
}

/// Where a flusher writes and pushes.
struct Sink {
    pool: PgPool,
    queues: Queues,
    window: Arc<Window>,
    group_size: usize,
    throughput: shared::throughput::Throughput,
}

impl Acceptor {
    /// Starts the flushers; they stop when the last [`Acceptor`] is dropped.
    pub fn start(
        pool: PgPool,
        queues: Queues,
        window: Arc<Window>,
        group_size: usize,
        throughput: shared::throughput::Throughput,
    ) -> Self {
        let (tx, rx) = mpsc::channel::<Pending>(MAX_ROWS * FLUSHERS);
        let rx = Arc::new(Mutex::new(rx));
        let sink = Arc::new(Sink {
            pool,
            queues,
            window,
            group_size: group_size.max(1),
            throughput,
        });
        for _ in 0..FLUSHERS {
            let rx = rx.clone();
            let (flushing, publishing) = (sink.clone(), sink.clone());
            let (after_tx, mut after_rx) = mpsc::channel::<AfterCommit>(PUBLISH_BACKLOG);
            // One transaction carries the sends of many requests, of any
            // organisation: the flushers work in platform scope.
            tokio::spawn(shared::db::scope::platform("accept_flush", async move {
                while let Some(batch) = next_batch(&rx).await {
                    flushing.flush(batch, &after_tx).await;
                }
            }));
            // Each flusher's publisher, so its commits reach Redis in order.
            tokio::spawn(shared::db::scope::platform("accept_publish", async move {
                while let Some(after) = after_rx.recv().await {
                    publishing.publish(after).await;
                }
            }));
        }
        Self { tx }
    }

    /// Commits `rows` with whatever other sends are waiting. Every row must
    /// be due now and without an idempotency key; a row of another channel
    /// that has a subscriber names them by id, an in-app row by id or only
    /// by external id (its recipient), found or created here. `dispatched`
    /// is decided here.
    pub async fn accept(&self, rows: Vec<NewRow>) -> Result<Shared, ApiError> {
        let (reply, answer) = oneshot::channel();
        if self.tx.send(Pending { rows, reply }).await.is_err() {
            return Ok(Shared::Alone);
        }
        // A flusher that went away (the process is stopping) wrote nothing
        // it did not answer for.
        answer.await.unwrap_or(Ok(Shared::Alone))
    }
}

/// The sends waiting now (at least one), up to [`MAX_ROWS`] rows; `None`
/// once every sender is gone.
async fn next_batch(rx: &Mutex<mpsc::Receiver<Pending>>) -> Option<Vec<Pending>> {
    let mut rx = rx.lock().await;
    let first = rx.recv().await?;
    let mut rows = first.rows.len();
    let mut batch = vec![first];
    while rows < MAX_ROWS {
        match rx.try_recv() {
            Ok(p) => {
                rows += p.rows.len();
                batch.push(p);
            }
            Err(_) => break,
        }
    }
    Some(batch)
}

/// A committed transaction's Redis work: its real-time events and its jobs.
struct AfterCommit {
    events: Vec<shared::events::Event>,
    jobs: Vec<SendNotifications>,
}

/// What a shared transaction wrote beyond its rows.
#[derive(Default)]
struct Written {
    /// In-app rows that went into their inboxes.
    placed: HashSet<NotificationId>,
    /// Their real-time events, published after the commit.
    events: Vec<shared::events::Event>,
    /// Jobs for in-app rows that need a worker's decision.
    jobs: Vec<SendNotifications>,
}

impl Sink {
    async fn flush(&self, mut batch: Vec<Pending>, after_commit: &mpsc::Sender<AfterCommit>) {
        // One job per tenant and channel, up to the group size each; in-app
        // rows go into their inboxes in the transaction when they can.
        let mut groups: BTreeMap<(TenantId, Channel), Vec<(usize, usize)>> = BTreeMap::new();
        let mut inapp: BTreeMap<TenantId, Vec<NotificationId>> = BTreeMap::new();
        for (p, pending) in batch.iter().enumerate() {
            for (r, row) in pending.rows.iter().enumerate() {
                if row.channel == Channel::InApp {
                    inapp.entry(row.tenant_id).or_default().push(row.id);
                } else {
                    groups
                        .entry((row.tenant_id, row.channel))
                        .or_default()
                        .push((p, r));
                }
            }
        }
        let mut jobs: Vec<SendNotifications> = Vec::new();
        for ((tenant_id, channel), members) in groups {
            let queue = QueueName::for_channel(channel);
            for chunk in members.chunks(self.group_size) {
                let room = self.window.reserve(queue).await;
                for &(p, r) in chunk {
                    batch[p].rows[r].dispatched = room;
                }
                if room {
                    jobs.push(SendNotifications {
                        tenant_id,
                        channel,
                        notification_ids: chunk.iter().map(|&(p, r)| batch[p].rows[r].id).collect(),
                    });
                }
            }
        }
        let mut rows: Vec<NewRow> = batch.iter().flat_map(|p| p.rows.iter().cloned()).collect();
        let written = match self.write(&mut rows, &inapp).await {
            Ok(written) => written,
            Err(Failed::BeforeCommit(error)) => {
                tracing::warn!(%error, sends = batch.len(), "a shared accept failed; each send goes on alone");
                for p in batch {
                    let _ = p.reply.send(Ok(Shared::Alone));
                }
                return;
            }
            Err(Failed::Commit(error)) => {
                let unreachable = crate::outage::is_unreachable(&error);
                for p in batch {
                    let _ = p.reply.send(Err(if unreachable {
                        ApiError::Unavailable(
                            "Postgres cannot be reached; try again shortly".into(),
                        )
                    } else {
                        ApiError::Internal(anyhow::anyhow!("while committing sends: {error}"))
                    }));
                }
                return;
            }
        };
        metrics::histogram!("api_shared_accept_rows").record(rows.len() as f64);
        if !written.placed.is_empty() {
            metrics::counter!("notifications_sent_total", "channel" => "inapp", "outcome" => "sent")
                .increment(written.placed.len() as u64);
            for p in &batch {
                let placed = p
                    .rows
                    .iter()
                    .filter(|r| written.placed.contains(&r.id))
                    .count() as u64;
                if let Some(first) = p.rows.first() {
                    self.throughput.record(
                        QueueName::InApp,
                        Some(first.tenant_id),
                        shared::throughput::Outcome::Sent,
                        placed,
                        None,
                        Some(std::time::Duration::ZERO),
                    );
                }
            }
        }
        jobs.extend(written.jobs);
        let after = AfterCommit {
            events: written.events,
            jobs,
        };
        if after_commit.send(after).await.is_err() {
            // The process is stopping: the rows' dispatch mark runs out and
            // the dispatcher pushes them; clients catch up from Postgres.
            tracing::warn!("the shared accept's publisher is gone");
        }
        for p in batch {
            let placed = p
                .rows
                .iter()
                .filter(|r| written.placed.contains(&r.id))
                .map(|r| r.id)
                .collect();
            let _ = p.reply.send(Ok(Shared::Committed { placed }));
        }
    }

    /// Publishes a commit's real-time events and pushes its jobs.
    async fn publish(&self, after: AfterCommit) {
        if let Err(error) = shared::events::publish(&self.queues, &after.events).await {
            // Connected clients catch up from Postgres when they reconnect.
            tracing::warn!(%error, "cannot publish inbox events");
        }
        // One round trip per queue; rows whose push fails are released for
        // the dispatcher.
        if let Err(error) = Enqueued::new(after.jobs)
            .push(&self.queues, &self.pool)
            .await
        {
            // The rows' dispatch mark runs out and the dispatcher pushes
            // them then.
            tracing::warn!(%error, "cannot release the dispatch mark");
        }
    }

    async fn write(
        &self,
        rows: &mut [NewRow],
        inapp: &BTreeMap<TenantId, Vec<NotificationId>>,
    ) -> Result<Written, Failed> {
        let mut tx = self.pool.begin().await.map_err(Failed::BeforeCommit)?;
        // Tenants in id order, so concurrent transactions lock inbox owners
        // in one order; the owners are locked before their entries are
        // written, which then go straight into the inboxes. Owners named by
        // their external id are found with the same statement (and created
        // when new), once for every send of the tenant.
        let mut placing = BTreeSet::new();
        for &tenant_id in inapp.keys() {
            let place = places_inapp_now(&mut tx, tenant_id)
                .await
                .map_err(Failed::BeforeCommit)?;
            if place {
                placing.insert(tenant_id);
            }
            let of_tenant =
                |r: &&mut NewRow| r.tenant_id == tenant_id && r.channel == Channel::InApp;
            let owners: Vec<SubscriberId> = rows
                .iter_mut()
                .filter(of_tenant)
                .filter_map(|r| r.subscriber_id)
                .collect();
            let mut named: Vec<String> = rows
                .iter_mut()
                .filter(of_tenant)
                .filter(|r| r.subscriber_id.is_none())
                .map(|r| r.recipient.clone())
                .collect();
            named.sort_unstable();
            named.dedup();
            let mut found =
                shared::db::events::subscribers_named(&mut tx, tenant_id, &owners, &named, place)
                    .await
                    .map_err(Failed::BeforeCommit)?;
            let missing: Vec<String> = named
                .iter()
                .filter(|e| !found.contains_key(*e))
                .cloned()
                .collect();
            if !missing.is_empty() {
                found.extend(
                    subscribers::create_missing(&mut tx, tenant_id, &missing)
                        .await
                        .map_err(Failed::BeforeCommit)?,
                );
                // Created by a concurrent transaction since.
                let late: Vec<String> = missing
                    .into_iter()
                    .filter(|e| !found.contains_key(e))
                    .collect();
                found.extend(
                    shared::db::events::subscribers_named(&mut tx, tenant_id, &[], &late, place)
                        .await
                        .map_err(Failed::BeforeCommit)?,
                );
            }
            for row in rows.iter_mut().filter(|r| of_tenant(r)) {
                if row.subscriber_id.is_none() {
                    row.subscriber_id = found.get(&row.recipient).copied();
                }
            }
        }
        let placed = notifications::insert_many(&mut tx, rows, &placing)
            .await
            .map_err(Failed::BeforeCommit)?;
        let mut written = Written::default();
        let mut by_tenant: BTreeMap<TenantId, Vec<_>> = BTreeMap::new();
        let tenant_of: std::collections::HashMap<NotificationId, TenantId> =
            rows.iter().map(|r| (r.id, r.tenant_id)).collect();
        for (subscriber, item) in placed {
            written.placed.insert(item.id);
            by_tenant
                .entry(tenant_of[&item.id])
                .or_default()
                .push((subscriber, item));
        }
        for (tenant_id, entries) in by_tenant {
            let events =
                shared::events::announce_placed(&mut tx, tenant_id, entries, &Default::default())
                    .await
                    .map_err(Failed::BeforeCommit)?;
            written.events.extend(events);
        }
        // In-app rows left to decide go to the channel's worker.
        for (&tenant_id, ids) in inapp {
            let left: Vec<NotificationId> = ids
                .iter()
                .filter(|id| !written.placed.contains(id))
                .copied()
                .collect();
            for chunk in left.chunks(self.group_size) {
                if !self.window.reserve(QueueName::InApp).await {
                    continue;
                }
                notifications::mark_dispatched(&mut *tx, tenant_id, chunk)
                    .await
                    .map_err(Failed::BeforeCommit)?;
                written.jobs.push(SendNotifications {
                    tenant_id,
                    channel: Channel::InApp,
                    notification_ids: chunk.to_vec(),
                });
            }
        }
        tx.commit().await.map_err(Failed::Commit)?;
        Ok(written)
    }
}

/// Whether in-app sends of `tenant_id` may go into the inbox as they are
/// accepted: not when the tenant hears of each send on its own
/// (`notification.sent` webhooks), which the channel's worker reports.
pub async fn places_inapp_now(
    tx: &mut sqlx::PgConnection,
    tenant_id: TenantId,
) -> Result<bool, sqlx::Error> {
    let hooked = shared::db::webhooks::subscribed_events(&mut *tx, tenant_id).await?;
    Ok(!hooked
        .iter()
        .any(|h| h == shared::webhooks::WebhookEvent::Sent.as_str()))
}

enum Failed {
    BeforeCommit(sqlx::Error),
    Commit(sqlx::Error),
}
