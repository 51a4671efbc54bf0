//! Organisations: the platform admin's lifecycle, BAAs and compliance, and
//! the walls between organisations.

use chrono::{Days, Utc};
use reqwest::Method;
use serde_json::json;
use testkit::TestApp;

use crate::http::org_support::{
    answer, answer_json, expect, platform_admin, request, request_json, user, with,
};

const ORGS: &str = "/api/v1/admin/organizations";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_platform_admin_creates_lists_updates_and_deactivates_an_organization() {
    let app = TestApp::spawn_api_only().await;
    let root = platform_admin(&app).await;
    let created = answer_json(
        &app,
        Method::POST,
        ORGS,
        &root.token,
        &json!({"name": "Lakeside Clinic", "type": "clinic",
                "contact": {"email": "office@lakeside.example"},
                "address": {"city": "Austin"}, "settings": {"block_phi_when_non_compliant": true}}),
        201,
    )
    .await;
    let id = created["id"].as_str().unwrap().to_owned();
    assert_eq!(created["status"], "active");
    assert_eq!(created["compliant"], false, "no BAA yet");

    let page = answer(
        &app,
        Method::GET,
        &format!("{ORGS}?name=lakeside&type=clinic"),
        &root.token,
        200,
    )
    .await;
    assert_eq!(page["items"].as_array().unwrap().len(), 1);
    assert_eq!(page["items"][0]["id"], id.as_str());

    let updated = answer_json(
        &app,
        Method::PATCH,
        &format!("{ORGS}/{id}"),
        &root.token,
        &json!({"name": "Lakeside Health"}),
        200,
    )
    .await;
    assert_eq!(updated["name"], "Lakeside Health");
    assert_eq!(
        updated["address"]["city"], "Austin",
        "untouched fields stay"
    );

    let deactivated = answer(
        &app,
        Method::PATCH,
        &format!("{ORGS}/{id}/deactivate"),
        &root.token,
        200,
    )
    .await;
    assert_eq!(deactivated["status"], "inactive");
    let stats = answer(
        &app,
        Method::GET,
        &format!("{ORGS}/stats"),
        &root.token,
        200,
    )
    .await;
    assert_eq!(stats["inactive"], 1, "{stats}");
    assert_eq!(stats["active"], 1, "the test tenant");
    assert_eq!(stats["total"], 2);

    let actions: Vec<(String, String)> =
        sqlx::query_as("select action, result from audit_log where resource_id = $1 order by id")
            .bind(&id)
            .fetch_all(&app.pool)
            .await
            .unwrap();
    let names: Vec<&str> = actions.iter().map(|(a, _)| a.as_str()).collect();
    assert_eq!(
        names,
        [
            "organization.create",
            "organization.update",
            "organization.deactivate"
        ]
    );
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn signing_a_baa_keeps_the_history_and_decides_compliance() {
    let app = TestApp::spawn_api_only().await;
    let root = platform_admin(&app).await;
    let id = app.tenant_id.to_string();
    let today = Utc::now().date_naive();
    let sign = |signed: chrono::NaiveDate, expires: chrono::NaiveDate, url: &str| {
        with(
            &app,
            Method::PATCH,
            &format!("{ORGS}/{id}/sign-baa"),
            &root.token,
        )
        .json(&json!({"signed_on": signed, "expires_on": expires, "document_url": url}))
    };
    let old = expect(
        sign(
            today - Days::new(400),
            today - Days::new(35),
            "https://docs.example/baa-1.pdf",
        )
        .send()
        .await
        .unwrap(),
        200,
    )
    .await;
    assert_eq!(old["compliant"], false, "expired");
    let expiring = answer(
        &app,
        Method::GET,
        &format!("{ORGS}/baa-reminders?days=10"),
        &root.token,
        200,
    )
    .await;
    assert_eq!(
        expiring.as_array().unwrap().len(),
        1,
        "expired ones are listed"
    );

    let new = expect(
        sign(
            today,
            today + Days::new(365),
            "https://docs.example/baa-2.pdf",
        )
        .send()
        .await
        .unwrap(),
        200,
    )
    .await;
    assert_eq!(new["compliant"], true);
    assert_eq!(new["baa_days_left"], 365);
    let history = answer(
        &app,
        Method::GET,
        &format!("{ORGS}/{id}/baa-history"),
        &root.token,
        200,
    )
    .await;
    let urls: Vec<&str> = history
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["document_url"].as_str().unwrap())
        .collect();
    assert_eq!(
        urls,
        [
            "https://docs.example/baa-2.pdf",
            "https://docs.example/baa-1.pdf"
        ]
    );
    let none = answer(
        &app,
        Method::GET,
        &format!("{ORGS}/baa-reminders?days=30"),
        &root.token,
        200,
    )
    .await;
    assert!(none.as_array().unwrap().is_empty());

    // Bad agreements are refused field by field, and nothing is stored.
    for (body, field) in [
        (
            json!({"signed_on": today, "expires_on": today, "document_url": "https://d.example/x"}),
            "expires_on",
        ),
        (
            json!({"signed_on": today + Days::new(3), "expires_on": today + Days::new(300), "document_url": "https://d.example/x"}),
            "signed_on",
        ),
        (
            json!({"signed_on": today, "expires_on": today + Days::new(300), "document_url": "javascript:alert(1)"}),
            "document_url",
        ),
        (
            json!({"signed_on": today, "expires_on": today + Days::new(300), "document_url": format!("https://d.example/{}", "a".repeat(3000))}),
            "document_url",
        ),
    ] {
        let problem = answer_json(
            &app,
            Method::PATCH,
            &format!("{ORGS}/{id}/sign-baa"),
            &root.token,
            &body,
            400,
        )
        .await;
        assert_eq!(problem["invalid_params"][0]["name"], field, "{problem}");
    }
    let bad_date = request_json(&app, Method::PATCH, &format!("{ORGS}/{id}/sign-baa"), &root.token, &json!({"signed_on": "yesterday", "expires_on": today, "document_url": "https://d.example/x"})).await;
    assert_eq!(bad_date.status(), 400);
    let count: i64 = sqlx::query_scalar("select count(*) from baa_agreements")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(count, 2);
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_organization_admin_cannot_touch_another_organization() {
    let app = TestApp::spawn_api_only().await;
    let root = platform_admin(&app).await;
    let (other, _) = app.other_tenant().await;
    let admin = user(&app, app.tenant_id, "ADMIN", "admin@test-clinic.example").await;

    // Its own organisation it may read, not change.
    let own = request(
        &app,
        Method::GET,
        &format!("{ORGS}/{}", app.tenant_id),
        &admin.token,
    )
    .await;
    assert_eq!(own.status(), 200);
    let change_own = request_json(
        &app,
        Method::PATCH,
        &format!("{ORGS}/{}", app.tenant_id),
        &admin.token,
        &json!({"name": "Mine now"}),
    )
    .await;
    assert_eq!(change_own.status(), 403);
    // Another organisation does not exist for it, whatever the route.
    let baa = json!({"signed_on": "2026-01-01", "expires_on": "2027-01-01", "document_url": "https://d.example/x"});
    for (method, path, body) in [
        (Method::GET, format!("{ORGS}/{other}"), None),
        (
            Method::PATCH,
            format!("{ORGS}/{other}"),
            Some(json!({"name": "x"})),
        ),
        (Method::PATCH, format!("{ORGS}/{other}/deactivate"), None),
        (
            Method::PATCH,
            format!("{ORGS}/{other}/sign-baa"),
            Some(baa.clone()),
        ),
        (Method::GET, format!("{ORGS}/{other}/baa-history"), None),
        (
            Method::PATCH,
            format!("{ORGS}/{other}/assign-admin"),
            Some(json!({"user_id": admin.id})),
        ),
        (Method::GET, format!("{ORGS}/not-a-uuid"), None),
    ] {
        let mut req = with(&app, method.clone(), &path, &admin.token);
        if let Some(body) = body {
            req = req.json(&body);
        }
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status(), 404, "{method} {path}");
        assert_eq!(resp.headers()["content-type"], "application/problem+json");
    }
    for (method, path) in [
        (Method::POST, ORGS.to_owned()),
        (Method::GET, ORGS.to_owned()),
        (Method::GET, format!("{ORGS}/stats")),
    ] {
        let resp = request_json(
            &app,
            method.clone(),
            &path,
            &admin.token,
            &json!({"name": "Mine", "type": "clinic"}),
        )
        .await;
        assert_eq!(resp.status(), 403, "{method} {path}");
    }
    // A tenant API key is an organisation admin too, not a platform one.
    let by_key = app.get_with_key(&format!("{ORGS}/{other}")).await;
    assert_eq!(by_key.status(), 404);
    // The platform admin sees it.
    let seen = request(&app, Method::GET, &format!("{ORGS}/{other}"), &root.token).await;
    assert_eq!(seen.status(), 200);
    // Refusals are audited as failures, with the actor and request id.
    let failures: Vec<(Option<String>, Option<String>)> = sqlx::query_as(
        "select details->>'status', request_id from audit_log
         where actor = $1 and result = 'failure'",
    )
    .bind(format!("user:{}", admin.id))
    .fetch_all(&app.pool)
    .await
    .unwrap();
    assert!(failures.iter().any(|(s, _)| s.as_deref() == Some("404")));
    assert!(failures.iter().any(|(s, _)| s.as_deref() == Some("403")));
    assert!(failures.iter().all(|(_, r)| r.is_some()));
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_organization_input_gets_a_precise_400() {
    let app = TestApp::spawn_api_only().await;
    let root = platform_admin(&app).await;
    for (body, field) in [
        (json!({"name": "", "type": "clinic"}), "name"),
        (json!({"name": "x".repeat(201), "type": "clinic"}), "name"),
        (json!({"name": "Bad\u{0007}Bell", "type": "clinic"}), "name"),
        (json!({"name": "Ok", "type": "castle"}), "type"),
        (json!({"name": "Ok", "type": "platform"}), "type"),
        (
            json!({"name": "Ok", "type": "clinic", "contact": "call us"}),
            "contact",
        ),
        (
            json!({"name": "Ok", "type": "clinic", "address": {"line": "x".repeat(9000)}}),
            "address",
        ),
        (
            json!({"name": "Ok", "type": "clinic", "settings": {"block_phi_when_non_compliant": "yes"}}),
            "settings.block_phi_when_non_compliant",
        ),
    ] {
        let problem = answer_json(&app, Method::POST, ORGS, &root.token, &body, 400).await;
        assert_eq!(problem["invalid_params"][0]["name"], field, "{problem}");
    }
    let unknown_field = request_json(
        &app,
        Method::POST,
        ORGS,
        &root.token,
        &json!({"name": "Ok", "type": "clinic", "owner": "me"}),
    )
    .await;
    assert_eq!(unknown_field.status(), 400);
    for query in [
        "status=gone",
        "type=castle",
        "limit=0",
        "limit=9999",
        "cursor=zzz",
    ] {
        let resp = request(&app, Method::GET, &format!("{ORGS}?{query}"), &root.token).await;
        assert_eq!(resp.status(), 400, "{query}");
    }
    let count: i64 = sqlx::query_scalar("select count(*) from tenants")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(count, 2, "nothing was created");
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_non_compliant_organization_may_be_set_to_block_phi_sends() {
    let app = TestApp::spawn_api_only().await;
    let root = platform_admin(&app).await;
    let id = app.tenant_id.to_string();
    let send = |phi: bool| {
        app.client
            .post(app.url("/api/v1/services/notifications/send"))
            .bearer_auth(&app.api_key)
            .json(&json!({"to": "pat@example.org", "subject": "Results", "text": "Ready", "phi": phi}))
            .send()
    };
    assert_eq!(
        send(true).await.unwrap().status(),
        202,
        "not blocking by default"
    );
    answer_json(
        &app,
        Method::PATCH,
        &format!("{ORGS}/{id}"),
        &root.token,
        &json!({"settings": {"block_phi_when_non_compliant": true}}),
        200,
    )
    .await;
    let refused = expect(send(true).await.unwrap(), 403).await;
    assert_eq!(refused["type"], "/problems/forbidden");
    assert_eq!(
        send(false).await.unwrap().status(),
        202,
        "no PHI, no BAA needed"
    );
    let today = Utc::now().date_naive();
    answer_json(
        &app,
        Method::PATCH,
        &format!("{ORGS}/{id}/sign-baa"),
        &root.token,
        &json!({"signed_on": today, "expires_on": today + Days::new(365),
                "document_url": "https://docs.example/baa.pdf"}),
        200,
    )
    .await;
    assert_eq!(
        send(true).await.unwrap().status(),
        202,
        "a valid BAA unblocks"
    );
    let stored: i64 = sqlx::query_scalar("select count(*) from notifications")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(stored, 3, "the refused send stored nothing");
    app.shutdown().await;
}
