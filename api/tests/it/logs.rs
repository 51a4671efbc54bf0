//! The API's logs: JSON lines carrying the request id, and never the
//! recipient, subject or body of a message.

use std::{process::Stdio, time::Duration};

use serde_json::{Value, json};
use testkit::TestApp;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn api_logs_are_json_with_request_ids_and_no_message_content() {
    let app = TestApp::builder()
        .without_worker()
        .without_scheduler()
        .spawn()
        .await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_api"))
        .envs(app.vars.iter().cloned())
        .env("API_ADDR", format!("127.0.0.1:{port}"))
        .env("LOG_FORMAT", "json")
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    testkit::eventually(
        "the api binary to listen",
        Duration::from_secs(20),
        || async {
            app.client
                .get(format!("{base}/health/live"))
                .send()
                .await
                .ok()
                .map(|_| ())
        },
    )
    .await;
    let secret_bits = [
        "jordan.secret@example.org",
        "HIV test result",
        "positive for",
    ];
    let resp = app
        .client
        .post(format!("{base}/api/v1/services/notifications/send"))
        .bearer_auth(&app.api_key)
        .header("x-request-id", "req-log-check-1")
        .json(&json!({"to": secret_bits[0], "subject": secret_bits[1], "text": "You tested positive for X."}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    let bad = app
        .client
        .post(format!("{base}/api/v1/services/notifications/send"))
        .bearer_auth(&app.api_key)
        .json(&json!({"to": "jordan.secret@example", "subject": secret_bits[1], "text": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    // An expired user token: refused, the reason logged, the token not.
    let secret = app.issue_jwt_secret(app.tenant_id).await;
    let claims = json!({"sub": "pat", "tenant_id": app.tenant_id.to_string(), "exp": chrono::Utc::now().timestamp() - 3600});
    let expired = jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap();
    let refused = app
        .client
        .get(format!("{base}/api/v1/users/me"))
        .bearer_auth(&expired)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);
    let (status, out) = testkit::process::terminate(&mut child, Duration::from_secs(15)).await;
    assert_eq!(status.code(), Some(0));
    let lines: Vec<Value> = out
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|_| panic!("not JSON: {l}")))
        .collect();
    assert!(!lines.is_empty());
    for bit in secret_bits {
        assert!(!out.contains(bit), "`{bit}` leaked into the logs:\n{out}");
    }
    assert!(
        !out.contains(&app.api_key),
        "the API key leaked into the logs"
    );
    assert!(!out.contains(&expired), "the token leaked into the logs");
    assert!(
        !out.contains(&secret),
        "the JWT secret leaked into the logs"
    );
    assert!(
        lines
            .iter()
            .any(|l| l["message"] == "token refused" && l["reason"] == "expired"),
        "the reason is logged:\n{out}"
    );
    let served: Vec<&Value> = lines.iter().filter(|l| l["message"] == "served").collect();
    assert!(
        served
            .iter()
            .any(|l| l["span"]["request_id"] == "req-log-check-1" && l["status"] == 202),
        "{out}"
    );
    assert!(served.iter().any(|l| l["status"] == 400), "{out}");
    app.shutdown().await;
}
