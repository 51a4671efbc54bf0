//! What the alert benchmark seeds: organisations with their admins,
//! providers, BAAs, rollups and notifications (set-based SQL), and the rules
//! over them, one in ten organisations in trouble.

use serde_json::{Map, Value};
use shared::{
    alerts::{ChannelSpec, Level, Metric},
    throughput::BUCKETS,
};
use sqlx::PgPool;
use uuid::Uuid;

/// The metrics organisations' rules cycle through: those the seed makes
/// data for. `api_server_errors` is for platform-wide rules only and no
/// webhook endpoints are seeded, so those two are read by the platform-wide
/// rules alone (which every metric has).
const ORG_METRICS: [Metric; 8] = [
    Metric::FailureRate,
    Metric::QueueOldestDueAge,
    Metric::QueueDepth,
    Metric::LatencyP99,
    Metric::CircuitOpen,
    Metric::NoWorkerAlive,
    Metric::BaaExpiring,
    Metric::FailedWork,
];

/// Rules per organisation.
pub const RULES_PER_ORG: usize = 10;
/// Every this many organisations, one is in trouble.
pub const TROUBLED_EVERY: usize = 10;
/// Due emails of a troubled organisation (an hour old) and of a healthy one.
const DUE: (i64, i64) = (400, 5);
/// Sends that failed for good within the hour: troubled, healthy.
const FAILED: (i64, i64) = (50, 2);

/// One rule to store.
pub struct NewRule {
    pub id: Uuid,
    pub tenant: Option<Uuid>,
    pub name: String,
    pub metric: Metric,
    pub scope: Value,
    pub threshold: f64,
    pub window_secs: i32,
    pub severity: &'static str,
    pub escalation: Value,
}

fn scope(pairs: &[(&str, Value)]) -> Value {
    Value::Object(
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect::<Map<_, _>>(),
    )
}

/// Scope, threshold and window of an organisation's rule. `narrow`: to the
/// channel or queue a troubled organisation's trouble is on.
fn org_rule(metric: Metric, narrow: bool, troubled: bool) -> (Value, f64, i32) {
    let on = |key: &'static str, value: &str| -> Vec<(&'static str, Value)> {
        if narrow {
            vec![(key, Value::from(value))]
        } else {
            Vec::new()
        }
    };
    match metric {
        Metric::FailureRate => {
            let mut s = on("channel", "sms");
            s.push(("min_events", Value::from(20)));
            (scope(&s), 25.0, 900)
        }
        Metric::QueueOldestDueAge => (scope(&on("queue", "email")), 900.0, 300),
        Metric::QueueDepth => (scope(&on("queue", "email")), 200.0, 300),
        Metric::LatencyP99 => (
            scope(&on("channel", "push")),
            10_000.0,
            if narrow { 3_600 } else { 900 },
        ),
        Metric::CircuitOpen => (scope(&on("channel", "sms")), 1.0, 60),
        // The fleet is the same for everyone: a troubled organisation wants
        // three SMS workers where two run; the others want one.
        Metric::NoWorkerAlive if troubled => (scope(&[("queue", Value::from("sms"))]), 3.0, 60),
        Metric::NoWorkerAlive => (scope(&on("queue", "email")), 1.0, 60),
        Metric::BaaExpiring => (scope(&[]), 30.0, 86_400),
        Metric::FailedWork => (scope(&[]), 20.0, 3_600),
        Metric::ApiServerErrors => (scope(&[]), 100.0, 300),
        Metric::WebhookEndpointDisabled => (scope(&[]), 1.0, 60),
    }
}

