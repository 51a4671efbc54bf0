//! The operator console at `/console`: how it is served (its headers, its
//! files, not in the OpenAPI document), and the browser scenarios in
//! `system-tests/console/*.mjs`, each run by `node` with Playwright driving
//! headless Chromium against a whole platform (api, worker, scheduler, SMTP,
//! fake providers) started here.
//!
//! A scenario asks this test for what only it can do with a line
//! `@@harness <verb> [arg]` on its stdout, and reads the answer from its
//! stdin: `stop-worker`, `start-worker`, `break-provider twilio`,
//! `heal-provider twilio`, `smtp-count`.
//!
//! Node, `npm ci` in `system-tests/console` and `/usr/bin/chromium` are needed
//! (`.ci/run` installs them); without them these tests fail and say so.
//! Screenshots go to `target/console-screenshots/`, or to the folder
//! `CONSOLE_SCREENSHOTS` names (`docs/console` refreshes the README's).

use std::{path::PathBuf, process::Stdio, time::Duration};

use serde_json::{Value, json};
use shared::db::users;
use testkit::{
    TestApp,
    providers::{Answer, FakeProviders, Kind, TWILIO_SID_A, twilio_config},
};
use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader},
    process::{Child, ChildStdin, Command},
};

use crate::http::org_support::{self, PASSWORD};

/// How long one scenario may run.
const SCENARIO_LIMIT: Duration = Duration::from_secs(240);

/// The scenarios' Node project, `console/` in this crate.
fn scripts() -> PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("console")
}

/// Fails, saying what to install, when node, playwright-core or Chromium is
/// missing.
fn prerequisites() {
    let node = std::process::Command::new("node").arg("--version").output();
    assert!(
        node.as_ref().is_ok_and(|o| o.status.success()),
        "the console tests need node (20 or later) on PATH: apt-get install -y nodejs npm ({node:?})"
    );
    assert!(
        scripts()
            .join("node_modules/playwright-core/package.json")
            .exists(),
        "the console tests need playwright-core: run `npm ci` in system-tests/console"
    );
    assert!(
        std::path::Path::new("/usr/bin/chromium").exists(),
        "the console tests need Chromium at /usr/bin/chromium: apt-get install -y chromium"
    );
}

fn screenshots() -> PathBuf {
    match std::env::var("CONSOLE_SCREENSHOTS") {
        Ok(dir) if !dir.is_empty() => {
            let dir = PathBuf::from(dir);
            if dir.is_absolute() {
                dir
            } else {
                testkit::repo_root().join(dir)
            }
        }
        _ => testkit::repo_root().join("target/console-screenshots"),
    }
}

/// A running scenario.
struct Scenario {
    name: String,
    child: Child,
    stdin: ChildStdin,
    lines: tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
    output: Vec<String>,
}

impl Scenario {
    /// Starts `node <name>.mjs` signed in as `email`/`password`.
    fn start(app: &TestApp, name: &str, email: &str, password: &str) -> Self {
        prerequisites();
        let mut child = Command::new("node")
            .arg(format!("{name}.mjs"))
            .current_dir(scripts())
            .env("CONSOLE_BASE_URL", &app.base)
            .env("CONSOLE_EMAIL", email)
            .env("CONSOLE_PASSWORD", password)
            .env("CONSOLE_API_KEY", &app.api_key)
            .env("CONSOLE_TENANT_ID", app.tenant_id.to_string())
            .env("CONSOLE_SCREENSHOTS", screenshots())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("node starts");
        let stdin = child.stdin.take().expect("stdin");
        let lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        Self {
            name: name.to_owned(),
            child,
            stdin,
            lines,
            output: Vec::new(),
        }
    }

