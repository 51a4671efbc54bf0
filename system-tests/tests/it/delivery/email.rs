//! How the worker delivers email and what it records: retries with growing
//! gaps up to max attempts, permanent failures, an unreachable SMTP server,
//! and duplicate jobs.

use std::time::Duration;

use serde_json::Value;
use shared::{
    domain::{Channel, NotificationId},
    jobs::{Queues, SendNotifications},
};
use testkit::{
    TestApp,
    proxy::TcpProxy,
    smtp::{Behaviour, SmtpServer},
};

const WAIT: Duration = Duration::from_secs(20);

fn outcomes(n: &Value) -> Vec<String> {
    n["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["outcome"].as_str().unwrap().to_owned())
        .collect()
}

/// The Redis backend re-schedules failed jobs 25 times whatever max attempts
/// says; retries here are the application's, counted in Postgres.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_server_that_always_answers_451_is_tried_exactly_max_attempts_times_with_growing_gaps() {
    let smtp = SmtpServer::start_with(Behaviour::RejectRecipients(
        451,
        "4.7.1 Try again later".into(),
    ))
    .await;
    let app = TestApp::builder()
        .smtp(smtp)
        .var("JOBS__QUEUES__EMAIL__MAX_ATTEMPTS", 4)
        .var("JOBS__QUEUES__EMAIL__BACKOFF__INITIAL_MS", 300)
        .var("JOBS__QUEUES__EMAIL__BACKOFF__MULTIPLIER", 2.0)
        .spawn()
        .await;
    let id = app.send_to("pat@example.org").await;
    let n = app.wait_for_status(&id, "failed", WAIT).await;
    assert_eq!(outcomes(&n), ["retry", "retry", "retry", "failed"]);
    assert_eq!(n["attempt_count"], 4);
    assert!(n["last_error"].as_str().unwrap().contains("451"), "{n}");
    // Exactly four tries reached the server, and no more come later.
    app.wait_settled(WAIT).await;
    let tries = app.smtp.recipient_attempts();
    assert_eq!(tries.len(), 4, "{tries:?}");
    // Each retry waits at least its backoff, 300 ms doubling. A busy
    // machine can only lengthen a gap (a late pickup), never shorten one,
    // so the gaps are held to their lower bounds and not to each other.
    let gaps: Vec<Duration> = tries.windows(2).map(|w| w[1].1 - w[0].1).collect();
    for (gap, backoff_ms) in gaps.iter().zip([300, 600, 1_200]) {
        assert!(
            *gap >= Duration::from_millis(backoff_ms),
            "each gap at least its backoff: {gaps:?}"
        );
    }
    assert!(app.smtp.received().is_empty());
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_5xx_answer_fails_at_once_without_retrying() {
    let smtp = SmtpServer::start_with(Behaviour::RejectRecipients(
        550,
        "5.1.1 No such user".into(),
    ))
    .await;
    let app = TestApp::builder().smtp(smtp).spawn().await;
    let id = app.send_to("nobody@example.org").await;
    let n = app.wait_for_status(&id, "failed", WAIT).await;
    assert_eq!(outcomes(&n), ["failed"]);
    assert!(n["last_error"].as_str().unwrap().contains("550"));
    app.wait_settled(WAIT).await;
    assert_eq!(app.smtp.recipient_attempts().len(), 1);
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_transient_failure_is_retried_and_then_sent() {
    let smtp = SmtpServer::start_with(Behaviour::RejectRecipients(421, "4.3.2 Busy".into())).await;
    let app = TestApp::builder().smtp(smtp).spawn().await;
    let id = app.send_to("pat@example.org").await;
    testkit::eventually("a first failed attempt", WAIT, || async {
        (app.notification(&id).await["attempt_count"] == 1).then_some(())
    })
    .await;
    app.smtp.set_behaviour(Behaviour::Accept);
    let n = app.wait_for_status(&id, "sent", WAIT).await;
    let outcomes = outcomes(&n);
    assert_eq!(outcomes.last().unwrap(), "sent");
    assert!(
        outcomes[..outcomes.len() - 1].iter().all(|o| o == "retry"),
        "{outcomes:?}"
    );
    assert_eq!(app.smtp.received().len(), 1);
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_unreachable_smtp_server_is_retried_until_it_answers() {
    let smtp = SmtpServer::start().await;
    let addr: std::net::SocketAddr = smtp.url().trim_start_matches("smtp://").parse().unwrap();
    let proxy = TcpProxy::start(addr).await;
    proxy.cut();
    let app = TestApp::builder()
        .var("SMTP_URL", format!("smtp://{}", proxy.addr()))
        .smtp(smtp)
        // Long enough to see the row waiting for its retry.
        .var("JOBS__QUEUES__EMAIL__BACKOFF__INITIAL_MS", 3000)
        .var("JOBS__QUEUES__EMAIL__BACKOFF__MAX_MS", 5000)
        .spawn()
        .await;
    let id = app.send_to("pat@example.org").await;
    let n = testkit::eventually("a recorded failed connection attempt", WAIT, || async {
        let n = app.notification(&id).await;
        (!n["attempts"].as_array().unwrap().is_empty()).then_some(n)
    })
    .await;
    assert_eq!(n["status"], "queued", "{n}");
    assert_eq!(n["attempts"][0]["outcome"], "retry");
    assert!(n["next_attempt_at"].is_string());
    proxy.restore();
    app.wait_for_status(&id, "sent", WAIT).await;
    assert_eq!(app.smtp.received().len(), 1);
    app.shutdown().await;
}

/// A job delivered twice (a re-push, an orphan re-enqueued, an ack lost in a
/// crash) finds its notification already claimed or sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_second_delivery_of_the_same_job_sends_nothing_again() {
    let app = TestApp::builder().without_scheduler().spawn().await;
    let id = app.send_to("pat@example.org").await;
    app.wait_for_status(&id, "sent", WAIT).await;
    let queues = Queues::new(&app.settings.redis_url, &app.redis_prefix).unwrap();
    let job = SendNotifications {
        tenant_id: app.tenant_id,
        channel: Channel::Email,
        notification_ids: vec![id.parse::<NotificationId>().unwrap()],
    };
    for _ in 0..3 {
        queues.push(job.clone()).await.unwrap();
    }
    app.wait_settled(WAIT).await;
    assert_eq!(
        app.smtp.received().len(),
        1,
        "one email, however often the job comes"
    );
    assert_eq!(app.notification(&id).await["attempt_count"], 1);
    app.shutdown().await;
}

/// A job naming another tenant's notification does nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_job_for_the_wrong_tenant_claims_nothing() {
    let app = TestApp::spawn_api_only().await;
    let id = app.send_to("pat@example.org").await;
    let (other, _) = app.other_tenant().await;
    // Drop the real job, then push one that names the other tenant.
    app.wipe_redis().await;
    let queues = Queues::new(&app.settings.redis_url, &app.redis_prefix).unwrap();
    queues
        .push(SendNotifications {
            tenant_id: other,
            channel: Channel::Email,
            notification_ids: vec![id.parse().unwrap()],
        })
        .await
        .unwrap();
    let mut app = app;
    app.start_worker();
    app.wait_queues_idle(WAIT).await;
    assert!(app.smtp.received().is_empty());
    assert_eq!(app.notification(&id).await["status"], "queued");
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_send_that_times_out_is_retried() {
    let smtp = SmtpServer::start_with(Behaviour::HoldData(Duration::from_secs(4))).await;
    let app = TestApp::builder()
        .smtp(smtp)
        .var("JOBS__QUEUES__EMAIL__TIMEOUT_SECS", 1)
        .var("JOBS__QUEUES__EMAIL__BACKOFF__INITIAL_MS", 1500)
        .spawn()
        .await;
    let id = app.send_to("pat@example.org").await;
    let n = testkit::eventually("a timed-out attempt", WAIT, || async {
        let n = app.notification(&id).await;
        (!n["attempts"].as_array().unwrap().is_empty()).then_some(n)
    })
    .await;
    assert_eq!(n["attempts"][0]["outcome"], "retry", "{n}");
    assert!(
        n["attempts"][0]["latency_ms"].as_i64().unwrap() >= 900,
        "{n}"
    );
    app.smtp.set_behaviour(Behaviour::Accept);
    let n = app.wait_for_status(&id, "sent", WAIT).await;
    assert_eq!(outcomes(&n).last().unwrap(), "sent");
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn email_goes_over_starttls_to_a_relay_whose_private_ca_is_trusted() {
    let (smtp, ca_pem) = SmtpServer::start_with_starttls().await;
    let ca = std::env::temp_dir().join(format!("smtp-ca-{}.pem", uuid::Uuid::new_v4()));
    std::fs::write(&ca, ca_pem).unwrap();
    let url = format!("smtp://localhost:{}?tls=required", smtp.port());
    let app = TestApp::builder()
        .var("SMTP_URL", url)
        .var("SMTP_CA_FILE", ca.display())
        .smtp(smtp)
        .spawn()
        .await;
    let id = app.send_to("pat@example.org").await;
    app.wait_for_status(&id, "sent", WAIT).await;
    let mail = app.smtp.wait_for(1, WAIT).await.remove(0);
    assert!(mail.tls, "the message came over TLS");
    assert_eq!(mail.parsed().subject(), Some("Your lab results are ready"));
    std::fs::remove_file(ca).unwrap();
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_relay_certificate_from_an_untrusted_ca_is_refused() {
    let (smtp, _ca) = SmtpServer::start_with_starttls().await;
    let url = format!("smtp://localhost:{}?tls=required", smtp.port());
    let app = TestApp::builder()
        .var("SMTP_URL", url)
        .var("JOBS__QUEUES__EMAIL__BACKOFF__INITIAL_MS", 3000)
        .var("JOBS__QUEUES__EMAIL__BACKOFF__MAX_MS", 5000)
        .smtp(smtp)
        .spawn()
        .await;
    let id = app.send_to("pat@example.org").await;
    let n = testkit::eventually("a refused attempt", WAIT, || async {
        let n = app.notification(&id).await;
        (!n["attempts"].as_array().unwrap().is_empty()).then_some(n)
    })
    .await;
    assert_eq!(n["attempts"][0]["outcome"], "retry", "{n}");
    let error = n["attempts"][0]["error"].as_str().unwrap().to_lowercase();
    assert!(
        error.contains("certificate") || error.contains("tls"),
        "{error}"
    );
    assert!(
        app.smtp.received().is_empty(),
        "nothing was sent in the clear"
    );
    app.shutdown().await;
}
