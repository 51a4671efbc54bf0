//! Subscribers as delivery sees them: contacts read for delivery,
//! preferences, global opt-outs, erasure, and the service key every route
//! needs.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn contacts_are_read_for_delivery_and_dead_push_tokens_are_removed() {
    let app = api_app().await;
    assert_eq!(
        put(&app, &app.api_key, "pat", &full_profile())
            .await
            .status(),
        201
    );
    let id = subscribers::find(&app.pool, app.tenant_id, "pat")
        .await
        .unwrap()
        .unwrap();
    let contacts = subscribers::contacts(&app.pool, app.tenant_id, id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(contacts.email.unwrap().as_str(), "pat.doe@example.org");
    assert_eq!(contacts.phone.unwrap().as_str(), "+15005550006");
    assert_eq!(contacts.whatsapp.unwrap().as_str(), "+447700900123");
    assert_eq!(contacts.locale.unwrap().as_str(), "en-US");
    assert_eq!(
        contacts.timezone.map(|tz| tz.name()),
        Some("America/Chicago")
    );
    let tokens: Vec<&str> = contacts.push_tokens.iter().map(|t| t.as_str()).collect();
    assert_eq!(tokens, vec!["fcm-token-1", "fcm:token/2"]);
    // Debug output names no contact point.
    let debug = format!(
        "{:?}",
        subscribers::contacts(&app.pool, app.tenant_id, id)
            .await
            .unwrap()
    );
    assert!(
        !debug.contains("pat.doe") && !debug.contains("fcm-token"),
        "{debug}"
    );

    assert!(
        subscribers::remove_push_token(&app.pool, app.tenant_id, id, "fcm-token-1")
            .await
            .unwrap()
    );
    assert!(
        !subscribers::remove_push_token(&app.pool, app.tenant_id, id, "fcm-token-1")
            .await
            .unwrap()
    );
    let read: Value = get(&app, &app.api_key, "pat").await.json().await.unwrap();
    assert_eq!(read["push_tokens"], json!(["fcm:token/2"]));

    // A subscriber known only by a send has no contact points.
    let bare = subscribers::upsert(&mut app.pool.acquire().await.unwrap(), app.tenant_id, "lee")
        .await
        .unwrap();
    let none = subscribers::contacts(&app.pool, app.tenant_id, bare)
        .await
        .unwrap()
        .unwrap();
    assert!(none.email.is_none() && none.push_tokens.is_empty());
    let read: Value = get(&app, &app.api_key, "lee").await.json().await.unwrap();
    assert_eq!(read["external_id"], "lee");
    assert_eq!(read["data"], json!({}));
    // Storing a profile keeps the subscriber created by the send.
    assert_eq!(
        put(
            &app,
            &app.api_key,
            "lee",
            &json!({"email": "lee@example.org"})
        )
        .await
        .status(),
        200
    );
    assert_eq!(
        subscribers::find(&app.pool, app.tenant_id, "lee")
            .await
            .unwrap(),
        Some(bare)
    );
    assert!(
        subscribers::contacts(&app.pool, app.tenant_id, SubscriberId::new())
            .await
            .unwrap()
            .is_none()
    );
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn preferences_set_by_the_service_are_the_ones_the_user_sees() {
    let app = api_app().await;
    let secret = app.issue_jwt_secret(app.tenant_id).await;
    let token = testkit::jwks::user_token(&secret, app.tenant_id, "pat", &[]);
    let users_me = app.url("/api/v1/users/me/preferences");

    // Unknown subscriber: 404, and not created by asking.
    assert_eq!(get_prefs(&app, &app.api_key, "pat").await.status(), 404);
    assert_eq!(
        put_prefs(&app, &app.api_key, "pat", &json!({}))
            .await
            .status(),
        404
    );
    assert_eq!(count_subscribers(&app, app.tenant_id).await, 0);

    assert_eq!(
        put(&app, &app.api_key, "pat", &json!({})).await.status(),
        201
    );
    assert_eq!(
        get_prefs(&app, &app.api_key, "pat")
            .await
            .json::<Value>()
            .await
            .unwrap(),
        json!({"channels": {}, "categories": {}})
    );
    let prefs = json!({
        "enabled": false,
        "channels": {"email": false},
        "categories": {"marketing": {"enabled": false, "channels": {}}},
        "quiet_hours": {"start": "22:00", "end": "07:00", "timezone": "America/Chicago"},
    });
    let resp = put_prefs(&app, &app.api_key, "pat", &prefs).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.json::<Value>().await.unwrap(), prefs);
    let seen: Value = app
        .client
        .get(&users_me)
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(seen, prefs, "the user sees what the service stored");

    // And the other way round.
    let mine = json!({"channels": {"sms": false}, "categories": {}});
    let resp = app
        .client
        .put(&users_me)
        .bearer_auth(&token)
        .json(&mine)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        get_prefs(&app, &app.api_key, "pat")
            .await
            .json::<Value>()
            .await
            .unwrap(),
        mine
    );

    // Parsed as strictly as the user's own; a refused update changes nothing.
    for (bad, key) in [
        (json!({"enabled": "no"}), "enabled"),
        (json!({"chanels": {}}), "chanels"),
        (json!({"channels": {"fax": true}}), "channels"),
        (
            json!({"quiet_hours": {"start": "7pm", "end": "07:00", "timezone": "UTC"}}),
            "quiet_hours.start",
        ),
        (json!([]), "object"),
    ] {
        let resp = put_prefs(&app, &app.api_key, "pat", &bad).await;
        assert_eq!(resp.status(), 400, "{bad}");
        let problem: Value = resp.json().await.unwrap();
        assert_eq!(problem["invalid_params"][0]["name"], "preferences");
        let reason = problem["invalid_params"][0]["reason"].as_str().unwrap();
        assert!(reason.contains(key), "{bad}: {reason}");
    }
    assert_eq!(
        get_prefs(&app, &app.api_key, "pat")
            .await
            .json::<Value>()
            .await
            .unwrap(),
        mine
    );
    // Storing the profile again leaves preferences alone.
    assert_eq!(
        put(&app, &app.api_key, "pat", &json!({"locale": "fr"}))
            .await
            .status(),
        200
    );
    assert_eq!(
        get_prefs(&app, &app.api_key, "pat")
            .await
            .json::<Value>()
            .await
            .unwrap(),
        mine
    );
    app.shutdown().await;
}