    /// The scenario's next request to the harness, printing what it says
    /// meanwhile; `None` once it has ended.
    async fn next(&mut self) -> Option<String> {
        loop {
            let line = tokio::time::timeout(SCENARIO_LIMIT, self.lines.next_line())
                .await
                .unwrap_or_else(|_| {
                    panic!(
                        "scenario {} said nothing for {SCENARIO_LIMIT:?}:\n{}",
                        self.name,
                        self.output.join("\n")
                    )
                })
                .expect("reading the scenario's output")?;
            println!("[{}] {line}", self.name);
            if let Some(request) = line.strip_prefix("@@harness ") {
                return Some(request.to_owned());
            }
            self.output.push(line);
        }
    }

    /// Answers the last request.
    async fn answer(&mut self, text: &str) {
        self.stdin
            .write_all(format!("{text}\n").as_bytes())
            .await
            .expect("answering the scenario");
        self.stdin.flush().await.expect("answering the scenario");
    }

    /// Waits for the scenario's end; panics unless it passed.
    async fn passed(mut self) {
        let status = tokio::time::timeout(SCENARIO_LIMIT, self.child.wait())
            .await
            .unwrap_or_else(|_| panic!("scenario {} did not end", self.name))
            .expect("waiting for node");
        assert!(
            status.success(),
            "scenario {} failed ({status}); its output:\n{}",
            self.name,
            self.output.join("\n")
        );
    }
}

/// Runs a scenario to its end, doing what it asks.
async fn run(app: &mut TestApp, fake: &FakeProviders, name: &str, email: &str, password: &str) {
    let mut scenario = Scenario::start(app, name, email, password);
    while let Some(request) = scenario.next().await {
        let (verb, arg) = request.split_once(' ').unwrap_or((request.as_str(), ""));
        let answer = match (verb, arg) {
            ("stop-worker", _) => {
                app.stop_worker().await;
                "ok".to_owned()
            }
            ("start-worker", _) => {
                app.start_worker();
                "ok".to_owned()
            }
            ("break-provider", "twilio") => {
                fake.always(Kind::Twilio, TWILIO_SID_A, Answer::RejectEchoing);
                "ok".to_owned()
            }
            ("heal-provider", "twilio") => {
                fake.heal(Kind::Twilio, TWILIO_SID_A);
                "ok".to_owned()
            }
            ("smtp-count", _) => app.smtp.received().len().to_string(),
            _ => format!("error unknown request {request}"),
        };
        scenario.answer(&answer).await;
    }
    scenario.passed().await;
}

/// The platform with an SMS provider on the fakes.
async fn platform() -> (TestApp, FakeProviders) {
    platform_with(TestApp::builder()).await
}

/// The platform from `builder`, with an SMS provider on the fakes.
async fn platform_with(builder: testkit::TestAppBuilder) -> (TestApp, FakeProviders) {
    let fake = FakeProviders::start().await;
    let app = builder.providers(&fake).spawn().await;
    app.add_provider(&twilio_config("sms-main", TWILIO_SID_A, None))
        .await;
    (app, fake)
}

