//! `/api/v1/errors*`: failures of two organisations with the same cause
//! share one group, each organisation's admins see their own counts and
//! samples only, another organisation's group is not found, a retry that
//! succeeds is a recovery, an API 5xx is counted without its request, and
//! no recipient or message text reaches a group.

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};
use testkit::{TestApp, eventually, smtp::Behaviour};

use crate::http::org_support::{WAIT, answer_json, expect, platform_admin, request, with};

const ERRORS: &str = "/api/v1/errors";
const PATIENT: &str = "pat.patient@example.org";
const SECRET_TEXT: &str = "Your HIV test result is ready";

async fn get(app: &TestApp, token: &str, path: &str, status: u16) -> Value {
    expect(request(app, Method::GET, path, token).await, status).await
}

/// Sends an email with PHI in it with `key`; returns its id.
async fn send(app: &TestApp, key: &str) -> String {
    let resp = app
        .post_send(
            key,
            None,
            &json!({"to": PATIENT, "subject": SECRET_TEXT, "text": SECRET_TEXT}),
        )
        .await;
    expect(resp, 202).await["id"].as_str().unwrap().to_owned()
}

/// The one group of the listing at `path`.
async fn only_group(app: &TestApp, token: &str, path: &str) -> Value {
    let page = get(app, token, path, 200).await;
    let items = page["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{page}");
    items[0].clone()
}

fn assert_no_phi(body: &Value) {
    let text = body.to_string();
    for phi in [PATIENT, "pat.patient", "HIV", "no such user", "5.1.1"] {
        assert!(!text.contains(phi), "{phi} in {text}");
    }
}

