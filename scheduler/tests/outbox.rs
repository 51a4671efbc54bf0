//! Every kind of queued work reaches Redis the same way: a row whose push
//! failed is pushed by the next sweep, every queued row goes out again after
//! Redis lost its data, and the window bounds what is pushed. Each test runs
//! every kind the dispatcher lists, so a new kind is covered by adding its
//! fixture here (a kind without one fails the tests).

use std::{collections::BTreeMap, time::Duration};

use scheduler::dispatcher::{Dispatcher, KINDS};
use secrecy::SecretString;
use shared::{
    domain::{Channel, TenantId},
    jobs::{QueueName, Queues},
    outbox::{
        Enqueued, Outbox,
        kinds::{BatchChunks, BulkChunks, BulkJobs, Invitations, Notifications, WebhookDeliveries},
    },
};
use testkit::TestApp;

/// The SQL that adds `$2` due rows of a kind for tenant `$1`, none marked
/// pushed, and the table whose `dispatched_at` marks them.
fn fixture(queue: QueueName) -> (&'static str, &'static str) {
    let notifications = "with s as (
             insert into subscribers (id, tenant_id, external_id)
             values (gen_random_uuid(), $1, 'outbox-' || gen_random_uuid()) returning id
         )
         insert into notifications (id, tenant_id, channel, recipient, content, max_attempts, subscriber_id)
         select gen_random_uuid(), $1, $3, 'p' || i || '@example.org',
                '{\"subject\": \"s\", \"text\": \"t\"}'::jsonb, 5, s.id
         from generate_series(1, $2) i, s";
    match queue {
        QueueName::Email
        | QueueName::Sms
        | QueueName::Push
        | QueueName::WhatsApp
        | QueueName::InApp => (notifications, "notifications"),
        QueueName::Webhook => (
            "with e as (
                 insert into webhook_endpoints (id, tenant_id, url, events, key_id, secret_ciphertext)
                 values (gen_random_uuid(), $1, 'https://example.org/hook',
                         array['notification.sent'], 'k', '\\x00'::bytea)
                 returning id
             )
             insert into webhook_deliveries (id, tenant_id, endpoint_id, event, max_attempts, payload)
             select gen_random_uuid(), $1, e.id, 'notification.sent', 5, '{}'::jsonb
             from generate_series(1, $2) i, e",
            "webhook_deliveries",
        ),
        QueueName::BatchChunk => (
            "with b as (
                 insert into batches (id, tenant_id, template_key, channels)
                 values (gen_random_uuid(), $1, 'welcome', array['email']) returning id
             )
             insert into batch_chunks (batch_id, seq, tenant_id, recipients, recipient_count, request_hash)
             select b.id, i, $1, '[]'::jsonb, 1, '\\x00'::bytea
             from generate_series(1, $2) i, b",
            "batch_chunks",
        ),
        QueueName::BulkCsv => (
            "insert into bulk_jobs (id, tenant_id, template_key, channels, mapping, status)
             select gen_random_uuid(), $1, 'welcome', array['email'], '{}'::jsonb, 'queued'
             from generate_series(1, $2) i",
            "bulk_jobs",
        ),
        QueueName::BulkChunk => (
            "with j as (
                 insert into bulk_jobs (id, tenant_id, template_key, channels, mapping, status)
                 values (gen_random_uuid(), $1, 'welcome', array['email'], '{}'::jsonb, 'sending')
                 returning id
             )
             insert into bulk_chunks (job_id, seq, tenant_id, row_count, notification_count, notifications)
             select j.id, i, $1, 1, 1, '[]'::json
             from generate_series(1, $2) i, j",
            "bulk_chunks",
        ),
        QueueName::Invitation => (
            "insert into invitations (id, tenant_id, email, invitation_type, expires_at, invited_by)
             select gen_random_uuid(), $1, 'i' || gen_random_uuid() || '@example.org', 'doctor',
                    now() + interval '7 days', 'test'
             from generate_series(1, $2) i",
            "invitations",
        ),
        other => panic!("no outbox fixture for the {other} queue"),
    }
}

/// Adds `n` due rows of the kind fed to `queue`.
async fn seed(app: &TestApp, tenant: TenantId, queue: QueueName, n: i32) {
    let (sql, _) = fixture(queue);
    let channel = Channel::ALL
        .iter()
        .find(|c| QueueName::for_channel(**c) == queue)
        .map(|c| c.as_str())
        .unwrap_or("email");
    let mut q = sqlx::query(sql).bind(tenant).bind(n);
    if sql.contains("$3") {
        q = q.bind(channel);
    }
    q.execute(&app.pool)
        .await
        .unwrap_or_else(|e| panic!("seeding {queue}: {e}"));
}

