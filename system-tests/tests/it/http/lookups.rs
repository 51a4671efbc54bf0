//! `/api/v1/lookups*`: every caller reads the lists; platform admins add,
//! relabel and remove categories and relabel organisation types, audited;
//! an organisation's admin is refused (audited), values from the code's
//! enums cannot change, and malformed or oversized input answers 400.

use reqwest::Method;
use serde_json::{Value, json};
use testkit::TestApp;

use crate::http::org_support::{answer, expect, platform_admin, request, user, with};

const LOOKUPS: &str = "/api/v1/lookups";

fn codes(list: &Value) -> Vec<String> {
    list["values"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["code"].as_str().unwrap().to_owned())
        .collect()
}

async fn audit_rows(app: &TestApp, action: &str, result: &str) -> i64 {
    sqlx::query_scalar(
        "select count(*) from audit_log where action = $1 and result = $2 and resource_type = 'lookup'",
    )
    .bind(action)
    .bind(result)
    .fetch_one(&app.pool)
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_authenticated_caller_reads_the_lists_from_the_code_and_the_platform() {
    let app = TestApp::spawn_api_only().await;
    let staff = user(&app, app.tenant_id, "DOCTOR", "doc@clinic.example").await;
    for token in [app.api_key.as_str(), staff.token.as_str()] {
        let all = answer(&app, Method::GET, LOOKUPS, token, 200).await;
        let kinds: Vec<&str> = all["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["kind"].as_str().unwrap())
            .collect();
        assert_eq!(
            kinds,
            [
                "notification_category",
                "organization_type",
                "baa_status",
                "shipment_status",
                "error_class",
                "channel"
            ]
        );
    }
    let get = |kind: &str| {
        let path = format!("{LOOKUPS}/{kind}");
        let key = app.api_key.clone();
        let app = &app;
        async move { answer(app, Method::GET, &path, &key, 200).await }
    };
    let channels = get("channel").await;
    assert_eq!(channels["editable"], false);
    let expected: Vec<String> = shared::domain::Channel::ALL
        .iter()
        .map(|c| c.as_str().to_owned())
        .collect();
    assert_eq!(codes(&channels), expected);
    let statuses = get("shipment_status").await;
    let expected: Vec<String> = shared::shipments::ShipmentStatus::ALL
        .iter()
        .map(|s| s.as_str().to_owned())
        .collect();
    assert_eq!(codes(&statuses), expected);
    assert_eq!(statuses["values"][3]["label"], "Out for delivery");
    let classes = get("error_class").await;
    assert_eq!(codes(&classes).len(), 7);
    assert_eq!(
        codes(&get("baa_status").await),
        ["missing", "pending", "active", "expired"]
    );
    let types = get("organization_type").await;
    assert_eq!(types["editable"], true);
    assert!(codes(&types).contains(&"hospital".to_owned()));
    assert!(
        get("notification_category").await["values"]
            .as_array()
            .unwrap()
            .len()
            >= 5
    );

    let resp = request(
        &app,
        Method::GET,
        &format!("{LOOKUPS}/colours"),
        &app.api_key,
    )
    .await;
    assert_eq!(resp.status(), 400);
    let resp = app.get_anonymous(LOOKUPS).await;
    assert_eq!(resp.status(), 401);
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn platform_admins_edit_categories_and_labels_audited_and_others_are_refused() {
    let app = TestApp::spawn_api_only().await;
    let root = platform_admin(&app).await;
    let put = |token: &str, path: &str, body: Value| {
        with(&app, Method::PUT, &format!("{LOOKUPS}/{path}"), token)
            .json(&body)
            .send()
    };

    let created = expect(
        put(
            &root.token,
            "notification_category/lab_results",
            json!({"label": "Lab results", "description": "Results are in", "position": 9}),
        )
        .await
        .unwrap(),
        201,
    )
    .await;
    assert_eq!(created["code"], "lab_results");
    let changed = expect(
        put(
            &root.token,
            "notification_category/lab_results",
            json!({"label": "Laboratory results"}),
        )
        .await
        .unwrap(),
        200,
    )
    .await;
    assert_eq!(
        (changed["label"].as_str(), changed["position"].as_i64()),
        (Some("Laboratory results"), Some(9))
    );
    assert!(changed["description"].is_null());
    let relabelled = expect(
        put(
            &root.token,
            "organization_type/clinic",
            json!({"label": "Outpatient clinic"}),
        )
        .await
        .unwrap(),
        200,
    )
    .await;
    assert_eq!(relabelled["label"], "Outpatient clinic");
    assert_eq!(audit_rows(&app, "lookup.create", "success").await, 1);
    assert_eq!(audit_rows(&app, "lookup.update", "success").await, 2);

    // An organisation's admin (its API key) and a JWT admin: 403, audited.
    let admin = user(&app, app.tenant_id, "ADMIN", "admin@clinic.example").await;
    for token in [app.api_key.as_str(), admin.token.as_str()] {
        let p = expect(
            put(
                token,
                "notification_category/lab_results",
                json!({"label": "Mine"}),
            )
            .await
            .unwrap(),
            403,
        )
        .await;
        assert_eq!(p["type"], "/problems/forbidden");
        let resp = request(
            &app,
            Method::DELETE,
            &format!("{LOOKUPS}/notification_category/lab_results"),
            token,
        )
        .await;
        assert_eq!(resp.status(), 403);
    }
    assert_eq!(audit_rows(&app, "lookup.update", "failure").await, 2);
    assert_eq!(audit_rows(&app, "lookup.delete", "failure").await, 2);

    // Values from the code, and organisation types' set, cannot change:
    // the document names the kinds each operation takes.
    for (path, status) in [
        ("channel/email", 400),
        ("error_class/network", 400),
        ("shipment_status/delivered", 400),
        ("organization_type/spaceport", 404),
    ] {
        let resp = put(&root.token, path, json!({"label": "X"})).await.unwrap();
        assert_eq!(resp.status(), status, "{path}");
    }
    let resp = request(
        &app,
        Method::DELETE,
        &format!("{LOOKUPS}/organization_type/clinic"),
        &root.token,
    )
    .await;
    assert_eq!(resp.status(), 400);

    // Malformed and oversized input.
    for (path, body) in [
        ("notification_category/lab_results", json!({"label": ""})),
        ("notification_category/lab_results", json!({"label": "   "})),
        (
            "notification_category/lab_results",
            json!({"label": "x".repeat(101)}),
        ),
        (
            "notification_category/lab_results",
            json!({"label": "ok", "description": "d".repeat(501)}),
        ),
        (
            "notification_category/lab_results",
            json!({"label": "ok", "position": -1}),
        ),
        (
            "notification_category/lab_results",
            json!({"label": "ok", "colour": "red"}),
        ),
        (
            "notification_category/lab_results",
            json!({"label": "a\u{7}b"}),
        ),
        ("notification_category/lab_results", json!(["label"])),
        ("notification_category/Lab-Results", json!({"label": "ok"})),
        (
            "notification_category/lab_results_is_a_code_that_goes_on_and_on_for_more_than_sixty_four",
            json!({"label": "ok"}),
        ),
        ("colours/red", json!({"label": "ok"})),
    ] {
        let resp = put(&root.token, path, body.clone()).await.unwrap();
        assert_eq!(resp.status(), 400, "{path} {body}");
        assert_eq!(resp.headers()["content-type"], "application/problem+json");
    }
    let resp = with(
        &app,
        Method::PUT,
        &format!("{LOOKUPS}/notification_category/big"),
        &root.token,
    )
    .header("content-type", "application/json")
    .body(format!("{{\"label\": \"{}\"}}", "x".repeat(400_000)))
    .send()
    .await
    .unwrap();
    assert_eq!(resp.status(), 413);

    // Removing a category.
    let path = format!("{LOOKUPS}/notification_category/lab_results");
    let resp = request(&app, Method::DELETE, &path, &root.token).await;
    assert_eq!(resp.status(), 204);
    let resp = request(&app, Method::DELETE, &path, &root.token).await;
    assert_eq!(resp.status(), 404);
    assert_eq!(audit_rows(&app, "lookup.delete", "success").await, 1);
    let list = answer(
        &app,
        Method::GET,
        &format!("{LOOKUPS}/notification_category"),
        &app.api_key,
        200,
    )
    .await;
    assert!(!codes(&list).contains(&"lab_results".to_owned()));
    app.shutdown().await;
}
