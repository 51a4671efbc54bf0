//! Delivery reports: totals equal to the notifications counted directly
//! (sent through the API and drained, then moved on by the statements a
//! provider report or an inbox read runs), the backfill rebuilding the same
//! rollups, CSV and XLSX exports that parse back, platform-wide reports,
//! other organisations' data out of reach, bad ranges and formats, and the
//! forecast. Scheduled reports are in [`schedules`]; the daily rollup and
//! retention in [`rollups`].
//!
//! The scheduler's own folding is off (`REPORTS_TICK_SECS=0`): the tests
//! fold the deltas when they choose.

mod rollups;
mod schedules;
mod templates;

use std::io::Read;

use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use reqwest::Method;
use serde_json::{Value, json};
use shared::reports::rollup;
use testkit::TestApp;

use crate::http::org_support::{Signed, answer, expect, platform_admin, request, user};

const WAIT: std::time::Duration = std::time::Duration::from_secs(30);

async fn app() -> TestApp {
    TestApp::builder().var("REPORTS_TICK_SECS", 0).spawn().await
}

/// A custom range around now, as query text.
fn around_now() -> String {
    let from = Utc::now() - TimeDelta::hours(2);
    let to = Utc::now() + TimeDelta::hours(2);
    format!(
        "template=custom&from={}&to={}",
        urlencode(&from.to_rfc3339()),
        urlencode(&to.to_rfc3339())
    )
}

fn urlencode(s: &str) -> String {
    s.replace('+', "%2B").replace(':', "%3A")
}

async fn report(app: &TestApp, token: &str, query: &str) -> Value {
    answer(
        app,
        Method::GET,
        &format!("/api/v1/reports?{query}"),
        token,
        200,
    )
    .await
}

/// Counts every event of the tenant's notifications straight from the
/// table: `[accepted, sent, delivered, failed, bounced, read]`.
async fn direct_counts(app: &TestApp, tenant: shared::domain::TenantId) -> Vec<i64> {
    let row: (i64, i64, i64, i64, i64, i64) = sqlx::query_as(
        "select count(*), count(sent_at), count(delivered_at),
                count(*) filter (where status = 'failed'), count(*) filter (where status = 'bounced'),
                count(read_at)
         from notifications where tenant_id = $1",
    )
    .bind(tenant)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    vec![row.0, row.1, row.2, row.3, row.4, row.5]
}

fn report_counts(totals: &Value) -> Vec<i64> {
    ["accepted", "sent", "delivered", "failed", "bounced", "read"]
        .iter()
        .map(|k| totals[k].as_i64().unwrap())
        .collect()
}

/// Sends `n` emails through the API and waits until each was sent.
async fn send_and_drain(app: &TestApp, n: usize, category: &str) -> Vec<String> {
    let mut ids = Vec::new();
    for i in 0..n {
        let resp = app
            .send_email(
                &json!({"to": format!("patient{i}@clinic.example"), "subject": "Your results",
                                "text": "Please sign in.", "category": category}),
            )
            .await;
        let body: Value = expect(resp, 202).await;
        ids.push(body["id"].as_str().unwrap().to_owned());
    }
    for id in &ids {
        app.wait_for_status(id, "sent", WAIT).await;
    }
    ids
}

async fn admin(app: &TestApp, email: &str) -> Signed {
    user(app, app.tenant_id, "ADMIN", email).await
}