/// Rows of the kind fed to `queue` marked as pushed.
async fn marked(app: &TestApp, queue: QueueName) -> i64 {
    let (_, table) = fixture(queue);
    let sql = format!("select count(*) from {table} where dispatched_at is not null");
    match Channel::ALL
        .iter()
        .find(|c| QueueName::for_channel(**c) == queue)
    {
        Some(channel) => sqlx::query_scalar(&format!("{sql} and channel = $1"))
            .bind(channel.as_str())
            .fetch_one(&app.pool)
            .await
            .unwrap(),
        None => sqlx::query_scalar(&sql).fetch_one(&app.pool).await.unwrap(),
    }
}

/// The Redis backlog of every queue the dispatcher feeds.
async fn backlogs(queues: &Queues) -> BTreeMap<QueueName, usize> {
    let mut all = BTreeMap::new();
    for kind in KINDS {
        all.insert(kind.queue(), queues.backlog(kind.queue()).await.unwrap());
    }
    all
}

fn every_kind(n: usize) -> BTreeMap<QueueName, usize> {
    KINDS.iter().map(|k| (k.queue(), n)).collect()
}

/// Takes the kind's rows as a writer's transaction would mark them, then
/// pushes their jobs through Redis that is not there: the rows must be
/// released at once.
async fn push_into_a_dead_redis<K: Outbox>(app: &TestApp, dead: &Queues, kind: K) {
    let queue = kind.queue();
    let rows = kind
        .take(&app.pool, 100, Duration::from_secs(3_600))
        .await
        .unwrap();
    assert_eq!(rows.len(), 3, "{queue}");
    let enqueued = Enqueued::new(kind.group(rows, 100));
    assert_eq!(marked(app, queue).await, 3, "{queue}: marked pushed");
    let pushed = enqueued.push(dead, &app.pool).await.unwrap();
    assert!(!pushed, "{queue}: Redis is not there");
    assert_eq!(marked(app, queue).await, 0, "{queue}: released at once");
}

