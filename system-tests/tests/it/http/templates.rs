//! Message templates under `/api/v1/admin/templates`: administrators create,
//! list, read, replace, delete and preview them; every string is checked when
//! saved, rendering is strict and escapes email HTML, and nobody reaches
//! another organisation's templates.

use crate::support::invalid_param_names;
use serde_json::{Value, json};
use testkit::TestApp;

mod limits;

const BASE: &str = "/api/v1/admin/templates";

async fn app() -> TestApp {
    TestApp::spawn_api_only().await
}

/// A valid template: email and SMS in English, French and Canadian French.
fn reminder(key: &str) -> Value {
    json!({
        "key": key,
        "name": "Appointment reminder",
        "description": "The day before an appointment",
        "category": "appointments",
        "critical": false,
        "default_locale": "en",
        "default_channels": ["email", "sms"],
        "locales": {
            "en": {
                "email": {
                    "subject": "See you {{day}}, {{name}}",
                    "html": "<p>Hello {{name}}</p>",
                    "text": "Hello {{name}}"
                },
                "sms": {"body": "Hello {{name}}, see you {{day}}."},
                "inapp": {"title": "See you {{day}}", "action_url": "/appointments/{{id}}"}
            },
            "fr": {
                "email": {"subject": "À {{day}}, {{name}}", "text": "Bonjour {{name}}"},
                "sms": {"body": "Bonjour {{name}}, à {{day}}."}
            },
            "fr-CA": {"sms": {"body": "Allô {{name}}, à {{day}}."}}
        }
    })
}

/// Calls the template API with `token`.
struct Admin<'a> {
    app: &'a TestApp,
    token: String,
}

impl<'a> Admin<'a> {
    fn key(app: &'a TestApp) -> Self {
        Self {
            app,
            token: app.api_key.clone(),
        }
    }

    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> reqwest::Response {
        let mut req = self
            .app
            .client
            .request(method, self.app.url(&format!("{BASE}{path}")))
            .bearer_auth(&self.token);
        if let Some(b) = body {
            req = req.json(b);
        }
        req.send().await.expect("the api answers")
    }

    async fn create(&self, body: &Value) -> reqwest::Response {
        self.send(reqwest::Method::POST, "", Some(body)).await
    }