#[tokio::test]
async fn report_totals_equal_the_notifications_counted_directly() {
    let app = app().await;
    let admin = admin(&app, "admin@reports.example").await;
    let ids = send_and_drain(&app, 6, "results").await;
    // A provider's report and an inbox read move rows on as their own
    // statements do.
    sqlx::query(
        "update notifications set status = 'delivered', delivered_at = now() where id = any($1::uuid[])",
    )
    .bind(ids[..3].iter().map(|i| i.parse::<uuid::Uuid>().unwrap()).collect::<Vec<_>>())
    .execute(&app.pool)
    .await
    .unwrap();
    sqlx::query("update notifications set status = 'read', read_at = now() where id = $1::uuid")
        .bind(&ids[0])
        .execute(&app.pool)
        .await
        .unwrap();
    sqlx::query("update notifications set status = 'bounced', last_error = 'mailbox full' where id = $1::uuid")
        .bind(&ids[5])
        .execute(&app.pool)
        .await
        .unwrap();
    rollup::fold(&app.pool).await.unwrap();

    let r = report(&app, &admin.token, &around_now()).await;
    let direct = direct_counts(&app, app.tenant_id).await;
    assert_eq!(report_counts(&r["totals"]), direct, "{r:#}");
    assert_eq!(direct, vec![6, 6, 3, 0, 1, 1]);
    assert_eq!(r["totals"]["delivery_rate"], json!(50.0));
    assert!(r["totals"]["latency_p50_ms"].as_f64().unwrap() >= 0.0);
    assert!(
        r["totals"]["latency_p99_ms"].as_f64().unwrap()
            >= r["totals"]["latency_p50_ms"].as_f64().unwrap()
    );
    assert_eq!(r["organization_id"], json!(app.tenant_id.to_string()));
    let email = &r["by_channel"][0];
    assert_eq!(
        (email["key"].as_str(), email["totals"]["accepted"].as_i64()),
        (Some("email"), Some(6))
    );
    let category = &r["by_category"][0];
    assert_eq!(
        (
            category["key"].as_str(),
            category["totals"]["sent"].as_i64()
        ),
        (Some("results"), Some(6))
    );
    // Accepted sends have no provider yet; sent ones name the SMTP one.
    let providers: Vec<(&str, i64)> = r["by_provider"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["key"].as_str().unwrap(),
                s["totals"]["sent"].as_i64().unwrap(),
            )
        })
        .collect();
    assert!(providers.contains(&("none", 0)), "{providers:?}");
    assert_eq!(providers.iter().map(|p| p.1).sum::<i64>(), 6);
    assert_eq!(r["busiest_hours"][0]["totals"]["accepted"], json!(6));
    assert_eq!(
        r["days"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["totals"]["accepted"].as_i64().unwrap())
            .sum::<i64>(),
        6
    );
    assert_eq!(r["previous"]["totals"]["accepted"], json!(0));

    // The backfill rebuilds the same rollups from the notifications.
    for table in ["delivery_hours", "delivery_days", "delivery_hour_totals"] {
        sqlx::query(&format!("delete from {table}"))
            .execute(&app.pool)
            .await
            .unwrap();
    }
    sqlx::query("update delivery_rollup_state set counting_since = now(), backfilled_at = null")
        .execute(&app.pool)
        .await
        .unwrap();
    assert!(matches!(
        rollup::backfill(&app.pool).await.unwrap(),
        rollup::Backfill::Done(_)
    ));
    assert!(matches!(
        rollup::backfill(&app.pool).await.unwrap(),
        rollup::Backfill::AlreadyDone(_)
    ));
    let again = report(&app, &admin.token, &around_now()).await;
    assert_eq!(report_counts(&again["totals"]), direct);
    assert_eq!(again["by_provider"], r["by_provider"]);
    app.shutdown().await;
}