/// Thresholds of the platform-wide rules: above anything seeded.
fn platform_rule(metric: Metric) -> (f64, i32) {
    match metric {
        Metric::FailureRate => (90.0, 900),
        Metric::QueueOldestDueAge => (86_400.0, 300),
        Metric::QueueDepth | Metric::FailedWork | Metric::ApiServerErrors => (1e9, 3_600),
        Metric::WebhookEndpointDisabled => (10_000.0, 60),
        Metric::LatencyP99 => (3_600_000.0, 900),
        Metric::CircuitOpen => (1_000.0, 60),
        Metric::NoWorkerAlive => (1.0, 60),
        Metric::BaaExpiring => (0.0, 86_400),
    }
}

/// Admins in-app and by email at once; every third rule also posts to
/// Slack and pages after 15 minutes unacknowledged.
fn escalation(i: usize) -> Value {
    let mut levels = vec![Level {
        after_minutes: 0,
        channels: vec![ChannelSpec::InApp, ChannelSpec::Email],
    }];
    if i.is_multiple_of(3) {
        levels[0].channels.push(ChannelSpec::Slack {
            url: format!("https://hooks.slack.example.com/services/T0/B{i}/x"),
        });
        levels.push(Level {
            after_minutes: 15,
            channels: vec![ChannelSpec::Pagerduty {
                routing_key: "R0UT1NGKEY0123456789abcdefABCDEF".to_owned(),
            }],
        });
    }
    serde_json::to_value(levels).expect("levels serialise")
}

/// The rules, and how many of them are seeded to break.
pub fn rules(total: usize, orgs: &[Uuid]) -> (Vec<NewRule>, usize) {
    let platform = if total >= 8 * Metric::ALL.len() {
        Metric::ALL.len()
    } else {
        0
    };
    let mut out = Vec::with_capacity(total);
    let mut breached = 0;
    for (i, metric) in Metric::ALL.into_iter().enumerate().take(platform) {
        let (threshold, window_secs) = platform_rule(metric);
        out.push(NewRule {
            id: Uuid::now_v7(),
            tenant: None,
            name: format!("Platform {}", metric.as_str()),
            metric,
            scope: scope(&[]),
            threshold,
            window_secs,
            severity: "critical",
            escalation: escalation(i),
        });
    }
    for j in 0..total - platform {
        let org = j % orgs.len();
        let slot = j / orgs.len();
        let troubled = org.is_multiple_of(TROUBLED_EVERY);
        let metric = ORG_METRICS[slot % ORG_METRICS.len()];
        let (scope, threshold, window_secs) = org_rule(metric, slot % 2 == 1, troubled);
        breached += usize::from(troubled);
        out.push(NewRule {
            id: Uuid::now_v7(),
            tenant: Some(orgs[org]),
            name: format!("{} {slot}", metric.as_str()),
            metric,
            scope,
            threshold,
            window_secs,
            severity: ["info", "warning", "critical"][j % 3],
            escalation: escalation(j),
        });
    }
    (out, breached)
}

async fn exec(pool: &PgPool, what: &str, sql: &str, orgs: &[Uuid], troubled: &[Uuid]) -> u64 {
    sqlx::query(sql)
        .bind(orgs)
        .bind(troubled)
        .execute(pool)
        .await
        .unwrap_or_else(|e| panic!("{what}: {e}"))
        .rows_affected()
}

/// Every organisation, with whether it is in trouble (`$1`, `$2`).
const ORGS: &str = "(select t, t = any($2::uuid[]) as troubled from unnest($1::uuid[]) as t) o";

