//! The worker's logs: JSON lines whose job spans carry queue, job id, tenant
//! and attempt, and never the recipient, subject or body.

use std::time::Duration;

use serde_json::{Value, json};
use testkit::TestApp;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn worker_logs_carry_job_context_and_no_message_content() {
    let app = TestApp::builder().without_worker().spawn().await;
    let mut child = testkit::process::spawn_json_logging(
        &testkit::process::binary("worker"),
        &app.vars,
        &[],
        "info",
    );
    let resp = app
        .send_email(&json!({"to": "jordan.secret@example.org", "subject": "HIV test result", "text": "You tested positive for X."}))
        .await;
    assert_eq!(resp.status(), 202);
    let id = resp.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    app.wait_for_status(&id, "sent", Duration::from_secs(20))
        .await;
    let (status, out) = testkit::process::terminate(&mut child, Duration::from_secs(15)).await;
    assert_eq!(status.code(), Some(0));
    for bit in [
        "jordan.secret@example.org",
        "HIV test result",
        "positive for",
    ] {
        assert!(!out.contains(bit), "`{bit}` leaked into the logs:\n{out}");
    }
    let sent = out
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|l| l["message"] == "sent")
        .unwrap_or_else(|| panic!("no `sent` line in:\n{out}"));
    let span = &sent["span"];
    assert_eq!(span["queue"], "email");
    assert_eq!(span["notification_id"], id.as_str());
    assert_eq!(span["tenant_id"], app.tenant_id.to_string());
    assert_eq!(span["attempt"], 1);
    assert!(span["job_id"].is_string());
    app.shutdown().await;
}
