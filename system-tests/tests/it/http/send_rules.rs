//! One rule per value, wherever it arrives: a WhatsApp language code and
//! parameter count, a push token, a subscriber id, a render locale and an
//! address are checked the same way by single sends, templates, subscriber
//! profiles, batches and CSV uploads.

use serde_json::{Value, json};
use testkit::TestApp;

const SEND: &str = "/api/v1/services/notifications";
const BOUNDARY: &str = "----send-rules-boundary-3Ka9";

async fn app() -> TestApp {
    TestApp::spawn_api_only().await
}

async fn post(app: &TestApp, path: &str, body: &Value) -> reqwest::Response {
    app.post_with_key(path, body).await
}

async fn send(app: &TestApp, body: &Value) -> reqwest::Response {
    post(app, &format!("{SEND}/send"), body).await
}

/// The `(name, reason)` pairs of a 400 problem.
async fn refused(resp: reqwest::Response) -> Vec<(String, String)> {
    let status = resp.status();
    let body: Value = resp.json().await.unwrap();
    assert_eq!(status, 400, "{body}");
    body["invalid_params"]
        .as_array()
        .unwrap_or_else(|| panic!("no invalid_params in {body}"))
        .iter()
        .map(|p| {
            (
                p["name"].as_str().unwrap().to_owned(),
                p["reason"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// The one reason a 400 gives for `field`.
async fn reason_for(resp: reqwest::Response, field: &str) -> String {
    let problems = refused(resp).await;
    let reasons: Vec<&String> = problems
        .iter()
        .filter(|(n, _)| n == field)
        .map(|(_, r)| r)
        .collect();
    assert_eq!(reasons.len(), 1, "{field} in {problems:?}");
    reasons[0].clone()
}

fn whatsapp_send(language: &str, parameters: Vec<String>) -> Value {
    json!({"channel": "whatsapp", "to": "+15005550006", "whatsapp_template": {
        "name": "appointment_reminder", "language": language, "parameters": parameters}})
}

fn whatsapp_template(key: &str, language: &str, parameters: Vec<String>) -> Value {
    json!({"key": key, "name": "Reminder", "default_locale": "en",
           "default_channels": ["whatsapp"],
           "locales": {"en": {"whatsapp": {"template_name": "appointment_reminder",
                                           "language": language, "parameters": parameters}}}})
}

fn params(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("value {i}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn whatsapp_language_codes_are_checked_alike_by_sends_and_templates() {
    let app = app().await;
    for language in ["en", "en_US", "pt_BR"] {
        let resp = send(&app, &whatsapp_send(language, params(1))).await;
        assert_eq!(resp.status(), 202, "{language}");
    }
    let resp = post(
        &app,
        "/api/v1/admin/templates",
        &whatsapp_template("reminder.ok", "en_US", params(1)),
    )
    .await;
    assert_eq!(resp.status(), 201);
    // `english` was accepted by sends and refused by templates; `en_us` too.
    for language in ["english", "en_us", "en-US"] {
        let sent = reason_for(
            send(&app, &whatsapp_send(language, params(1))).await,
            "whatsapp_template.language",
        )
        .await;
        let template = reason_for(
            post(
                &app,
                "/api/v1/admin/templates",
                &whatsapp_template("reminder.bad", language, params(1)),
            )
            .await,
            "locales.en.whatsapp.language",
        )
        .await;
        assert_eq!(
            sent, "must be a WhatsApp language code such as `en` or `en_US`",
            "{language}"
        );
        assert_eq!(sent, template, "{language}");
    }
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn whatsapp_parameters_have_one_limit_for_sends_and_templates() {
    let app = app().await;
    // Sends stopped at 20 while templates took 50: both take 50 now.
    let resp = send(&app, &whatsapp_send("en", params(50))).await;
    assert_eq!(resp.status(), 202);
    let resp = post(
        &app,
        "/api/v1/admin/templates",
        &whatsapp_template("reminder.fifty", "en", params(50)),
    )
    .await;
    assert_eq!(resp.status(), 201);
    let sent = reason_for(
        send(&app, &whatsapp_send("en", params(51))).await,
        "whatsapp_template.parameters",
    )
    .await;
    let template = reason_for(
        post(
            &app,
            "/api/v1/admin/templates",
            &whatsapp_template("reminder.many", "en", params(51)),
        )
        .await,
        "locales.en.whatsapp.parameters",
    )
    .await;
    assert_eq!(sent, "must have at most 50 parameters");
    assert_eq!(sent, template);
    // A parameter WhatsApp would refuse: empty, or with a line break.
    for (value, reason) in [
        ("", "must not be empty"),
        (
            "two\nlines",
            "must be one line: WhatsApp refuses line breaks and tabs in parameters",
        ),
    ] {
        let body = whatsapp_send("en", vec!["ok".into(), value.into()]);
        let got = reason_for(send(&app, &body).await, "whatsapp_template.parameters[1]").await;
        assert_eq!(got, reason);
    }
    // A template parameter that renders longer than a parameter may be is
    // refused at send, as the same value given directly is.
    let resp = post(
        &app,
        "/api/v1/admin/templates",
        &whatsapp_template("reminder.note", "en", vec!["{{note}}".into()]),
    )
    .await;
    assert_eq!(resp.status(), 201);
    let body = json!({"template": "reminder.note", "to": "+15005550006",
                      "template_data": {"note": "x".repeat(1_025)}});
    let reason = reason_for(send(&app, &body).await, "template_data").await;
    assert_eq!(
        reason,
        "locales.en.whatsapp.parameters[0]: renders to a parameter WhatsApp refuses: it must be at most 1024 characters"
    );
    app.shutdown().await;
}

async fn put_token(app: &TestApp, token: &str) -> reqwest::Response {
    app.put_with_key(
        "/api/v1/services/subscribers/pat",
        &json!({"push_tokens": [token]}),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn push_tokens_follow_one_rule_for_sends_and_subscriber_profiles() {
    let app = app().await;
    let push = |token: &str| json!({"channel": "push", "to": token, "title": "Results ready"});
    let token = "fcm:APA91b-x_y/2";
    assert!(put_token(&app, token).await.status().is_success());
    let resp = send(&app, &push(token)).await;
    assert_eq!(resp.status(), 202);
    // Profiles took any non-space characters, sends only printable ASCII.
    for bad in ["tökén", "a\u{a0}b"] {
        let profile_reason = reason_for(put_token(&app, bad).await, "push_tokens[0]").await;
        let send_reason = reason_for(send(&app, &push(bad)).await, "to").await;
        assert_eq!(
            profile_reason,
            "must be a device registration token: printable ASCII without spaces"
        );
        assert_eq!(profile_reason, send_reason);
    }
    // A token stored under the old rule is passed over, not a 500.
    let mut owner = app.owner().await;
    sqlx::query(
        "update subscribers set push_tokens = array['tökén', $1] where external_id = 'pat'",
    )
    .bind(token)
    .execute(&mut owner)
    .await
    .unwrap();
    let resp = app.get_with_key("/api/v1/services/subscribers/pat").await;
    assert_eq!(resp.status(), 200);
    let read: Value = resp.json().await.unwrap();
    assert_eq!(read["push_tokens"], json!([token]));
    app.shutdown().await;
}

fn template() -> Value {
    json!({"key": "lab.ready", "name": "Lab results ready", "default_locale": "en",
           "default_channels": ["email"],
           "locales": {"en": {"email": {"subject": "Results", "text": "Hello {{name}}"},
                              "inapp": {"title": "Results for {{name}}"}}}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn batch_recipients_are_checked_as_single_sends_are() {
    let app = app().await;
    assert_eq!(
        post(&app, "/api/v1/admin/templates", &template())
            .await
            .status(),
        201
    );
    let single = reason_for(
        send(
            &app,
            &json!({"channel": "inapp", "subscriber_id": "d\nx", "title": "t"}),
        )
        .await,
        "subscriber_id",
    )
    .await;
    let batch = json!({"template": "lab.ready", "channels": ["email", "inapp"], "recipients": [
        {"subscriber_id": "d\nx", "email": "not an email"}]});
    let problems = refused(post(&app, &format!("{SEND}/send-batch"), &batch).await).await;
    let single_email = reason_for(
        send(
            &app,
            &json!({"to": "not an email", "subject": "s", "text": "t"}),
        )
        .await,
        "to",
    )
    .await;
    assert_eq!(
        problems,
        [
            ("recipients[0].subscriber_id".to_owned(), single),
            ("recipients[0].email".to_owned(), single_email),
        ]
    );
    // A locale rendering could never read is refused when the batch is
    // created, as a template send refuses it, not once per recipient later.
    let reason = reason_for(
        post(
            &app,
            &format!("{SEND}/send-batch"),
            &json!({"template": "lab.ready", "locale": "en_US!"}),
        )
        .await,
        "locale",
    )
    .await;
    assert_eq!(
        reason,
        "is not a locale tag such as `en`, `en-US` or `pt-BR`"
    );
    let resp = post(
        &app,
        &format!("{SEND}/send-batch"),
        &json!({"template": "lab.ready", "locale": "en_us"}),
    )
    .await;
    assert_eq!(resp.status(), 202, "a tag in any case, with `_`, renders");
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_bulk_csv_locale_is_checked_as_rendering_reads_it() {
    let app = app().await;
    assert_eq!(
        post(&app, "/api/v1/admin/templates", &template())
            .await
            .status(),
        201
    );
    let upload = |locale: &'static str| {
        let app = &app;
        async move {
            let mut body = String::new();
            for (name, value) in [
                ("template", "lab.ready"),
                ("locale", locale),
                ("mapping", r#"{"email": "Email", "data": {"name": "Name"}}"#),
            ] {
                body.push_str(&format!(
                    "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n"
                ));
            }
            body.push_str(&format!(
                "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"p.csv\"\r\nContent-Type: text/csv\r\n\r\nEmail,Name\npat@example.org,Pat\r\n--{BOUNDARY}--\r\n"
            ));
            let url = app.url(&format!("{SEND}/bulk/csv"));
            app.multipart_post(&url, &app.api_key, BOUNDARY, body)
                .send()
                .await
                .unwrap()
        }
    };
    let reason = reason_for(upload("en_US!").await, "locale").await;
    assert_eq!(
        reason,
        "is not a locale tag such as `en`, `en-US` or `pt-BR`"
    );
    assert_eq!(upload("pt-br").await.status(), 202);
    app.shutdown().await;
}