/// Seeds everything but the rules; returns the rollup rows and notifications.
pub async fn seed(
    pool: &PgPool,
    orgs: &[Uuid],
    troubled: &[Uuid],
    minutes: i64,
    sent: i64,
) -> (u64, u64) {
    exec(
        pool,
        "organisations",
        &format!(
            "insert into tenants (id, name, type)
             select t, 'Clinic ' || left(t::text, 8), 'clinic' from {ORGS}"
        ),
        orgs,
        troubled,
    )
    .await;
    exec(
        pool,
        "agreements",
        &format!(
            "with b as (
                 insert into baa_agreements (id, tenant_id, signed_on, expires_on, document_url, signed_by)
                 select gen_random_uuid(), t, current_date - 355,
                        current_date + case when troubled then 10 else 300 end,
                        'https://documents.example.com/baa/' || t, 'Compliance officer'
                 from {ORGS}
                 returning id, tenant_id)
             update tenants set current_baa_id = b.id from b where tenants.id = b.tenant_id"
        ),
        orgs,
        troubled,
    )
    .await;
    exec(
        pool,
        "admins",
        &format!(
            "with u as (
                 insert into users (id, tenant_id, email, first_name, last_name, role, created_by)
                 select gen_random_uuid(), t, 'admin-' || t || '@clinic.example.com', 'Clinic',
                        'Admin', 'ADMIN', 'bench'
                 from {ORGS}
                 returning id, tenant_id, email)
             insert into subscribers (id, tenant_id, external_id, email)
             select gen_random_uuid(), tenant_id, id::text, email from u"
        ),
        orgs,
        troubled,
    )
    .await;
    exec(
        pool,
        "staff",
        &format!(
            "insert into users (id, tenant_id, email, role, created_by)
             select gen_random_uuid(), t, 'staff-' || i || '-' || t || '@clinic.example.com',
                    (array['DOCTOR', 'MEDICAL_STAFF', 'OFFICE_ADMIN'])[i], 'bench'
             from {ORGS}, generate_series(1, 3) as i"
        ),
        orgs,
        troubled,
    )
    .await;
    exec(
        pool,
        "provider configs",
        &format!(
            "insert into provider_configs (id, tenant_id, channel, provider, name, priority)
             select gen_random_uuid(), t, c, p, c || ' provider', 0
             from {ORGS}, (values ('email', 'smtp'), ('sms', 'twilio'), ('push', 'fcm')) as v(c, p)"
        ),
        orgs,
        troubled,
    )
    .await;
    // Latencies of a healthy minute (p99 about 200 ms) and of a slow one
    // (every send between 30 s and a minute).
    let mut healthy = vec![0_i64; BUCKETS];
    healthy[5] = 10;
    healthy[6] = 20;
    healthy[7] = 10;
    let mut slow = vec![0_i64; BUCKETS];
    slow[14] = 40;
    let rollup = sqlx::query(&format!(
        "insert into queue_minutes (queue, minute, tenant_id, sent, failed, retried, duration_ms, latency_ms)
         select q, date_trunc('minute', now()) - make_interval(mins => m), t,
                case when q = 'sms' and troubled then 20 else 40 end,
                case when q = 'sms' and troubled then 20 when m % 10 = 0 then 1 else 0 end,
                case when m % 7 = 0 then 1 else 0 end,
                $3::int8[], case when q = 'push' and troubled then $4::int8[] else $3::int8[] end
         from {ORGS},
              unnest(array['email', 'sms', 'push', 'whatsapp', 'inapp', 'webhook']) as q,
              generate_series(0, $5::int4 - 1) as m"
    ))
    .bind(orgs)
    .bind(troubled)
    .bind(&healthy)
    .bind(&slow)
    .bind(minutes)
    .execute(pool)
    .await
    .expect("rollups")
    .rows_affected();
    let mut notifications = sqlx::query(&format!(
        "insert into notifications
             (id, tenant_id, channel, recipient, content, status, attempts, max_attempts,
              run_at, dispatched_at, sent_at, created_at)
         select gen_random_uuid(), t, (array['email', 'sms', 'push', 'whatsapp'])[1 + i % 4],
                'patient-' || i || '@example.com', '{{\"subject\": \"Your appointment\"}}'::jsonb,
                'sent', 1, 5, at, at, at + interval '2 seconds', at
         from {ORGS}, generate_series(1, $3) as i,
              lateral (select now() - make_interval(secs => (i * 10800.0 / $3)::float8)) as a(at)"
    ))
    .bind(orgs)
    .bind(troubled)
    .bind(sent)
    .execute(pool)
    .await
    .expect("sent notifications")
    .rows_affected();
    // Failed for good: the insert trigger stamps `failed_at` (now) and the
    // error class.
    notifications += sqlx::query(&format!(
        "insert into notifications
             (id, tenant_id, channel, recipient, content, status, attempts, max_attempts,
              run_at, last_error, created_at)
         select gen_random_uuid(), t, 'email', 'patient-' || i || '@example.com', '{{}}'::jsonb,
                'failed', 5, 5, now() - interval '10 minutes',
                'the receiving mail server bounced the message', now() - interval '20 minutes'
         from {ORGS}, generate_series(1, case when troubled then $3 else $4 end) as i"
    ))
    .bind(orgs)
    .bind(troubled)
    .bind(FAILED.0)
    .bind(FAILED.1)
    .execute(pool)
    .await
    .expect("failed notifications")
    .rows_affected();
    // Due (an hour old in trouble, a minute otherwise) and scheduled for
    // tomorrow.
    notifications += sqlx::query(&format!(
        "insert into notifications
             (id, tenant_id, channel, recipient, content, status, attempts, max_attempts,
              run_at, created_at)
         select gen_random_uuid(), t, 'email', 'patient-' || i || '@example.com', '{{}}'::jsonb,
                'queued', 0, 5, at, now() - interval '1 hour'
         from {ORGS}, generate_series(1, case when troubled then $3 else $4 end + 20) as i,
              lateral (select case when i > case when troubled then $3 else $4 end
                                   then now() + interval '1 day'
                                   when troubled then now() - interval '1 hour'
                                   else now() - interval '1 minute' end) as a(at)"
    ))
    .bind(orgs)
    .bind(troubled)
    .bind(DUE.0)
    .bind(DUE.1)
    .execute(pool)
    .await
    .expect("due notifications")
    .rows_affected();
    // Every organisation's default rules were made (the seeded ones stand
    // in for them), so the evaluator adds none.
    exec(
        pool,
        "defaults",
        &format!("insert into alert_rule_defaults (tenant_id) select t from {ORGS}"),
        orgs,
        troubled,
    )
    .await;
    (rollup, notifications)
}

