//! Platform users: temporary passwords, sign-in, deactivation, and the
//! organisation wall.

use reqwest::Method;
use serde_json::{Value, json};
use testkit::TestApp;

use crate::http::org_support::{
    PASSWORD, answer, answer_json, expect, login, platform_admin, request, request_json, user, with,
};

const USERS: &str = "/api/v1/admin/users";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_temporary_password_must_be_changed_before_anything_else() {
    let app = TestApp::spawn_api_only().await;
    let admin = user(&app, app.tenant_id, "ADMIN", "admin@clinic.example").await;
    let created = answer_json(
        &app,
        Method::POST,
        USERS,
        &admin.token,
        &json!({"email": "Dr.Lee@Clinic.example", "role": "doctor",
                "first_name": "Ana", "temporary_password": "Temporary-Pass-1"}),
        201,
    )
    .await;
    let id = created["id"].as_str().unwrap().to_owned();
    assert_eq!(created["role"], "DOCTOR");
    assert_eq!(created["must_change_password"], true);
    // Its subscriber carries the user id, so in-app notices reach it.
    let subscriber: i64 =
        sqlx::query_scalar("select count(*) from subscribers where external_id = $1")
            .bind(&id)
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(subscriber, 1);

    let session: Value = expect(
        login(&app, "dr.lee@clinic.example", "Temporary-Pass-1").await,
        200,
    )
    .await;
    assert_eq!(session["must_change_password"], true);
    assert_eq!(session["user_id"], id.as_str());
    let temp = session["access_token"].as_str().unwrap().to_owned();
    let me = app.get_with_token("/api/v1/users/me", &temp).await;
    assert_eq!(me.status(), 403, "only the password may be changed");
    let weak = request_json(
        &app,
        Method::PATCH,
        &format!("{USERS}/{id}/password"),
        &temp,
        &json!({"password": "short", "current_password": "Temporary-Pass-1"}),
    )
    .await;
    assert_eq!(weak.status(), 400);
    let wrong = request_json(
        &app,
        Method::PATCH,
        &format!("{USERS}/{id}/password"),
        &temp,
        &json!({"password": PASSWORD, "current_password": "Not-The-Pass-1"}),
    )
    .await;
    assert_eq!(wrong.status(), 400);
    let changed = answer_json(
        &app,
        Method::PATCH,
        &format!("{USERS}/{id}/password"),
        &temp,
        &json!({"password": PASSWORD, "current_password": "Temporary-Pass-1"}),
        200,
    )
    .await;
    assert_eq!(changed["must_change_password"], false);
    let stored: String = sqlx::query_scalar("select password_hash from users where id = $1::uuid")
        .bind(&id)
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert!(
        stored.starts_with("$argon2id$"),
        "argon2id, never the password"
    );
    assert_eq!(
        expect(
            login(&app, "dr.lee@clinic.example", "Temporary-Pass-1").await,
            401
        )
        .await["status"],
        401
    );
    let session: Value = expect(login(&app, "dr.lee@clinic.example", PASSWORD).await, 200).await;
    assert_eq!(session["must_change_password"], false);
    let me: Value = expect(
        app.get_with_token(
            "/api/v1/users/me",
            session["access_token"].as_str().unwrap(),
        )
        .await,
        200,
    )
    .await;
    assert_eq!(me["subject"], id.as_str());
    assert_eq!(me["roles"], json!(["DOCTOR"]));
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn deactivating_a_user_revokes_its_tokens_at_once() {
    let app = TestApp::spawn_api_only().await;
    let admin = user(&app, app.tenant_id, "ADMIN", "admin@clinic.example").await;
    let doctor = user(&app, app.tenant_id, "DOCTOR", "doc@clinic.example").await;
    let me = |token: String| {
        let app = &app;
        async move { app.get_with_token("/api/v1/users/me", token).await.status() }
    };
    assert_eq!(me(doctor.token.clone()).await, 200);
    // A doctor is not an admin.
    let refused = request(
        &app,
        Method::PATCH,
        &format!("{USERS}/{}/deactivate", admin.id),
        &doctor.token,
    )
    .await;
    assert_eq!(refused.status(), 403);
    let off = answer(
        &app,
        Method::PATCH,
        &format!("{USERS}/{}/deactivate", doctor.id),
        &admin.token,
        200,
    )
    .await;
    assert_eq!(off["status"], "inactive");
    assert_eq!(me(doctor.token.clone()).await, 401, "the old token is dead");
    assert_eq!(
        login(&app, "doc@clinic.example", PASSWORD).await.status(),
        401
    );
    answer(
        &app,
        Method::PATCH,
        &format!("{USERS}/{}/activate", doctor.id),
        &admin.token,
        200,
    )
    .await;
    let session: Value = expect(login(&app, "doc@clinic.example", PASSWORD).await, 200).await;
    assert_eq!(
        me(session["access_token"].as_str().unwrap().to_owned()).await,
        200
    );
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_organization_admin_manages_only_its_own_users() {
    let app = TestApp::spawn_api_only().await;
    let root = platform_admin(&app).await;
    let (other, _) = app.other_tenant().await;
    let admin = user(&app, app.tenant_id, "ADMIN", "admin@clinic.example").await;
    let stranger = user(&app, other, "DOCTOR", "doc@other.example").await;
    for (method, path, body) in [
        (Method::GET, format!("{USERS}/{}", stranger.id), None),
        (
            Method::PATCH,
            format!("{USERS}/{}", stranger.id),
            Some(json!({"first_name": "X"})),
        ),
        (
            Method::PATCH,
            format!("{USERS}/{}/deactivate", stranger.id),
            None,
        ),
        (
            Method::PATCH,
            format!("{USERS}/{}/password", stranger.id),
            Some(json!({"password": "Another-Pass-42"})),
        ),
        (
            Method::POST,
            format!("{USERS}/{}/resend-invitation", stranger.id),
            None,
        ),
    ] {
        let mut req = with(&app, method.clone(), &path, &admin.token);
        if let Some(body) = body {
            req = req.json(&body);
        }
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status(), 404, "{method} {path}");
    }
    let create_elsewhere = request_json(
        &app,
        Method::POST,
        USERS,
        &admin.token,
        &json!({"email": "x@other.example", "role": "DOCTOR",
            "temporary_password": "Temporary-Pass-1", "organization_id": other.to_string()}),
    )
    .await;
    assert_eq!(create_elsewhere.status(), 404);
    let listed = answer(&app, Method::GET, USERS, &admin.token, 200).await;
    let ids: Vec<&str> = listed["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [admin.id.as_str()]);
    // The platform admin manages every organisation's users.
    let all = answer(&app, Method::GET, USERS, &root.token, 200).await;
    assert_eq!(all["items"].as_array().unwrap().len(), 3);
    let stats = answer(
        &app,
        Method::GET,
        &format!("{USERS}/stats"),
        &admin.token,
        200,
    )
    .await;
    assert_eq!(
        stats,
        json!([{"key": "ADMIN", "status": "active", "count": 1}])
    );
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_user_input_gets_a_precise_4xx() {
    let app = TestApp::spawn_api_only().await;
    let admin = user(&app, app.tenant_id, "ADMIN", "admin@clinic.example").await;
    let base = json!({"email": "new@clinic.example", "role": "DOCTOR", "temporary_password": "Temporary-Pass-1"});
    for (patch, field) in [
        (json!({"email": "not an email"}), "email"),
        (json!({"email": "a@b@c.example"}), "email"),
        (
            json!({"email": format!("{}@clinic.example", "a".repeat(300))}),
            "email",
        ),
        (json!({"role": "WIZARD"}), "role"),
        (json!({"first_name": "x".repeat(101)}), "first_name"),
        (
            json!({"temporary_password": "alllowercase-but-long"}),
            "temporary_password",
        ),
        (
            json!({"temporary_password": format!("Aa1{}", "x".repeat(200))}),
            "temporary_password",
        ),
    ] {
        let mut body = base.clone();
        for (k, v) in patch.as_object().unwrap() {
            body[k] = v.clone();
        }
        let problem = answer_json(&app, Method::POST, USERS, &admin.token, &body, 400).await;
        assert_eq!(problem["invalid_params"][0]["name"], field, "{problem}");
    }
    answer_json(&app, Method::POST, USERS, &admin.token, &base, 201).await;
    let mut dup = base.clone();
    dup["email"] = json!("NEW@clinic.example");
    let conflict = answer_json(&app, Method::POST, USERS, &admin.token, &dup, 409).await;
    assert_eq!(conflict["type"], "/problems/conflict");
    for bad in ["not-a-uuid", "00000000-0000-0000-0000-000000000000"] {
        let resp = request(&app, Method::GET, &format!("{USERS}/{bad}"), &admin.token).await;
        assert_eq!(resp.status(), 404, "{bad}");
    }
    // Sign-in tells nothing about which part was wrong.
    let long = "x".repeat(5000);
    for (email, password) in [
        ("nobody@clinic.example", PASSWORD),
        ("admin@clinic.example", "Wrong-Pass-123"),
        (long.as_str(), PASSWORD),
    ] {
        let resp = login(&app, email, password).await;
        assert_eq!(resp.status(), 401);
    }
    app.shutdown().await;
}
