//! `api queues`, `api pause QUEUE` and `api resume QUEUE`: the operators'
//! queue controls for people without the console, straight on Postgres and
//! Redis, audited like the API's.

use std::collections::BTreeSet;

use shared::{
    config::Settings,
    db::{audit, queue_ops, scope::Reach},
    jobs::{QueueName, Queues},
    throughput::quantile,
};

/// Prints every queue: paused, Redis backlog, work waiting in Postgres and
/// the last hour's counts.
pub async fn list(settings: &Settings, pool: &sqlx::PgPool) -> anyhow::Result<()> {
    let queues = Queues::new(&settings.redis_url, &settings.redis_prefix)?;
    let pauses = queue_ops::pauses(pool).await?;
    // Whoever runs an admin command is the platform's operator.
    let every = shared::db::scope::platform_wide()
        .map(Reach::Platform)
        .ok_or_else(|| anyhow::anyhow!("an admin command runs walled to one organisation"))?;
    let waiting = queue_ops::waiting(pool, every).await?;
    let recent = queue_ops::recent(pool, every).await?;
    println!(
        "{:<13} {:<7} {:>8} {:>8} {:>8} {:>9} {:>9} {:>8} {:>8} {:>8} {:>9}",
        "QUEUE",
        "STATE",
        "BACKLOG",
        "DUE",
        "DEFERRED",
        "SCHEDULED",
        "IN_FLIGHT",
        "SENT_1H",
        "FAILED_1H",
        "RETRY_1H",
        "P99_MS"
    );
    for q in QueueName::ALL {
        let backlog = match queues.backlog(*q).await {
            Ok(n) => n.to_string(),
            Err(_) => "?".into(),
        };
        let w = waiting.get(q.as_str()).cloned().unwrap_or_default();
        let r = recent.get(q.as_str()).cloned().unwrap_or_default();
        let state = if pauses.iter().any(|p| p.queue == q.as_str()) {
            "paused"
        } else {
            "running"
        };
        let p99 = quantile(&r.duration_ms, 0.99)
            .map(|v| format!("{v:.0}"))
            .unwrap_or_else(|| "-".into());
        println!(
            "{:<13} {:<7} {:>8} {:>8} {:>8} {:>9} {:>9} {:>8} {:>9} {:>8} {:>9}",
            q.as_str(),
            state,
            backlog,
            w.due,
            w.deferred,
            w.scheduled,
            w.in_flight,
            r.last_1h.sent,
            r.last_1h.failed,
            r.last_1h.retried,
            p99
        );
    }
    for p in &pauses {
        println!(
            "{} paused since {} by {}{}",
            p.queue,
            p.paused_at.to_rfc3339(),
            p.paused_by,
            p.reason
                .as_deref()
                .map(|r| format!(": {r}"))
                .unwrap_or_default()
        );
    }
    Ok(())
}

/// The queue `raw` names, if it may be paused.
fn pausable(raw: &str) -> anyhow::Result<QueueName> {
    let q: QueueName = raw.parse().map_err(|e: String| anyhow::anyhow!(e))?;
    anyhow::ensure!(
        shared::pauses::pausable(q),
        "the {q} queue cannot be paused: its work is not fed from Postgres"
    );
    Ok(q)
}

/// Pauses (`pause`) or resumes a queue, audited, and tells every process.
pub async fn set(
    settings: &Settings,
    pool: &sqlx::PgPool,
    raw: &str,
    pause: bool,
    reason: Option<&str>,
) -> anyhow::Result<()> {
    let q = pausable(raw)?;
    let reason = reason.map(str::trim).filter(|r| !r.is_empty());
    anyhow::ensure!(
        reason.is_none_or(|r| r.chars().count() <= 500),
        "--reason must be at most 500 characters"
    );
    let mut tx = pool.begin().await?;
    let (action, changed) = if pause {
        let p = queue_ops::pause(&mut tx, q, "cli", reason).await?;
        ("queue.pause", p.paused_by == "cli")
    } else {
        ("queue.resume", queue_ops::resume(&mut *tx, q).await?)
    };
    audit::record(
        &mut *tx,
        audit::Entry {
            tenant_id: None,
            actor: "cli",
            action,
            resource_type: "queue",
            resource_id: Some(q.to_string()),
            result: "success",
            request_id: None,
            details: serde_json::json!({"reason": reason}),
        },
    )
    .await?;
    tx.commit().await?;
    let paused: BTreeSet<QueueName> = queue_ops::pauses(pool)
        .await?
        .iter()
        .filter_map(|p| p.queue.parse().ok())
        .collect();
    let queues = Queues::new(&settings.redis_url, &settings.redis_prefix)?;
    if let Err(error) = queues.publish_paused(&paused).await {
        eprintln!("Redis not told ({error}); the scheduler's next sweep tells every process");
    }
    match (pause, changed) {
        (true, _) => println!("{q} paused"),
        (false, true) => println!("{q} resumed"),
        (false, false) => println!("{q} was not paused"),
    }
    Ok(())
}