#[tokio::test]
async fn csv_and_xlsx_exports_parse_back_to_the_same_numbers() {
    let app = app().await;
    let admin = admin(&app, "admin@exports.example").await;
    send_and_drain(&app, 3, "billing").await;
    rollup::fold(&app.pool).await.unwrap();
    let q = around_now();

    let resp = request(
        &app,
        Method::GET,
        &format!("/api/v1/reports?{q}&format=csv"),
        &admin.token,
    )
    .await;
    assert_eq!(resp.status(), 200);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/csv")
    );
    assert!(
        resp.headers()["content-disposition"]
            .to_str()
            .unwrap()
            .contains(".csv")
    );
    let text = resp.text().await.unwrap();
    let mut reader = csv::Reader::from_reader(text.as_bytes());
    let header: Vec<String> = reader
        .headers()
        .unwrap()
        .iter()
        .map(str::to_owned)
        .collect();
    assert_eq!(header, shared::reports::export::HEADER.to_vec());
    let rows: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    let total = rows.iter().find(|r| &r[0] == "total").unwrap();
    assert_eq!((&total[2], &total[3]), ("3", "3"));
    let category = rows.iter().find(|r| &r[0] == "category").unwrap();
    assert_eq!((&category[1], &category[2]), ("billing", "3"));
    assert!(rows.iter().any(|r| &r[0] == "trend"));

    let resp = request(
        &app,
        Method::GET,
        &format!("/api/v1/reports?{q}&format=xlsx"),
        &admin.token,
    )
    .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()["content-type"].to_str().unwrap(),
        "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
    );
    let bytes = resp.bytes().await.unwrap();
    let mut zip = zip::ZipArchive::new(std::io::Cursor::new(bytes.to_vec())).unwrap();
    let mut strings = String::new();
    zip.by_name("xl/sharedStrings.xml")
        .unwrap()
        .read_to_string(&mut strings)
        .unwrap();
    assert!(
        strings.contains("billing") && strings.contains("accepted"),
        "{strings}"
    );
    let mut sheet = String::new();
    zip.by_name("xl/worksheets/sheet1.xml")
        .unwrap()
        .read_to_string(&mut sheet)
        .unwrap();
    // The total row's accepted and sent cells are the number 3.
    assert!(
        sheet.contains(r#"<c r="C2"><v>3</v></c><c r="D2"><v>3</v></c>"#),
        "{sheet}"
    );
    app.shutdown().await;
}

#[tokio::test]
async fn organisations_see_only_their_own_numbers_and_platform_admins_see_all() {
    let app = app().await;
    let admin = admin(&app, "admin@mine.example").await;
    let (other, _) = app.other_tenant().await;
    let theirs = user(&app, other, "ADMIN", "admin@theirs.example").await;
    send_and_drain(&app, 2, "results").await;
    rollup::fold(&app.pool).await.unwrap();
    let q = around_now();

    let mine = report(&app, &admin.token, &q).await;
    assert_eq!(mine["totals"]["accepted"], json!(2));
    let seen = report(&app, &theirs.token, &q).await;
    assert_eq!(seen["totals"]["accepted"], json!(0));
    assert_eq!(seen["by_channel"], json!([]));
    // Naming another organisation answers 404, for reports, exports and
    // the forecast alike.
    for path in [
        format!("/api/v1/reports?{q}&organization_id={}", app.tenant_id),
        format!(
            "/api/v1/reports?{q}&format=csv&organization_id={}",
            app.tenant_id
        ),
        format!("/api/v1/reports/forecast?organization_id={}", app.tenant_id),
    ] {
        let body = answer(&app, Method::GET, &path, &theirs.token, 404).await;
        assert_eq!(body["status"], json!(404));
    }
    // A member who is not an admin is refused.
    let member = user(&app, app.tenant_id, "MEDICAL_STAFF", "staff@mine.example").await;
    answer(
        &app,
        Method::GET,
        &format!("/api/v1/reports?{q}"),
        &member.token,
        403,
    )
    .await;

    let root = platform_admin(&app).await;
    let all = report(&app, &root.token, &q).await;
    assert_eq!(all["organization_id"], Value::Null);
    assert_eq!(all["totals"]["accepted"], json!(2));
    let one = report(&app, &root.token, &format!("{q}&organization_id={other}")).await;
    assert_eq!(one["totals"]["accepted"], json!(0));
    app.shutdown().await;
}

