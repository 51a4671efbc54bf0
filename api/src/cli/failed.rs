//! `api failed`, `api retry` and `api discard`: failed work for operators
//! without the console, straight on Postgres, audited like the API's (actor
//! `cli`).
//!
//! `api failed --since 1h` prints the groups; `api retry --group KEY` (or
//! `--id notification:ID …`) retries, `api discard …` discards. A group runs
//! as an operator action, which this command drives to its end in 1,000-row
//! steps (a scheduler would also take it over if the command stopped).

use chrono::{DateTime, Duration, Utc};
use clap::Args;
use shared::{
    db::{
        audit,
        failed_work::{self, Action, Filter, GroupKey, Kind, MAX_SELECTION},
        ops_actions,
        scope::{self, Reach},
    },
    domain::TenantId,
};
use uuid::Uuid;

/// A point in time: an RFC 3339 time, or an age such as `90s`, `15m`, `1h`,
/// `7d` (that long ago).
pub fn parse_time(raw: &str) -> Result<DateTime<Utc>, String> {
    if let Ok(t) = DateTime::parse_from_rfc3339(raw) {
        return Ok(t.with_timezone(&Utc));
    }
    let bad = || format!("{raw:?} is neither an RFC 3339 time nor an age like 90s, 15m, 1h or 7d");
    let split = raw.len().checked_sub(1).ok_or_else(bad)?;
    let (n, unit) = raw.split_at(split);
    let n: i64 = n.parse().map_err(|_| bad())?;
    let age = match unit {
        "s" => Duration::try_seconds(n),
        "m" => Duration::try_minutes(n),
        "h" => Duration::try_hours(n),
        "d" => Duration::try_days(n),
        _ => None,
    }
    .filter(|_| n >= 0)
    .ok_or_else(bad)?;
    Utc::now().checked_sub_signed(age).ok_or_else(bad)
}

fn parse_kind(raw: &str) -> Result<Kind, String> {
    Kind::parse(raw)
        .ok_or_else(|| format!("{raw:?} is not one of {}", failed_work::KINDS.join(", ")))
}

/// `KIND:ID`, or a bare id of a notification.
fn parse_item(raw: &str) -> Result<(Kind, Uuid), String> {
    let (kind, id) = match raw.split_once(':') {
        Some((k, id)) => (parse_kind(k)?, id),
        None => (Kind::Notification, raw),
    };
    let id = Uuid::try_parse(id).map_err(|_| format!("{id:?} is not an id (a UUID)"))?;
    Ok((kind, id))
}

/// What `api failed` lists.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// Failed at or after: an age (`1h`, `7d`) or an RFC 3339 time.
    #[arg(long, value_parser = parse_time, default_value = "24h")]
    pub since: DateTime<Utc>,
    /// Failed before: an age or an RFC 3339 time.
    #[arg(long, value_parser = parse_time)]
    pub until: Option<DateTime<Utc>>,
    /// One organisation's.
    #[arg(long)]
    pub organization: Option<TenantId>,
    /// `notification`, `webhook`, `bulk_job` or `shipment`.
    #[arg(long, value_parser = parse_kind)]
    pub kind: Option<Kind>,
    /// A notification channel.
    #[arg(long, value_parser = ["email", "sms", "push", "whatsapp", "inapp"])]
    pub channel: Option<String>,
    /// A provider.
    #[arg(long)]
    pub provider: Option<String>,
    /// An error class.
    #[arg(long)]
    pub error_class: Option<String>,
}

/// What `api retry` and `api discard` act on.
#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("what").required(true).args(["group", "id"])))]
pub struct SelectArgs {
    /// A group's key, as `api failed` prints it.
    #[arg(long)]
    pub group: Option<String>,
    /// An item, `KIND:ID` (a bare id is a notification); repeat for more
    /// (up to 1,000).
    #[arg(long = "id", value_parser = parse_item)]
    pub id: Vec<(Kind, Uuid)>,
    /// With `--group`: only what failed at or after this.
    #[arg(long, value_parser = parse_time)]
    pub since: Option<DateTime<Utc>>,
    /// Only this organisation's items.
    #[arg(long)]
    pub organization: Option<TenantId>,
}

/// Whose items a command acts on: `organization`'s, else every
/// organisation's (whoever runs an admin command is the platform's
/// operator).
fn reach(organization: Option<TenantId>) -> anyhow::Result<Reach> {
    match organization {
        Some(t) => Ok(Reach::Tenant(t)),
        None => scope::platform_wide()
            .map(Reach::Platform)
            .ok_or_else(|| anyhow::anyhow!("an admin command runs walled to one organisation")),
    }
}

