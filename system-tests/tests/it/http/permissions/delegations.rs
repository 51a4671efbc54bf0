//! Delegation: effective in its window, ended by revocation or by the
//! delegator losing the permission, bounded by what the delegator holds,
//! and refused for bad input and other organisations' users.

use chrono::{Duration, Utc};
use reqwest::Method;
use serde_json::{Value, json};

use super::{
    app, assign_set, audit_rows, changed_events, foreign_set, held, statistics, status_detail,
};
use crate::http::org_support::{answer, answer_json, request, request_json, user, with};

const DELEGATE: &str = "/api/v1/permissions/delegations";

fn lend(to: &str, permissions: &[&str], days: i64) -> Value {
    json!({"delegate_id": to, "permissions": permissions,
        "ends_at": (Utc::now() + Duration::days(days)).to_rfc3339(), "reason": "cover for leave"})
}

async fn check(app: &testkit::TestApp, token: &str, permission: &str) -> bool {
    let body = answer_json(
        app,
        Method::POST,
        "/api/v1/permissions/check",
        token,
        &json!({"permission": permission}),
        200,
    )
    .await;
    body["allowed"].as_bool().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_delegation_works_until_revoked_or_until_its_delegator_loses_the_permission() {
    let app = app().await;
    let admin = user(&app, app.tenant_id, "ADMIN", "admin@clinic.example").await;
    let doctor = user(&app, app.tenant_id, "DOCTOR", "doc@clinic.example").await;
    let audit = || with(&app, Method::GET, "/api/v1/admin/audit", &doctor.token);
    assert_eq!(audit().send().await.unwrap().status(), 403);
    assert!(!check(&app, &doctor.token, "audit:read").await);

    let d = answer_json(
        &app,
        Method::POST,
        DELEGATE,
        &admin.token,
        &lend(&doctor.id, &["audit:read"], 1),
        201,
    )
    .await;
    assert_eq!(audit().send().await.unwrap().status(), 200);
    assert!(check(&app, &doctor.token, "audit:read").await);
    let got = held(&app, &doctor.token, &doctor.id).await;
    assert_eq!(
        got.iter().find(|(n, _)| n == "audit:read").unwrap().1,
        ["delegation"]
    );
    let stats = statistics(&app, &admin.token).await;
    assert_eq!(stats["active_delegations"], 1);

    // Revoked: gone at once (and revoking again changes nothing).
    let revoke = format!("{DELEGATE}/{}/revoke", d["id"].as_str().unwrap());
    let r = answer(&app, Method::POST, &revoke, &admin.token, 200).await;
    assert!(r["revoked_at"].is_string());
    assert_eq!(audit().send().await.unwrap().status(), 403);
    answer(&app, Method::POST, &revoke, &admin.token, 200).await;
    assert_eq!(
        audit_rows(&app, "permission.delegation_revoke", "success").await,
        1
    );

    // A new one ends when its delegator loses audit:read (Viewer assigned
    // by the tenant's key), with no job in between.
    answer_json(
        &app,
        Method::POST,
        DELEGATE,
        &admin.token,
        &lend(&doctor.id, &["audit:read"], 2),
        201,
    )
    .await;
    assert_eq!(audit().send().await.unwrap().status(), 200);
    let viewer = "00000000-0000-7000-8000-000000000002";
    assign_set(&app, &app.api_key, &admin.id, viewer).await;
    assert_eq!(audit().send().await.unwrap().status(), 403);
    assert!(!check(&app, &doctor.token, "audit:read").await);
    // Given back, the delegation counts again: it was never deleted.
    let owner = "00000000-0000-7000-8000-000000000005";
    assign_set(&app, &app.api_key, &admin.id, owner).await;
    assert_eq!(audit().send().await.unwrap().status(), 200);
    assert_eq!(audit_rows(&app, "permission.delegate", "success").await, 2);
    assert!(changed_events(&app).await >= 5);
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_delegation_never_exceeds_its_delegator_and_bad_requests_are_refused() {
    let app = app().await;
    let admin = user(&app, app.tenant_id, "ADMIN", "admin@clinic.example").await;
    let doctor = user(&app, app.tenant_id, "DOCTOR", "doc@clinic.example").await;
    let nurse = user(&app, app.tenant_id, "MEDICAL_STAFF", "nurse@clinic.example").await;
    let (other_tenant, other_key) = app.other_tenant().await;
    let stranger = user(&app, other_tenant, "DOCTOR", "doc@other.example").await;

    // A doctor holds no audit:read, so cannot lend it.
    let (status, detail) = status_detail(
        request_json(
            &app,
            Method::POST,
            DELEGATE,
            &doctor.token,
            &lend(&nurse.id, &["shipments:read", "audit:read"], 1),
        )
        .await,
    )
    .await;
    assert_eq!(
        (status, detail.as_str()),
        (403, "you do not hold audit:read, so you cannot delegate it")
    );
    assert_eq!(audit_rows(&app, "permission.delegate", "failure").await, 1);
    // What it does hold it may lend; the nurse cannot pass it on.
    answer_json(
        &app,
        Method::POST,
        DELEGATE,
        &doctor.token,
        &lend(&nurse.id, &["shipments:read"], 1),
        201,
    )
    .await;
    let onward = request_json(
        &app,
        Method::POST,
        DELEGATE,
        &nurse.token,
        &lend(&admin.id, &["audit:read"], 1),
    )
    .await;
    assert_eq!(onward.status(), 403);

    let bad = |body: Value| {
        with(&app, Method::POST, DELEGATE, &admin.token)
            .json(&body)
            .send()
    };
    let cases = [
        (lend(&admin.id, &["audit:read"], 1), 400, "delegate_id"),
        (lend(&doctor.id, &["audit:fly"], 1), 400, "permissions[0]"),
        (lend(&doctor.id, &[], 1), 400, "permissions"),
        (lend(&doctor.id, &["audit:read"], -1), 400, "ends_at"),
        (lend(&doctor.id, &["audit:read"], 366), 400, "ends_at"),
    ];
    for (body, status, field) in cases {
        let resp = bad(body).await.unwrap();
        assert_eq!(resp.status().as_u16(), status, "{field}");
        let problem: Value = resp.json().await.unwrap();
        assert_eq!(problem["invalid_params"][0]["name"], field);
    }
    let past_start = json!({"delegate_id": doctor.id, "permissions": ["audit:read"],
        "starts_at": (Utc::now() - Duration::days(2)).to_rfc3339(),
        "ends_at": (Utc::now() + Duration::days(1)).to_rfc3339()});
    assert_eq!(bad(past_start).await.unwrap().status(), 400);

    // Another organisation's user is not found, whatever the route.
    let cross = bad(lend(&stranger.id, &["audit:read"], 1)).await.unwrap();
    assert_eq!(cross.status(), 404);
    for (method, path) in [
        (
            Method::GET,
            format!("/api/v1/users/{}/permissions", stranger.id),
        ),
        (
            Method::PUT,
            format!("/api/v1/users/{}/permission-set", stranger.id),
        ),
        (
            Method::POST,
            format!("/api/v1/users/{}/permissions", stranger.id),
        ),
    ] {
        let mut req = with(&app, method.clone(), &path, &admin.token);
        if method == Method::PUT {
            req = req.json(&json!({"set_id": "00000000-0000-7000-8000-000000000002"}));
        } else if method == Method::POST {
            req = req.json(&json!({"permission": "audit:read"}));
        }
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status(), 404, "{method} {path}");
    }
    // The other organisation's custom set is not found either.
    let theirs = foreign_set(&app, &other_key).await;
    let get = request(
        &app,
        Method::GET,
        &format!("/api/v1/permissions/sets/{theirs}"),
        &admin.token,
    )
    .await;
    assert_eq!(get.status(), 404);
    let assign = request_json(
        &app,
        Method::PUT,
        &format!("/api/v1/users/{}/permission-set", doctor.id),
        &admin.token,
        &json!({"set_id": theirs}),
    )
    .await;
    assert_eq!(assign.status(), 404);
    // An API key has no permissions of its own to lend.
    let by_key = request_json(
        &app,
        Method::POST,
        DELEGATE,
        &app.api_key,
        &lend(&doctor.id, &["audit:read"], 1),
    )
    .await;
    assert_eq!(by_key.status(), 403);
    app.shutdown().await;
}