fn samples(group: &Value) -> Vec<String> {
    let mut ids: Vec<String> = group["sample_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_owned())
        .collect();
    ids.sort();
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn failures_of_two_organisations_group_by_cause_and_each_admin_sees_only_its_own() {
    let app = TestApp::builder().spawn().await;
    app.smtp.set_behaviour(Behaviour::RejectRecipients(
        550,
        format!("5.1.1 <{PATIENT}>: no such user"),
    ));
    let (other, other_key) = app.other_tenant().await;
    let (_, stranger_key) = app.other_tenant().await;
    let mut ours = vec![
        send(&app, &app.api_key).await,
        send(&app, &app.api_key).await,
    ];
    let theirs = send(&app, &other_key).await;
    for id in &ours {
        app.wait_for_status(id, "failed", WAIT).await;
    }
    eventually("the other organisation's send to fail", WAIT, || async {
        let n = app.get_notification_with(&theirs, &other_key).await;
        let n: Value = n.json().await.unwrap();
        (n["status"] == "failed").then_some(())
    })
    .await;

    // The platform sees one group of both organisations.
    let root = platform_admin(&app).await;
    let filter = format!("{ERRORS}?kind=delivery&channel=email&class=external_provider");
    let all = only_group(&app, &root.token, &filter).await;
    assert_eq!(all["reason"], "mail_refused");
    assert_eq!(all["class"], "external_provider");
    assert_eq!(all["kind"], "delivery");
    assert_eq!(all["channel"], "email");
    assert_eq!(all["occurrences"], 3);
    assert_eq!(all["organizations"], 2);
    assert_eq!(all["recoveries"], 0);
    let mut every = ours.clone();
    every.push(theirs.clone());
    every.sort();
    assert_eq!(samples(&all), every);
    assert_no_phi(&all);
    let id = all["id"].as_str().unwrap().to_owned();
    let detail = get(&app, &root.token, &format!("{ERRORS}/{id}"), 200).await;
    let orgs = detail["affected_organizations"].as_array().unwrap();
    assert_eq!(orgs.len(), 2, "{detail}");
    assert_eq!(orgs[0]["organization_id"], app.tenant_id.to_string());
    assert_eq!(orgs[0]["occurrences"], 2);
    assert_eq!(orgs[1]["organization_id"], other.to_string());
    assert_no_phi(&detail);

    // Each organisation's admin sees its own count and samples only.
    let mine = only_group(&app, &app.api_key, ERRORS).await;
    assert_eq!(mine["id"], id);
    assert_eq!(
        (mine["occurrences"].as_i64(), mine["organizations"].as_i64()),
        (Some(2), Some(1))
    );
    ours.sort();
    assert_eq!(samples(&mine), ours);
    let detail = get(&app, &app.api_key, &format!("{ERRORS}/{id}"), 200).await;
    assert!(detail["affected_organizations"].is_null(), "{detail}");
    let theirs_view = only_group(&app, &other_key, ERRORS).await;
    assert_eq!(theirs_view["occurrences"], 1);
    assert_eq!(samples(&theirs_view), vec![theirs.clone()]);

    // Nothing stored for error tracking holds PHI either.
    let stored: String = sqlx::query_scalar(
        "select concat((select string_agg(g::text, ' ') from error_groups g),
                       (select string_agg(t::text, ' ') from error_group_tenants t))",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_no_phi(&Value::String(stored));

    // An organisation without occurrences: nothing listed, the group 404.
    let none = get(&app, &stranger_key, ERRORS, 200).await;
    assert_eq!(none["items"], json!([]));
    for path in [
        format!("{ERRORS}/{id}"),
        format!("{ERRORS}/{id}/recoveries"),
    ] {
        let p = get(&app, &stranger_key, &path, 404).await;
        assert_eq!(p["type"], "/problems/not-found");
    }

    // Statistics over the last day, per scope.
    let stats = get(&app, &root.token, &format!("{ERRORS}/statistics"), 200).await;
    assert_eq!(stats["occurrences"], 3);
    let class = |s: &Value, name: &str| {
        s["by_class"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == name)
            .map(|c| c["occurrences"].clone())
    };
    assert_eq!(class(&stats, "external_provider"), Some(json!(3)));
    assert_eq!(class(&stats, "network"), Some(json!(0)));
    assert_eq!(stats["by_channel"][0]["name"], "email");
    let stats = get(&app, &app.api_key, &format!("{ERRORS}/statistics"), 200).await;
    assert_eq!(stats["occurrences"], 2);
    assert_eq!(stats["recovery_rate"], 0.0);

    // Other filters narrow to nothing.
    let page = get(&app, &root.token, &format!("{ERRORS}?channel=sms"), 200).await;
    assert_eq!(page["items"], json!([]));
    let page = get(&app, &root.token, &format!("{ERRORS}?provider=twilio"), 200).await;
    assert_eq!(page["items"], json!([]));
    let page = get(
        &app,
        &root.token,
        &format!("{ERRORS}?since=2999-01-01T00:00:00Z"),
        200,
    )
    .await;
    assert_eq!(page["items"], json!([]));
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_retry_that_succeeds_records_a_recovery() {
    let app = TestApp::builder().spawn().await;
    app.smtp.set_behaviour(Behaviour::RejectRecipients(
        550,
        format!("5.1.1 <{PATIENT}>: no such user"),
    ));
    let id = send(&app, &app.api_key).await;
    app.wait_for_status(&id, "failed", WAIT).await;
    app.smtp.set_behaviour(Behaviour::Accept);
    let root = platform_admin(&app).await;
    let done = answer_json(
        &app,
        Method::POST,
        "/api/v1/ops/failed/retry",
        &root.token,
        &json!({"ids": [{"kind": "notification", "id": id}]}),
        200,
    )
    .await;
    assert_eq!(done["retried"], 1, "{done}");
    app.wait_for_status(&id, "sent", WAIT).await;

    let group = only_group(&app, &app.api_key, ERRORS).await;
    assert_eq!(group["recoveries"], 1);
    assert!(group["last_recovered_at"].is_string());
    let gid = group["id"].as_str().unwrap();
    let page = get(
        &app,
        &app.api_key,
        &format!("{ERRORS}/{gid}/recoveries"),
        200,
    )
    .await;
    let items = page["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{page}");
    assert_eq!(items[0]["notification_id"], id);
    assert_eq!(items[0]["failures"], 1);
    assert_eq!(items[0]["organization_id"], app.tenant_id.to_string());
    assert!(page["next_cursor"].is_null());
    assert_no_phi(&page);
    let stats = get(&app, &app.api_key, &format!("{ERRORS}/statistics"), 200).await;
    assert_eq!(
        (stats["occurrences"].as_i64(), stats["recoveries"].as_i64()),
        (Some(1), Some(1))
    );
    assert_eq!(stats["recovery_rate"], 1.0);
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_api_5xx_is_counted_without_the_request() {
    let app = TestApp::builder()
        .postgres_through_proxy()
        .without_worker()
        .without_scheduler()
        .spawn()
        .await;
    let proxy = app.postgres_proxy.as_ref().unwrap();
    proxy.cut();
    let resp = app
        .send_email(&json!({"to": PATIENT, "subject": SECRET_TEXT, "text": SECRET_TEXT}))
        .await;
    assert_eq!(resp.status(), 503);
    let request_id = resp.headers()["x-request-id"].to_str().unwrap().to_owned();
    proxy.restore();
    eventually("requests to reach Postgres again", WAIT, || async {
        let ok = with(&app, Method::GET, "/api/v1/lookups", &app.api_key)
            .send()
            .await
            .is_ok_and(|r| r.status() == 200);
        ok.then_some(())
    })
    .await;
    let root = platform_admin(&app).await;
    let group = eventually("the 503 to be counted", Duration::from_secs(10), || async {
        let page = get(&app, &root.token, &format!("{ERRORS}?kind=api"), 200).await;
        page["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|g| g["source"] == "/api/v1/services/notifications/send")
            .cloned()
    })
    .await;
    assert_eq!(group["reason"], "postgres_unreachable");
    assert_eq!(group["class"], "database");
    assert_eq!(group["source"], "/api/v1/services/notifications/send");
    assert!(group["occurrences"].as_i64().unwrap() >= 1);
    assert!(samples(&group).contains(&request_id), "{group}");
    assert_no_phi(&group);
    // The platform's own: no organisation sees it.
    let page = get(&app, &app.api_key, &format!("{ERRORS}?kind=api"), 200).await;
    assert_eq!(page["items"], json!([]));
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn error_endpoints_refuse_bad_input_and_callers_who_are_not_admins() {
    let app = TestApp::spawn_api_only().await;
    let root = platform_admin(&app).await;
    for path in [
        format!("{ERRORS}?class=user"),
        format!("{ERRORS}?kind=email"),
        format!("{ERRORS}?channel=fax"),
        format!("{ERRORS}?provider=Not%20A%20Provider"),
        format!("{ERRORS}?limit=0"),
        format!("{ERRORS}?limit=501"),
        format!("{ERRORS}?since=yesterday"),
        format!("{ERRORS}?cursor=nope"),
        format!("{ERRORS}?cursor={}", "9".repeat(101)),
        format!("{ERRORS}/statistics?since=2026-01-02T00:00:00Z&until=2026-01-01T00:00:00Z"),
        format!("{ERRORS}/statistics?since=2020-01-01T00:00:00Z&until=2026-01-01T00:00:00Z"),
    ] {
        let resp = request(&app, Method::GET, &path, &root.token).await;
        assert_eq!(resp.status(), 400, "{path}");
        assert_eq!(
            resp.headers()["content-type"],
            "application/problem+json",
            "{path}"
        );
    }
    // The group is checked before the cursor: one that names nothing is
    // 404 whatever cursor comes with it.
    let resp = request(
        &app,
        Method::GET,
        &format!("{ERRORS}/00000000-0000-0000-0000-000000000001/recoveries?cursor=-1"),
        &root.token,
    )
    .await;
    assert_eq!(resp.status(), 404);
    let p = get(
        &app,
        &root.token,
        &format!("{ERRORS}/00000000-0000-0000-0000-000000000001"),
        404,
    )
    .await;
    assert_eq!(p["type"], "/problems/not-found");
    // A malformed group id names no group, like an unknown one.
    let p = get(&app, &root.token, &format!("{ERRORS}/not-a-uuid"), 404).await;
    assert_eq!(p["type"], "/problems/not-found");
    let resp = app.get_anonymous(ERRORS).await;
    assert_eq!(resp.status(), 401);
    let staff =
        crate::http::org_support::user(&app, app.tenant_id, "DOCTOR", "doc@clinic.example").await;
    let p = get(&app, &staff.token, ERRORS, 403).await;
    assert_eq!(p["type"], "/problems/forbidden");
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_reason_code_falls_in_one_of_the_error_classes() {
    let app = TestApp::spawn_api_only().await;
    let reasons = [
        "recipient_invalid",
        "recipient_unreachable",
        "recipient_opted_out",
        "device_token_gone",
        "content_rejected",
        "whatsapp_window_closed",
        "sender_rejected",
        "rejected",
        "credentials_refused",
        "token_refused",
        "credentials_unusable",
        "rate_limited",
        "provider_unavailable",
        "timeout",
        "cannot_connect",
        "connection_failed",
        "tls_failed",
        "unreadable_answer",
        "no_message_id",
        "mail_refused",
        "mail_deferred",
        "mail_protocol",
        "mail_file_failed",
        "no_body",
        "content_unreadable",
        "recipient_malformed",
        "message_unbuildable",
        "config_incomplete",
        "no_provider",
        "not_a_messaging_provider",
        "window_unknown",
        "circuit_open",
        "rate_spent",
        "worker_lost",
        "subscriber_deleted",
        "bounced",
        "dropped",
        "carrier_failed",
        "other",
        "unknown",
        "endpoint_disabled",
        "http_3xx",
        "http_4xx",
        "http_5xx",
        "url_refused",
        "secret_unusable",
        "call_failed",
        "template_missing",
        "file_empty",
        "file_refused",
        "poll_unrecorded",
        "ups_error",
        shared::errors::reasons::JOB_FAILED,
        shared::errors::reasons::POSTGRES_UNREACHABLE,
        shared::errors::reasons::DATABASE_ERROR,
        shared::errors::reasons::DEPENDENCY_UNAVAILABLE,
        shared::errors::reasons::INTERNAL_ERROR,
        shared::errors::reasons::SERVER_ERROR,
    ];
    let classes = shared::db::errors::classes_of(&app.pool, &reasons)
        .await
        .unwrap();
    for (reason, class) in reasons.iter().zip(&classes) {
        assert!(
            shared::errors::ErrorClass::parse(class).is_some(),
            "{reason}: {class}"
        );
    }
    let used: std::collections::BTreeSet<&str> = classes.iter().map(String::as_str).collect();
    assert_eq!(
        used.len(),
        shared::errors::ErrorClass::ALL.len(),
        "{used:?}"
    );
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn webhooks_that_give_up_failed_bulk_jobs_and_failing_ups_polls_are_counted() {
    let receiver = testkit::webhooks::Receiver::start().await;
    let app = TestApp::builder()
        .var("WEBHOOKS_ALLOW_LOOPBACK", true)
        .var("JOBS__QUEUES__WEBHOOK__MAX_ATTEMPTS", 1)
        .spawn()
        .await;
    answer_json(
        &app,
        Method::POST,
        "/api/v1/admin/webhooks",
        &app.api_key,
        &json!({"url": receiver.url("/hook"), "events": ["notification.failed"]}),
        201,
    )
    .await;
    receiver.always(503);
    app.smtp.set_behaviour(Behaviour::RejectRecipients(
        550,
        format!("5.1.1 <{PATIENT}>: no such user"),
    ));
    let id = send(&app, &app.api_key).await;
    app.wait_for_status(&id, "failed", WAIT).await;
    let hook = eventually("the webhook delivery to give up", WAIT, || async {
        let page = get(&app, &app.api_key, &format!("{ERRORS}?kind=webhook"), 200).await;
        page["items"].as_array().unwrap().first().cloned()
    })
    .await;
    assert_eq!(
        (hook["reason"].as_str(), hook["class"].as_str()),
        (Some("http_5xx"), Some("external_provider"))
    );
    assert_eq!(hook["occurrences"], 1);

    // A bulk job and a shipment poll failing, as the worker records them.
    let bulk: String = sqlx::query_scalar(
        "insert into bulk_jobs (id, tenant_id, template_key, channels, mapping, status)
         values (gen_random_uuid(), $1, 'lab-ready', '{email}', '{}', 'parsing')
         returning id::text",
    )
    .bind(app.tenant_id)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    sqlx::query(
        "update bulk_jobs set status = 'failed', failure = 'row 3: pat.patient@example.org is not an address',
             failed_at = now() where id = $1::uuid",
    )
    .bind(&bulk)
    .execute(&app.pool)
    .await
    .unwrap();
    let shipment: String = sqlx::query_scalar(
        "insert into shipments (id, tenant_id, tracking_number, created_by, next_poll_at)
         values (gen_random_uuid(), $1, '1Z999AA10123456784', 'test', now() + interval '1 hour')
         returning id::text",
    )
    .bind(app.tenant_id)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    for _ in 0..2 {
        sqlx::query(
            "update shipments set poll_failures = poll_failures + 1,
                 last_error = 'UPS asked to slow down (429)' where id = $1::uuid",
        )
        .bind(&shipment)
        .execute(&app.pool)
        .await
        .unwrap();
    }
    let bulk_group = only_group(&app, &app.api_key, &format!("{ERRORS}?kind=bulk_job")).await;
    assert_eq!(
        (bulk_group["reason"].as_str(), bulk_group["class"].as_str()),
        (Some("file_refused"), Some("validation"))
    );
    assert_eq!(samples(&bulk_group), vec![bulk]);
    assert_no_phi(&bulk_group);
    let ups = only_group(
        &app,
        &app.api_key,
        &format!("{ERRORS}?kind=shipment&provider=ups"),
    )
    .await;
    assert_eq!(
        (ups["reason"].as_str(), ups["class"].as_str()),
        (Some("rate_limited"), Some("transient"))
    );
    assert_eq!(ups["occurrences"], 2);
    assert_eq!(samples(&ups), vec![shipment]);
    let stats = get(&app, &app.api_key, &format!("{ERRORS}/statistics"), 200).await;
    let kinds: Vec<&str> = stats["by_kind"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["name"].as_str().unwrap())
        .collect();
    for kind in ["delivery", "webhook", "bulk_job", "shipment"] {
        assert!(kinds.contains(&kind), "{kinds:?}");
    }
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn counts_older_than_90_days_are_pruned_and_newer_ones_kept() {
    let app = TestApp::spawn_api_only().await;
    let old = chrono::Utc::now() - chrono::TimeDelta::days(100);
    let mut rows = shared::db::errors::Occurrences::default();
    for (tenant, at) in [
        (Some(app.tenant_id), old),
        (None, old),
        (None, chrono::Utc::now()),
    ] {
        let cause = shared::db::errors::Cause {
            kind: shared::errors::ErrorKind::Job,
            reason: shared::errors::reasons::JOB_FAILED,
            source: "email",
            tenant,
        };
        rows.push(&cause, None, 1, at);
    }
    shared::db::errors::record(&app.pool, &rows).await.unwrap();
    sqlx::query("update error_groups set created_at = $1")
        .bind(old)
        .execute(&app.pool)
        .await
        .unwrap();
    shared::db::errors::prune(&app.pool, chrono::Utc::now() - shared::errors::KEEP)
        .await
        .unwrap();
    let left: Vec<(Option<uuid::Uuid>, i64)> = sqlx::query_as(
        "select nullif(tenant_id, '00000000-0000-0000-0000-000000000000'), occurrences
         from error_group_tenants",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap();
    // The platform's row was seen today (2 occurrences, one of them old);
    // the organisation's only one is gone.
    assert_eq!(left, vec![(None, 2)]);
    let hours: i64 = sqlx::query_scalar("select count(*) from error_hours")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(hours, 1);
    let groups: i64 = sqlx::query_scalar("select count(*) from error_groups")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(groups, 1);
    app.shutdown().await;
}
