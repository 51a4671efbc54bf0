//! Real-time delivery over WebSocket: auth, live inbox events with exact
//! counts, delivery across API replicas, catch-up with `since`, topics,
//! heartbeat and the slow-client cap.

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use shared::{domain::TenantId, events::Event, jobs::Queues};
use testkit::TestApp;
use tokio_tungstenite::{
    MaybeTlsStream, WebSocketStream, connect_async,
    tungstenite::{Message, client::IntoClientRequest, protocol::frame::coding::CloseCode},
};

type Ws = WebSocketStream<MaybeTlsStream<tokio::net::TcpStream>>;

const WAIT: Duration = Duration::from_secs(15);

fn token(secret: &str, tenant: TenantId, subject: &str, roles: &[&str]) -> String {
    testkit::jwks::user_token(secret, tenant, subject, roles)
}

async fn connect(addr: std::net::SocketAddr, token: Option<&str>, since: Option<i64>) -> Ws {
    try_connect(addr, token, since)
        .await
        .expect("the websocket opens")
}

async fn try_connect(
    addr: std::net::SocketAddr,
    token: Option<&str>,
    since: Option<i64>,
) -> Result<Ws, tokio_tungstenite::tungstenite::Error> {
    let url = match since {
        Some(s) => format!("ws://{addr}/api/v1/ws?since={s}"),
        None => format!("ws://{addr}/api/v1/ws"),
    };
    let mut req = url.into_client_request().unwrap();
    if let Some(t) = token {
        req.headers_mut()
            .insert("authorization", format!("Bearer {t}").parse().unwrap());
    }
    connect_async(req).await.map(|(ws, _)| ws)
}

/// The next JSON message, skipping control frames.
async fn next(ws: &mut Ws) -> Value {
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

/// The next message of `kind`, skipping others.
async fn next_of(ws: &mut Ws, kind: &str) -> Value {
    loop {
        let v = next(ws).await;
        if v["type"] == kind {
            return v;
        }
    }
}

/// Reads until the server ends the connection (within `limit`); the close
/// code, if a close frame came (it may not, if our pong hit a closed socket).
async fn ended(ws: &mut Ws, limit: Duration) -> Option<u16> {
    tokio::time::timeout(limit, async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Close(frame))) => return frame.map(|f| u16::from(f.code)),
                Some(Ok(_)) => {}
                Some(Err(_)) | None => return None,
            }
        }
    })
    .await
    .expect("the server ended the connection")
}

