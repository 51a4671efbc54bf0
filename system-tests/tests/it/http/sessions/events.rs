//! Security events listed and counted per organisation, and sessions ended
//! across replicas, by deactivation and by a password change.

use super::*;
use crate::http::org_support::answer_json;

/// `GET /api/v1/security/{path}` as `who`, which must answer
/// `status`; the JSON.
async fn security(app: &TestApp, who: &Signed, path: &str, status: u16) -> Value {
    let path = format!("/api/v1/security/{path}");
    answer(app, Method::GET, &path, &who.token, status).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn security_events_are_listed_with_filters_and_counted() {
    let app = app().await;
    let admin = user(&app, app.tenant_id, "ADMIN", "admin@clinic.example").await;
    let doctor = user(&app, app.tenant_id, "DOCTOR", "doc@clinic.example").await;
    let root: Signed = platform_admin(&app).await;
    let (other, _) = app.other_tenant().await;
    user(&app, other, "ADMIN", "admin@other.example").await;
    assert_eq!(
        attempt(&app, "doc@clinic.example", "Wrong-Horse-1").await.0,
        401
    );
    assert_eq!(
        attempt(&app, "ghost@clinic.example", "Wrong-Horse-1")
            .await
            .0,
        401
    );
    let all = security(&app, &admin, "events", 200).await;
    let kinds: Vec<&str> = all["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        ["login.failed", "login.succeeded", "login.succeeded"],
        "newest first, this organisation's only"
    );
    for e in all["items"].as_array().unwrap() {
        assert_eq!(e["organization_id"], app.tenant_id.to_string());
    }
    let failed = security(&app, &admin, "events?type=login.failed", 200).await;
    assert_eq!(failed["items"].as_array().unwrap().len(), 1);
    assert_eq!(failed["items"][0]["user_id"], doctor.id.as_str());
    assert_eq!(failed["items"][0]["ip"], "127.0.0.1");
    let by_user = security(&app, &admin, &format!("events?user_id={}", admin.id), 200).await;
    assert_eq!(by_user["items"].as_array().unwrap().len(), 1);
    let future = security(&app, &admin, "events?since=2999-01-01T00:00:00Z", 200).await;
    assert!(future["items"].as_array().unwrap().is_empty());
    // Pages of one, by cursor, cover the same events.
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("events?limit=1&cursor={c}"),
            None => "events?limit=1".to_owned(),
        };
        let page = security(&app, &admin, &path, 200).await;
        seen.extend(
            page["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["id"].clone()),
        );
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    let ids: Vec<Value> = all["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].clone())
        .collect();
    assert_eq!(seen, ids);
    for bad in [
        "type=login.whatever",
        "user_id=nope",
        "cursor=abc",
        "limit=0",
    ] {
        let problem = security(&app, &admin, &format!("events?{bad}"), 400).await;
        assert_eq!(problem["status"], 400, "{bad}");
    }
    // An empty window, or one beyond what is stored, selects nothing.
    for empty in [
        "since=2026-01-02T00:00:00Z&until=2026-01-01T00:00:00Z",
        "until=0000-01-01T00:00:00Z",
    ] {
        let page = security(&app, &admin, &format!("events?{empty}"), 200).await;
        assert!(page["items"].as_array().unwrap().is_empty(), "{empty}");
    }
    let far = security(
        &app,
        &admin,
        "events?since=0000-01-01T00:00:00Z&until=9999-12-31T23:59:59Z",
        200,
    )
    .await;
    assert_eq!(far["items"], all["items"]);
    security(&app, &doctor, "events", 403).await;
    security(
        &app,
        &admin,
        &format!("events?organization_id={other}"),
        404,
    )
    .await;
    // The platform sees the unknown address's failure, which has no
    // organisation.
    let platform = security(&app, &root, "events?organization_id=platform", 200).await;
    let items = platform["items"].as_array().unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["type"], "login.failed");
    assert!(items[0]["organization_id"].is_null() && items[0]["user_id"].is_null());

    let stats = security(&app, &admin, "statistics", 200).await;
    let count = |stats: &Value, kind: &str| {
        stats["counts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["type"] == kind)
            .unwrap()["count"]
            .as_i64()
            .unwrap()
    };
    assert_eq!(count(&stats, "login.succeeded"), 2);
    assert_eq!(count(&stats, "login.failed"), 1);
    assert_eq!(count(&stats, "account.locked"), 0);
    assert_eq!(stats["total"], 3);
    let everyone = security(&app, &root, "statistics", 200).await;
    assert_eq!(count(&everyone, "login.failed"), 2);
    assert_eq!(count(&everyone, "login.succeeded"), 4);
    let old = security(&app, &admin, "statistics?until=2000-01-01T00:00:00Z", 200).await;
    assert_eq!(old["total"], 0);
    app.shutdown().await;
}

/// Waits until `n` api instances follow the session revocation channel.
async fn revocations_followed_by(app: &TestApp, n: i64) {
    let channel = api::signin::revocation_channel(&app.redis_prefix);
    testkit::eventually("the instances to follow revocations", WAIT, || {
        let channel = channel.clone();
        async move {
            let mut conn = app.redis().await;
            let (_, count): (String, i64) = redis::cmd("PUBSUB")
                .arg("NUMSUB")
                .arg(&channel)
                .query_async(&mut conn)
                .await
                .unwrap();
            (count >= n).then_some(())
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn signing_out_through_one_replica_closes_the_sessions_socket_on_another() {
    let app = app().await;
    user(&app, app.tenant_id, "DOCTOR", "doc@clinic.example").await;
    let replica = api::Application::build(&app.settings).await.unwrap();
    let replica_addr = replica.addr();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let replica_task = tokio::spawn(replica.run_until(
        async move {
            let _ = stopped.await;
        },
        Duration::from_secs(1),
    ));
    let signed = session(&app, "doc@clinic.example", "laptop").await;
    let token = signed["access_token"].as_str().unwrap();
    let mut req = format!("ws://{replica_addr}/api/v1/ws")
        .into_client_request()
        .unwrap();
    req.headers_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    let (mut on_b, _) = connect_async(req).await.expect("the websocket opens");
    assert_eq!(next_text(&mut on_b).await["type"], "ready");
    revocations_followed_by(&app, 2).await;
    let out = app
        .post_empty_with_token("/api/v1/auth/logout", token)
        .await;
    assert_eq!(out.status(), 204);
    assert_eq!(closed_with(&mut on_b).await, Some(4401));
    let _ = stop.send(());
    replica_task.await.unwrap().unwrap();
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn deactivation_and_a_password_change_end_every_session() {
    let app = app().await;
    let admin = user(&app, app.tenant_id, "ADMIN", "admin@clinic.example").await;
    let doctor = user(&app, app.tenant_id, "DOCTOR", "doc@clinic.example").await;
    let of_doctor = |action: &str| format!("/api/v1/admin/users/{}/{action}", doctor.id);
    let signed = session(&app, "doc@clinic.example", "laptop").await;
    let mut ws = connect(&app, signed["access_token"].as_str().unwrap()).await;
    answer(
        &app,
        Method::PATCH,
        &of_doctor("deactivate"),
        &admin.token,
        200,
    )
    .await;
    assert_eq!(closed_with(&mut ws).await, Some(4401));
    expect(refresh(&app, &signed["refresh_token"]).await, 401).await;
    let reasons: Vec<String> = sqlx::query_scalar(
        "select distinct revoked_reason from auth_sessions where user_id = $1::uuid",
    )
    .bind(&doctor.id)
    .fetch_all(&app.pool)
    .await
    .unwrap();
    assert_eq!(reasons, ["deactivated"]);
    answer(
        &app,
        Method::PATCH,
        &of_doctor("activate"),
        &admin.token,
        200,
    )
    .await;
    let again = session(&app, "doc@clinic.example", "laptop").await;
    let password = json!({"password": "Temporary-Pass-77"});
    answer_json(
        &app,
        Method::PATCH,
        &of_doctor("password"),
        &admin.token,
        &password,
        200,
    )
    .await;
    expect(refresh(&app, &again["refresh_token"]).await, 401).await;
    let live: i64 = sqlx::query_scalar(
        "select count(*) from auth_sessions where user_id = $1::uuid and revoked_at is null",
    )
    .bind(&doctor.id)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(live, 0);
    app.shutdown().await;
}