/// An app with neither worker nor scheduler, with `vars` set, whose
/// organisation has `n` queued rows of every kind; its queues, and a
/// dispatcher over them.
async fn seeded_alone(vars: &[(&str, i32)], n: i32) -> (TestApp, Queues, Dispatcher) {
    let mut builder = TestApp::builder().without_worker().without_scheduler();
    for (key, value) in vars {
        builder = builder.var(key, value);
    }
    let app = builder.spawn().await;
    let queues = Queues::new(&app.settings.redis_url, &app.redis_prefix).unwrap();
    let dispatcher = Dispatcher::new(app.pool.clone(), queues.clone(), app.settings.jobs.clone());
    for kind in KINDS {
        seed(&app, app.tenant_id, kind.queue(), n).await;
    }
    (app, queues, dispatcher)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_row_whose_push_failed_is_pushed_by_the_next_sweep_for_every_kind() {
    let app = TestApp::spawn_api_only().await;
    let queues = Queues::new(&app.settings.redis_url, &app.redis_prefix).unwrap();
    let dead = Queues::new(
        &SecretString::from("redis://127.0.0.1:1".to_owned()),
        &app.redis_prefix,
    )
    .unwrap();
    let dispatcher = Dispatcher::new(app.pool.clone(), queues.clone(), app.settings.jobs.clone());
    // The marker is set before anything is queued, so the sweep under test
    // pushes only what was released.
    dispatcher.sweep().await.unwrap();
    for kind in KINDS {
        seed(&app, app.tenant_id, kind.queue(), 3).await;
    }
    for &channel in Channel::ALL {
        push_into_a_dead_redis(&app, &dead, Notifications(channel)).await;
    }
    push_into_a_dead_redis(&app, &dead, WebhookDeliveries).await;
    push_into_a_dead_redis(&app, &dead, BatchChunks).await;
    push_into_a_dead_redis(&app, &dead, BulkJobs).await;
    push_into_a_dead_redis(&app, &dead, BulkChunks).await;
    push_into_a_dead_redis(&app, &dead, Invitations).await;
    assert_eq!(backlogs(&queues).await, every_kind(0));

    let report = dispatcher.sweep().await.unwrap();
    assert!(!report.redis_reset);
    assert_eq!(report.dispatched, 3 * KINDS.len(), "{report:?}");
    let mut expected = every_kind(3);
    for kind in KINDS.iter().filter(|k| k.grouped()) {
        // Three rows of one tenant make one delivery job.
        expected.insert(kind.queue(), 1);
    }
    assert_eq!(backlogs(&queues).await, expected);
    for kind in KINDS {
        assert_eq!(marked(&app, kind.queue()).await, 3, "{}", kind.queue());
    }
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn after_redis_lost_its_data_every_queued_row_of_every_kind_goes_out_again() {
    let (app, queues, dispatcher) = seeded_alone(&[("JOBS__DISPATCHER__GROUP_SIZE", 1)], 3).await;
    dispatcher.sweep().await.unwrap();
    assert_eq!(backlogs(&queues).await, every_kind(3));
    let again = dispatcher.sweep().await.unwrap();
    assert_eq!(again.jobs, 0, "rows in Redis are not pushed twice");

    app.wipe_redis().await;
    assert_eq!(backlogs(&queues).await, every_kind(0));
    let report = dispatcher.sweep().await.unwrap();
    assert!(report.redis_reset, "the marker was gone");
    assert_eq!(report.dispatched, 3 * KINDS.len(), "{report:?}");
    assert_eq!(backlogs(&queues).await, every_kind(3));
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_window_bounds_what_every_kind_pushes() {
    let (app, queues, dispatcher) = seeded_alone(
        &[
            ("JOBS__DISPATCHER__HIGH_WATER_MARK", 2),
            ("JOBS__DISPATCHER__GROUP_SIZE", 1),
        ],
        5,
    )
    .await;
    dispatcher.sweep().await.unwrap();
    assert_eq!(backlogs(&queues).await, every_kind(2));
    for kind in KINDS {
        assert_eq!(
            marked(&app, kind.queue()).await,
            2,
            "{}: the rest wait in Postgres, not marked as pushed",
            kind.queue()
        );
    }
    let full = dispatcher.sweep().await.unwrap();
    assert_eq!(full.jobs, 0, "a full window takes nothing more");
    assert!(
        full.full && full.found_work(),
        "a full window keeps the sweeps coming at the busy pace"
    );

    // Workers take the jobs: the window has room again.
    let mut conn = app.redis().await;
    for kind in KINDS {
        let ns = queues.namespace(kind.queue());
        let _: () = redis::cmd("DEL")
            .arg(format!("{ns}:active"))
            .arg(format!("{ns}:scheduled"))
            .query_async(&mut conn)
            .await
            .unwrap();
    }
    dispatcher.sweep().await.unwrap();
    assert_eq!(backlogs(&queues).await, every_kind(2));
    for kind in KINDS {
        assert_eq!(marked(&app, kind.queue()).await, 4, "{}", kind.queue());
    }
    app.shutdown().await;
}

/// An idle dispatcher sweeps only every `idle_interval_ms`; a chunk whose
/// deliveries wait for it wakes it at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_chunk_whose_deliveries_wait_for_the_dispatcher_wakes_it() {
    const WAIT: Duration = Duration::from_secs(30);
    let app = TestApp::builder().without_scheduler().spawn().await;
    let queues = Queues::new(&app.settings.redis_url, &app.redis_prefix).unwrap();
    let mut wakes = queues.subscribe_dispatcher_wakes();
    tokio::time::timeout(WAIT, wakes.woken())
        .await
        .expect("the first wake-up says the subscription is up");
    app.add_template(&serde_json::json!({
        "key": "lab.ready",
        "name": "Lab results ready",
        "default_locale": "en",
        "default_channels": ["email"],
        "locales": {"en": {"email": {"subject": "Results for {{name}}", "text": "Hello {{name}}"}}}
    }))
    .await;
    let recipients: Vec<serde_json::Value> = (0..3)
        .map(|i| serde_json::json!({"email": format!("p{i}@example.org"), "data": {"name": format!("P{i}")}}))
        .collect();
    let resp = app
        .post_with_key(
            "/api/v1/services/notifications/send-batch",
            &serde_json::json!({"template": "lab.ready", "channels": ["email"], "recipients": recipients}),
        )
        .await;
    assert_eq!(resp.status(), 202, "{}", resp.text().await.unwrap());
    tokio::time::timeout(WAIT, wakes.woken())
        .await
        .expect("the chunk's expansion woke the dispatcher");
    let waiting: i64 = sqlx::query_scalar(
        "select count(*) from notifications where status = 'queued' and dispatched_at is null",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(waiting, 3, "the deliveries wait for the dispatcher");
    app.shutdown().await;
}
