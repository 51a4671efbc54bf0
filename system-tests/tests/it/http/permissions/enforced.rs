//! The declared permission is what every route checks: a custom set, a
//! grant or a delegation opens the routes that used to need the `ADMIN`
//! role, taking it away closes them (403 problem+json naming it, audited
//! once), and an API key scoped without it is refused the same way.

use reqwest::Method;
use serde_json::{Value, json};
use shared::permissions::Permission;
use testkit::TestApp;

use super::{app, assign_set, audit_rows, grant, sender_key};
use crate::http::org_support::{Signed, answer, answer_json, request, request_json, user, with};

/// Creates a custom set holding exactly `permission`; its id.
async fn set_of(app: &TestApp, admin: &Signed, permission: &str) -> String {
    let key = permission.replace(':', "-");
    let created = answer_json(
        app,
        Method::POST,
        "/api/v1/permissions/sets",
        &admin.token,
        &json!({"key": key, "name": key, "permissions": [permission]}),
        201,
    )
    .await;
    created["id"].as_str().unwrap().to_owned()
}

/// Assigns set `set` to `who`.
async fn assign(app: &TestApp, admin: &Signed, who: &Signed, set: &str) {
    assign_set(app, &admin.token, &who.id, set).await;
}

/// Asserts `resp` is the 403 problem naming `permission`.
async fn refused(resp: reqwest::Response, permission: Permission, what: &str) {
    assert_eq!(resp.status(), 403, "{what}");
    let content_type = resp
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(
        content_type.starts_with("application/problem+json"),
        "{what}: {content_type}"
    );
    let problem: Value = resp.json().await.unwrap();
    assert_eq!(problem["status"], 403, "{what}");
    assert_eq!(problem["detail"], permission.required(), "{what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_set_holding_exactly_the_declared_permission_opens_each_route_group() {
    let app = app().await;
    let admin = user(&app, app.tenant_id, "ADMIN", "admin@clinic.example").await;
    let doctor = user(&app, app.tenant_id, "DOCTOR", "doc@clinic.example").await;
    let tenant = app.tenant_id.to_string();
    let nothing = answer_json(
        &app,
        Method::POST,
        "/api/v1/permissions/sets",
        &admin.token,
        &json!({"key": "nothing", "name": "Nothing"}),
        201,
    )
    .await;
    let nothing = nothing["id"].as_str().unwrap().to_owned();
    let sender = sender_key(&app).await;
    let missing = format!("/api/v1/admin/alert-rules/{}", uuid::Uuid::now_v7());

    // (group, method, path, permission, status once allowed).
    let routes = [
        (
            "organizations",
            Method::GET,
            format!("/api/v1/admin/organizations/{tenant}"),
            "organizations:read",
            200,
        ),
        (
            "rate limits",
            Method::GET,
            format!("/api/v1/admin/organizations/{tenant}/rate-limits"),
            "organizations:read",
            200,
        ),
        (
            "alerts",
            Method::GET,
            "/api/v1/admin/alert-rules".to_owned(),
            "alerts:read",
            200,
        ),
        ("alerts", Method::DELETE, missing, "alerts:manage", 404),
        (
            "errors",
            Method::GET,
            "/api/v1/errors".to_owned(),
            "errors:read",
            200,
        ),
        (
            "lookups",
            Method::GET,
            "/api/v1/lookups".to_owned(),
            "lookups:read",
            200,
        ),
        (
            "reports",
            Method::GET,
            "/api/v1/reports/schedules".to_owned(),
            "reports:read",
            200,
        ),
        (
            "security",
            Method::GET,
            "/api/v1/security/events".to_owned(),
            "security:read",
            200,
        ),
        (
            "operations",
            Method::GET,
            "/api/v1/ops/queues".to_owned(),
            "console:read",
            200,
        ),
        (
            "failed work",
            Method::GET,
            "/api/v1/ops/failed/groups".to_owned(),
            "console:read",
            200,
        ),
        (
            "shipments",
            Method::GET,
            "/api/v1/shipments".to_owned(),
            "shipments:read",
            200,
        ),
    ];
    let mut denied = 0;
    for (group, method, path, name, status) in routes {
        let permission = Permission::parse(name).unwrap();
        let what = format!("{group}: {method} {path}");
        let set = set_of_once(&app, &admin, name).await;
        assign(&app, &admin, &doctor, &set).await;
        let allowed = request(&app, method.clone(), &path, &doctor.token).await;
        assert_eq!(allowed.status().as_u16(), status, "{what} with {name}");

        assign(&app, &admin, &doctor, &nothing).await;
        refused(
            request(&app, method.clone(), &path, &doctor.token).await,
            permission,
            &what,
        )
        .await;
        denied += 1;
        refused(
            request(&app, method.clone(), &path, &sender).await,
            permission,
            &format!("{what} by a key scoped to sending"),
        )
        .await;
        // The admin's role still opens it.
        let by_admin = request(&app, method, &path, &admin.token).await;
        assert_eq!(by_admin.status().as_u16(), status, "{what} by the admin");
    }
    // Each user refusal is one audit row naming the operation.
    assert_eq!(
        audit_rows(&app, api::permissions::DENIED_ACTION, "failure").await,
        denied
    );
    let (operation, permission): (String, String) = sqlx::query_as(
        "select resource_id, details->>'permission' from audit_log
         where action = $1 order by id desc limit 1",
    )
    .bind(api::permissions::DENIED_ACTION)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(
        (operation.as_str(), permission.as_str()),
        ("GET /api/v1/shipments", "shipments:read")
    );
    app.shutdown().await;
}

/// [`set_of`], reusing the set already made for `permission`.
async fn set_of_once(app: &TestApp, admin: &Signed, permission: &str) -> String {
    let key = permission.replace(':', "-");
    let existing: Option<uuid::Uuid> =
        sqlx::query_scalar("select id from permission_sets where key = $1 and tenant_id = $2")
            .bind(&key)
            .bind(app.tenant_id)
            .fetch_optional(&app.pool)
            .await
            .unwrap();
    match existing {
        Some(id) => id.to_string(),
        None => set_of(app, admin, permission).await,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn grants_and_delegations_open_routes_that_needed_the_admin_role() {
    let app = app().await;
    let admin = user(&app, app.tenant_id, "ADMIN", "admin@clinic.example").await;
    let doctor = user(&app, app.tenant_id, "DOCTOR", "doc@clinic.example").await;
    let alerts = || with(&app, Method::GET, "/api/v1/admin/alerts", &doctor.token);
    let events = || with(&app, Method::GET, "/api/v1/security/events", &doctor.token);
    refused(
        alerts().send().await.unwrap(),
        Permission::AlertsRead,
        "alerts before",
    )
    .await;
    refused(
        events().send().await.unwrap(),
        Permission::SecurityRead,
        "events before",
    )
    .await;

    // A grant.
    grant(&app, &admin.token, &doctor.id, "alerts:read").await;
    assert_eq!(alerts().send().await.unwrap().status(), 200);

    // A delegation from the admin.
    let lent = answer_json(
        &app,
        Method::POST,
        "/api/v1/permissions/delegations",
        &admin.token,
        &json!({"delegate_id": doctor.id, "permissions": ["security:read"],
                "ends_at": (chrono::Utc::now() + chrono::Duration::days(1)).to_rfc3339()}),
        201,
    )
    .await;
    assert_eq!(events().send().await.unwrap().status(), 200);
    answer(
        &app,
        Method::POST,
        &format!(
            "/api/v1/permissions/delegations/{}/revoke",
            lent["id"].as_str().unwrap()
        ),
        &admin.token,
        200,
    )
    .await;
    refused(
        events().send().await.unwrap(),
        Permission::SecurityRead,
        "events after the revocation",
    )
    .await;

    // An ADMIN given the Viewer set reads alert rules but may no longer
    // change them: the set, not the role, decides.
    let viewer = "00000000-0000-7000-8000-000000000002";
    let other_admin = user(&app, app.tenant_id, "ADMIN", "admin2@clinic.example").await;
    assign(&app, &admin, &other_admin, viewer).await;
    let rule = format!("/api/v1/admin/alert-rules/{}", uuid::Uuid::now_v7());
    assert_eq!(
        request(
            &app,
            Method::GET,
            "/api/v1/admin/alert-rules",
            &other_admin.token
        )
        .await
        .status(),
        200
    );
    refused(
        request(&app, Method::DELETE, &rule, &other_admin.token).await,
        Permission::AlertsManage,
        "an admin holding Viewer",
    )
    .await;
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_token_without_roles_keeps_what_it_could_do() {
    let app = app().await;
    let secret = app.issue_jwt_secret(app.tenant_id).await;
    let jwt = testkit::jwks::user_token(&secret, app.tenant_id, "outside-7", &[]);
    // Member, by default: lookups and shipments, as before.
    for path in ["/api/v1/lookups", "/api/v1/shipments"] {
        let resp = request(&app, Method::GET, path, &jwt).await;
        assert_eq!(resp.status(), 200, "{path}");
    }
    let checked = answer_json(
        &app,
        Method::POST,
        "/api/v1/permissions/check",
        &jwt,
        &json!({"permission": "shipments:read"}),
        200,
    )
    .await;
    assert_eq!(checked["allowed"], true);
    assert_eq!(checked["sources"][0]["via"], "default");
    // But no invitations (no role to invite with) and no administration.
    let invite = request_json(
        &app,
        Method::POST,
        "/api/v1/invitations",
        &jwt,
        &json!({"email": "x@c.example", "invitation_type": "medical_staff"}),
    )
    .await;
    assert_eq!(invite.status(), 403);
    refused(
        request(&app, Method::GET, "/api/v1/admin/templates", &jwt).await,
        Permission::TemplatesRead,
        "templates without roles",
    )
    .await;
    app.shutdown().await;
}