async fn send_inapp(app: &TestApp, subscriber: &str, title: &str) -> String {
    let body = json!({"channel": "inapp", "subscriber_id": subscriber, "title": title});
    let resp = app.send_email(&body).await;
    assert_eq!(resp.status(), 202);
    resp.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_connected_user_hears_new_notifications_and_exact_unread_counts() {
    let app = TestApp::builder().spawn().await;
    let secret = app.issue_jwt_secret(app.tenant_id).await;
    let pat = token(&secret, app.tenant_id, "pat", &[]);
    let mut ws = connect(app.addr, Some(&pat), None).await;
    let ready = next(&mut ws).await;
    assert_eq!(ready["type"], "ready");
    assert_eq!(ready["subject"], "pat");
    let id = send_inapp(&app, "pat", "Your results are ready").await;
    let created = next(&mut ws).await;
    assert_eq!(created["type"], "notification.created");
    assert_eq!(created["topic"], "user:pat");
    assert_eq!(created["data"]["id"], id.as_str());
    assert_eq!(created["data"]["title"], "Your results are ready");
    let count = next(&mut ws).await;
    assert_eq!(count["type"], "unread_count.changed");
    assert_eq!(count["data"]["unread"], 1);
    assert!(
        count["id"].as_i64() > created["id"].as_i64(),
        "numbers increase"
    );

    let read = app
        .patch_with_token(&format!("/api/v1/users/me/notifications/{id}/read"), &pat)
        .await;
    assert_eq!(read.status(), 200);
    let updated = next(&mut ws).await;
    assert_eq!(updated["type"], "notification.updated");
    assert_eq!(updated["data"]["read"], true);
    assert_eq!(next(&mut ws).await["data"]["unread"], 0);
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_browser_authenticates_with_its_first_message_within_the_deadline() {
    let app = TestApp::builder()
        .without_worker()
        .var("WS_AUTH_TIMEOUT_SECS", 1)
        .spawn()
        .await;
    let secret = app.issue_jwt_secret(app.tenant_id).await;
    let mut ws = connect(app.addr, None, None).await;
    ws.send(Message::text(
        json!({"type": "auth", "token": token(&secret, app.tenant_id, "pat", &[])}).to_string(),
    ))
    .await
    .unwrap();
    assert_eq!(next(&mut ws).await["type"], "ready");

    // Silence past the deadline, or a bad token, closes with 4401.
    for first in [
        None,
        Some(json!({"type": "auth", "token": "not-a-token"})),
        Some(json!({"type": "subscribe"})),
    ] {
        let mut ws = connect(app.addr, None, None).await;
        if let Some(m) = first {
            ws.send(Message::text(m.to_string())).await.unwrap();
        }
        let msg = tokio::time::timeout(WAIT, ws.next()).await.unwrap();
        match msg {
            Some(Ok(Message::Close(Some(frame)))) => assert_eq!(u16::from(frame.code), 4401),
            other => panic!("expected a 4401 close, got {other:?}"),
        }
    }
    // A bad token in the header is refused before the upgrade.
    let refused = try_connect(app.addr, Some("not-a-token"), None).await;
    match refused {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => assert_eq!(resp.status(), 401),
        other => panic!("expected 401, got {other:?}"),
    }
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_client_on_one_replica_hears_changes_made_through_another() {
    let app = TestApp::builder().spawn().await;
    let replica = api::Application::build(&app.settings).await.unwrap();
    let replica_addr = replica.addr();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let replica_task = tokio::spawn(replica.run_until(
        async move {
            let _ = stopped.await;
        },
        Duration::from_secs(1),
    ));
    let secret = app.issue_jwt_secret(app.tenant_id).await;
    let pat = token(&secret, app.tenant_id, "pat", &[]);
    let mut on_b = connect(replica_addr, Some(&pat), None).await;
    assert_eq!(next(&mut on_b).await["type"], "ready");
    // The send goes through replica A; the worker delivers it.
    let id = send_inapp(&app, "pat", "Hello from A").await;
    let created = next_of(&mut on_b, "notification.created").await;
    assert_eq!(created["data"]["id"], id.as_str());
    // A change made through A reaches the client on B.
    app.patch_with_token(
        &format!("/api/v1/users/me/notifications/{id}/archive"),
        &pat,
    )
    .await;
    let updated = next_of(&mut on_b, "notification.updated").await;
    assert_eq!(updated["data"]["archived"], true);
    let _ = stop.send(());
    replica_task.await.unwrap().unwrap();
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reconnecting_with_since_replays_every_missed_event() {
    let app = TestApp::builder().spawn().await;
    let secret = app.issue_jwt_secret(app.tenant_id).await;
    let pat = token(&secret, app.tenant_id, "pat", &[]);
    let mut ids = Vec::new();
    for i in 0..3 {
        ids.push(send_inapp(&app, "pat", &format!("Missed {i}")).await);
    }
    for id in &ids {
        app.wait_for_status(id, "sent", WAIT).await;
    }
    let mut ws = connect(app.addr, Some(&pat), Some(0)).await;
    let ready = next(&mut ws).await;
    assert_eq!(
        ready["last_event_id"], 6,
        "a created and a count event per delivery"
    );
    let mut replayed = Vec::new();
    for _ in 0..6 {
        let e = next(&mut ws).await;
        replayed.push((
            e["id"].as_i64().unwrap(),
            e["type"].as_str().unwrap().to_owned(),
        ));
    }
    let numbers: Vec<i64> = replayed.iter().map(|(n, _)| *n).collect();
    assert_eq!(numbers, vec![1, 2, 3, 4, 5, 6]);
    let created = replayed
        .iter()
        .filter(|(_, t)| t == "notification.created")
        .count();
    assert_eq!(created, 3);
    drop(ws);
    // From the middle: only what came after.
    let mut ws = connect(app.addr, Some(&pat), Some(4)).await;
    next(&mut ws).await;
    assert_eq!(next(&mut ws).await["id"], 5);
    assert_eq!(next(&mut ws).await["id"], 6);
    // Then live events continue the numbering.
    send_inapp(&app, "pat", "Live").await;
    assert_eq!(next(&mut ws).await["id"], 7);
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_silent_connection_is_closed_and_a_live_one_kept() {
    let app = TestApp::builder()
        .without_worker()
        .var("WS_HEARTBEAT_SECS", 1)
        .var("WS_IDLE_TIMEOUT_SECS", 2)
        .spawn()
        .await;
    let secret = app.issue_jwt_secret(app.tenant_id).await;
    let pat = token(&secret, app.tenant_id, "pat", &[]);
    let mut silent = connect(app.addr, Some(&pat), None).await;
    let mut live = connect(app.addr, Some(&pat), None).await;
    assert_eq!(next(&mut live).await["type"], "ready");
    // The live client reads (and so answers pings) for 4 s; the silent one
    // reads nothing.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(4);
    while tokio::time::Instant::now() < deadline {
        let _ = tokio::time::timeout_at(deadline, live.next()).await;
    }
    live.send(Message::text(json!({"type": "ping"}).to_string()))
        .await
        .unwrap();
    assert_eq!(next_of(&mut live, "pong").await["type"], "pong");
    // The silent one was closed: reading now yields what was sent, then the
    // close frame (or the end, if our pong hit an already closed socket).
    if let Some(code) = ended(&mut silent, Duration::from_secs(5)).await {
        assert_eq!(code, u16::from(CloseCode::Away));
    }
    app.shutdown().await;
}

async fn publish(app: &TestApp, event: Event) {
    let queues = Queues::new(&app.settings.redis_url, &app.redis_prefix).unwrap();
    shared::events::publish(&queues, &[event]).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn topics_are_limited_by_role_and_never_cross_tenants() {
    let app = TestApp::builder().without_worker().spawn().await;
    let secret = app.issue_jwt_secret(app.tenant_id).await;
    let (other, _) = app.other_tenant().await;
    let other_secret = app.issue_jwt_secret(other).await;
    let mut user = connect(
        app.addr,
        Some(&token(&secret, app.tenant_id, "pat", &["DOCTOR"])),
        None,
    )
    .await;
    let mut admin = connect(
        app.addr,
        Some(&token(&secret, app.tenant_id, "ana", &["ADMIN"])),
        None,
    )
    .await;
    let mut outsider = connect(
        app.addr,
        Some(&token(&other_secret, other, "pat", &["ADMIN"])),
        None,
    )
    .await;
    for ws in [&mut user, &mut admin, &mut outsider] {
        assert_eq!(next(ws).await["type"], "ready");
    }
    let ask =
        |topics: Value| Message::text(json!({"type": "subscribe", "topics": topics}).to_string());
    user.send(ask(json!(["org", "batch:b1", "user:sam", "everything"])))
        .await
        .unwrap();
    let mut errors = Vec::new();
    let granted = loop {
        let m = next(&mut user).await;
        match m["type"].as_str() {
            Some("error") => errors.push((
                m["topic"].as_str().unwrap().to_owned(),
                m["code"].as_str().unwrap().to_owned(),
            )),
            Some("subscribed") => break m["topics"].clone(),
            _ => {}
        }
    };
    assert_eq!(granted, json!(["org"]));
    assert_eq!(
        errors,
        vec![
            ("batch:b1".to_owned(), "forbidden".to_owned()),
            ("user:sam".to_owned(), "forbidden".to_owned()),
            ("everything".to_owned(), "unknown_topic".to_owned())
        ]
    );
    admin.send(ask(json!(["org", "batch:b1"]))).await.unwrap();
    assert_eq!(
        next_of(&mut admin, "subscribed").await["topics"],
        json!(["org", "batch:b1"])
    );
    outsider.send(ask(json!(["org"]))).await.unwrap();
    next_of(&mut outsider, "subscribed").await;

    publish(
        &app,
        Event {
            tenant_id: app.tenant_id,
            topic: "batch:b1".into(),
            kind: "batch.progress".into(),
            id: None,
            at: chrono::Utc::now(),
            data: json!({"sent": 10}),
        },
    )
    .await;
    publish(
        &app,
        Event {
            tenant_id: app.tenant_id,
            topic: "org".into(),
            kind: "system.alert".into(),
            id: None,
            at: chrono::Utc::now(),
            data: json!({"message": "maintenance tonight"}),
        },
    )
    .await;
    publish(
        &app,
        Event {
            tenant_id: other,
            topic: "org".into(),
            kind: "system.alert".into(),
            id: None,
            at: chrono::Utc::now(),
            data: json!({"message": "other tenant"}),
        },
    )
    .await;
    assert_eq!(next(&mut admin).await["type"], "batch.progress");
    assert_eq!(
        next(&mut admin).await["data"]["message"],
        "maintenance tonight"
    );
    assert_eq!(
        next(&mut user).await["data"]["message"],
        "maintenance tonight",
        "users get org, not batch events"
    );
    assert_eq!(
        next(&mut outsider).await["data"]["message"],
        "other tenant",
        "each tenant only its own"
    );
    // Nothing else is waiting for the user or the outsider.
    user.send(Message::text(json!({"type": "ping"}).to_string()))
        .await
        .unwrap();
    assert_eq!(next(&mut user).await["type"], "pong");
    outsider
        .send(Message::text(json!({"type": "ping"}).to_string()))
        .await
        .unwrap();
    assert_eq!(next(&mut outsider).await["type"], "pong");
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_client_that_stops_reading_is_disconnected() {
    let app = TestApp::builder()
        .without_worker()
        .var("WS_CLIENT_QUEUE", 4)
        .var("WS_IDLE_TIMEOUT_SECS", 2)
        .spawn()
        .await;
    let secret = app.issue_jwt_secret(app.tenant_id).await;
    let mut ws = connect(
        app.addr,
        Some(&token(&secret, app.tenant_id, "pat", &[])),
        None,
    )
    .await;
    assert_eq!(next(&mut ws).await["type"], "ready");
    ws.send(Message::text(
        json!({"type": "subscribe", "topics": ["org"]}).to_string(),
    ))
    .await
    .unwrap();
    next_of(&mut ws, "subscribed").await;
    // Far more than the socket buffers hold, while the client reads nothing.
    let big = "x".repeat(64 * 1024);
    for i in 0..300 {
        publish(
            &app,
            Event {
                tenant_id: app.tenant_id,
                topic: "org".into(),
                kind: "system.alert".into(),
                id: None,
                at: chrono::Utc::now(),
                data: json!({"n": i, "pad": big}),
            },
        )
        .await;
    }
    // A client that does not read for a while is the behaviour under test:
    // the server's buffer for it fills meanwhile.
    tokio::time::sleep(Duration::from_secs(4)).await;
    // Now read: whatever was buffered arrives, then the connection ends.
    let mut received = 0;
    let mut close_code = None;
    loop {
        match tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("the connection ends")
        {
            Some(Ok(Message::Text(_))) => received += 1,
            Some(Ok(Message::Close(frame))) => {
                close_code = frame.map(|f| u16::from(f.code));
                break;
            }
            Some(Ok(_)) => {}
            Some(Err(_)) | None => break,
        }
    }
    assert!(
        received < 300,
        "the client was cut off, not sent everything ({received})"
    );
    if let Some(code) = close_code {
        assert_eq!(code, 4008, "told it was too slow");
    }
    let metrics = app.metrics_page().await;
    assert!(
        metrics.contains("ws_slow_clients_closed_total"),
        "{metrics}"
    );
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_oversized_or_malformed_client_message_is_refused() {
    let app = TestApp::builder().without_worker().spawn().await;
    let secret = app.issue_jwt_secret(app.tenant_id).await;
    let pat = token(&secret, app.tenant_id, "pat", &[]);
    let mut ws = connect(app.addr, Some(&pat), None).await;
    assert_eq!(next(&mut ws).await["type"], "ready");
    for bad in ["not json", "{\"type\": \"dance\"}", "[]"] {
        ws.send(Message::text(bad)).await.unwrap();
        assert_eq!(next(&mut ws).await["code"], "bad_message", "{bad}");
    }
    ws.send(Message::text("x".repeat(64 * 1024))).await.unwrap();
    if let Some(code) = ended(&mut ws, WAIT).await {
        assert_eq!(code, 1009, "message too big");
    }
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn batch_progress_follows_the_permission_to_read_notifications_not_the_role() {
    use crate::http::org_support::user;
    let app = TestApp::builder().without_worker().spawn().await;
    let admin = user(&app, app.tenant_id, "ADMIN", "admin@clinic.example").await;
    let doctor = user(&app, app.tenant_id, "DOCTOR", "doc@clinic.example").await;
    let subscribe =
        |topic: &str| Message::text(json!({"type": "subscribe", "topics": [topic]}).to_string());
    let mut ws = connect(app.addr, Some(&doctor.token), None).await;
    assert_eq!(next(&mut ws).await["type"], "ready");
    ws.send(subscribe("batch:b1")).await.unwrap();
    let refused = next_of(&mut ws, "error").await;
    assert_eq!(
        (refused["topic"].as_str(), refused["code"].as_str()),
        (Some("batch:b1"), Some("forbidden"))
    );
    assert_eq!(next_of(&mut ws, "subscribed").await["topics"], json!([]));

    // An admin grants the doctor `notifications:read`: the same connection
    // may follow the batch from its next subscription on.
    crate::http::permissions::grant(&app, &admin.token, &doctor.id, "notifications:read").await;
    ws.send(subscribe("bulk:j1")).await.unwrap();
    assert_eq!(
        next_of(&mut ws, "subscribed").await["topics"],
        json!(["bulk:j1"])
    );
}
