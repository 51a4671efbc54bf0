//! Workers killed with SIGKILL in the middle of a 100,000-row CSV, first
//! while it parses, then while its chunks expand: the next worker resumes
//! from the last committed part, chunks are expanded once, and every valid
//! recipient gets exactly one notification, sent once.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use testkit::TestApp;

const BOUNDARY: &str = "----bulk-kill-test-boundary";
const ROWS: usize = 100_000;

fn spawn_worker(app: &TestApp, queues: Option<&str>) -> tokio::process::Child {
    let mut command = tokio::process::Command::new(testkit::process::binary("worker"));
    command.envs(app.vars.iter().cloned());
    if let Some(queues) = queues {
        command.env("WORKER_QUEUES", queues);
    }
    command
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("the worker binary starts")
}

/// The file, and its valid, invalid and duplicate row counts.
fn csv() -> (Vec<u8>, i64, i64, i64) {
    let mut out = String::from("Patient ID,Name,Note\n");
    let (mut valid, mut invalid, mut duplicate) = (0, 0, 0);
    let note = "n".repeat(100);
    for i in 0..ROWS {
        if i % 1_000 == 999 {
            // The previous row's patient again.
            out.push_str(&format!("patient-{},Again,{note}\n", i - 1));
            duplicate += 1;
        } else if i % 997 == 996 {
            // No name: invalid.
            out.push_str(&format!("patient-{i},,{note}\n"));
            invalid += 1;
        } else {
            out.push_str(&format!("patient-{i},Name {i},{note}\n"));
            valid += 1;
        }
    }
    (out.into_bytes(), valid, invalid, duplicate)
}