pub async fn insert_rules(pool: &PgPool, rules: &[NewRule]) {
    for chunk in rules.chunks(5_000) {
        sqlx::query(
            "insert into alert_rules (id, tenant_id, name, metric, scope, threshold, window_secs,
                 severity, cooldown_secs, escalation, created_by)
             select id, tenant_id, name, metric, scope::jsonb, threshold, window_secs, severity,
                    900, escalation::jsonb, 'bench'
             from unnest($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::text[],
                         $6::float8[], $7::int4[], $8::text[], $9::text[])
                  as r(id, tenant_id, name, metric, scope, threshold, window_secs, severity,
                       escalation)",
        )
        .bind(chunk.iter().map(|r| r.id).collect::<Vec<_>>())
        .bind(chunk.iter().map(|r| r.tenant).collect::<Vec<_>>())
        .bind(chunk.iter().map(|r| r.name.clone()).collect::<Vec<_>>())
        .bind(chunk.iter().map(|r| r.metric.as_str()).collect::<Vec<_>>())
        .bind(
            chunk
                .iter()
                .map(|r| r.scope.to_string())
                .collect::<Vec<_>>(),
        )
        .bind(chunk.iter().map(|r| r.threshold).collect::<Vec<_>>())
        .bind(chunk.iter().map(|r| r.window_secs).collect::<Vec<_>>())
        .bind(chunk.iter().map(|r| r.severity).collect::<Vec<_>>())
        .bind(
            chunk
                .iter()
                .map(|r| r.escalation.to_string())
                .collect::<Vec<_>>(),
        )
        .execute(pool)
        .await
        .expect("rules");
    }
}