/// Prints the groups.
pub async fn list(pool: &sqlx::PgPool, args: ListArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.until.is_none_or(|u| u >= args.since),
        "--since must not be after --until"
    );
    let reach = reach(args.organization)?;
    let filter = Filter {
        kind: args.kind,
        channel: args.channel,
        provider: args.provider,
        error_class: args.error_class,
        since: Some(args.since),
        until: args.until,
        group: None,
    };
    let groups = failed_work::groups(pool, reach, &filter).await?;
    println!(
        "{:<12} {:<24} {:<16} {:<8} {:>8} {:>5} {:<20} {:<20} KEY",
        "KIND", "ERROR_CLASS", "PROVIDER", "CHANNEL", "COUNT", "ORGS", "FIRST_SEEN", "LAST_SEEN"
    );
    let fmt = |t: DateTime<Utc>| t.format("%Y-%m-%dT%H:%M:%SZ").to_string();
    for g in &groups {
        println!(
            "{:<12} {:<24} {:<16} {:<8} {:>8} {:>5} {:<20} {:<20} {}",
            g.kind,
            g.error_class,
            g.provider.as_deref().unwrap_or("-"),
            g.channel.as_deref().unwrap_or("-"),
            g.count,
            g.organizations,
            fmt(g.first_seen),
            fmt(g.last_seen),
            g.key().encode()
        );
    }
    println!(
        "total={} groups={}",
        groups.iter().map(|g| g.count).sum::<i64>(),
        groups.len()
    );
    Ok(())
}

/// Retries or discards, and prints what came of it.
pub async fn apply(pool: &sqlx::PgPool, action: Action, args: SelectArgs) -> anyhow::Result<()> {
    let name = format!("ops.failed.{}", action.as_str());
    match args.group {
        None => {
            anyhow::ensure!(
                args.id.len() <= MAX_SELECTION,
                "at most {MAX_SELECTION} --id; use --group for more"
            );
            let mut tx = pool.begin().await?;
            let reach = reach(args.organization)?;
            let counts = failed_work::apply_selection(&mut tx, reach, action, &args.id).await?;
            let ids: Vec<String> = args
                .id
                .iter()
                .map(|(k, id)| format!("{}:{id}", k.as_str()))
                .collect();
            audit::record(
                &mut *tx,
                audit::Entry {
                    tenant_id: args.organization,
                    actor: "cli",
                    action: &name,
                    resource_type: "failed_work",
                    resource_id: Some("selection".into()),
                    result: "success",
                    request_id: None,
                    details: serde_json::json!({"ids": ids, "applied": counts.applied,
                        "skipped": counts.skipped, "not_found": counts.not_found}),
                },
            )
            .await?;
            tx.commit().await?;
            println!(
                "{}={} skipped={} not_found={}",
                if action == Action::Retry {
                    "retried"
                } else {
                    "discarded"
                },
                counts.applied,
                counts.skipped,
                counts.not_found
            );
        }
        Some(key) => {
            let group = GroupKey::decode(&key).ok_or_else(|| {
                anyhow::anyhow!("--group {key:?} is not a key `api failed` printed")
            })?;
            let filter = Filter {
                since: args.since,
                group: Some(group),
                ..Filter::default()
            };
            let reach = reach(args.organization)?;
            let started = ops_actions::create(pool, reach, action, &filter, "cli", None).await?;
            audit::record(
                pool,
                audit::Entry {
                    tenant_id: args.organization,
                    actor: "cli",
                    action: &name,
                    resource_type: "ops_action",
                    resource_id: Some(started.id.to_string()),
                    result: "success",
                    request_id: None,
                    details: serde_json::json!({"filter": filter, "matched": started.matched}),
                },
            )
            .await?;
            println!("action={} matched={}", started.id, started.matched);
            loop {
                ops_actions::advance(pool, std::time::Duration::from_millis(500)).await?;
                let a = ops_actions::get(pool, reach, started.id)
                    .await?
                    .ok_or_else(|| anyhow::anyhow!("the action {} is gone", started.id))?;
                println!(
                    "status={} processed={} applied={} skipped={}",
                    a.status, a.processed, a.applied, a.skipped
                );
                if a.status != "running" {
                    break;
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_ages_or_rfc3339() {
        let hour_ago = parse_time("1h").unwrap();
        let age = Utc::now() - hour_ago;
        assert!(age >= Duration::minutes(59) && age <= Duration::minutes(61));
        assert_eq!(
            parse_time("2026-12-01T00:00:00Z").unwrap().to_rfc3339(),
            "2026-12-01T00:00:00+00:00"
        );
        for bad in ["", "h", "1y", "-1h", "soon", "99999999999999d"] {
            assert!(parse_time(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn items_name_their_kind_or_are_notifications() {
        let id = Uuid::now_v7();
        assert_eq!(
            parse_item(&id.to_string()).unwrap(),
            (Kind::Notification, id)
        );
        assert_eq!(
            parse_item(&format!("webhook:{id}")).unwrap(),
            (Kind::Webhook, id)
        );
        assert!(parse_item("email:x").is_err());
        assert!(parse_item("webhook:nope").is_err());
    }
}
