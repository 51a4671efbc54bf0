//! Provider callbacks that must not move anything: statuses going backwards,
//! another organisation's ids, unknown or malformed providers, WhatsApp's
//! verification challenge, oversized bodies.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn statuses_never_move_backwards() {
    let app = spawn().await;
    let provider = add_provider(&app, &app.api_key, &whatsapp_config()).await;
    let id = notification(&app, app.tenant_id, "whatsapp", "sent", "wamid.X").await;
    let sending = notification(&app, app.tenant_id, "whatsapp", "sending", "wamid.S").await;
    let now = chrono::Utc::now().timestamp();
    let post = |statuses: Value| {
        let body = whatsapp_body(statuses, json!([]));
        let app = &app;
        let provider = provider.clone();
        async move { post_whatsapp_raw(app, &provider, APP_SECRET, &body).await }
    };
    let (_, summary, _) = post(json!([wa_status("wamid.X", "read", now)])).await;
    assert_eq!(summary["applied"], 1);
    // Out of order: delivered after read, then a failure after read.
    let (_, summary, _) = post(json!([
        wa_status("wamid.X", "delivered", now - 60),
        wa_status("wamid.X", "failed", now + 1),
    ]))
    .await;
    assert_eq!(
        (summary["applied"].as_u64(), summary["unchanged"].as_u64()),
        (Some(0), Some(2))
    );
    let n = app.notification(&id).await;
    assert_eq!(n["status"], "read");
    assert!(n["last_error"].is_null());
    // A row the worker has not recorded as sent yet is not moved either.
    let (_, summary, _) = post(json!([wa_status("wamid.S", "delivered", now)])).await;
    assert_eq!(summary["unchanged"], 1);
    assert_eq!(status_of(&app, &sending).await, "sending");
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_organisations_callbacks_never_reach_another_organisations_messages() {
    let app = spawn().await;
    let (other_tenant, other_key) = app.other_tenant().await;
    // Both organisations use Twilio and SendGrid; each config has its own secret.
    let mine = add_provider(&app, &app.api_key, &twilio_config(TWILIO_AUTH_TOKEN)).await;
    let theirs_token = "their-own-auth-token-99";
    let theirs = add_provider(&app, &other_key, &twilio_config(theirs_token)).await;
    let (key, public) = sendgrid_keys();
    let my_sendgrid = add_provider(&app, &app.api_key, &sendgrid_config(&public)).await;
    let sid = "SM000000000000000000000000000000ff";
    let their_sms = notification(&app, other_tenant, "sms", "sent", sid).await;
    let their_email = notification(&app, other_tenant, "email", "sent", "sgTHEIRS").await;

    // My config, my signature, their message id: nothing matches.
    let (status, summary, _) = post_twilio(
        &app,
        &mine,
        TWILIO_AUTH_TOKEN,
        &[("MessageSid", sid), ("MessageStatus", "delivered")],
    )
    .await;
    assert_eq!((status, summary["unmatched"].as_u64()), (200, Some(1)));
    // Their config's URL with my secret: refused.
    let (status, _, _) = post_twilio(
        &app,
        &theirs,
        TWILIO_AUTH_TOKEN,
        &[("MessageSid", sid), ("MessageStatus", "delivered")],
    )
    .await;
    assert_eq!(status, 401);
    // Their notification id as a SendGrid custom argument, or with their
    // tenant id, through my config: nothing matches.
    let events = json!([
        {"timestamp": 1700000010, "event": "delivered", "sg_event_id": "x1", "notification_id": their_email},
        {"timestamp": 1700000010, "event": "bounce", "sg_event_id": "x2", "notification_id": their_email, "tenant_id": other_tenant.to_string()},
        {"timestamp": 1700000010, "event": "open", "sg_event_id": "x3", "sg_message_id": "sgTHEIRS.filter1"},
    ]);
    let (status, summary, _) = post_sendgrid(&app, &my_sendgrid, &key, &events).await;
    assert_eq!(status, 200);
    assert_eq!(summary["applied"], 0);
    assert_eq!(status_of(&app, &their_sms).await, "sent");
    assert_eq!(status_of(&app, &their_email).await, "sent");
    assert_eq!(event_count(&app).await, 0);

    // Their own config moves their own message.
    let (status, summary, _) = post_twilio(
        &app,
        &theirs,
        theirs_token,
        &[("MessageSid", sid), ("MessageStatus", "delivered")],
    )
    .await;
    assert_eq!((status, summary["applied"].as_u64()), (200, Some(1)));
    assert_eq!(status_of(&app, &their_sms).await, "delivered");
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn unknown_malformed_or_other_kind_provider_ids_answer_404() {
    let app = spawn().await;
    let twilio = add_provider(&app, &app.api_key, &twilio_config(TWILIO_AUTH_TOKEN)).await;
    let whatsapp = add_provider(&app, &app.api_key, &whatsapp_config()).await;
    for path in [
        format!("/webhooks/sendgrid/{twilio}"),
        format!("/webhooks/whatsapp/{twilio}"),
        format!("/webhooks/twilio/{whatsapp}"),
        format!("/webhooks/twilio/{}", Uuid::now_v7()),
        "/webhooks/twilio/not-a-uuid".to_owned(),
    ] {
        let resp = app
            .client
            .post(app.url(&path))
            .header("content-type", "application/json")
            .body("[]")
            .send()
            .await
            .unwrap();
        let (status, problem, text) = answer(resp).await;
        assert_eq!(status, 404, "{path}: {text}");
        assert_eq!(problem["type"], "/problems/not-found");
    }
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn whatsapp_verification_echoes_the_challenge_only_for_the_right_token() {
    let app = spawn().await;
    let provider = add_provider(&app, &app.api_key, &whatsapp_config()).await;
    let twilio = add_provider(&app, &app.api_key, &twilio_config(TWILIO_AUTH_TOKEN)).await;
    let get = |id: String, query: Vec<(&'static str, &'static str)>| {
        let app = &app;
        async move {
            let resp = app
                .client
                .get(app.url(&format!("/webhooks/whatsapp/{id}")))
                .query(&query)
                .send()
                .await
                .unwrap();
            let status = resp.status().as_u16();
            (status, resp.text().await.unwrap())
        }
    };
    let (status, text) = get(
        provider.clone(),
        vec![
            ("hub.mode", "subscribe"),
            ("hub.verify_token", VERIFY_TOKEN),
            ("hub.challenge", "1158201444"),
        ],
    )
    .await;
    assert_eq!((status, text.as_str()), (200, "1158201444"));
    for query in [
        vec![
            ("hub.mode", "subscribe"),
            ("hub.verify_token", "wrong-token"),
            ("hub.challenge", "1158201444"),
        ],
        vec![
            ("hub.mode", "unsubscribe"),
            ("hub.verify_token", VERIFY_TOKEN),
            ("hub.challenge", "1158201444"),
        ],
        vec![("hub.challenge", "1158201444")],
    ] {
        let (status, text) = get(provider.clone(), query).await;
        assert_eq!(status, 403, "{text}");
        assert!(!text.contains("1158201444"));
    }
    let good = vec![
        ("hub.mode", "subscribe"),
        ("hub.verify_token", VERIFY_TOKEN),
        ("hub.challenge", "1158201444"),
    ];
    assert_eq!(get(twilio, good.clone()).await.0, 404);
    assert_eq!(get("nope".into(), good.clone()).await.0, 404);
    assert_eq!(get(Uuid::now_v7().to_string(), good).await.0, 404);
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn oversized_and_malformed_callbacks_are_refused_and_change_nothing() {
    let app = TestApp::builder()
        .without_worker()
        .without_scheduler()
        .var("MAX_BODY_BYTES", 8192)
        .spawn()
        .await;
    let (key, public) = sendgrid_keys();
    let sendgrid = add_provider(&app, &app.api_key, &sendgrid_config(&public)).await;
    let twilio = add_provider(&app, &app.api_key, &twilio_config(TWILIO_AUTH_TOKEN)).await;
    let whatsapp = add_provider(&app, &app.api_key, &whatsapp_config()).await;
    let id = notification(&app, app.tenant_id, "email", "sent", "sgmsgA").await;
    let now = chrono::Utc::now().timestamp();

    // Over the body limit, signed or not.
    let mut big =
        json!([{"event": "delivered", "sg_event_id": "e", "sg_message_id": "sgmsgA.filter1"}]);
    big[0]["padding"] = json!("x".repeat(9000));
    let big = big.to_string();
    let (status, problem, _) = post_sendgrid_at(&app, &sendgrid, &key, now, big.as_bytes()).await;
    assert_eq!(status, 413);
    assert_eq!(problem["type"], "/problems/payload-too-large");
    let (status, _, _) = post_whatsapp_raw(&app, &whatsapp, APP_SECRET, &vec![b' '; 9000]).await;
    assert_eq!(status, 413);

    // Correctly signed, but not what the provider sends.
    for body in [
        &b"not json"[..],
        b"{\"event\": \"delivered\"}",
        b"[1, 2]",
        b"[{\"sg_message_id\": \"sgmsgA\"}]",
    ] {
        let (status, problem, text) = post_sendgrid_at(&app, &sendgrid, &key, now, body).await;
        assert_eq!(status, 400, "{text}");
        assert_eq!(problem["invalid_params"][0]["name"], "body");
    }
    for body in [
        &b"[]"[..],
        b"{\"entry\": 1}",
        b"{\"entry\": [{\"changes\": [{\"value\": {\"metadata\": {\"phone_number_id\": \"1234567890\"}, \"statuses\": [{\"status\": \"read\"}]}}]}]}",
    ] {
        let (status, _, text) = post_whatsapp_raw(&app, &whatsapp, APP_SECRET, body).await;
        assert_eq!(status, 400, "{text}");
    }
    for params in [
        vec![("MessageStatus", "delivered")],
        vec![("MessageSid", "SM 1"), ("MessageStatus", "delivered")],
    ] {
        let (status, _, text) = post_twilio(&app, &twilio, TWILIO_AUTH_TOKEN, &params).await;
        assert_eq!(status, 400, "{text}");
    }
    assert_eq!(status_of(&app, &id).await, "sent");
    assert_eq!(event_count(&app).await, 0);
    app.shutdown().await;
}