/// A platform admin signed in with a permanent password.
async fn admin(app: &TestApp) -> String {
    org_support::platform_admin(app).await;
    "root@platform.example".to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn console_is_served_with_a_strict_policy_and_stays_out_of_the_api_document() {
    let app = TestApp::spawn_api_only().await;
    for path in ["/console", "/console/", "/console/index.html"] {
        let resp = app.get_anonymous(path).await;
        assert_eq!(resp.status(), 200, "{path}");
        let h = resp.headers();
        assert_eq!(h["content-type"], "text/html; charset=utf-8", "{path}");
        assert_eq!(h["cache-control"], "no-store", "{path}");
        assert_eq!(h["x-frame-options"], "DENY", "{path}");
        assert_eq!(h["x-content-type-options"], "nosniff", "{path}");
        let csp = h["content-security-policy"].to_str().unwrap();
        for part in [
            "default-src 'self'",
            "script-src 'self'",
            "frame-ancestors 'none'",
        ] {
            assert!(csp.contains(part), "{path}: {csp}");
        }
        assert!(!csp.contains("unsafe-inline"), "{csp}");
        let body = resp.text().await.unwrap();
        assert!(body.contains("/console/app.js"), "{path}");
    }
    for (path, kind) in [
        ("/console/app.js", "text/javascript; charset=utf-8"),
        ("/console/views/failed.js", "text/javascript; charset=utf-8"),
        ("/console/views/alerts.js", "text/javascript; charset=utf-8"),
        ("/console/views/errors.js", "text/javascript; charset=utf-8"),
        (
            "/console/views/reports.js",
            "text/javascript; charset=utf-8",
        ),
        ("/console/console.css", "text/css; charset=utf-8"),
        ("/console/favicon.svg", "image/svg+xml"),
    ] {
        let resp = app.get_anonymous(path).await;
        assert_eq!(resp.status(), 200, "{path}");
        assert_eq!(resp.headers()["content-type"], kind, "{path}");
        assert!(resp.headers().contains_key("content-security-policy"));
    }
    for path in [
        "/console/nope.js",
        "/console/app.js.map",
        "/console/views/",
        "/console/views/nope.js",
        "/console/index.html/x",
    ] {
        let resp = app.get_anonymous(path).await;
        assert_eq!(resp.status(), 404, "{path}");
        assert_eq!(resp.headers()["x-frame-options"], "DENY", "{path}");
        assert!(
            resp.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("application/problem+json"),
            "{path}"
        );
    }
    let resp = app.post_anonymous("/console", &json!({})).await;
    assert_eq!(resp.status(), 405);
    let doc: Value = app.openapi_document().await;
    let paths = doc["paths"].as_object().unwrap();
    assert!(paths.keys().all(|p| !p.starts_with("/console")));
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn console_signs_in_with_a_temporary_password_changes_it_and_signs_out() {
    let (mut app, fake) = platform().await;
    let platform = org_support::platform_org(&app).await;
    let hash = api::access::hash_password(PASSWORD.to_owned())
        .await
        .unwrap();
    let email = "new.operator@platform.example";
    users::insert(
        &app.pool,
        users::NewUser {
            tenant_id: platform,
            email,
            first_name: None,
            last_name: None,
            role: "ADMIN",
            password_hash: Some(&hash),
            must_change_password: true,
            created_by: "test",
        },
    )
    .await
    .unwrap();
    run(&mut app, &fake, "signin", email, PASSWORD).await;
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn console_overview_follows_a_queue_as_sends_wait_and_go() {
    let (mut app, fake) = platform().await;
    let email = admin(&app).await;
    run(&mut app, &fake, "overview", &email, PASSWORD).await;
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn console_pausing_a_queue_holds_its_sends_until_it_is_resumed() {
    let (mut app, fake) = platform().await;
    let email = admin(&app).await;
    run(&mut app, &fake, "pause", &email, PASSWORD).await;
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn console_groups_a_failing_providers_sends_and_retries_them_once_it_is_fixed() {
    let (mut app, fake) = platform().await;
    let email = admin(&app).await;
    run(&mut app, &fake, "failed", &email, PASSWORD).await;
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn console_finds_a_notification_and_shows_its_timeline() {
    let (mut app, fake) = platform().await;
    let email = admin(&app).await;
    run(&mut app, &fake, "search", &email, PASSWORD).await;
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn console_shows_an_alert_a_failing_provider_opens_and_acknowledges_and_resolves_it() {
    // The scheduler evaluates the rules every second, as it would in
    // production every few.
    let (mut app, fake) = platform_with(TestApp::builder().var("ALERTS_EVALUATE_SECS", 1)).await;
    let email = admin(&app).await;
    run(&mut app, &fake, "alerts", &email, PASSWORD).await;
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn console_shows_the_error_group_of_a_failing_provider_and_its_recoveries() {
    let (mut app, fake) = platform().await;
    let email = admin(&app).await;
    run(&mut app, &fake, "errors", &email, PASSWORD).await;
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn console_reports_count_the_sends_made_and_download_as_csv_and_xlsx() {
    let (mut app, fake) = platform().await;
    let email = admin(&app).await;
    run(&mut app, &fake, "reports", &email, PASSWORD).await;
    app.shutdown().await;
}