async fn send(app: &TestApp, body: Value) -> String {
    let resp = app.send_email(&body).await;
    assert_eq!(resp.status(), 202, "{body}");
    resp.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_global_opt_out_suppresses_email_but_not_critical_sends() {
    let app = TestApp::builder().spawn().await;
    assert_eq!(
        put(&app, &app.api_key, "pat", &full_profile())
            .await
            .status(),
        201
    );
    assert_eq!(
        put_prefs(&app, &app.api_key, "pat", &json!({"enabled": false}))
            .await
            .status(),
        200
    );
    let routine = send(
        &app,
        json!({"to": "pat.doe@example.org", "subscriber_id": "pat", "subject": "Reminder", "text": "t", "category": "results"}),
    )
    .await;
    let critical = send(
        &app,
        json!({"to": "pat.doe@example.org", "subscriber_id": "pat", "subject": "Critical result", "text": "Call us.", "critical": true}),
    )
    .await;
    let n = app.wait_for_status(&routine, "suppressed", WAIT).await;
    assert_eq!(n["attempts"][0]["outcome"], "suppressed");
    app.wait_for_status(&critical, "sent", WAIT).await;
    let mails = app.smtp.received();
    assert_eq!(mails.len(), 1, "only the critical email");
    assert_eq!(mails[0].parsed().subject(), Some("Critical result"));
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn deleting_a_subscriber_erases_contacts_and_preferences_but_keeps_delivery_records() {
    let mut app = TestApp::builder().without_worker().spawn().await;
    let secret = app.issue_jwt_secret(app.tenant_id).await;
    let token = testkit::jwks::user_token(&secret, app.tenant_id, "pat", &[]);
    assert_eq!(
        put(&app, &app.api_key, "pat", &full_profile())
            .await
            .status(),
        201
    );
    let prefs = json!({"channels": {"sms": false}, "categories": {}});
    assert_eq!(
        put_prefs(&app, &app.api_key, "pat", &prefs).await.status(),
        200
    );
    let old_id = subscribers::find(&app.pool, app.tenant_id, "pat")
        .await
        .unwrap()
        .unwrap();

    // One in-app message reaches the inbox and one email is sent.
    let inapp = send(
        &app,
        json!({"channel": "inapp", "subscriber_id": "pat", "title": "Result ready", "body": "Your result is in."}),
    )
    .await;
    let sent = send(
        &app,
        json!({"to": "pat.doe@example.org", "subscriber_id": "pat", "subject": "Sent before", "text": "t"}),
    )
    .await;
    app.start_worker();
    app.wait_for_status(&inapp, "sent", WAIT).await;
    app.wait_for_status(&sent, "sent", WAIT).await;
    app.stop_worker().await;
    // One email is still queued when the subscriber is deleted.
    let pending = send(
        &app,
        json!({"to": "pat.doe@example.org", "subscriber_id": "pat", "subject": "Never sent", "text": "t"}),
    )
    .await;

    let resp = delete(&app, &app.api_key, "pat").await;
    assert_eq!(resp.status(), 204);
    let request_id = resp.headers()["x-request-id"].to_str().unwrap().to_owned();

    // Contact points and preferences are gone.
    assert_eq!(get(&app, &app.api_key, "pat").await.status(), 404);
    assert_eq!(get_prefs(&app, &app.api_key, "pat").await.status(), 404);
    let left: i64 = sqlx::query_scalar(
        "select (select count(*) from subscribers where id = $1)
              + (select count(*) from subscriber_preferences where subscriber_id = $1)
              + (select count(*) from subscriber_events where subscriber_id = $1)",
    )
    .bind(old_id)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(left, 0);
    let anywhere: i64 = sqlx::query_scalar(
        "select count(*) from subscribers where email is not null or phone is not null",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(anywhere, 0);

    // Delivery records stay, without the subscriber; the pending one is
    // cancelled and the inbox entry has left the inbox with its content.
    let n = app.notification(&sent).await;
    assert_eq!(n["status"], "sent");
    assert_eq!(n["attempts"][0]["outcome"], "sent");
    let n = app.notification(&inapp).await;
    assert_eq!(n["status"], "sent");
    let n = app.notification(&pending).await;
    assert_eq!(n["status"], "failed");
    assert_eq!(n["last_error"], subscribers::DELETED_BEFORE_SENT);
    let (linked, inapp_content): (i64, Value) = sqlx::query_as(
        "select (select count(*) from notifications where subscriber_id is not null),
                (select content from notifications where id = $1::uuid)",
    )
    .bind(&inapp)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(linked, 0);
    assert_eq!(inapp_content, json!({}));

    // The deletion is audited, without the external id or contact points.
    let (actor, resource_id, details, rid): (String, String, Value, String) = sqlx::query_as(
        "select actor, resource_id, details, request_id from audit_log where action = 'subscriber.delete'",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert!(actor.starts_with("api_key:"), "{actor}");
    assert_eq!(resource_id, old_id.to_string());
    assert_eq!(rid, request_id);
    assert_eq!(
        details,
        json!({"notifications_cancelled": 1, "notifications_detached": 3})
    );

    // The external id is free: the user signing in again is a new subscriber
    // with default preferences and an empty inbox.
    let me: Value = app
        .get_with_token("/api/v1/users/me/preferences", &token)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(me, json!({"channels": {}, "categories": {}}));
    let inbox: Value = app
        .get_with_token("/api/v1/users/me/notifications", &token)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(inbox["items"], json!([]));
    let resp = put(&app, &app.api_key, "pat", &json!({"first_name": "New"})).await;
    assert_eq!(resp.status(), 201);
    let new: Value = resp.json().await.unwrap();
    assert_eq!(new["email"], Value::Null);
    let new_id = subscribers::find(&app.pool, app.tenant_id, "pat")
        .await
        .unwrap()
        .unwrap();
    assert_ne!(new_id, old_id);

    // The cancelled email stays unsent once workers run again: a marker
    // email sent after it is delivered, and the email queue drained.
    app.start_worker();
    let marker = app.send_to("marker@example.org").await;
    app.wait_for_status(&marker, "sent", WAIT).await;
    app.wait_queue_empty(shared::jobs::QueueName::Email, WAIT)
        .await;
    assert_eq!(app.notification(&pending).await["status"], "failed");
    let received = app.smtp.received();
    assert_eq!(
        received.len(),
        2,
        "only the email sent before, and the marker"
    );
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn subscriber_routes_need_a_service_key() {
    let app = api_app().await;
    let secret = app.issue_jwt_secret(app.tenant_id).await;
    let admin = testkit::jwks::user_token(&secret, app.tenant_id, "pat", &["ADMIN"]);
    for key in ["", "nk_not-a-key", admin.as_str()] {
        assert_eq!(
            put(&app, key, "pat", &json!({})).await.status(),
            401,
            "{key}"
        );
        assert_eq!(get_prefs(&app, key, "pat").await.status(), 401, "{key}");
        let resp = app
            .post_with_token(
                "/api/v1/services/subscribers/bulk",
                key,
                &json!({"subscribers": [item(1)]}),
            )
            .await;
        assert_eq!(resp.status(), 401, "{key}");
    }
    assert_eq!(count_subscribers(&app, app.tenant_id).await, 0);
    app.shutdown().await;
}
