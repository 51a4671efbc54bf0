//! Report templates of an organisation's own: CRUD with cursor pages, use
//! in a report (JSON and CSV keep the template's sections and channel),
//! use by a schedule, another organisation's 404 and malformed bodies.

use chrono::{DateTime, TimeDelta, Utc};
use reqwest::Method;
use serde_json::{Value, json};
use shared::reports::{deliver, rollup};

use super::{WAIT, admin, app, report, send_and_drain};
use crate::http::org_support::{answer, answer_json, expect, request, request_json, user, with};
use crate::support::invalid_param_names;

const PATH: &str = "/api/v1/reports/templates";

fn body(key: &str) -> Value {
    json!({"key": key, "name": "Email week", "period": "week",
           "sections": ["trend", "channels"], "channel": "email"})
}

#[tokio::test]
async fn own_templates_are_created_paged_replaced_used_in_reports_and_deleted_by_their_organisation_only()
 {
    let app = app().await;
    let admin = admin(&app, "admin@tpl.example").await;
    let (other, _) = app.other_tenant().await;
    let theirs = user(&app, other, "ADMIN", "admin@elsewhere.example").await;
    send_and_drain(&app, 3, "results").await;
    rollup::fold(&app.pool).await.unwrap();

    let created = answer_json(
        &app,
        Method::POST,
        PATH,
        &admin.token,
        &body("email_week"),
        201,
    )
    .await;
    let id = created["id"].as_str().unwrap().to_owned();
    assert_eq!(created["sections"], json!(["channels", "trend"]));
    assert_eq!(created["period"], "week");
    assert_eq!(created["organization_id"], app.tenant_id.to_string());

    // Used by key and by id: the totals, the channels and the trend only.
    for t in ["email_week", id.as_str()] {
        let r = report(&app, &admin.token, &format!("template={t}")).await;
        assert_eq!(r["template"], "email_week");
        assert_eq!(r["channel"], "email");
        assert_eq!(r["totals"]["accepted"], json!(3), "{r:#}");
        assert_eq!(r["by_channel"][0]["key"], "email");
        assert!(r["trend"]["direction"].is_string());
        for absent in [
            "by_provider",
            "by_template",
            "by_category",
            "busiest_hours",
            "days",
            "previous",
        ] {
            assert!(r.get(absent).is_none(), "{absent} in {r:#}");
        }
        let from: DateTime<Utc> = r["from"].as_str().unwrap().parse().unwrap();
        let to: DateTime<Utc> = r["to"].as_str().unwrap().parse().unwrap();
        // A week, widened to whole hours.
        let span = to - from;
        assert!(span >= TimeDelta::days(7) && span <= TimeDelta::days(7) + TimeDelta::hours(1));
    }
    let csv = request(
        &app,
        Method::GET,
        "/api/v1/reports?template=email_week&format=csv",
        &admin.token,
    )
    .await;
    assert_eq!(csv.status(), 200);
    let csv = csv.text().await.unwrap();
    let sections: Vec<&str> = csv
        .lines()
        .skip(1)
        .map(|l| l.split(',').next().unwrap())
        .collect();
    assert_eq!(sections, ["total", "channel", "trend"], "{csv}");

    // Narrowed to another channel, the same template counts nothing.
    let mut sms = body("sms_fortnight");
    sms["channel"] = json!("sms");
    sms["period"] = Value::Null;
    sms["period_days"] = json!(14);
    let sms = answer_json(&app, Method::POST, PATH, &admin.token, &sms, 201).await;
    assert_eq!(
        (sms["period"].as_str(), sms["period_days"].as_i64()),
        (Some("days"), Some(14))
    );
    let r = report(&app, &admin.token, "template=sms_fortnight").await;
    assert_eq!(r["totals"]["accepted"], json!(0));
    assert_eq!(r["by_channel"], json!([]));

    // A key the organisation already has: 409.
    let dup = request_json(&app, Method::POST, PATH, &admin.token, &body("email_week")).await;
    assert_eq!(dup.status(), 409);

    // Cursor pages, oldest first.
    answer_json(&app, Method::POST, PATH, &admin.token, &body("third"), 201).await;
    let page = answer(
        &app,
        Method::GET,
        &format!("{PATH}?limit=2"),
        &admin.token,
        200,
    )
    .await;
    let keys = |p: &Value| -> Vec<String> {
        p["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["key"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(keys(&page), ["email_week", "sms_fortnight"]);
    let cursor = page["next_cursor"].as_str().unwrap();
    let rest = answer(
        &app,
        Method::GET,
        &format!("{PATH}?limit=2&cursor={cursor}"),
        &admin.token,
        200,
    )
    .await;
    assert_eq!(keys(&rest), ["third"]);
    assert_eq!(rest["next_cursor"], Value::Null);
    let bad_cursor = request(
        &app,
        Method::GET,
        &format!("{PATH}?cursor=nope"),
        &admin.token,
    )
    .await;
    assert_eq!(bad_cursor.status(), 400);

    // Replaced.
    let mut replaced = body("email_week");
    replaced["period"] = json!("month");
    replaced["sections"] = json!(["comparison"]);
    let updated = answer_json(
        &app,
        Method::PUT,
        &format!("{PATH}/{id}"),
        &admin.token,
        &replaced,
        200,
    )
    .await;
    assert_eq!(updated["period"], "month");
    let r = report(&app, &admin.token, "template=email_week").await;
    assert!(
        r["previous"].is_object() && r.get("by_channel").is_none(),
        "{r:#}"
    );

    // Another organisation sees none of it.
    for (method, path) in [
        (Method::GET, format!("{PATH}/{id}")),
        (Method::PUT, format!("{PATH}/{id}")),
        (Method::DELETE, format!("{PATH}/{id}")),
        (Method::GET, format!("/api/v1/reports?template={id}")),
    ] {
        let resp = request_json(&app, method.clone(), &path, &theirs.token, &replaced).await;
        assert_eq!(resp.status(), 404, "{method} {path}");
    }
    let by_key = request(
        &app,
        Method::GET,
        "/api/v1/reports?template=email_week",
        &theirs.token,
    )
    .await;
    assert_eq!(
        by_key.status(),
        400,
        "another organisation's key is no template"
    );
    let listed = answer(&app, Method::GET, PATH, &theirs.token, 200).await;
    assert_eq!(listed["items"], json!([]));

    let gone = request(&app, Method::DELETE, &format!("{PATH}/{id}"), &admin.token).await;
    assert_eq!(gone.status(), 204);
    let after = request(&app, Method::GET, &format!("{PATH}/{id}"), &admin.token).await;
    assert_eq!(after.status(), 404);

    let audited: Vec<String> = sqlx::query_scalar(
        "select action from audit_log where resource_type = 'report_template'
           and tenant_id = $1 and result = 'success' order by id",
    )
    .bind(app.tenant_id)
    .fetch_all(&app.pool)
    .await
    .unwrap();
    assert_eq!(
        audited,
        [
            "report_template.create",
            "report_template.create",
            "report_template.create",
            "report_template.update",
            "report_template.delete"
        ]
    );
    app.shutdown().await;
}

#[tokio::test]
async fn malformed_templates_are_refused_naming_the_field() {
    let app = app().await;
    let admin = admin(&app, "admin@badtpl.example").await;
    let cases: Vec<(Value, &str)> = vec![
        (json!({"key": "Email Week"}), "key"),
        (json!({"key": "daily_summary"}), "key"),
        (json!({"name": "  "}), "name"),
        (json!({"period": "year"}), "period"),
        (json!({"period_days": 3}), "period_days"),
        (json!({"period": null, "period_days": 0}), "period_days"),
        (json!({"period": null, "period_days": 367}), "period_days"),
        (json!({"period": null}), "period"),
        (json!({"sections": []}), "sections"),
        (json!({"sections": ["pie_chart"]}), "sections"),
        (json!({"sections": ["days", "days"]}), "sections"),
        (json!({"channel": "fax"}), "channel"),
        (json!({"colour": "blue"}), "colour"),
        (json!({"period_days": "three"}), "period_days"),
    ];
    for (patch, field) in cases {
        let mut b = body("ok_key");
        for (k, v) in patch.as_object().unwrap() {
            if v.is_null() {
                b.as_object_mut().unwrap().remove(k);
            } else {
                b[k] = v.clone();
            }
        }
        let resp = request_json(&app, Method::POST, PATH, &admin.token, &b).await;
        assert_eq!(
            resp.headers()["content-type"],
            "application/problem+json",
            "{b}"
        );
        let problem = expect(resp, 400).await;
        let names = invalid_param_names(&problem);
        assert!(names.iter().any(|n| n.contains(field)), "{b} → {problem}");
    }
    let not_json = with(&app, Method::POST, PATH, &admin.token)
        .header("content-type", "application/json")
        .body("{\"key\": ")
        .send()
        .await
        .unwrap();
    assert_eq!(not_json.status(), 400);
    let stored: i64 = sqlx::query_scalar("select count(*) from report_templates")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(stored, 0);
    app.shutdown().await;
}

#[tokio::test]
async fn a_schedule_sends_its_own_templates_sections_and_keeps_the_template_from_deletion() {
    let app = app().await;
    let admin = admin(&app, "admin@owntpl.example").await;
    let (other, _) = app.other_tenant().await;
    let theirs = user(&app, other, "ADMIN", "admin@theirtpl.example").await;
    send_and_drain(&app, 2, "results").await;
    rollup::fold(&app.pool).await.unwrap();
    let template = answer_json(
        &app,
        Method::POST,
        PATH,
        &admin.token,
        &json!({"key": "results_two_days", "name": "Results", "period_days": 2,
                          "sections": ["categories"], "channel": "email"}),
        201,
    )
    .await;
    let template_id = template["id"].as_str().unwrap().to_owned();
    let schedule = json!({"name": "Results digest", "template": "results_two_days",
                          "cron": "0 7 * * *", "recipients": [admin.id]});
    // Another organisation cannot name it.
    let mut foreign = schedule.clone();
    foreign["template"] = json!(template_id);
    foreign["recipients"] = json!([theirs.id]);
    let refused = answer_json(
        &app,
        Method::POST,
        "/api/v1/reports/schedules",
        &theirs.token,
        &foreign,
        422,
    )
    .await;
    assert_eq!(refused["invalid_params"][0]["name"], "template");

    let created = answer_json(
        &app,
        Method::POST,
        "/api/v1/reports/schedules",
        &admin.token,
        &schedule,
        201,
    )
    .await;
    assert_eq!(created["template"], json!(template_id));
    let first: DateTime<Utc> = created["next_run_at"].as_str().unwrap().parse().unwrap();

    // In use: the template cannot be deleted.
    let in_use = request(
        &app,
        Method::DELETE,
        &format!("{PATH}/{template_id}"),
        &admin.token,
    )
    .await;
    assert_eq!(in_use.status(), 409);

    let jobs = app.settings.jobs.clone();
    let sent = deliver::run_due(&app.pool, &jobs, first + TimeDelta::seconds(1))
        .await
        .unwrap();
    assert_eq!(sent.len(), 1);
    let s = answer(
        &app,
        Method::GET,
        &format!(
            "/api/v1/reports/schedules/{}",
            created["id"].as_str().unwrap()
        ),
        &admin.token,
        200,
    )
    .await;
    let email = s["last_notification_ids"][0].as_str().unwrap().to_owned();
    app.wait_for_status(&email, "sent", WAIT).await;
    let received: Vec<_> = app
        .smtp
        .received()
        .into_iter()
        .filter(|m| m.to.iter().any(|t| t == "admin@owntpl.example"))
        .collect();
    assert_eq!(received.len(), 1);
    assert!(
        received[0]
            .header("Subject")
            .unwrap()
            .starts_with("Results digest: results_two_days")
    );
    let text = received[0].parsed().body_text(0).unwrap().into_owned();
    assert!(text.contains("category,results,2"), "{text}");
    assert!(
        !text.contains("\nchannel,") && !text.contains("\ntrend,"),
        "{text}"
    );
    app.shutdown().await;
}
