//! Sign-in protection and sessions: failed sign-ins wait, then lock (the
//! same for an address nobody has), unlock by time and by an admin; refresh
//! tokens rotate and a reused one ends its session; sign-out ends the
//! access token and closes the session's WebSockets; users and admins list
//! and revoke sessions; security events are listed and counted.

use std::{sync::Arc, time::Duration};

use chrono::{TimeDelta, Utc};
use futures::{SinkExt, StreamExt};
use reqwest::{Method, Response};
use serde_json::{Value, json};
use testkit::TestApp;
use tokio_tungstenite::{
    MaybeTlsStream, WebSocketStream, connect_async,
    tungstenite::{Message, client::IntoClientRequest},
};

use crate::http::org_support::{
    PASSWORD, Signed, answer, expect, login, platform_admin, request, user,
};
use crate::support::ManualClock;

mod events;

const WAIT: Duration = Duration::from_secs(15);

async fn app_with(clock: Arc<ManualClock>) -> TestApp {
    TestApp::builder()
        .without_worker()
        .without_scheduler()
        .signin_clock(clock)
        .spawn()
        .await
}

async fn app() -> TestApp {
    TestApp::spawn_api_only().await
}

/// A sign-in's status, `Retry-After` and problem type.
async fn attempt(app: &TestApp, email: &str, password: &str) -> (u16, Option<String>, Value) {
    let resp = login(app, email, password).await;
    let status = resp.status().as_u16();
    let retry = resp
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_owned());
    let content_type = resp
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned());
    let body: Value = resp.json().await.unwrap_or(Value::Null);
    if status != 200 {
        assert_eq!(
            content_type.as_deref(),
            Some("application/problem+json"),
            "{body}"
        );
    }
    (status, retry, body["type"].clone())
}

