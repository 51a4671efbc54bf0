//! The audit log: the app's database role cannot rewrite it, and admins read
//! and export it within their organisation.

use reqwest::Method;
use serde_json::json;
use testkit::TestApp;

use crate::http::org_support::{answer, answer_json, platform_admin, request, request_json, user};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_app_role_may_append_audit_rows_but_never_change_or_remove_them() {
    let app = TestApp::spawn_api_only().await;
    let mut tx = app.pool.begin().await.unwrap();
    sqlx::query("set local role notify_app")
        .execute(&mut *tx)
        .await
        .unwrap();
    let is_super: bool =
        sqlx::query_scalar("select rolsuper from pg_roles where rolname = current_user")
            .fetch_one(&mut *tx)
            .await
            .unwrap();
    assert!(
        !is_super,
        "the checks below run as the non-superuser app role"
    );
    sqlx::query("insert into audit_log (actor, action, resource_type, result) values ('test', 'probe', 'test', 'success')")
        .execute(&mut *tx)
        .await
        .unwrap();
    let n: i64 = sqlx::query_scalar("select count(*) from audit_log")
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    assert!(n >= 1);
    for statement in [
        "update audit_log set actor = 'someone else'",
        "delete from audit_log",
        "truncate audit_log",
    ] {
        sqlx::query("savepoint probe")
            .execute(&mut *tx)
            .await
            .unwrap();
        let err = sqlx::query(statement).execute(&mut *tx).await.unwrap_err();
        let message = err.as_database_error().unwrap().message().to_owned();
        assert!(
            message.contains("permission denied"),
            "{statement}: {message}"
        );
        sqlx::query("rollback to savepoint probe")
            .execute(&mut *tx)
            .await
            .unwrap();
    }
    // Other tables stay writable for the role.
    sqlx::query("update tenants set name = name")
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.rollback().await.unwrap();
    // The owner is stopped too, by the trigger (the app's pool is not the
    // owner: it acts as the app role).
    let mut owner = <sqlx::PgConnection as sqlx::Connection>::connect(
        secrecy::ExposeSecret::expose_secret(&app.settings.database_url),
    )
    .await
    .unwrap();
    sqlx::query("insert into audit_log (actor, action, resource_type, result) values ('test', 'probe', 'test', 'success')")
        .execute(&mut owner)
        .await
        .unwrap();
    let err = sqlx::query("delete from audit_log")
        .execute(&mut owner)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("append only"), "{err}");
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn admins_list_filter_and_export_their_organizations_audit_rows() {
    let app = TestApp::spawn_api_only().await;
    let root = platform_admin(&app).await;
    let admin = user(&app, app.tenant_id, "ADMIN", "admin@c.example").await;
    let (other, other_key) = app.other_tenant().await;
    app.post_with_token(
        "/api/v1/invitations",
        &other_key,
        &json!({"email": "z@o.example", "invitation_type": "chp_admin"}),
    )
    .await;
    for n in 0..3 {
        answer_json(
            &app,
            Method::POST,
            "/api/v1/invitations",
            &admin.token,
            &json!({"email": format!("p{n}@c.example"), "invitation_type": "chp_admin"}),
            201,
        )
        .await;
    }
    request_json(
        &app,
        Method::POST,
        "/api/v1/invitations/doctors",
        &admin.token,
        &json!({"email": "=cmd@c.example"}),
    )
    .await;
    let page = answer(
        &app,
        Method::GET,
        "/api/v1/admin/audit?action=invitation.&limit=2",
        &admin.token,
        200,
    )
    .await;
    assert_eq!(page["items"].as_array().unwrap().len(), 2);
    let cursor = page["next_cursor"].as_str().unwrap();
    let rest = answer(
        &app,
        Method::GET,
        &format!("/api/v1/admin/audit?action=invitation.&limit=10&cursor={cursor}"),
        &admin.token,
        200,
    )
    .await;
    let all: Vec<_> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .chain(rest["items"].as_array().unwrap())
        .collect();
    assert_eq!(
        all.len(),
        4,
        "three creates and one refusal, none of the other organisation's"
    );
    assert!(
        all.iter()
            .all(|r| r["organization_id"] == app.tenant_id.to_string())
    );
    let failures = answer(
        &app,
        Method::GET,
        "/api/v1/admin/audit?result=failure",
        &admin.token,
        200,
    )
    .await;
    assert_eq!(failures["items"][0]["details"]["status"], 403);
    assert_eq!(failures["items"][0]["actor"], format!("user:{}", admin.id));
    // Only a platform admin may look at another organisation.
    let peek = request(
        &app,
        Method::GET,
        &format!("/api/v1/admin/audit?organization_id={other}"),
        &admin.token,
    )
    .await;
    assert_eq!(peek.status(), 404);
    let theirs = answer(
        &app,
        Method::GET,
        &format!("/api/v1/admin/audit?organization_id={other}"),
        &root.token,
        200,
    )
    .await;
    assert_eq!(theirs["items"][0]["action"], "invitation.create");
    for q in [
        "result=maybe",
        "limit=0",
        "cursor=abc",
        "since=yesterday",
        "actor=",
    ] {
        let resp = request(
            &app,
            Method::GET,
            &format!("/api/v1/admin/audit?{q}"),
            &admin.token,
        )
        .await;
        assert_eq!(resp.status(), 400, "{q}");
    }
    let csv = request(
        &app,
        Method::GET,
        "/api/v1/admin/audit/export?action=invitation.",
        &admin.token,
    )
    .await;
    assert_eq!(csv.status(), 200);
    assert!(
        csv.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/csv")
    );
    let text = csv.text().await.unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].starts_with("id,created_at,organization_id,actor,action"));
    assert_eq!(lines.len(), 5);
    assert!(lines.iter().skip(1).all(|l| l.starts_with('"')));
    let exported: i64 =
        sqlx::query_scalar("select count(*) from audit_log where action = 'audit.export'")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(exported, 1);
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn audit_filters_are_up_to_200_characters_not_bytes() {
    let app = TestApp::spawn_api_only().await;
    let root = platform_admin(&app).await;
    // 200 two-byte characters are 400 bytes: still within the limit.
    for path in ["/api/v1/admin/audit", "/api/v1/admin/audit/export"] {
        let fits = request(
            &app,
            Method::GET,
            &format!("{path}?actor={}", "é".repeat(200)),
            &root.token,
        )
        .await;
        assert_eq!(fits.status(), 200, "{path}");
        let over = answer(
            &app,
            Method::GET,
            &format!("{path}?actor={}", "é".repeat(201)),
            &root.token,
            400,
        )
        .await;
        assert_eq!(over["invalid_params"][0]["name"], "actor", "{path}");
    }
    app.shutdown().await;
}
