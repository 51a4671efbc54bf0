//! The API's logs: JSON lines carrying the request id, and never the
//! recipient, subject or body of a message.

use std::time::Duration;

use serde_json::{Value, json};
use testkit::{
    TestApp,
    process::{binary, spawn_json_logging},
};

/// Waits until the api binary at `base` answers at all.
async fn api_listening(app: &TestApp, base: &str) {
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
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn api_logs_are_json_with_request_ids_and_no_message_content() {
    let app = TestApp::spawn_api_only().await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = spawn_json_logging(
        &binary("api"),
        &app.vars,
        &[("API_ADDR", format!("127.0.0.1:{port}"))],
        "info",
    );
    let base = format!("http://127.0.0.1:{port}");
    api_listening(&app, &base).await;
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

/// A child process whose stdout and stderr are read as they come (so a
/// chatty log level never blocks it on a full pipe).
struct Logged {
    child: tokio::process::Child,
    out: std::sync::Arc<std::sync::Mutex<String>>,
    readers: Vec<tokio::task::JoinHandle<()>>,
}

impl Logged {
    fn spawn(bin: &std::path::Path, vars: &[(String, String)], extra: &[(&str, String)]) -> Self {
        use tokio::io::AsyncReadExt;
        let mut child = spawn_json_logging(bin, vars, extra, "trace");
        let out = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let mut readers = Vec::new();
        let streams: Vec<Box<dyn tokio::io::AsyncRead + Unpin + Send>> = vec![
            Box::new(child.stdout.take().unwrap()),
            Box::new(child.stderr.take().unwrap()),
        ];
        for mut stream in streams {
            let out = out.clone();
            readers.push(tokio::spawn(async move {
                let mut buf = vec![0u8; 64 * 1024];
                while let Ok(n) = stream.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                    out.lock()
                        .unwrap()
                        .push_str(&String::from_utf8_lossy(&buf[..n]));
                }
            }));
        }
        Self {
            child,
            out,
            readers,
        }
    }

    async fn stop(mut self) -> String {
        let pid = self.child.id().unwrap().to_string();
        std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap();
        let status = tokio::time::timeout(Duration::from_secs(30), self.child.wait())
            .await
            .expect("the process exits after SIGTERM")
            .unwrap();
        assert_eq!(status.code(), Some(0));
        for r in self.readers {
            let _ = r.await;
        }
        std::mem::take(&mut *self.out.lock().unwrap())
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn phi_canaries_reach_no_log_at_any_level() {
    use testkit::providers::{FakeProviders, INVALID_NUMBER, TWILIO_SID_A, twilio_config};

    let fake = FakeProviders::start().await;
    let app = TestApp::builder()
        .providers(&fake)
        .without_worker()
        .without_scheduler()
        .spawn()
        .await;
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let api = Logged::spawn(
        &binary("api"),
        &app.vars,
        &[("API_ADDR", format!("127.0.0.1:{port}"))],
    );
    let worker = Logged::spawn(&binary("worker"), &app.vars, &[]);
    api_listening(&app, &base).await;
    // Each canary is something a log line must never carry: an external
    // id (a patient id), addresses, names, message text, metadata, and the
    // search terms and sign-in names callers send.
    let ext = "canaryext7731";
    let email = "canary.mail.7731@example.org";
    let subject = "CanarySubject7731";
    let text = "CanaryBody7731";
    let name = "CanaryName7731";
    let meta = "CanaryMeta7731";
    let query_email = "canary.query.7731@example.org";
    let login_email = "canary.login.7731@example.org";
    let phone = INVALID_NUMBER;
    let canaries = [
        ext,
        email,
        subject,
        text,
        name,
        meta,
        query_email,
        login_email,
        phone,
        "15005550001",
    ];
    let key = app.api_key.clone();
    let call = |method: reqwest::Method, path: String, body: Option<Value>| {
        let mut req = app
            .client
            .request(method, format!("{base}{path}"))
            .bearer_auth(&key);
        if let Some(b) = body {
            req = req.json(&b);
        }
        async move { req.send().await.unwrap() }
    };
    app.add_provider(&twilio_config("only", TWILIO_SID_A, None))
        .await;
    // Accepted sends: an email that goes out, an SMS the provider refuses
    // with an answer that echoes the number.
    let sent = call(
        reqwest::Method::POST,
        "/api/v1/services/notifications/send".into(),
        Some(json!({"to": email, "subject": subject, "text": text, "metadata": {meta: meta}})),
    )
    .await;
    assert_eq!(sent.status(), 202);
    let email_id = sent.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let sms = call(
        reqwest::Method::POST,
        "/api/v1/services/notifications/send".into(),
        Some(json!({"channel": "sms", "to": phone, "text": text})),
    )
    .await;
    assert_eq!(sms.status(), 202, "{}", sms.text().await.unwrap());
    let sms_id = sms.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    // A subscriber whose external id is the canary, through every route
    // that takes it in its path.
    let put = call(
        reqwest::Method::PUT,
        format!("/api/v1/services/subscribers/{ext}"),
        Some(json!({"email": email, "first_name": name, "data": {"clinic": meta}})),
    )
    .await;
    assert_eq!(put.status(), 201, "{}", put.text().await.unwrap());
    // Every documented route with an id in its path, the canary as the id,
    // with each method it serves: found, not found, refused — all logged.
    let spec: Value = app
        .client
        .get(format!("{base}/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut reached = 0;
    for (template, ops) in spec["paths"].as_object().unwrap() {
        if !template.contains('{') {
            continue;
        }
        let mut path = String::new();
        for seg in template.split('/').skip(1) {
            path.push('/');
            path.push_str(if seg.starts_with('{') { ext } else { seg });
        }
        for method in ops.as_object().unwrap().keys() {
            let method = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            if method == reqwest::Method::DELETE && path.contains("subscribers") {
                continue;
            }
            let body = (method != reqwest::Method::GET).then(|| json!({"name": name}));
            let _ = call(method, path.clone(), body).await;
            reached += 1;
        }
    }
    assert!(
        reached > 20,
        "only {reached} routes with an id were reached"
    );
    // Error paths that echo input back to the caller (but not to the logs).
    for body in [
        json!({"to": format!("{name}@"), "subject": subject, "text": text}),
        json!({"to": email, "subject": subject, "text": format!("{text}\u{0}")}),
        json!({"to": email, "subject": subject, "text": text, name: true}),
    ] {
        let resp = call(
            reqwest::Method::POST,
            "/api/v1/services/notifications/send".into(),
            Some(body),
        )
        .await;
        assert_eq!(resp.status(), 400);
    }
    let resp = app
        .client
        .post(format!("{base}/api/v1/services/notifications/send"))
        .bearer_auth(&key)
        .header("content-type", "application/json")
        .body(format!("{{\"to\": \"{email}\", \"text\": \"{text}"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let resp = call(
        reqwest::Method::GET,
        format!("/api/v1/invitations?email={query_email}"),
        None,
    )
    .await;
    assert!(resp.status().as_u16() < 500);
    let resp = app
        .client
        .post(format!("{base}/api/v1/auth/login"))
        .json(&json!({"email": login_email, "password": text}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    let resp = call(
        reqwest::Method::DELETE,
        format!("/api/v1/services/subscribers/{ext}"),
        None,
    )
    .await;
    assert!(resp.status().is_success());
    // Both sends reach their end before the logs are read.
    for id in [&email_id, &sms_id] {
        testkit::eventually("the send to end", Duration::from_secs(60), || async {
            let n: Value = app
                .client
                .get(format!("{base}/api/v1/services/notifications/{id}"))
                .bearer_auth(&key)
                .send()
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            matches!(n["status"].as_str(), Some("sent" | "failed" | "delivered")).then_some(())
        })
        .await;
    }
    let mut logs = api.stop().await;
    logs.push_str(&worker.stop().await);
    assert!(logs.lines().count() > 100, "trace logs were written");
    let mut leaks = Vec::new();
    for line in logs.lines() {
        let lower = line.to_lowercase();
        for canary in canaries {
            if lower.contains(&canary.to_lowercase()) {
                leaks.push(format!("{canary}: {line}"));
            }
        }
    }
    assert!(
        leaks.is_empty(),
        "{} log lines carry a canary:\n{}",
        leaks.len(),
        leaks[..leaks.len().min(20)].join("\n")
    );
    app.shutdown().await;
}
