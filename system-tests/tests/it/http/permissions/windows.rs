//! Delegation windows judged by the permissions clock (the test moves it),
//! and the list of delegations a user gave and received.

use chrono::{DateTime, Duration, Utc};
use reqwest::Method;
use serde_json::{Value, json};
use testkit::TestApp;

use super::{statistics, status_detail};
use crate::http::org_support::{Signed, answer, answer_json, request, request_json, user, with};
use crate::support::ManualClock;

const DELEGATIONS: &str = "/api/v1/permissions/delegations";

async fn lend(
    app: &TestApp,
    from: &Signed,
    to: &Signed,
    permissions: &[&str],
    starts_at: Option<DateTime<Utc>>,
    ends_at: DateTime<Utc>,
) -> Value {
    let mut body = json!({"delegate_id": to.id, "permissions": permissions,
        "ends_at": ends_at.to_rfc3339()});
    if let Some(s) = starts_at {
        body["starts_at"] = json!(s.to_rfc3339());
    }
    answer_json(app, Method::POST, DELEGATIONS, &from.token, &body, 201).await
}

/// The ids of the delegations `token` lists with `query`.
async fn listed(app: &TestApp, token: &str, query: &str) -> Vec<String> {
    let page = answer(
        app,
        Method::GET,
        &format!("{DELEGATIONS}?{query}"),
        token,
        200,
    )
    .await;
    page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_delegation_counts_only_inside_its_window_on_the_permissions_clock() {
    let start = Utc::now();
    let clock = ManualClock::at(start);
    let app = TestApp::builder()
        .without_worker()
        .without_scheduler()
        .permissions_clock(clock.clone())
        .spawn()
        .await;
    let admin = user(&app, app.tenant_id, "ADMIN", "admin@clinic.example").await;
    let doctor = user(&app, app.tenant_id, "DOCTOR", "doc@clinic.example").await;
    let audit = || with(&app, Method::GET, "/api/v1/admin/audit", &doctor.token);

    // From an hour from now, for a day.
    let d = lend(
        &app,
        &admin,
        &doctor,
        &["audit:read"],
        Some(start + Duration::hours(1)),
        start + Duration::hours(25),
    )
    .await;
    let id = d["id"].as_str().unwrap().to_owned();
    assert_eq!(d["active"], false, "not started");
    assert_eq!(audit().send().await.unwrap().status(), 403);
    assert!(listed(&app, &doctor.token, "active=true").await.is_empty());

    clock.advance(Duration::hours(1));
    assert_eq!(audit().send().await.unwrap().status(), 200, "started");
    assert_eq!(
        listed(&app, &doctor.token, "active=true").await,
        [id.as_str()]
    );

    clock.advance(Duration::hours(24) - Duration::seconds(1));
    assert_eq!(audit().send().await.unwrap().status(), 200, "last second");

    clock.advance(Duration::seconds(1));
    let (status, detail) = status_detail(audit().send().await.unwrap()).await;
    assert_eq!(
        (status, detail.as_str()),
        (403, shared::permissions::Permission::AuditRead.required()),
        "ended"
    );
    assert_eq!(
        listed(&app, &doctor.token, "active=false").await,
        [id.as_str()]
    );
    let stats = statistics(&app, &admin.token).await;
    assert_eq!(stats["active_delegations"], 0);
    // A window is judged against the same clock when it is made.
    let late = request_json(
        &app,
        Method::POST,
        DELEGATIONS,
        &admin.token,
        &json!({"delegate_id": doctor.id, "permissions": ["audit:read"],
            "ends_at": (start + Duration::hours(2)).to_rfc3339()}),
    )
    .await;
    assert_eq!(late.status(), 400, "ends before the clock's now");
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn users_list_the_delegations_they_gave_and_received() {
    let app = TestApp::spawn_api_only().await;
    let admin = user(&app, app.tenant_id, "ADMIN", "admin@clinic.example").await;
    let doctor = user(&app, app.tenant_id, "DOCTOR", "doc@clinic.example").await;
    let nurse = user(&app, app.tenant_id, "MEDICAL_STAFF", "nurse@clinic.example").await;
    let (other, _) = app.other_tenant().await;
    let stranger = user(&app, other, "ADMIN", "admin@other.example").await;
    let stranger_to = user(&app, other, "DOCTOR", "doc@other.example").await;
    let day = Utc::now() + Duration::days(1);
    let received = lend(&app, &admin, &doctor, &["audit:read"], None, day).await;
    let received = received["id"].as_str().unwrap().to_owned();
    let given = lend(&app, &doctor, &nurse, &["shipments:read"], None, day).await;
    let given = given["id"].as_str().unwrap().to_owned();
    lend(&app, &stranger, &stranger_to, &["audit:read"], None, day).await;

    // Newest first; one direction or both.
    assert_eq!(
        listed(&app, &doctor.token, "").await,
        [given.as_str(), received.as_str()]
    );
    assert_eq!(
        listed(&app, &doctor.token, "direction=given").await,
        [given.as_str()]
    );
    assert_eq!(
        listed(&app, &doctor.token, "direction=received").await,
        [received.as_str()]
    );
    assert_eq!(
        listed(&app, &doctor.token, &format!("user_id={}", doctor.id)).await,
        [given.as_str(), received.as_str()]
    );
    // Pages.
    let first = answer(
        &app,
        Method::GET,
        &format!("{DELEGATIONS}?limit=1"),
        &doctor.token,
        200,
    )
    .await;
    assert_eq!(first["items"][0]["id"], json!(given));
    let cursor = first["next_cursor"].as_str().unwrap();
    let second = answer(
        &app,
        Method::GET,
        &format!("{DELEGATIONS}?limit=1&cursor={cursor}"),
        &doctor.token,
        200,
    )
    .await;
    assert_eq!(second["items"][0]["id"], json!(received));
    assert!(second["next_cursor"].is_null());

    // Someone else's: permissions:read, inside the organisation.
    let (status, _) = status_detail(
        request(
            &app,
            Method::GET,
            &format!("{DELEGATIONS}?user_id={}", doctor.id),
            &nurse.token,
        )
        .await,
    )
    .await;
    assert_eq!(status, 403);
    assert_eq!(
        listed(&app, &admin.token, &format!("user_id={}", nurse.id)).await,
        [given.as_str()]
    );
    let cross = request(
        &app,
        Method::GET,
        &format!("{DELEGATIONS}?user_id={}", stranger.id),
        &admin.token,
    )
    .await;
    assert_eq!(cross.status(), 404);
    // The organisation's key lists the whole organisation's, no other's.
    assert_eq!(
        listed(&app, &app.api_key, "").await,
        [given.as_str(), received.as_str()]
    );
    // Bad input names the field.
    for (query, field) in [
        ("cursor=nope", "cursor"),
        ("direction=sideways", "direction"),
        ("limit=0", "limit"),
        ("active=maybe", "active"),
    ] {
        let resp = request(
            &app,
            Method::GET,
            &format!("{DELEGATIONS}?{query}"),
            &doctor.token,
        )
        .await;
        assert_eq!(resp.status(), 400, "{query}");
        let text = resp.text().await.unwrap();
        assert!(text.contains(field), "{query}: {text}");
    }
    app.shutdown().await;
}