#[tokio::test]
async fn bad_ranges_templates_and_formats_are_refused_naming_the_parameter() {
    let app = app().await;
    let admin = admin(&app, "admin@bad.example").await;
    let now = Utc::now().duration_trunc(TimeDelta::hours(1)).unwrap();
    let t = |d: DateTime<Utc>| urlencode(&d.to_rfc3339());
    let cases = [
        (
            format!(
                "template=custom&from={}&to={}",
                t(now - TimeDelta::days(367)),
                t(now)
            ),
            "to",
        ),
        (
            format!(
                "template=custom&from={}&to={}",
                t(now),
                t(now - TimeDelta::hours(1))
            ),
            "from",
        ),
        (format!("template=custom&to={}", t(now)), "from"),
        (format!("template=daily_summary&from={}", t(now)), "from"),
        ("template=hourly".to_owned(), "template"),
        ("template=daily_summary&format=pdf".to_owned(), "format"),
        ("template=daily_summary&to=yesterday".to_owned(), "to"),
        (
            "template=daily_summary&organization_id=not-a-uuid-at-all".to_owned(),
            "",
        ),
        ("".to_owned(), "template"),
    ];
    for (query, field) in cases {
        let resp = request(
            &app,
            Method::GET,
            &format!("/api/v1/reports?{query}"),
            &admin.token,
        )
        .await;
        let status = resp.status().as_u16();
        assert_eq!(
            resp.headers()["content-type"].to_str().unwrap(),
            "application/problem+json",
            "{query}"
        );
        let body: Value = resp.json().await.unwrap();
        if field.is_empty() {
            assert_eq!(status, 404, "{query}: {body}");
            continue;
        }
        assert_eq!(status, 400, "{query}: {body}");
        assert_eq!(
            body["invalid_params"][0]["name"],
            json!(field),
            "{query}: {body}"
        );
    }
    let resp = request(
        &app,
        Method::GET,
        "/api/v1/reports/forecast?channel=fax",
        &admin.token,
    )
    .await;
    assert_eq!(resp.status(), 400);
    app.shutdown().await;
}

#[tokio::test]
async fn the_forecast_follows_the_weekly_rhythm_and_reports_its_held_out_error() {
    let app = app().await;
    let admin = admin(&app, "admin@forecast.example").await;
    let today = Utc::now().duration_trunc(TimeDelta::days(1)).unwrap();
    // 28 days of history: 100 a day on weekdays, 10 on weekends.
    let mut rows = Vec::new();
    for d in 1..=28 {
        let day = today - TimeDelta::days(d);
        let weekend = matches!(day.format("%a").to_string().as_str(), "Sat" | "Sun");
        rows.push((day + TimeDelta::hours(9), if weekend { 10 } else { 100 }));
    }
    for (hour, accepted) in rows {
        sqlx::query(
            "insert into delivery_hours (tenant_id, hour, channel, provider, template, category, accepted, latency_ms)
             values ($1, $2, 'sms', '', '', '', $3, array_fill(0::bigint, array[19]))",
        )
        .bind(app.tenant_id)
        .bind(hour)
        .bind(accepted as i64)
        .execute(&app.pool)
        .await
        .unwrap();
    }
    let f = answer(
        &app,
        Method::GET,
        "/api/v1/reports/forecast?channel=sms",
        &admin.token,
        200,
    )
    .await;
    assert_eq!(f["method"], json!("seasonal_mean_4w"));
    let sms = &f["channels"][0];
    assert_eq!(sms["channel"], json!("sms"));
    assert_eq!(sms["history_days"], json!(28));
    let days = sms["days"].as_array().unwrap();
    assert_eq!(days.len(), 7);
    for d in days {
        let date: chrono::NaiveDate = d["date"].as_str().unwrap().parse().unwrap();
        let weekend = matches!(date.format("%a").to_string().as_str(), "Sat" | "Sun");
        assert_eq!(
            d["accepted"].as_f64().unwrap(),
            if weekend { 10.0 } else { 100.0 },
            "{d}"
        );
    }
    assert_eq!(sms["holdout_mape"], json!(0.0));
    app.shutdown().await;
}