async fn scalar(app: &TestApp, sql: &str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(&app.pool).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_worker_killed_mid_csv_resumes_and_sends_every_valid_recipient_once() {
    let app = TestApp::builder()
        .without_worker()
        // The parser's lease: a dead parser is replaced this soon.
        .var("JOBS__QUEUES__BULK_CSV__TIMEOUT_SECS", 2)
        .spawn()
        .await;
    app.add_template(&json!({
        "key": "welcome", "name": "Welcome", "default_locale": "en",
        "default_channels": ["inapp"],
        "locales": {"en": {"inapp": {"title": "Welcome, {{name}}", "body": "{{note}}"}}}
    }))
    .await;
    let (file, valid, invalid, duplicate) = csv();
    let mut body = Vec::new();
    for (name, value) in [
        ("template", "welcome"),
        (
            "mapping",
            r#"{"subscriber_id": "Patient ID", "data": {"name": "Name", "note": "Note"}}"#,
        ),
    ] {
        body.extend_from_slice(
            format!(
                "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n"
            )
            .as_bytes(),
        );
    }
    body.extend_from_slice(
        format!("--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"p.csv\"\r\n\r\n")
            .as_bytes(),
    );
    body.extend_from_slice(&file);
    body.extend_from_slice(format!("\r\n--{BOUNDARY}--\r\n").as_bytes());
    let url = app.url("/api/v1/services/notifications/bulk/csv");
    let resp = app
        .multipart_post(&url, &app.api_key, BOUNDARY, body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    let job: Value = resp.json().await.unwrap();
    let id = job["job_id"].as_str().unwrap().to_owned();
    let progress = format!("select rows_read from bulk_jobs where id = '{id}'");

    // Kill the first parser as soon as it has committed a part.
    // The killed workers only parse and expand: their deaths leave no send
    // to a lease.
    let mut first = spawn_worker(&app, Some("bulk_csv,bulk_chunk"));
    let started = Instant::now();
    while scalar(&app, &progress).await == 0 {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "parsing never started"
        );
        // Polls for the moment to kill at; the loop ends on a condition.
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    first.kill().await.unwrap();
    first.wait().await.unwrap();
    let read_at_kill = scalar(&app, &progress).await;
    assert!(
        read_at_kill > 0 && read_at_kill < ROWS as i64,
        "killed mid-file ({read_at_kill} rows read)"
    );
    let (status,): (String,) =
        sqlx::query_as(&format!("select status from bulk_jobs where id = '{id}'"))
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(status, "parsing");
    // What was committed is whole: the counters match the rows held,
    // whether still in chunks or already expanded (one snapshot).
    let held = format!(
        "select (select rows_valid from bulk_jobs where id = '{id}')
              - (select count(*) from notifications where bulk_job_id = '{id}')
              - (select coalesce(sum(notification_count), 0) from bulk_chunks
                 where job_id = '{id}' and expanded_at is null)"
    );
    assert_eq!(scalar(&app, &held).await, 0, "every valid row held once");
    assert_eq!(
        scalar(
            &app,
            &format!("select count(*) from bulk_jobs where id = '{id}' and checked_at is not null")
        )
        .await,
        1,
        "the whole file was checked before any row was committed"
    );
    assert_eq!(
        scalar(
            &app,
            "select count(*) from notifications where run_at = 'infinity'"
        )
        .await,
        0,
        "a checked file's rows are due at once"
    );

    let mut second = spawn_worker(&app, Some("bulk_csv,bulk_chunk"));
    testkit::eventually(
        "the file to be parsed",
        Duration::from_secs(120),
        || async {
            let (status,): (String,) =
                sqlx::query_as(&format!("select status from bulk_jobs where id = '{id}'"))
                    .fetch_one(&app.pool)
                    .await
                    .unwrap();
            (status == "sending" || status == "completed").then_some(())
        },
    )
    .await;
    let (read, v, i, d): (i64, i64, i64, i64) = sqlx::query_as(&format!(
        "select rows_read, rows_valid, rows_invalid, rows_duplicate from bulk_jobs where id = '{id}'"
    ))
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!((read, v, i, d), (ROWS as i64, valid, invalid, duplicate));
    assert_eq!(scalar(&app, &held).await, 0, "every valid row held once");

    // Kill the next worker while the chunks expand: some are done, some not.
    let chunks = format!(
        "select count(*) filter (where expanded_at is not null) * 1000000
              + count(*) filter (where expanded_at is null)
         from bulk_chunks where job_id = '{id}'"
    );
    let started = Instant::now();
    loop {
        let c = scalar(&app, &chunks).await;
        if c >= 1_000_000 && c % 1_000_000 > 0 {
            break;
        }
        assert!(
            c % 1_000_000 > 0,
            "every chunk expanded before the kill ({c})"
        );
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "expansion never started"
        );
        // Polls for the moment to kill at; the loop ends on a condition.
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    second.kill().await.unwrap();
    second.wait().await.unwrap();
    assert_eq!(scalar(&app, &held).await, 0, "every valid row held once");
    let mut third = spawn_worker(&app, None);

    let per_job = format!("from notifications where bulk_job_id = '{id}'");
    // Chunks the killed worker held are pushed again after the dispatcher's
    // `redispatch_after_secs`.
    testkit::eventually(
        "every chunk to be expanded",
        Duration::from_secs(400),
        || async {
            (scalar(
                &app,
                &format!(
                    "select count(*) from bulk_chunks where job_id = '{id}' and expanded_at is null"
                ),
            )
            .await
                == 0)
                .then_some(())
        },
    )
    .await;
    assert_eq!(
        scalar(&app, &format!("select count(*) {per_job}")).await,
        valid
    );
    assert_eq!(
        scalar(&app, &format!("select count(distinct recipient) {per_job}")).await,
        valid,
        "each recipient once"
    );
    assert_eq!(
        scalar(
            &app,
            &format!("select count(*) from bulk_row_errors where job_id = '{id}'")
        )
        .await,
        invalid + duplicate
    );

    testkit::eventually(
        "every notification to be sent",
        Duration::from_secs(600),
        || async {
            (scalar(
                &app,
                &format!("select count(*) {per_job} and status = 'sent'"),
            )
            .await
                == valid)
                .then_some(())
        },
    )
    .await;
    assert_eq!(
        scalar(
            &app,
            &format!("select count(*) {per_job} and attempts <> 1")
        )
        .await,
        0,
        "each sent in one attempt"
    );
    // In-app sends write no attempt row: the inbox is the record.
    assert_eq!(
        scalar(
            &app,
            &format!(
                "select count(distinct provider_message_id) {per_job} and provider_message_id like 'inapp:%'"
            )
        )
        .await,
        valid,
        "each placed in its inbox once"
    );
    third.kill().await.unwrap();
    app.shutdown().await;
}
