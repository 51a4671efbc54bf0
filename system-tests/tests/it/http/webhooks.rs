//! `/api/v1/admin/webhooks`: endpoint URLs guarded against internal
//! addresses, the signing secret shown once, other tenants' endpoints
//! invisible, re-enabling with PUT.

use crate::support::{call_parts, invalid_param_names};
use reqwest::Method;
use serde_json::{Value, json};
use testkit::TestApp;

async fn api_only(allow_loopback: bool) -> TestApp {
    TestApp::builder()
        .without_worker()
        .without_scheduler()
        .var("WEBHOOKS_ALLOW_LOOPBACK", allow_loopback)
        .spawn()
        .await
}

const PATH: &str = "/api/v1/admin/webhooks";

/// `method path` with the app's own key: the status, the JSON and the text.
async fn admin(
    app: &TestApp,
    method: Method,
    path: &str,
    body: Option<&Value>,
) -> (u16, Value, String) {
    call_parts(app, method, path, &app.api_key, body).await
}

/// Registers `http://127.0.0.1:9/hook` for `notification.sent`; its id.
async fn add_hook(app: &TestApp) -> String {
    let body = json!({"url": "http://127.0.0.1:9/hook", "events": ["notification.sent"]});
    let (status, created, text) = admin(app, Method::POST, PATH, Some(&body)).await;
    assert_eq!(status, 201, "{text}");
    created["id"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn registration_refuses_internal_and_malformed_urls() {
    let app = api_only(false).await;
    let long = format!("https://hooks.example.com/{}", "a".repeat(2048));
    for url in [
        "http://127.0.0.1/hook",
        "https://127.0.0.1/hook",
        "https://10.0.0.5/hook",
        "https://172.16.0.1/hook",
        "https://192.168.0.10/hook",
        "https://100.64.0.1/hook",
        "https://169.254.169.254/latest/meta-data",
        "https://[::ffff:127.0.0.1]/hook",
        "https://[::ffff:169.254.169.254]/hook",
        "https://[::1]/hook",
        "https://[fd00:ec2::254]/hook",
        "https://[fe80::1]/hook",
        "https://0.0.0.0/hook",
        "https://224.0.0.1/hook",
        "https://192.0.2.1/hook",
        "https://localhost/hook",
        "https://localhost./hook",
        "https://user:secret@hooks.example.com/hook",
        "http://hooks.example.com/hook",
        "ftp://hooks.example.com/hook",
        "hooks.example.com/hook",
        "",
        long.as_str(),
    ] {
        let (status, problem, text) = admin(
            &app,
            Method::POST,
            PATH,
            Some(&json!({"url": url, "events": ["notification.sent"]})),
        )
        .await;
        assert_eq!(status, 400, "{url}: {text}");
        assert_eq!(invalid_param_names(&problem), vec!["url"], "{url}: {text}");
        assert!(!text.contains("secret"), "{text}");
    }
    let (_, list, _) = admin(&app, Method::GET, PATH, None).await;
    assert_eq!(list["items"], json!([]), "nothing was written");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn loopback_is_allowed_only_with_the_flag_and_metadata_never() {
    let app = api_only(true).await;
    let ok = |url: &str| json!({"url": url, "events": ["notification.sent"]});
    let (status, _, text) = admin(
        &app,
        Method::POST,
        PATH,
        Some(&ok("http://127.0.0.1:9/hook")),
    )
    .await;
    assert_eq!(status, 201, "{text}");
    for url in [
        "http://169.254.169.254/latest/meta-data",
        "https://[fd00:ec2::254]/",
        "https://user:pw@127.0.0.1/",
    ] {
        let (status, problem, text) = admin(&app, Method::POST, PATH, Some(&ok(url))).await;
        assert_eq!(status, 400, "{url}: {text}");
        assert_eq!(invalid_param_names(&problem), vec!["url"]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn malformed_fields_are_named_and_nothing_is_written() {
    let app = api_only(true).await;
    let cases = [
        (
            json!({"url": "http://127.0.0.1:9/", "events": []}),
            vec!["events"],
        ),
        (
            json!({"url": "http://127.0.0.1:9/", "events": ["notification.sent", "notification.opened"]}),
            vec!["events[1]"],
        ),
        (
            json!({"url": "http://127.0.0.1:9/", "events": ["notification.sent"], "description": "x".repeat(501)}),
            vec!["description"],
        ),
        (
            json!({"url": "https://169.254.169.254/", "events": ["nope"], "description": "a\u{7}b"}),
            vec!["url", "description", "events[0]"],
        ),
        // A NUL is refused at the edge, before the route's own checks.
        (
            json!({"url": "https://169.254.169.254/", "events": ["nope"], "description": "a\u{0}b"}),
            vec!["description"],
        ),
    ];
    for (body, expected) in cases {
        let (status, problem, text) = admin(&app, Method::POST, PATH, Some(&body)).await;
        assert_eq!(status, 400, "{text}");
        assert_eq!(invalid_param_names(&problem), expected, "{text}");
    }
    // Wrong types and unknown fields are 400s too.
    for body in [
        json!({"url": 5, "events": ["notification.sent"]}),
        json!({"url": "http://127.0.0.1:9/", "events": "notification.sent"}),
        json!({"url": "http://127.0.0.1:9/", "events": ["notification.sent"], "secret": "mine"}),
    ] {
        let (status, _, text) = admin(&app, Method::POST, PATH, Some(&body)).await;
        assert_eq!(status, 400, "{body}: {text}");
    }
    let (status, _, text) = admin(
        &app,
        Method::GET,
        &format!("{PATH}/{}/deliveries?limit=0", uuid::Uuid::nil()),
        None,
    )
    .await;
    assert_eq!(status, 400, "{text}");
    let (_, list, _) = admin(&app, Method::GET, PATH, None).await;
    assert_eq!(list["items"], json!([]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_secret_is_shown_once_and_never_read_back() {
    let app = api_only(true).await;
    let (status, created, text) = admin(
        &app,
        Method::POST,
        PATH,
        Some(&json!({
            "url": "http://127.0.0.1:9/hook",
            "events": ["notification.sent", "notification.failed", "notification.sent"],
            "description": "Clinic EHR",
        })),
    )
    .await;
    assert_eq!(status, 201, "{text}");
    let secret = created["secret"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("whsec_"), "{secret}");
    assert_eq!(
        created["events"],
        json!(["notification.sent", "notification.failed"])
    );
    assert_eq!(created["enabled"], true);
    assert_eq!(created["consecutive_failures"], 0);
    let id = created["id"].as_str().unwrap().to_owned();

    let (status, one, text) = admin(&app, Method::GET, &format!("{PATH}/{id}"), None).await;
    assert_eq!(status, 200);
    assert!(
        one.get("secret").is_none() && !text.contains(&secret),
        "{text}"
    );
    let (_, _, list) = admin(&app, Method::GET, PATH, None).await;
    assert!(list.contains(&id) && !list.contains(&secret), "{list}");

    let (status, rotated, text) = admin(
        &app,
        Method::POST,
        &format!("{PATH}/{id}/rotate-secret"),
        None,
    )
    .await;
    assert_eq!(status, 200, "{text}");
    let new_secret = rotated["secret"].as_str().unwrap().to_owned();
    assert!(new_secret.starts_with("whsec_") && new_secret != secret);
    let (_, _, text) = admin(&app, Method::GET, &format!("{PATH}/{id}"), None).await;
    assert!(!text.contains(&new_secret));

    // Stored sealed, and the audit log names actions without secrets.
    let stored: Vec<u8> =
        sqlx::query_scalar("select secret_ciphertext from webhook_endpoints where id = $1")
            .bind(uuid::Uuid::parse_str(&id).unwrap())
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert!(!String::from_utf8_lossy(&stored).contains("whsec_"));
    let audit: Vec<(String, Value)> = sqlx::query_as(
        "select action, details from audit_log where resource_type = 'webhook_endpoint' order by id",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap();
    let actions: Vec<&str> = audit.iter().map(|(a, _)| a.as_str()).collect();
    assert_eq!(actions, vec!["webhook.create", "webhook.rotate_secret"]);
    let all = format!("{audit:?}");
    assert!(!all.contains(&secret) && !all.contains(&new_secret) && !all.contains("whsec_"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn other_tenants_endpoints_answer_404() {
    let app = api_only(true).await;
    let id = add_hook(&app).await;
    let (_, other_key) = app.other_tenant().await;
    let put = json!({"url": "http://127.0.0.1:9/stolen", "events": ["notification.sent"]});
    for (method, path, body) in [
        (Method::GET, format!("{PATH}/{id}"), None),
        (Method::PUT, format!("{PATH}/{id}"), Some(&put)),
        (Method::DELETE, format!("{PATH}/{id}"), None),
        (Method::POST, format!("{PATH}/{id}/rotate-secret"), None),
        (Method::GET, format!("{PATH}/{id}/deliveries"), None),
        (Method::GET, format!("{PATH}/not-a-uuid"), None),
    ] {
        let (status, problem, text) =
            call_parts(&app, method.clone(), &path, &other_key, body).await;
        assert_eq!(status, 404, "{method} {path}: {text}");
        assert_eq!(
            problem["type"].as_str().map(|t| t.ends_with("not-found")),
            Some(true),
            "{text}"
        );
    }
    let (_, list, _) = call_parts(&app, Method::GET, PATH, &other_key, None).await;
    assert_eq!(list["items"], json!([]));
    let (_, still, _) = admin(&app, Method::GET, &format!("{PATH}/{id}"), None).await;
    assert_eq!(still["url"], "http://127.0.0.1:9/hook", "unchanged");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn put_replaces_disables_and_re_enables_an_endpoint() {
    let app = api_only(true).await;
    let id = add_hook(&app).await;
    let path = format!("{PATH}/{id}");
    let (status, problem, _) = admin(
        &app,
        Method::PUT,
        &path,
        Some(&json!({"url": "https://169.254.169.254/", "events": ["notification.sent"]})),
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(invalid_param_names(&problem), vec!["url"]);

    let v2 = |enabled: bool| json!({"url": "http://127.0.0.1:9/v2", "events": ["notification.failed"], "enabled": enabled});
    let (status, off, text) = admin(&app, Method::PUT, &path, Some(&v2(false))).await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(off["enabled"], false);
    assert_eq!(off["disabled_reason"], "disabled by an administrator");
    assert_eq!(off["url"], "http://127.0.0.1:9/v2");
    assert_eq!(off["events"], json!(["notification.failed"]));

    let (status, on, _) = admin(&app, Method::PUT, &path, Some(&v2(true))).await;
    assert_eq!(status, 200);
    assert_eq!(on["enabled"], true);
    assert_eq!(on["disabled_reason"], Value::Null);

    let (status, _, _) = admin(&app, Method::DELETE, &path, None).await;
    assert_eq!(status, 204);
    let (status, _, _) = admin(&app, Method::GET, &path, None).await;
    assert_eq!(status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_organisation_has_at_most_twenty_endpoints() {
    let app = api_only(true).await;
    let body = json!({"url": "http://127.0.0.1:9/hook", "events": ["notification.sent"]});
    for _ in 0..20 {
        let (status, _, text) = admin(&app, Method::POST, PATH, Some(&body)).await;
        assert_eq!(status, 201, "{text}");
    }
    let (status, _, text) = admin(&app, Method::POST, PATH, Some(&body)).await;
    assert_eq!(status, 409, "{text}");
}
