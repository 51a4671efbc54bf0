//! `/api/v1/shipments`: CRUD, validation, tenancy and the refresh limit.

use crate::support::invalid_param_names;
use serde_json::{Value, json};
use testkit::TestApp;

const PATH: &str = "/api/v1/shipments";
const VALID: &str = "1Z999AA10123456784";

async fn app() -> TestApp {
    // No worker: these tests look at the API alone.
    TestApp::spawn_api_only().await
}

async fn post(app: &TestApp, key: &str, body: &Value) -> (u16, Value) {
    let resp = app.post_with_token(PATH, key, body).await;
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// Creates the shipment `body` with the app's own key.
async fn create(app: &TestApp, body: Value) -> (u16, Value) {
    post(app, &app.api_key, &body).await
}

/// `GET path` with the app's own key.
async fn get(app: &TestApp, path: &str) -> (u16, Value) {
    call(app, reqwest::Method::GET, path, &app.api_key).await
}

async fn call(app: &TestApp, method: reqwest::Method, path: &str, key: &str) -> (u16, Value) {
    let resp = app
        .client
        .request(method, app.url(path))
        .bearer_auth(key)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// How many shipments are stored, across every organisation.
async fn stored_shipments(app: &TestApp) -> i64 {
    sqlx::query_scalar("select count(*) from shipments")
        .fetch_one(&app.pool)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shipments_are_created_listed_read_updated_and_deleted() {
    let app = app().await;
    let kit = json!({"tracking_number": "1z 999 aa1 0123456784", "reference": "KIT-17", "assigned_to": "nurse-7", "carrier": "UPS"});
    let (status, created) = create(&app, kit).await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["tracking_number"], VALID, "normalised");
    assert_eq!(created["status"], "pending");
    assert_eq!(created["carrier"], "ups");
    assert!(
        created["created_by"]
            .as_str()
            .unwrap()
            .starts_with("api_key:")
    );
    assert!(
        created["next_poll_at"].is_string(),
        "due for its first poll"
    );
    let id = created["id"].as_str().unwrap().to_owned();

    let (status, dup) = create(&app, json!({"tracking_number": VALID})).await;
    assert_eq!(status, 409, "{dup}");

    for n in ["T1234567890", "123456789"] {
        let (status, _) = create(&app, json!({"tracking_number": n})).await;
        assert_eq!(status, 201);
    }
    let (status, page) = get(&app, &format!("{PATH}?limit=2")).await;
    assert_eq!(status, 200);
    assert_eq!(page["items"].as_array().unwrap().len(), 2);
    let cursor = page["next_cursor"].as_str().unwrap();
    let (_, rest) = get(&app, &format!("{PATH}?limit=2&cursor={cursor}")).await;
    assert_eq!(rest["items"].as_array().unwrap().len(), 1);
    assert_eq!(
        rest["items"][0]["id"],
        id.as_str(),
        "newest first: the first one last"
    );
    assert!(rest["next_cursor"].is_null());
    let (_, delivered) = get(&app, &format!("{PATH}?status=delivered")).await;
    assert_eq!(delivered["items"].as_array().unwrap().len(), 0);
    let (status, bad) = get(&app, &format!("{PATH}?status=lost")).await;
    assert_eq!(status, 400);
    assert_eq!(bad["invalid_params"][0]["name"], "status");
    let (status, _) = get(&app, &format!("{PATH}?limit=0")).await;
    assert_eq!(status, 400);
    let (status, _) = get(&app, &format!("{PATH}?cursor=nope")).await;
    assert_eq!(status, 400);

    let (status, one) = get(&app, &format!("{PATH}/{id}")).await;
    assert_eq!(status, 200);
    assert_eq!(one["events"], json!([]));
    assert_eq!(one["assigned_to"], "nurse-7");

    let resp = app
        .put_with_key(&format!("{PATH}/{id}"), &json!({"reference": "KIT-18"}))
        .await;
    assert_eq!(resp.status(), 200);
    let updated: Value = resp.json().await.unwrap();
    assert_eq!(updated["reference"], "KIT-18");
    assert!(updated["assigned_to"].is_null());

    let path = format!("{PATH}/{id}");
    let (status, _) = call(&app, reqwest::Method::DELETE, &path, &app.api_key).await;
    assert_eq!(status, 204);
    let (status, _) = get(&app, &format!("{PATH}/{id}")).await;
    assert_eq!(status, 404);
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_tracking_numbers_answer_422_naming_the_field_and_store_nothing() {
    let app = app().await;
    for bad in [
        "1Z999AA10123456785",
        "1Z999AA1012345678",
        "1Z999-A10123456784",
        "12345678",
        "T123",
        "",
        "'; drop table shipments; --",
        &"9".repeat(5000),
    ] {
        let (status, problem) = create(&app, json!({"tracking_number": bad})).await;
        assert_eq!(status, 422, "{bad}: {problem}");
        assert_eq!(problem["invalid_params"][0]["name"], "tracking_number");
        assert_eq!(problem["type"], "/problems/validation");
    }
    let (status, problem) = create(&app, json!({"tracking_number": "1Z999AA10123456785"})).await;
    assert_eq!(status, 422);
    assert!(
        problem["invalid_params"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("check digit")
    );
    let (status, problem) = create(
        &app,
        json!({"tracking_number": VALID, "carrier": "fedex", "reference": "a\u{1}b"}),
    )
    .await;
    assert_eq!(status, 422);
    let names = invalid_param_names(&problem);
    assert_eq!(names, ["carrier", "reference"]);
    // A NUL is refused at the edge with 400, before the domain's checks.
    let (status, problem) = create(
        &app,
        json!({"tracking_number": VALID, "reference": "a\u{0}b"}),
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(problem["invalid_params"][0]["name"], "reference");
    assert_eq!(stored_shipments(&app).await, 0);
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_unknown_and_oversized_bodies_are_refused() {
    let app = app().await;
    let raw = |body: Vec<u8>| {
        app.client
            .post(app.url(PATH))
            .bearer_auth(&app.api_key)
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    let resp = raw(b"{\"tracking_number\": ".to_vec()).await.unwrap();
    assert_eq!(resp.status(), 400);
    let resp = raw(br#"{"tracking_number": "1Z999AA10123456784", "status": "delivered"}"#.to_vec())
        .await
        .unwrap();
    assert_eq!(
        resp.status(),
        400,
        "unknown fields (a forged status) are refused"
    );
    let problem: Value = resp.json().await.unwrap();
    assert_eq!(problem["invalid_params"][0]["name"], "status");
    let resp = raw(br#"{"tracking_number": 17}"#.to_vec()).await.unwrap();
    assert_eq!(resp.status(), 400);
    let huge = format!(
        r#"{{"tracking_number": "{VALID}", "reference": "{}"}}"#,
        "x".repeat(300 * 1024)
    );
    let resp = raw(huge.into_bytes()).await.unwrap();
    assert_eq!(resp.status(), 413);
    let (status, _) = post(&app, "ntf_not-a-key", &json!({"tracking_number": VALID})).await;
    assert_eq!(status, 401);
    assert_eq!(stored_shipments(&app).await, 0);
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_organisations_shipment_answers_404() {
    let app = app().await;
    let (_, created) = create(&app, json!({"tracking_number": VALID})).await;
    let id = created["id"].as_str().unwrap();
    let (_, other_key) = app.other_tenant().await;
    for (method, path) in [
        (reqwest::Method::GET, format!("{PATH}/{id}")),
        (reqwest::Method::DELETE, format!("{PATH}/{id}")),
        (reqwest::Method::POST, format!("{PATH}/{id}/refresh")),
        (reqwest::Method::GET, format!("{PATH}/not-a-uuid")),
    ] {
        let (status, problem) = call(&app, method.clone(), &path, &other_key).await;
        assert_eq!(status, 404, "{method} {path}: {problem}");
    }
    let resp = app
        .put_with_token(
            &format!("{PATH}/{id}"),
            &other_key,
            &json!({"reference": "mine now"}),
        )
        .await;
    assert_eq!(resp.status(), 404);
    let (_, list) = call(&app, reqwest::Method::GET, PATH, &other_key).await;
    assert_eq!(list["items"], json!([]));
    // The other organisation may track the same number on its own.
    let (status, _) = post(&app, &other_key, &json!({"tracking_number": VALID})).await;
    assert_eq!(status, 201);
    let (status, mine) = get(&app, &format!("{PATH}/{id}")).await;
    assert_eq!(status, 200);
    assert!(mine["reference"].is_null());
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_creates_shipments_with_their_jwt_and_refresh_is_rate_limited() {
    let app = app().await;
    let secret = app.issue_jwt_secret(app.tenant_id).await;
    let jwt = testkit::jwks::user_token(&secret, app.tenant_id, "marketer-3", &[]);
    let (status, created) = post(&app, &jwt, &json!({"tracking_number": VALID})).await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["created_by"], "user:marketer-3");
    let id = created["id"].as_str().unwrap();
    let refresh = format!("{PATH}/{id}/refresh");
    let (status, _) = call(&app, reqwest::Method::POST, &refresh, &jwt).await;
    assert_eq!(status, 202);
    let resp = app
        .client
        .post(app.url(&refresh))
        .bearer_auth(&app.api_key)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 429);
    let wait: u64 = resp.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=30).contains(&wait), "{wait}");
    let problem: Value = resp.json().await.unwrap();
    assert_eq!(problem["type"], "/problems/too-many-requests");
    // The refresh claimed the shipment for an immediate poll.
    let claimed: bool =
        sqlx::query_scalar("select claimed_for is not null from shipments where id = $1::uuid")
            .bind(id)
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert!(claimed);
    let backlog = shared::jobs::Queues::new(&app.settings.redis_url, &app.redis_prefix)
        .unwrap()
        .backlog(shared::jobs::QueueName::UpsPoll)
        .await
        .unwrap();
    assert_eq!(backlog, 1, "one poll job queued");
    app.shutdown().await;
}