    /// Creates a template and returns its id.
    async fn created(&self, body: &Value) -> String {
        let resp = self.create(body).await;
        assert_eq!(resp.status(), 201, "{body}");
        resp.json::<Value>().await.unwrap()["id"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    async fn get(&self, path: &str) -> reqwest::Response {
        self.send(reqwest::Method::GET, path, None).await
    }

    async fn put(&self, id: &str, body: &Value) -> reqwest::Response {
        self.send(reqwest::Method::PUT, &format!("/{id}"), Some(body))
            .await
    }

    async fn delete(&self, id: &str) -> reqwest::Response {
        self.send(reqwest::Method::DELETE, &format!("/{id}"), None)
            .await
    }

    async fn preview(&self, id: &str, body: &Value) -> reqwest::Response {
        self.send(reqwest::Method::POST, &format!("/{id}/preview"), Some(body))
            .await
    }

    /// A preview that must succeed.
    async fn rendered(&self, id: &str, body: &Value) -> Value {
        let resp = self.preview(id, body).await;
        assert_eq!(resp.status(), 200, "{body}");
        resp.json().await.unwrap()
    }
}

/// Checks the problem+json shape and returns the body.
async fn problem(resp: reqwest::Response, status: u16) -> Value {
    assert_eq!(resp.status(), status);
    assert_eq!(resp.headers()["content-type"], "application/problem+json");
    let request_id = resp.headers()["x-request-id"].to_str().unwrap().to_owned();
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["status"], status);
    assert_eq!(body["request_id"], request_id.as_str());
    body
}

/// The one invalid field a 400 names, and why.
async fn invalid_field(resp: reqwest::Response) -> (String, String) {
    let body = problem(resp, 400).await;
    let params = body["invalid_params"].as_array().unwrap();
    assert_eq!(params.len(), 1, "{body}");
    (
        params[0]["name"].as_str().unwrap().to_owned(),
        params[0]["reason"].as_str().unwrap().to_owned(),
    )
}

async fn count_templates(app: &TestApp) -> i64 {
    sqlx::query_scalar("select count(*) from templates")
        .fetch_one(&app.pool)
        .await
        .unwrap()
}

fn data() -> Value {
    json!({"name": "Pat", "day": "Monday", "id": 42})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn templates_are_created_read_replaced_and_deleted() {
    let app = app().await;
    let admin = Admin::key(&app);
    let resp = admin.create(&reminder("appointment.reminder")).await;
    assert_eq!(resp.status(), 201);
    let location = resp.headers()["location"].to_str().unwrap().to_owned();
    let created: Value = resp.json().await.unwrap();
    let id = created["id"].as_str().unwrap().to_owned();
    assert_eq!(location, format!("{BASE}/{id}"));
    assert_eq!(created["key"], "appointment.reminder");
    assert_eq!(created["default_channels"], json!(["email", "sms"]));
    assert_eq!(created["locales"], reminder("x")["locales"]);

    let read: Value = admin.get(&format!("/{id}")).await.json().await.unwrap();
    assert_eq!(read, created);
    let stored =
        shared::db::templates::get_by_key(&app.pool, app.tenant_id, "appointment.reminder")
            .await
            .unwrap()
            .expect("found by key");
    assert_eq!(stored.id.to_string(), id);

    let mut replacement = reminder("appointment.reminder.v2");
    replacement["name"] = json!("Reminder, second edition");
    replacement["critical"] = json!(true);
    replacement["locales"]["en"]["sms"]["body"] = json!("Reminder: {{day}}");
    let resp = admin.put(&id, &replacement).await;
    assert_eq!(resp.status(), 200);
    let updated: Value = resp.json().await.unwrap();
    assert_eq!(updated["id"], id.as_str());
    assert_eq!(updated["key"], "appointment.reminder.v2");
    assert_eq!(updated["critical"], true);
    assert_eq!(updated["created_at"], created["created_at"]);
    assert_ne!(updated["updated_at"], created["updated_at"]);
    let rendered = admin
        .rendered(
            &id,
            &json!({"data": {"day": "Tuesday"}, "channels": ["sms"]}),
        )
        .await;
    assert_eq!(
        rendered["channels"]["sms"]["content"]["body"],
        "Reminder: Tuesday"
    );

    let resp = admin.delete(&id).await;
    assert_eq!(resp.status(), 204);
    problem(admin.get(&format!("/{id}")).await, 404).await;
    problem(admin.delete(&id).await, 404).await;
    assert_eq!(count_templates(&app).await, 0);
    app.shutdown().await;
}

/// One row of the audit log.
#[derive(Debug, sqlx::FromRow)]
struct AuditRow {
    actor: String,
    action: String,
    resource_type: String,
    resource_id: Option<String>,
    result: String,
    request_id: Option<String>,
    details: Value,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_change_is_audited_with_the_actor_and_without_content() {
    let app = app().await;
    let admin = Admin::key(&app);
    let resp = admin.create(&reminder("audited")).await;
    assert_eq!(resp.status(), 201);
    let create_request = resp.headers()["x-request-id"].to_str().unwrap().to_owned();
    let id = resp.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let resp = admin.put(&id, &reminder("audited.v2")).await;
    assert_eq!(resp.status(), 200);
    let resp = admin.delete(&id).await;
    assert_eq!(resp.status(), 204);
    // Refused changes leave no audit record.
    problem(admin.delete(&id).await, 404).await;
    let rows: Vec<AuditRow> = sqlx::query_as(
        "select actor, action, resource_type, resource_id, result, request_id, details
         from audit_log where tenant_id = $1 order by id",
    )
    .bind(app.tenant_id)
    .fetch_all(&app.pool)
    .await
    .unwrap();
    let actions: Vec<&str> = rows.iter().map(|r| r.action.as_str()).collect();
    assert_eq!(
        actions,
        ["template.create", "template.update", "template.delete"]
    );
    assert_eq!(rows[0].request_id.as_deref(), Some(create_request.as_str()));
    for row in &rows {
        assert!(row.actor.starts_with("api_key:"), "{row:?}");
        assert_eq!(row.resource_type, "template");
        assert_eq!(row.resource_id.as_deref(), Some(id.as_str()));
        assert_eq!(row.result, "success");
        assert!(row.request_id.is_some());
        let text = row.details.to_string();
        assert!(
            !text.contains("Hello") && !text.contains("subject") && !text.contains("locales"),
            "no content in the audit log: {text}"
        );
    }
    assert_eq!(rows[0].details, json!({"key": "audited"}));
    assert_eq!(rows[1].details, json!({"key": "audited.v2"}));
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn preview_renders_each_channel_and_refuses_an_unknown_variable() {
    let app = app().await;
    let admin = Admin::key(&app);
    let id = admin.created(&reminder("strict")).await;
    let preview = admin.rendered(&id, &json!({"data": data()})).await;
    assert_eq!(
        preview["channels"],
        json!({
            "email": {"locale": "en", "content": {
                "subject": "See you Monday, Pat", "html": "<p>Hello Pat</p>", "text": "Hello Pat"
            }},
            "sms": {"locale": "en", "content": {"body": "Hello Pat, see you Monday."}}
        })
    );
    let inapp = admin
        .rendered(&id, &json!({"data": data(), "channels": ["inapp"]}))
        .await;
    assert_eq!(
        inapp["channels"]["inapp"]["content"],
        json!({"title": "See you Monday", "body": null, "action_url": "/appointments/42", "data": {}})
    );

    let resp = admin
        .preview(&id, &json!({"data": {"name": "Pat"}, "channels": ["sms"]}))
        .await;
    let (field, reason) = invalid_field(resp).await;
    assert_eq!(field, "locales.en.sms.body");
    assert!(reason.contains("`day`"), "{reason}");
    // Every failing channel is named.
    let body = problem(
        admin
            .preview(&id, &json!({"data": {"day": "Monday"}}))
            .await,
        400,
    )
    .await;
    let fields = invalid_param_names(&body);
    assert_eq!(fields, ["locales.en.email.subject", "locales.en.sms.body"]);
    assert!(
        body["invalid_params"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("`name`")
    );

    for (bad, field) in [
        (json!({"channels": ["fax"]}), "channels[0]"),
        (json!({"channels": ["email", "push"]}), "channels[1]"),
        (json!({"channels": []}), "channels"),
        (json!({"locale": "not a locale"}), "locale"),
        (json!({"data": [1, 2]}), "data"),
    ] {
        let (name, _) = invalid_field(admin.preview(&id, &bad).await).await;
        assert_eq!(name, field, "{bad}");
    }
    let resp = admin
        .preview(&id, &json!({"data": {}, "extra": true}))
        .await;
    problem(resp, 400).await;
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_preview_that_would_loop_or_grow_without_bound_is_refused() {
    let app = app().await;
    let admin = Admin::key(&app);
    let mut body = reminder("bounded");
    body["locales"]["en"]["sms"]["body"] =
        json!("{{#each rows}}{{#each ../rows}}{{#each ../../rows}}.{{/each}}{{/each}}{{/each}}");
    body["locales"]["en"]["email"]["text"] = json!("{{#each rows}}{{../big}}{{/each}}");
    let id = admin.created(&body).await;
    let rows: Vec<u32> = (0..100).collect();
    let (field, reason) = invalid_field(
        admin
            .preview(&id, &json!({"data": {"rows": rows}, "channels": ["sms"]}))
            .await,
    )
    .await;
    assert_eq!(field, "locales.en.sms.body");
    assert!(reason.contains("loops more than"), "{reason}");
    let data = json!({"name": "Pat", "day": "Mon", "rows": rows, "big": "x".repeat(4096)});
    let (field, reason) = invalid_field(
        admin
            .preview(&id, &json!({"data": data, "channels": ["email"]}))
            .await,
    )
    .await;
    assert_eq!(field, "locales.en.email.text");
    assert!(reason.contains("bytes"), "{reason}");
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn syntax_errors_and_partials_are_refused_on_save_naming_the_field() {
    let app = app().await;
    let admin = Admin::key(&app);
    let cases = [
        (
            ["fr", "email", "subject"],
            json!("À {{#if day}}{{day}}"),
            "is not a valid template",
        ),
        (
            ["en", "sms", "body"],
            json!("Hello {{name"),
            "is not a valid template",
        ),
        (["en", "email", "text"], json!("{{> footer}}"), "partials"),
        (
            ["en", "email", "html"],
            json!("{{#> layout}}<p>{{name}}</p>{{/layout}}"),
            "partials",
        ),
        (
            ["en", "email", "text"],
            json!("{{#*inline \"footer\"}}x{{/inline}}{{> footer}}"),
            "inline partials",
        ),
        (
            ["en", "email", "html"],
            json!("<p>{{{name}}}</p>"),
            "escaped",
        ),
        (
            ["en", "email", "html"],
            json!("<p>{{& name}}</p>"),
            "escaped",
        ),
        (["en", "sms", "body"], json!("{{log name}}"), "not a helper"),
    ];
    for (path, value, needle) in cases {
        let mut body = reminder("broken");
        body["locales"][path[0]][path[1]][path[2]] = value.clone();
        let (field, reason) = invalid_field(admin.create(&body).await).await;
        assert_eq!(field, format!("locales.{}", path.join(".")), "{value}");
        assert!(reason.contains(needle), "{value}: {reason}");
    }
    assert_eq!(count_templates(&app).await, 0, "nothing stored");

    // An update is checked the same way and leaves the template as it was.
    let id = admin.created(&reminder("kept")).await;
    let mut body = reminder("kept");
    body["locales"]["en"]["sms"]["body"] = json!("{{> footer}}");
    let (field, _) = invalid_field(admin.put(&id, &body).await).await;
    assert_eq!(field, "locales.en.sms.body");
    let stored: Value = admin.get(&format!("/{id}")).await.json().await.unwrap();
    assert_eq!(stored["locales"], reminder("kept")["locales"]);

    // Several bad fields are named at once.
    let mut body = reminder("Not A Key");
    body["default_locale"] = json!("de");
    body["default_channels"] = json!(["email", "fax"]);
    let refused = problem(admin.create(&body).await, 400).await;
    let names = invalid_param_names(&refused);
    assert_eq!(names, ["default_channels[1]"], "a type error stops parsing");
    let mut body = reminder("Not A Key");
    body["default_locale"] = json!("de");
    let refused = problem(admin.create(&body).await, 400).await;
    let names = invalid_param_names(&refused);
    assert_eq!(names, ["key", "default_locale"]);
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn email_html_escapes_data_while_text_and_sms_stay_raw() {
    let app = app().await;
    let admin = Admin::key(&app);
    let id = admin.created(&reminder("escaping")).await;
    let hostile = json!({"name": "<script>alert('x')</script>", "day": "Mon & Tue"});
    let preview = admin.rendered(&id, &json!({"data": hostile})).await;
    let email = &preview["channels"]["email"]["content"];
    assert_eq!(
        email["html"],
        "<p>Hello &lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;</p>"
    );
    assert_eq!(email["text"], "Hello <script>alert('x')</script>");
    assert_eq!(
        email["subject"],
        "See you Mon & Tue, <script>alert('x')</script>"
    );
    assert_eq!(
        preview["channels"]["sms"]["content"]["body"],
        "Hello <script>alert('x')</script>, see you Mon & Tue."
    );
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_line_break_in_the_data_cannot_reach_the_subject() {
    let app = app().await;
    let admin = Admin::key(&app);
    let id = admin.created(&reminder("injection")).await;
    for day in [
        "Monday\r\nBcc: everyone@evil.example",
        "Monday\nX",
        "Monday\r",
    ] {
        let resp = admin
            .preview(
                &id,
                &json!({"data": {"name": "Pat", "day": day}, "channels": ["email"]}),
            )
            .await;
        let (field, reason) = invalid_field(resp).await;
        assert_eq!(field, "locales.en.email.subject", "{day:?}");
        assert!(reason.contains("CR or LF"), "{reason}");
    }
    // The same data is fine in the SMS body, which may have several lines.
    let sms = admin
        .rendered(
            &id,
            &json!({"data": {"name": "Pat", "day": "Monday\nat 9"}, "channels": ["sms"]}),
        )
        .await;
    assert_eq!(
        sms["channels"]["sms"]["content"]["body"],
        "Hello Pat, see you Monday\nat 9."
    );
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn locales_fall_back_from_the_tag_to_its_language_to_the_default() {
    let app = app().await;
    let admin = Admin::key(&app);
    let id = admin.created(&reminder("locales")).await;
    let render = |locale: &'static str| {
        let admin = &admin;
        let id = id.clone();
        async move {
            admin
                .rendered(&id, &json!({"data": data(), "locale": locale}))
                .await["channels"]
                .clone()
        }
    };
    let fr_ca = render("fr-CA").await;
    assert_eq!(fr_ca["sms"]["locale"], "fr-CA");
    assert_eq!(fr_ca["sms"]["content"]["body"], "Allô Pat, à Monday.");
    assert_eq!(
        fr_ca["email"]["locale"], "fr",
        "fr-CA has no email: its language"
    );
    assert_eq!(fr_ca["email"]["content"]["subject"], "À Monday, Pat");
    let fr_be = render("fr_be").await;
    assert_eq!(fr_be["sms"]["locale"], "fr");
    let de = render("de-DE").await;
    assert_eq!(de["sms"]["locale"], "en");
    assert_eq!(de["email"]["content"]["subject"], "See you Monday, Pat");
    let none = admin.rendered(&id, &json!({"data": data()})).await;
    assert_eq!(none["channels"]["sms"]["locale"], "en");
    app.shutdown().await;
}
