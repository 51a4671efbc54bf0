//! BAA-expiry reminders: every threshold reaches the organisation's admins
//! by email and in-app exactly once per agreement, across duplicate runs and
//! rival schedulers, with the scheduler's tick as the clock.

use std::time::Duration;

use chrono::{DateTime, Days, NaiveDate, TimeZone, Utc};
use scheduler::cron::CronTicker;
use shared::{
    config::CronEntry,
    db::{organizations, users},
    jobs::{Queues, RemindBaaExpiry},
};
use testkit::TestApp;

const WAIT: Duration = Duration::from_secs(30);

/// 13:00 UTC on `day`, the daily entry's fire time.
fn at_13(day: NaiveDate) -> DateTime<Utc> {
    Utc.from_utc_datetime(&day.and_hms_opt(13, 0, 0).unwrap())
}

async fn sent(app: &TestApp) -> Vec<(String, String)> {
    sqlx::query_as(
        "select agreement_id::text, threshold from baa_reminders_sent order by created_at, threshold",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap()
}

/// Two schedulers evaluate the day's tick at once, and the job is pushed a
/// third time by hand (a duplicate delivery); then waits for the work to end.
async fn run_day(app: &TestApp, queues: &Queues, entries: &[CronEntry], day: NaiveDate) {
    let fire = at_13(day);
    let since = fire - chrono::Duration::minutes(1);
    let mut a = CronTicker::new(app.pool.clone(), queues.clone(), entries.to_vec(), since);
    let mut b = CronTicker::new(app.pool.clone(), queues.clone(), entries.to_vec(), since);
    let now = fire + chrono::Duration::seconds(30);
    let (won_a, won_b) = tokio::join!(a.tick(now), b.tick(now));
    assert_eq!(
        won_a.unwrap().len() + won_b.unwrap().len(),
        1,
        "one scheduler wins the tick"
    );
    queues
        .push(RemindBaaExpiry {
            scheduled_for: fire,
        })
        .await
        .unwrap();
    app.wait_settled(WAIT).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_threshold_reaches_the_admins_once_per_agreement() {
    // The running scheduler's dispatcher pushes the notices; its own cron
    // ticks follow the real clock, so they never fire the simulated days.
    let mut app = TestApp::builder()
        .var("JOBS__QUEUES__BAA_REMINDER__CONCURRENCY", 4)
        .spawn()
        .await;
    let queues = Queues::new(&app.settings.redis_url, &app.redis_prefix).unwrap();
    let entries: Vec<CronEntry> = app
        .settings
        .jobs
        .cron
        .iter()
        .filter(|e| e.name == "baa-reminders")
        .cloned()
        .collect();
    assert_eq!(entries.len(), 1, "jobs.toml has the daily entry");
    let admin = users::insert(
        &app.pool,
        users::NewUser {
            tenant_id: app.tenant_id,
            email: "admin@clinic.example",
            first_name: None,
            last_name: None,
            role: "ADMIN",
            password_hash: None,
            must_change_password: false,
            created_by: "test",
        },
    )
    .await
    .unwrap();
    // A doctor is not told.
    users::insert(
        &app.pool,
        users::NewUser {
            tenant_id: app.tenant_id,
            email: "doc@clinic.example",
            first_name: None,
            last_name: None,
            role: "DOCTOR",
            password_hash: None,
            must_change_password: false,
            created_by: "test",
        },
    )
    .await
    .unwrap();
    let start = NaiveDate::from_ymd_opt(2027, 3, 1).unwrap();
    let expires = start + Days::new(30);
    let mut conn = app.pool.acquire().await.unwrap();
    let first = organizations::sign_baa(
        &mut conn,
        app.tenant_id,
        start - Days::new(335),
        expires,
        "https://d.example/1",
        "test",
    )
    .await
    .unwrap()
    .unwrap()
    .to_string();
    drop(conn);

    // Day by day: 30 days left, 25 (nothing new), 14, 7, 1, expiry, the day after.
    let plan = [
        (0, Some("30d")),
        (5, None),
        (16, Some("14d")),
        (23, Some("7d")),
        (29, Some("1d")),
        (30, Some("expired")),
        (31, None),
    ];
    let mut expected = Vec::new();
    for (offset, threshold) in plan {
        run_day(&app, &queues, &entries, start + Days::new(offset)).await;
        if let Some(t) = threshold {
            expected.push((first.clone(), t.to_owned()));
        }
        let mut got = sent(&app).await;
        got.sort_by_key(|x| order(&x.1));
        assert_eq!(got, expected, "after day +{offset}");
    }
    // Every reminder went out once on each channel, to the admin only.
    let notices: Vec<(String, String, i64)> = sqlx::query_as(
        "select metadata->>'threshold', channel, count(*) from notifications
         where metadata ? 'baa_agreement_id' group by 1, 2 order by 1, 2",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap();
    assert_eq!(notices.len(), 10, "{notices:?}");
    assert!(notices.iter().all(|(_, _, n)| *n == 1), "{notices:?}");
    let mail = app.smtp.wait_for(5, WAIT).await;
    assert!(
        mail.iter()
            .all(|m| m.to == vec!["admin@clinic.example".to_owned()])
    );
    let subjects: Vec<String> = mail
        .iter()
        .map(|m| m.parsed().subject().unwrap_or_default().to_owned())
        .collect();
    assert!(
        subjects.contains(&"The BAA of Test Clinic expires in 30 days".to_owned()),
        "{subjects:?}"
    );
    assert!(
        subjects.contains(&"The BAA of Test Clinic has expired".to_owned()),
        "{subjects:?}"
    );
    let inbox: i64 = sqlx::query_scalar(
        "select count(*) from notifications n join subscribers s on s.id = n.subscriber_id
         where s.external_id = $1 and n.channel = 'inapp'",
    )
    .bind(admin.id.to_string())
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(inbox, 5, "the admin's inbox (subscriber = user id)");

    // A newly signed BAA starts the thresholds again.
    let renewal_day = start + Days::new(32);
    let mut conn = app.pool.acquire().await.unwrap();
    let second = organizations::sign_baa(
        &mut conn,
        app.tenant_id,
        renewal_day,
        renewal_day + Days::new(10),
        "https://d.example/2",
        "test",
    )
    .await
    .unwrap()
    .unwrap()
    .to_string();
    drop(conn);
    run_day(&app, &queues, &entries, renewal_day).await;
    let got = sent(&app).await;
    assert!(got.contains(&(second.clone(), "14d".to_owned())), "{got:?}");
    assert_eq!(got.len(), 6);

    // A worker that dies mid-run leaves nothing half-sent: the run's
    // transaction rolls back, and the next run sends it once.
    app.stop_worker().await;
    let mut tx = app.pool.begin().await.unwrap();
    assert!(
        organizations::claim_reminder(
            &mut *tx,
            app.tenant_id,
            second.parse().unwrap(),
            "7d",
            at_13(renewal_day + Days::new(3)),
            1
        )
        .await
        .unwrap()
    );
    drop(tx); // the crash
    app.start_worker();
    run_day(&app, &queues, &entries, renewal_day + Days::new(3)).await;
    let sevens = sent(&app)
        .await
        .into_iter()
        .filter(|(a, t)| *a == second && t == "7d")
        .count();
    assert_eq!(sevens, 1);
    app.shutdown().await;
}

fn order(threshold: &str) -> u32 {
    match threshold {
        "30d" => 0,
        "14d" => 1,
        "7d" => 2,
        "1d" => 3,
        _ => 4,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_reminder_is_emailed_where_the_admins_subscriber_says() {
    let app = TestApp::builder().spawn().await;
    let queues = Queues::new(&app.settings.redis_url, &app.redis_prefix).unwrap();
    // An admin created through the admin API, who then keeps their notices
    // at another address (their subscriber's own email).
    let resp = app
        .post_with_key(
            "/api/v1/admin/users",
            &serde_json::json!({"email": "head@clinic.example", "role": "admin",
            "temporary_password": "Correct-Horse-42"}),
        )
        .await;
    let body: serde_json::Value = resp.json().await.unwrap();
    let admin = body["id"].as_str().unwrap_or_else(|| panic!("{body}"));
    let resp = app
        .put_with_key(
            &format!("/api/v1/services/subscribers/{admin}"),
            &serde_json::json!({"email": "head.personal@home.example"}),
        )
        .await;
    assert_eq!(resp.status(), 200, "{}", resp.text().await.unwrap());

    let start = NaiveDate::from_ymd_opt(2027, 3, 1).unwrap();
    let mut conn = app.pool.acquire().await.unwrap();
    organizations::sign_baa(
        &mut conn,
        app.tenant_id,
        start - Days::new(335),
        start + Days::new(30),
        "https://d.example/1",
        "test",
    )
    .await
    .unwrap()
    .unwrap();
    drop(conn);
    queues
        .push(RemindBaaExpiry {
            scheduled_for: at_13(start),
        })
        .await
        .unwrap();
    let mail = app.smtp.wait_for(1, WAIT).await;
    assert_eq!(
        mail[0].parsed().subject(),
        Some("The BAA of Test Clinic expires in 30 days")
    );
    assert_eq!(mail[0].to, ["head.personal@home.example"]);
    app.shutdown().await;
}
