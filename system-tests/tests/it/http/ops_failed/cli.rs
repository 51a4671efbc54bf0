//! `api failed`, `api retry` and `api discard` run as the real binary, and
//! the error classes the database derives from the platform's own failure
//! texts.

use std::process::{Command, Output};

use shared::{
    db::subscribers::DELETED_BEFORE_SENT,
    domain::Channel,
    providers::{FailureReason as R, ProviderCode, ProviderError, ProviderKind},
};
use testkit::TestApp;

use super::failed_rows;

fn api(app: &TestApp, args: &[&str]) -> (String, Output) {
    let out = Command::new(testkit::process::binary("api"))
        .envs(app.vars.iter().cloned())
        .args(args)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "api {args:?}: {stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (stdout, out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_commands_list_groups_and_retry_or_discard_them_audited() {
    let app = TestApp::spawn_api_only().await;
    let ids = failed_rows(&app, app.tenant_id, 1_200).await;
    let (out, _) = api(&app, &["failed", "--since", "1h"]);
    assert!(out.contains("mail_refused"), "{out}");
    assert!(out.contains("total=1200 groups=1"), "{out}");
    let key = out
        .lines()
        .nth(1)
        .and_then(|l| l.split_whitespace().last())
        .unwrap()
        .to_owned();

    let (out, _) = api(
        &app,
        &["discard", "--id", &format!("notification:{}", ids[0])],
    );
    assert_eq!(out.trim(), "discarded=1 skipped=0 not_found=0");
    let (out, _) = api(&app, &["retry", "--group", &key]);
    assert!(out.contains("matched=1199"), "{out}");
    assert!(
        out.trim_end()
            .ends_with("status=completed processed=1199 applied=1199 skipped=0"),
        "{out}"
    );
    assert_eq!(app.count_status("queued").await, 1_199);
    let (out, _) = api(&app, &["failed", "--since", "1h"]);
    assert!(out.contains("total=0 groups=0"), "{out}");

    let audited: Vec<(String, String)> =
        sqlx::query_as("select actor, action from audit_log where action like 'ops.%' order by id")
            .fetch_all(&app.pool)
            .await
            .unwrap();
    assert_eq!(
        audited,
        [
            ("cli".to_owned(), "ops.failed.discard".to_owned()),
            ("cli".to_owned(), "ops.failed.retry".to_owned())
        ]
    );
    let refused = Command::new(testkit::process::binary("api"))
        .envs(app.vars.iter().cloned())
        .args(["retry", "--id", "email:nope"])
        .output()
        .unwrap();
    assert!(!refused.status.success());
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_failure_the_platform_records_gets_its_own_class() {
    let app = TestApp::spawn_api_only().await;
    let reasons = [
        R::RecipientInvalid,
        R::RecipientUnreachable,
        R::RecipientOptedOut,
        R::DeviceTokenGone,
        R::ContentRejected,
        R::WhatsAppWindowClosed,
        R::SenderRejected,
        R::Rejected,
        R::CredentialsRefused,
        R::TokenRefused,
        R::CredentialsUnusable,
        R::RateLimited,
        R::Unavailable,
        R::NoAnswer,
        R::NoAnswerWithin(10),
        R::CannotConnect,
        R::ConnectionFailed,
        R::Tls,
        R::UnreadableAnswer,
        R::NoMessageId,
        R::MailRefused,
        R::MailDeferred,
        R::MailProtocol,
        R::MailFileFailed,
        R::NoBody,
        R::ContentUnreadable,
        R::RecipientMalformed,
        R::MessageUnbuildable,
        R::ConfigIncomplete,
        R::NoProvider(Channel::Sms),
        R::NotAMessagingProvider,
        R::WindowUnknown,
        R::CircuitOpen,
        R::RateSpent(250),
    ];
    let mut cases: Vec<(String, String)> = Vec::new();
    for r in reasons {
        cases.push((ProviderError::new(r).to_string(), r.as_str().to_owned()));
        let answered = ProviderError::answered(ProviderKind::Twilio, r, Some(400))
            .with_code(ProviderCode::number(21211));
        cases.push((answered.to_string(), r.as_str().to_owned()));
    }
    cases.push((
        shared::db::notifications::LOST_WORKER.to_owned(),
        "worker_lost".to_owned(),
    ));
    cases.push((
        DELETED_BEFORE_SENT.to_owned(),
        "subscriber_deleted".to_owned(),
    ));
    cases.push((
        "Twilio reported the message undelivered (error 30003)".into(),
        "carrier_failed".into(),
    ));
    cases.push((
        "the receiving mail server bounced the message (5.1.1)".into(),
        "bounced".into(),
    ));
    cases.push(("a provider's own words".into(), "other".into()));
    for (text, class) in cases {
        let got: String = sqlx::query_scalar("select notification_error_class($1)")
            .bind(&text)
            .fetch_one(&app.pool)
            .await
            .unwrap();
        assert_eq!(got, class, "{text}");
    }
    app.shutdown().await;
}
