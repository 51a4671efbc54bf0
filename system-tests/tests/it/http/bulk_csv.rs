//! CSV bulk jobs: valid rows are sent once each, invalid and duplicate rows
//! are reported (with formula escaping in the errors file), bad files fail
//! with their reason and send nothing, oversized uploads are refused, and
//! other tenants get 404.

use std::time::Duration;

use serde_json::{Value, json};
use testkit::TestApp;

const WAIT: Duration = Duration::from_secs(60);
const BASE: &str = "/api/v1/services/notifications/bulk";
const BOUNDARY: &str = "----bulk-test-boundary-7MA4YWxkTrZu0gW";

fn template() -> Value {
    json!({
        "key": "lab.ready",
        "name": "Lab results ready",
        "default_locale": "en",
        "default_channels": ["email"],
        "locales": {"en": {
            "email": {"subject": "Results for {{name}}", "text": "Hello {{name}}, your {{kind}} results are in."},
            "inapp": {"title": "Results for {{name}}"}
        }}
    })
}

async fn app(builder: testkit::TestAppBuilder) -> TestApp {
    let app = builder.spawn().await;
    app.add_template(&template()).await;
    app
}

/// A multipart body: text fields, then the file (when given) last.
fn multipart(fields: &[(&str, &str)], file: Option<&[u8]>) -> Vec<u8> {
    let mut body = Vec::new();
    for (name, value) in fields {
        body.extend_from_slice(
            format!(
                "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n"
            )
            .as_bytes(),
        );
    }
    if let Some(file) = file {
        body.extend_from_slice(
            format!(
                "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"patients.csv\"\r\nContent-Type: text/csv\r\n\r\n"
            )
            .as_bytes(),
        );
        body.extend_from_slice(file);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{BOUNDARY}--\r\n").as_bytes());
    body
}

const MAPPING: &str = r#"{"email": "Email", "data": {"name": "First name", "kind": "Kind"}}"#;

async fn upload_with(app: &TestApp, key: &str, body: Vec<u8>) -> reqwest::Response {
    app.multipart_post(&app.url(&format!("{BASE}/csv")), key, BOUNDARY, body)
        .send()
        .await
        .unwrap()
}

async fn upload(app: &TestApp, csv: &[u8]) -> String {
    let body = multipart(
        &[("template", "lab.ready"), ("mapping", MAPPING)],
        Some(csv),
    );
    let resp = upload_with(app, &app.api_key, body).await;
    let status = resp.status();
    let body: Value = resp.json().await.unwrap();
    assert_eq!(status, 202, "{body}");
    body["job_id"].as_str().unwrap().to_owned()
}

async fn job(app: &TestApp, id: &str) -> Value {
    app.get_ok_json(&format!("{BASE}/{id}")).await
}

async fn wait_job(app: &TestApp, id: &str, status: &str) -> Value {
    testkit::eventually(&format!("bulk job to be {status}"), WAIT, || async {
        let j = job(app, id).await;
        (j["status"] == status).then_some(j)
    })
    .await
}

async fn problem(resp: reqwest::Response, status: u16) -> Value {
    assert_eq!(resp.status(), status);
    assert_eq!(resp.headers()["content-type"], "application/problem+json");
    resp.json().await.unwrap()
}

async fn count(app: &TestApp, sql: &str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(&app.pool).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn valid_rows_are_sent_once_and_bad_rows_are_reported_with_formulas_escaped() {
    let app = app(TestApp::builder()).await;
    let long = "x".repeat(1_001);
    let csv = format!(
        "\u{feff}Email,First name,Kind\r\n\
         ann@example.org,Ann,blood\r\n\
         =HYPERLINK(\"http://evil\"),Bob,blood\r\n\
         cy@example.org,,urine\r\n\
         ANN@example.org,Ann again,blood\r\n\
         dee@example.org,{long},blood\r\n\
         \"eve@example.org\",\"Eve, Jr.\",\"@SUM(1)\"\r\n\
         fay@example.org,-Fay,+1\r\n"
    );
    let id = upload(&app, csv.as_bytes()).await;
    let done = wait_job(&app, &id, "completed").await;
    assert_eq!(done["rows_read"], 7, "{done}");
    assert_eq!(done["rows_valid"], 3);
    assert_eq!(done["rows_invalid"], 3);
    assert_eq!(done["rows_duplicate"], 1);
    assert_eq!(done["notifications"], 3);
    assert_eq!(done["counts"]["sent"], 3);
    assert_eq!(done["parse_progress"], 1.0);
    assert_eq!(done["send_progress"], 1.0);
    assert!(done["failure"].is_null());

    let mail = app.smtp.wait_for(3, WAIT).await;
    app.wait_settled(WAIT).await;
    assert_eq!(app.smtp.received().len(), 3, "each valid recipient once");
    let mut to: Vec<String> = mail.iter().flat_map(|m| m.to.clone()).collect();
    to.sort();
    assert_eq!(
        to,
        ["ann@example.org", "eve@example.org", "fay@example.org"]
    );
    let eve = mail.iter().find(|m| m.to[0] == "eve@example.org").unwrap();
    let text = eve.parsed().body_text(0).unwrap().into_owned();
    assert!(
        text.contains("Eve, Jr.") && text.contains("@SUM(1)"),
        "{text}"
    );

    let resp = app.get_with_key(&format!("{BASE}/{id}/errors")).await;
    assert_eq!(resp.status(), 200);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/csv")
    );
    let errors = resp.text().await.unwrap();
    let expected = format!(
        "row,column,reason,value\n\
         2,Email,is not a valid email address: {},\"'=HYPERLINK(\"\"http://evil\"\")\"\n\
         3,First name,is required,\n\
         4,Email,duplicate of row 1: sent once,ANN@example.org\n\
         5,First name,is over its limit of 1000 characters,{long}\n",
        invalid_email_reason("=HYPERLINK(\"http://evil\")")
    );
    assert_eq!(errors, expected);
    app.shutdown().await;
}

/// The reason `EmailAddress::parse` gives.
fn invalid_email_reason(raw: &str) -> String {
    shared::domain::EmailAddress::parse(raw).unwrap_err().0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_files_fail_with_their_reason_and_send_nothing() {
    let app = app(TestApp::builder()).await;
    // Over a MiB of valid rows first, so some held notifications are
    // committed before the bad byte is reached.
    let mut big = String::from("Email,First name,Kind\n");
    for i in 0..20_000 {
        big.push_str(&format!(
            "patient{i}@example.org,Name{i},blood panel number {i}\n"
        ));
    }
    let mut bad_utf8 = big.clone().into_bytes();
    bad_utf8.extend_from_slice(b"z@example.org,\xff\xfe,blood\n");
    let mut open_quote = big.clone();
    open_quote.push_str("q@example.org,\"never closed,blood\nr@example.org,R,blood\n");
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "missing header",
            b"ann@example.org,Ann,blood\nbob@example.org,Bob,blood\n".to_vec(),
            "missing header",
        ),
        ("invalid UTF-8", bad_utf8, "invalid UTF-8 in row 20001"),
        (
            "unbalanced quotes",
            open_quote.into_bytes(),
            "unbalanced quotes",
        ),
        (
            "header only",
            b"Email,First name,Kind\n".to_vec(),
            "header but no rows",
        ),
        ("blank lines only", b"\n\n\r\n".to_vec(), "empty"),
    ];
    for (case, csv, reason) in cases {
        let id = upload(&app, &csv).await;
        let failed = wait_job(&app, &id, "failed").await;
        let failure = failed["failure"].as_str().unwrap();
        assert!(failure.contains(reason), "{case}: {failure}");
        assert_eq!(failed["notifications"], 0, "{case}: nothing kept");
        assert_eq!(
            count(
                &app,
                &format!("select count(*) from notifications where bulk_job_id = '{id}'")
            )
            .await,
            0,
            "{case}"
        );
    }
    // An empty file is refused at the door.
    let body = multipart(
        &[("template", "lab.ready"), ("mapping", MAPPING)],
        Some(b""),
    );
    let p = problem(upload_with(&app, &app.api_key, body).await, 400).await;
    assert_eq!(p["invalid_params"][0]["name"], "file");
    assert_eq!(
        count(
            &app,
            "select count(*) from bulk_jobs where status = 'uploading'"
        )
        .await,
        0
    );
    app.wait_settled(WAIT).await;
    assert!(app.smtp.received().is_empty(), "no bad file sent anything");
    assert_eq!(count(&app, "select count(*) from notifications").await, 0);
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_upload_over_the_limit_is_refused_and_nothing_is_kept() {
    let app = app(TestApp::builder().var("MAX_CSV_BYTES", 3_000_000)).await;
    let mut csv = String::from("Email,First name,Kind\n");
    while csv.len() < 3_500_000 {
        csv.push_str("someone@example.org,Some One,blood\n");
    }
    let body = multipart(
        &[("template", "lab.ready"), ("mapping", MAPPING)],
        Some(csv.as_bytes()),
    );
    let p = problem(upload_with(&app, &app.api_key, body).await, 413).await;
    assert!(p["detail"].as_str().unwrap().contains("3000000"), "{p}");
    assert_eq!(count(&app, "select count(*) from bulk_jobs").await, 0);
    assert_eq!(count(&app, "select count(*) from bulk_parts").await, 0);
    // Just under the limit is fine.
    csv.truncate(2_000_000);
    let cut = csv.rfind('\n').unwrap();
    csv.truncate(cut + 1);
    let id = upload(&app, csv.as_bytes()).await;
    assert!(!id.is_empty());
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn malformed_uploads_answer_precise_problems() {
    let app = app(TestApp::builder().without_worker().without_scheduler()).await;
    let key = app.api_key.clone();
    let csv: &[u8] = b"Email,First name,Kind\na@example.org,A,b\n";
    // (form fields, file, the field the 400 names)
    type Case<'a> = (Vec<(&'a str, &'a str)>, Option<&'a [u8]>, &'a str);
    let cases: Vec<Case<'_>> = vec![
        (vec![("template", "lab.ready")], Some(csv), "mapping"),
        (vec![("mapping", MAPPING)], Some(csv), "template"),
        (
            vec![("template", "nope"), ("mapping", MAPPING)],
            Some(csv),
            "template",
        ),
        (
            vec![
                ("template", "lab.ready"),
                ("mapping", "{\"emial\": \"Email\"}"),
            ],
            Some(csv),
            "mapping",
        ),
        (
            vec![("template", "lab.ready"), ("mapping", "[1]")],
            Some(csv),
            "mapping",
        ),
        (
            vec![
                ("template", "lab.ready"),
                ("mapping", r#"{"phone": "Phone"}"#),
            ],
            Some(csv),
            "mapping",
        ),
        (
            vec![
                ("template", "lab.ready"),
                ("channels", "email,push"),
                ("mapping", MAPPING),
            ],
            Some(csv),
            "channels",
        ),
        (
            vec![
                ("template", "lab.ready"),
                ("channels", "fax"),
                ("mapping", MAPPING),
            ],
            Some(csv),
            "channels",
        ),
        (
            vec![
                ("template", "lab.ready"),
                ("template", "lab.ready"),
                ("mapping", MAPPING),
            ],
            Some(csv),
            "template",
        ),
        (
            vec![
                ("template", "lab.ready"),
                ("colour", "red"),
                ("mapping", MAPPING),
            ],
            Some(csv),
            "colour",
        ),
        (
            vec![("template", "lab.ready"), ("mapping", MAPPING)],
            None,
            "file",
        ),
    ];
    for (fields, file, name) in cases {
        let p = problem(upload_with(&app, &key, multipart(&fields, file)).await, 400).await;
        assert_eq!(p["invalid_params"][0]["name"], name, "{p}");
    }
    // A text field past its bound.
    let huge = "x".repeat(70 * 1024);
    let p = problem(
        upload_with(
            &app,
            &key,
            multipart(&[("template", &huge), ("mapping", MAPPING)], Some(csv)),
        )
        .await,
        400,
    )
    .await;
    assert_eq!(p["invalid_params"][0]["name"], "template");
    // A field after the file.
    let mut body = multipart(
        &[("template", "lab.ready"), ("mapping", MAPPING)],
        Some(csv),
    );
    let end = format!("--{BOUNDARY}--\r\n");
    body.truncate(body.len() - end.len());
    body.extend_from_slice(
        format!(
            "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"locale\"\r\n\r\nen\r\n{end}"
        )
        .as_bytes(),
    );
    let p = problem(upload_with(&app, &key, body).await, 400).await;
    assert_eq!(p["invalid_params"][0]["name"], "file");
    // Not multipart at all.
    let resp = app
        .post_with_token(
            &format!("{BASE}/csv"),
            &key,
            &json!({"template": "lab.ready"}),
        )
        .await;
    problem(resp, 415).await;
    assert_eq!(
        count(&app, "select count(*) from bulk_jobs").await,
        0,
        "nothing stored"
    );
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn another_tenants_bulk_job_answers_404() {
    let app = app(TestApp::builder().without_worker().without_scheduler()).await;
    let id = upload(&app, b"Email,First name,Kind\na@example.org,A,b\n").await;
    let (_, other) = app.other_tenant().await;
    for path in [format!("{BASE}/{id}"), format!("{BASE}/{id}/errors")] {
        let resp = app.get_with_token(&path, &other).await;
        problem(resp, 404).await;
    }
    let resp = app
        .post_empty_with_token(&format!("{BASE}/{id}/cancel"), &other)
        .await;
    problem(resp, 404).await;
    assert_eq!(job(&app, &id).await["status"], "queued", "untouched");
    let resp = app.get_with_key(&format!("{BASE}/not-a-job")).await;
    problem(resp, 404).await;
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cancel_stops_every_notification_not_yet_sent() {
    // No dispatcher: released notifications wait in Postgres.
    let mut app = app(TestApp::builder().without_scheduler()).await;
    let id = upload(
        &app,
        b"Email,First name,Kind\na@example.org,A,b\nb@example.org,B,c\n",
    )
    .await;
    wait_job(&app, &id, "sending").await;
    let resp = app
        .client
        .post(app.url(&format!("{BASE}/{id}/cancel")))
        .bearer_auth(&app.api_key)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let cancelled: Value = resp.json().await.unwrap();
    assert_eq!(cancelled["status"], "cancelled");
    assert_eq!(cancelled["counts"]["cancelled"], 2);
    assert!(cancelled["cancelled_at"].is_string());
    app.start_scheduler();
    app.wait_settled(WAIT).await;
    assert!(app.smtp.received().is_empty());
    assert_eq!(job(&app, &id).await["counts"]["cancelled"], 2);
    app.shutdown().await;
}

async fn upload_keyed(
    app: &TestApp,
    api_key: &str,
    idem: &str,
    body: Vec<u8>,
) -> reqwest::Response {
    app.multipart_post(&app.url(&format!("{BASE}/csv")), api_key, BOUNDARY, body)
        .header("Idempotency-Key", idem)
        .send()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_idempotency_key_replays_the_first_upload_and_refuses_another() {
    let app = app(TestApp::builder().without_worker().without_scheduler()).await;
    let csv: &[u8] = b"Email,First name,Kind\na@example.org,A,b\nb@example.org,B,c\n";
    let form = [("template", "lab.ready"), ("mapping", MAPPING)];

    let first = upload_keyed(&app, &app.api_key, "upload-1", multipart(&form, Some(csv))).await;
    let status = first.status();
    assert!(first.headers().get("idempotent-replayed").is_none());
    let first: Value = first.json().await.unwrap();
    assert_eq!(status, 202, "{first}");
    let id = first["job_id"].as_str().unwrap().to_owned();

    let again = upload_keyed(&app, &app.api_key, "upload-1", multipart(&form, Some(csv))).await;
    let status = again.status();
    let replayed = again.headers().get("idempotent-replayed").cloned();
    let again: Value = again.json().await.unwrap();
    assert_eq!(status, 202, "{again}");
    assert_eq!(replayed.unwrap(), "true");
    assert_eq!(again["job_id"], id.as_str());
    assert_eq!(again["size_bytes"], first["size_bytes"]);

    // The same key with another file, or another form, is refused.
    let other_file: &[u8] = b"Email,First name,Kind\nc@example.org,C,d\n";
    let p = problem(
        upload_keyed(
            &app,
            &app.api_key,
            "upload-1",
            multipart(&form, Some(other_file)),
        )
        .await,
        422,
    )
    .await;
    assert!(
        p["detail"].as_str().unwrap().contains("Idempotency-Key"),
        "{p}"
    );
    let other_form = [
        ("template", "lab.ready"),
        ("channels", "inapp"),
        (
            "mapping",
            r#"{"email": "Email", "subscriber_id": "Email", "data": {"name": "First name", "kind": "Kind"}}"#,
        ),
    ];
    problem(
        upload_keyed(
            &app,
            &app.api_key,
            "upload-1",
            multipart(&other_form, Some(csv)),
        )
        .await,
        422,
    )
    .await;
    assert_eq!(count(&app, "select count(*) from bulk_jobs").await, 1);
    assert_eq!(
        count(&app, "select count(*) from bulk_parts").await,
        1,
        "a replay stores nothing"
    );

    // Malformed keys.
    for bad in ["has space", &"k".repeat(256)] {
        let p = problem(
            upload_keyed(&app, &app.api_key, bad, multipart(&form, Some(csv))).await,
            400,
        )
        .await;
        assert!(
            p["detail"].as_str().unwrap().contains("Idempotency-Key"),
            "{p}"
        );
    }

    // Two identical uploads under a new key at once: one job.
    let (a, b) = tokio::join!(
        upload_keyed(&app, &app.api_key, "upload-2", multipart(&form, Some(csv))),
        upload_keyed(&app, &app.api_key, "upload-2", multipart(&form, Some(csv))),
    );
    let mut ids = Vec::new();
    for resp in [a, b] {
        match resp.status().as_u16() {
            202 => ids.push(resp.json::<Value>().await.unwrap()["job_id"].clone()),
            409 => {}
            other => panic!("unexpected {other}"),
        }
    }
    assert!(!ids.is_empty());
    ids.dedup();
    assert_eq!(ids.len(), 1, "both answers name one job");
    assert_eq!(
        count(
            &app,
            "select count(*) from bulk_jobs where idempotency_key = 'upload-2'"
        )
        .await,
        1
    );

    // Another tenant's key space is its own.
    let (_, other) = app.other_tenant().await;
    let resp = app
        .post_with_token("/api/v1/admin/templates", &other, &template())
        .await;
    assert_eq!(resp.status(), 201);
    let theirs = upload_keyed(&app, &other, "upload-1", multipart(&form, Some(csv))).await;
    assert_eq!(theirs.status(), 202);
    assert!(theirs.headers().get("idempotent-replayed").is_none());
    let theirs: Value = theirs.json().await.unwrap();
    assert_ne!(theirs["job_id"], id.as_str());
    assert_eq!(count(&app, "select count(*) from bulk_jobs").await, 3);
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_nul_in_a_cell_is_a_row_error_and_in_a_form_field_a_400() {
    let app = app(TestApp::builder()).await;
    let csv =
        "Email,First name,Kind\r\nann@example.org,A\u{0}nn,blood\r\nbo@example.org,Bo,urine\r\n";
    let id = upload(&app, csv.as_bytes()).await;
    let done = wait_job(&app, &id, "completed").await;
    assert_eq!(done["rows_read"], 2, "{done}");
    assert_eq!(done["rows_invalid"], 1, "{done}");
    assert_eq!(done["rows_valid"], 1, "{done}");
    assert_eq!(done["counts"]["sent"], 1, "{done}");
    let errors = app
        .get_with_key(&format!("{BASE}/{id}/errors"))
        .await
        .text()
        .await
        .unwrap();
    assert_eq!(
        errors,
        "row,column,reason,value\n1,First name,must not contain NUL characters (U+0000),\n"
    );

    for (field, fields) in [
        (
            "template",
            [("template", "lab.ready\u{0}"), ("mapping", MAPPING)],
        ),
        (
            "mapping",
            [
                ("template", "lab.ready"),
                ("mapping", r#"{"email": "Em\u0000ail"}"#),
            ],
        ),
    ] {
        let body = multipart(&fields, Some(b"Email\r\na@example.org\r\n"));
        let p = problem(upload_with(&app, &app.api_key, body).await, 400).await;
        assert_eq!(p["invalid_params"][0]["name"], field, "{p}");
    }
    assert_eq!(count(&app, "select count(*) from bulk_jobs").await, 1);
    app.shutdown().await;
}