/// Drives five failures through the growing delays; returns every answer.
async fn five_failures(
    app: &TestApp,
    clock: &ManualClock,
    email: &str,
) -> Vec<(u16, Option<String>, Value)> {
    let mut seen = Vec::new();
    seen.push(attempt(app, email, "Wrong-Horse-1").await);
    seen.push(attempt(app, email, "Wrong-Horse-2").await);
    // The 3rd attempt must wait 1 s, the 4th 2 s, the 5th 4 s: early ones
    // are refused unchecked, even with the right password.
    for wait in [1, 2, 4] {
        seen.push(attempt(app, email, PASSWORD).await);
        clock.advance(TimeDelta::seconds(wait));
        seen.push(attempt(app, email, "Wrong-Horse-3").await);
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn failures_wait_then_lock_the_same_way_for_unknown_addresses_until_time_passes() {
    let clock = ManualClock::at(Utc::now());
    let app = app_with(clock.clone()).await;
    let doctor = user(&app, app.tenant_id, "DOCTOR", "doc@clinic.example").await;
    let unauthorized = (401, None, json!("/problems/unauthorized"));
    let wait = |s: &str| {
        (
            429,
            Some(s.to_owned()),
            json!("/problems/too-many-requests"),
        )
    };
    let known = five_failures(&app, &clock, "doc@clinic.example").await;
    assert_eq!(
        known,
        vec![
            unauthorized.clone(),
            unauthorized.clone(),
            wait("1"),
            unauthorized.clone(),
            wait("2"),
            unauthorized.clone(),
            wait("4"),
            unauthorized.clone(),
        ]
    );
    // Locked for 15 minutes: the right password is not even checked.
    assert_eq!(
        attempt(&app, "doc@clinic.example", PASSWORD).await,
        wait("900")
    );
    assert_eq!(
        attempt(&app, "DOC@Clinic.example ", PASSWORD).await,
        wait("900"),
        "every spelling of the address is the same account"
    );
    let unknown = five_failures(&app, &clock, "ghost@clinic.example").await;
    assert_eq!(unknown, known, "an unknown address answers the same");
    assert_eq!(
        attempt(&app, "ghost@clinic.example", PASSWORD).await,
        wait("900")
    );
    // The unknown address's sequence took 7 s of the doctor's lock.
    clock.advance(TimeDelta::seconds(892));
    assert_eq!(
        attempt(&app, "doc@clinic.example", PASSWORD).await,
        wait("1")
    );
    clock.advance(TimeDelta::seconds(1));
    let (status, _, _) = attempt(&app, "doc@clinic.example", PASSWORD).await;
    assert_eq!(status, 200, "unlocked by time");
    // A success forgets the failures: two more are free of delays again.
    assert_eq!(
        attempt(&app, "doc@clinic.example", "Wrong-Horse-9").await,
        unauthorized
    );
    let locks: Vec<(Option<String>, Option<String>)> = sqlx::query_as(
        "select tenant_id::text, user_id::text from security_events where kind = 'account.locked'
         order by id",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap();
    assert_eq!(
        locks,
        vec![
            (Some(app.tenant_id.to_string()), Some(doctor.id.clone())),
            (None, None)
        ],
        "the unknown address's lock belongs to no organisation"
    );
    let leaked: i64 = sqlx::query_scalar(
        "select count(*) from security_events where details::text like '%Horse%'
           or coalesce(user_agent, '') like '%Horse%'",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(leaked, 0, "no password is stored");
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_admin_unlocks_a_locked_account_in_its_own_organisation_only() {
    let clock = ManualClock::at(Utc::now());
    let app = app_with(clock.clone()).await;
    let admin = user(&app, app.tenant_id, "ADMIN", "admin@clinic.example").await;
    let doctor = user(&app, app.tenant_id, "DOCTOR", "doc@clinic.example").await;
    let (other, _) = app.other_tenant().await;
    let stranger = user(&app, other, "ADMIN", "admin@other.example").await;
    five_failures(&app, &clock, "doc@clinic.example").await;
    assert_eq!(attempt(&app, "doc@clinic.example", PASSWORD).await.0, 429);
    let unlock = format!("/api/v1/admin/users/{}/unlock", doctor.id);
    answer(&app, Method::POST, &unlock, &stranger.token, 404).await;
    answer(&app, Method::POST, &unlock, &doctor.token, 403).await;
    assert_eq!(attempt(&app, "doc@clinic.example", PASSWORD).await.0, 429);
    let done = answer(&app, Method::POST, &unlock, &admin.token, 200).await;
    assert_eq!(done["was_locked"], true);
    assert_eq!(
        attempt(&app, "doc@clinic.example", PASSWORD).await.0,
        200,
        "unlocked at once, without moving the clock"
    );
    let audited: i64 = sqlx::query_scalar(
        "select count(*) from audit_log where action = 'user.unlock' and result = 'success'
           and resource_id = $1 and actor = $2",
    )
    .bind(&doctor.id)
    .bind(format!("user:{}", admin.id))
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(audited, 1);
    let refused: i64 = sqlx::query_scalar(
        "select count(*) from audit_log where action = 'user.unlock' and result = 'failure'",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(refused, 1, "the 404 is audited");
    let denied: i64 = sqlx::query_scalar(
        "select count(*) from audit_log where action = $1 and result = 'failure'
           and resource_id = 'POST /api/v1/admin/users/{id}/unlock'",
    )
    .bind(api::permissions::DENIED_ACTION)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(denied, 1, "so is the 403, as a refused operation");
    let events = answer(
        &app,
        Method::GET,
        "/api/v1/security/events?type=account.unlocked",
        &admin.token,
        200,
    )
    .await;
    assert_eq!(events["items"].as_array().unwrap().len(), 1);
    assert_eq!(events["items"][0]["user_id"], doctor.id.as_str());
    app.shutdown().await;
}

async fn session(app: &TestApp, email: &str, agent: &str) -> Value {
    expect(
        app.client
            .post(app.url("/api/v1/auth/login"))
            .header("user-agent", agent)
            .json(&json!({"email": email, "password": PASSWORD}))
            .send()
            .await
            .unwrap(),
        200,
    )
    .await
}

async fn refresh(app: &TestApp, token: &Value) -> Response {
    app.post_anonymous("/api/v1/auth/refresh", &json!({"refresh_token": token}))
        .await
}

async fn me(app: &TestApp, token: &Value) -> u16 {
    app.get_with_token("/api/v1/users/me", token.as_str().unwrap())
        .await
        .status()
        .as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn refresh_tokens_rotate_and_a_reused_one_ends_the_whole_session() {
    let app = app().await;
    let doctor = user(&app, app.tenant_id, "DOCTOR", "doc@clinic.example").await;
    let first = session(&app, "doc@clinic.example", "tests").await;
    // Every field current clients read is still there.
    for field in [
        "access_token",
        "token_type",
        "expires_in",
        "user_id",
        "organization_id",
        "role",
        "must_change_password",
    ] {
        assert!(first.get(field).is_some(), "{field}");
    }
    assert_eq!(first["expires_in"], 900);
    assert_eq!(first["refresh_expires_in"], 14 * 24 * 3600);
    let r1 = first["refresh_token"].clone();
    assert!(r1.as_str().unwrap().starts_with("rt_"));
    let stored: i64 = sqlx::query_scalar(
        "select count(*) from refresh_tokens where token_hash = sha256(convert_to($1, 'UTF8'))",
    )
    .bind(r1.as_str().unwrap())
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(stored, 1, "stored as its SHA-256");

    let second = expect(refresh(&app, &r1).await, 200).await;
    assert_eq!(second["session_id"], first["session_id"]);
    assert_eq!(second["user_id"], doctor.id.as_str());
    assert_ne!(second["refresh_token"], r1);
    assert_eq!(me(&app, &second["access_token"]).await, 200);
    let third = expect(refresh(&app, &second["refresh_token"]).await, 200).await;
    let r3 = third["refresh_token"].clone();
    assert_eq!(me(&app, &third["access_token"]).await, 200);

    // The first token again: the family leaked.
    let reused = expect(refresh(&app, &r1).await, 401).await;
    assert_eq!(reused["type"], "/problems/unauthorized");
    expect(refresh(&app, &r3).await, 401).await;
    assert_eq!(me(&app, &third["access_token"]).await, 401);
    assert_eq!(me(&app, &first["access_token"]).await, 401);
    assert_eq!(
        me(&app, &json!(doctor.token)).await,
        200,
        "other sessions stay"
    );
    let reuse: (String, Option<String>) = sqlx::query_as(
        "select tenant_id::text, session_id::text from security_events
         where kind = 'refresh_token.reused'",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(reuse.0, app.tenant_id.to_string());
    assert_eq!(reuse.1.as_deref(), first["session_id"].as_str());
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn malformed_refresh_tokens_are_problems() {
    let app = app().await;
    let cases = [
        (json!({"refresh_token": "nope"}), 400),
        (json!({"refresh_token": "x".repeat(100_000)}), 400),
        (
            json!({"refresh_token": format!("rt_{}", "é".repeat(43))}),
            400,
        ),
        (json!({"refresh_token": 42}), 400),
        (json!({}), 400),
        (
            json!({"refresh_token": format!("rt_{}", "A".repeat(43)), "extra": 1}),
            400,
        ),
        (
            json!({"refresh_token": format!("rt_{}", "A".repeat(43))}),
            401,
        ),
    ];
    for (body, status) in cases {
        let resp = app.post_anonymous("/api/v1/auth/refresh", &body).await;
        assert_eq!(resp.status().as_u16(), status, "{body}");
        assert_eq!(
            resp.headers()["content-type"],
            "application/problem+json",
            "{body}"
        );
    }
    let not_json = app
        .client
        .post(app.url("/api/v1/auth/refresh"))
        .header("content-type", "application/json")
        .body("{")
        .send()
        .await
        .unwrap();
    assert_eq!(not_json.status(), 400);
    app.shutdown().await;
}

type Ws = WebSocketStream<MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect(app: &TestApp, token: &str) -> Ws {
    let mut req = format!("ws://{}/api/v1/ws", app.addr)
        .into_client_request()
        .unwrap();
    req.headers_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    let (mut ws, _) = connect_async(req).await.expect("the websocket opens");
    assert_eq!(next_text(&mut ws).await["type"], "ready");
    ws
}

async fn next_text(ws: &mut Ws) -> Value {
    loop {
        let msg = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("a message in time")
            .expect("open")
            .unwrap();
        if let Message::Text(text) = msg {
            return serde_json::from_str(&text).unwrap();
        }
    }
}

/// The close code the server ends the connection with.
async fn closed_with(ws: &mut Ws) -> Option<u16> {
    tokio::time::timeout(WAIT, async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Close(frame))) => return frame.map(|f| u16::from(f.code)),
                Some(Ok(_)) => {}
                Some(Err(_)) | None => return None,
            }
        }
    })
    .await
    .expect("the server closed the connection")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn logout_ends_the_access_token_and_closes_the_sessions_websockets() {
    let app = app().await;
    user(&app, app.tenant_id, "DOCTOR", "doc@clinic.example").await;
    let one = session(&app, "doc@clinic.example", "laptop").await;
    let two = session(&app, "doc@clinic.example", "phone").await;
    let mut ws_one = connect(&app, one["access_token"].as_str().unwrap()).await;
    let mut ws_two = connect(&app, two["access_token"].as_str().unwrap()).await;
    let out = app
        .post_empty_with_token("/api/v1/auth/logout", one["access_token"].as_str().unwrap())
        .await;
    assert_eq!(out.status(), 204);
    assert_eq!(closed_with(&mut ws_one).await, Some(4401));
    assert_eq!(me(&app, &one["access_token"]).await, 401);
    expect(refresh(&app, &one["refresh_token"]).await, 401).await;
    let again = app
        .post_empty_with_token("/api/v1/auth/logout", one["access_token"].as_str().unwrap())
        .await;
    assert_eq!(again.status(), 401);
    // The other session is untouched, socket included.
    assert_eq!(me(&app, &two["access_token"]).await, 200);
    ws_two
        .send(Message::Text(json!({"type": "ping"}).to_string().into()))
        .await
        .unwrap();
    assert_eq!(next_text(&mut ws_two).await["type"], "pong");
    // A socket opened with a revoked session's token is refused.
    let mut req = format!("ws://{}/api/v1/ws", app.addr)
        .into_client_request()
        .unwrap();
    req.headers_mut().insert(
        "authorization",
        format!("Bearer {}", one["access_token"].as_str().unwrap())
            .parse()
            .unwrap(),
    );
    assert!(connect_async(req).await.is_err());
    // A token from an external identity provider has no session to end.
    let (other, _) = app.other_tenant().await;
    let secret = app.issue_jwt_secret(other).await;
    let external = testkit::jwks::user_token(&secret, other, "idp-user-7", &[]);
    assert_eq!(me(&app, &json!(external)).await, 200, "still works");
    let refused = expect(
        app.post_empty_with_token("/api/v1/auth/logout", &external)
            .await,
        409,
    )
    .await;
    assert_eq!(refused["type"], "/problems/conflict");
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_user_lists_and_revokes_its_own_sessions() {
    let app = app().await;
    user(&app, app.tenant_id, "DOCTOR", "doc@clinic.example").await;
    let nurse = user(&app, app.tenant_id, "MEDICAL_STAFF", "nurse@clinic.example").await;
    // Throw away the session `user` made, to count exactly.
    let doc_id: String = sqlx::query_scalar("select id::text from users where email = $1")
        .bind("doc@clinic.example")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    sqlx::query("update auth_sessions set revoked_at = now() where user_id = $1::uuid")
        .bind(&doc_id)
        .execute(&app.pool)
        .await
        .unwrap();
    let a = session(&app, "doc@clinic.example", "Laptop Browser").await;
    let b = session(&app, "doc@clinic.example", "Phone App").await;
    let c = session(&app, "doc@clinic.example", "x".repeat(1000).as_str()).await;
    let sessions = "/api/v1/users/me/sessions";
    let token = |s: &Value| s["access_token"].as_str().unwrap().to_owned();
    let list = answer(&app, Method::GET, sessions, &token(&c), 200).await;
    let items = list["items"].as_array().unwrap();
    assert_eq!(items.len(), 3);
    assert_eq!(items[0]["id"], c["session_id"]);
    assert_eq!(items[0]["current"], true);
    assert_eq!(
        items[0]["user_agent"].as_str().unwrap().len(),
        256,
        "truncated"
    );
    assert_eq!(items[1]["user_agent"], "Phone App");
    assert_eq!(items[1]["current"], false);
    assert_eq!(items[2]["ip"], "127.0.0.1");
    for item in items {
        assert!(item["created_at"].is_string() && item["last_used_at"].is_string());
    }
    // Someone else's session is not ours to end.
    let theirs = format!("{sessions}/{}", a["session_id"].as_str().unwrap());
    answer(&app, Method::DELETE, &theirs, &nurse.token, 404).await;
    assert_eq!(me(&app, &a["access_token"]).await, 200);
    let done = request(&app, Method::DELETE, &theirs, &token(&c)).await;
    assert_eq!(done.status(), 204);
    assert_eq!(me(&app, &a["access_token"]).await, 401);
    for id in [a["session_id"].as_str().unwrap(), "not-a-session"] {
        answer(
            &app,
            Method::DELETE,
            &format!("{sessions}/{id}"),
            &token(&c),
            404,
        )
        .await;
    }
    let others = answer(&app, Method::DELETE, sessions, &token(&c), 200).await;
    assert_eq!(others["revoked"], 1, "every session but this one");
    assert_eq!(me(&app, &b["access_token"]).await, 401);
    assert_eq!(me(&app, &c["access_token"]).await, 200);
    let left = answer(&app, Method::GET, sessions, &token(&c), 200).await;
    assert_eq!(left["items"].as_array().unwrap().len(), 1);
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_admin_revokes_a_users_sessions_only_in_its_own_organisation() {
    let app = app().await;
    let admin = user(&app, app.tenant_id, "ADMIN", "admin@clinic.example").await;
    let doctor = user(&app, app.tenant_id, "DOCTOR", "doc@clinic.example").await;
    let (other, _) = app.other_tenant().await;
    let stranger = user(&app, other, "ADMIN", "admin@other.example").await;
    let mut ws = connect(&app, &doctor.token).await;
    let path = format!("/api/v1/admin/users/{}/sessions", doctor.id);
    answer(&app, Method::DELETE, &path, &stranger.token, 404).await;
    assert_eq!(me(&app, &json!(doctor.token)).await, 200);
    let done = answer(&app, Method::DELETE, &path, &admin.token, 200).await;
    assert_eq!(done["revoked"], 1);
    assert_eq!(me(&app, &json!(doctor.token)).await, 401);
    assert_eq!(closed_with(&mut ws).await, Some(4401));
    assert_eq!(me(&app, &json!(admin.token)).await, 200);
    let audited: Vec<String> = sqlx::query_scalar(
        "select result from audit_log where action = 'user.sessions.revoke' order by id",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap();
    assert_eq!(audited, ["failure", "success"]);
    app.shutdown().await;
}
