//! Sends addressed to a topic and system broadcasts: every member reached
//! once, bad or foreign topics refused.

use super::*;
use crate::http::org_support::with;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_topic_send_reaches_every_member_once_with_their_preferences() {
    let app = app().await;
    let key = app.api_key.clone();
    // 1,500 members over two chunks, and subscribers outside the topic.
    subscribers(&app, &key, "m", 0, 1_510).await;
    create_topic(&app, &key, "programme").await;
    add(&app, &key, "programme", names("m", 0, 1_000)).await;
    add(&app, &key, "programme", names("m", 1_000, 1_500)).await;
    // One member opted out of the template's category.
    let prefs = json!({"categories": {"results": {"enabled": false}}});
    let path = "/api/v1/services/subscribers/m-7/preferences";
    expect(call(&app, &key, Method::PUT, path, Some(prefs)).await, 200).await;

    let body = json!({"topic": "programme", "template": "care.update", "metadata": {"campaign": "spring"}});
    let send = |body: Value| {
        let app = &app;
        async move {
            with(
                app,
                Method::POST,
                &format!("{SEND}/send-topic"),
                &app.api_key,
            )
            .header("Idempotency-Key", "programme-spring")
            .json(&body)
            .send()
            .await
            .unwrap()
        }
    };
    let resp = send(body.clone()).await;
    let location = resp.headers()["location"].to_str().unwrap().to_owned();
    let accepted = expect(resp, 202).await;
    assert_eq!(accepted["audience"], "topic:programme");
    assert_eq!(accepted["recipients"], 1_500);
    assert_eq!(accepted["status"], "closed");
    assert_eq!(accepted["status_url"], location);

    // Retried with the same key: the same batch, nothing more.
    let resp = send(body.clone()).await;
    assert_eq!(resp.headers()["idempotent-replayed"], "true");
    let again = expect(resp, 202).await;
    assert_eq!(again["batch_id"], accepted["batch_id"]);
    // The same key with another body is refused.
    let other = json!({"topic": "programme", "template": "care.update"});
    expect(send(other).await, 422).await;

    let done = wait_completed(&app, &location).await;
    assert_eq!(done["recipients"], 1_500);
    assert_eq!(done["notifications"], 1_500, "{done}");
    assert_eq!(done["counts"]["sent"], 1_499, "{done}");
    assert_eq!(done["counts"]["suppressed"], 1, "{done}");

    let batch_id = accepted["batch_id"].as_str().unwrap();
    let rows: Vec<(String, String, i64)> = sqlx::query_as(
        "select recipient, status, count(*) from notifications
         where batch_id = $1::uuid group by recipient, status",
    )
    .bind(batch_id)
    .fetch_all(&app.pool)
    .await
    .unwrap();
    assert_eq!(rows.len(), 1_500);
    assert!(
        rows.iter().all(|(_, _, n)| *n == 1),
        "each member exactly once"
    );
    let mut reached: Vec<&str> = rows.iter().map(|(r, _, _)| r.as_str()).collect();
    reached.sort();
    let mut members = names("m", 0, 1_500);
    members.sort();
    assert_eq!(
        reached,
        members.iter().map(String::as_str).collect::<Vec<_>>()
    );
    let suppressed: Vec<&str> = rows
        .iter()
        .filter(|(_, s, _)| s == "suppressed")
        .map(|(r, _, _)| r.as_str())
        .collect();
    assert_eq!(suppressed, ["m-7"]);
    let inbox: i64 = sqlx::query_scalar(
        "select count(*) from notifications n join subscribers s on s.id = n.subscriber_id
         where n.batch_id = $1::uuid and n.status = 'sent' and s.external_id = n.recipient
           and n.metadata = '{\"campaign\": \"spring\"}'::jsonb",
    )
    .bind(batch_id)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(
        inbox, 1_499,
        "in the members' own inboxes, with the metadata"
    );

    // The whole organisation: every subscriber, members or not.
    let resp = call(
        &app,
        &key,
        Method::POST,
        &format!("{SEND}/send-organization"),
        Some(json!({"template": "care.update", "channels": ["inapp"]})),
    )
    .await;
    let accepted = expect(resp, 202).await;
    assert_eq!(accepted["audience"], "organization");
    assert_eq!(accepted["recipients"], 1_510);
    let done = wait_completed(&app, accepted["status_url"].as_str().unwrap()).await;
    assert_eq!(done["notifications"], 1_510, "{done}");
    assert_eq!(done["counts"]["sent"], 1_509, "{done}");
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_or_foreign_topic_sends_answer_400_or_404() {
    let app = TestApp::spawn_api_only().await;
    let resp = call(
        &app,
        &app.api_key,
        Method::POST,
        "/api/v1/admin/templates",
        Some(template()),
    )
    .await;
    assert_eq!(resp.status(), 201);
    let key = app.api_key.clone();
    create_topic(&app, &key, "ward").await;
    let (_, other) = app.other_tenant().await;
    create_topic(&app, &other, "theirs").await;
    let url = format!("{SEND}/send-topic");
    for topic in ["theirs", "nope"] {
        let body = json!({"topic": topic, "template": "care.update"});
        expect(call(&app, &key, Method::POST, &url, Some(body)).await, 404).await;
    }
    for (body, field) in [
        (
            json!({"topic": "Ward!", "template": "care.update"}),
            "topic",
        ),
        (json!({"topic": "ward", "template": "nope"}), "template"),
        (
            json!({"topic": "ward", "template": "care.update", "channels": ["push"]}),
            "channels[0]",
        ),
        (
            json!({"topic": "ward", "template": "care.update", "channels": ["inapp", "inapp"]}),
            "channels[1]",
        ),
        (
            json!({"topic": "ward", "template": "care.update", "channels": []}),
            "channels",
        ),
        (
            json!({"topic": "ward", "template": "care.update", "defaults": [1]}),
            "defaults",
        ),
        (
            json!({"topic": "ward", "template": "care.update", "locale": "en_US!"}),
            "locale",
        ),
        (
            json!({"topic": "ward", "template": "care.update", "recipients": []}),
            "recipients|body",
        ),
        (json!({"template": "care.update"}), "topic|body"),
    ] {
        let names = invalid(call(&app, &key, Method::POST, &url, Some(body)).await).await;
        assert!(
            names.iter().any(|n| field.split('|').any(|f| n == f)),
            "{field}: {names:?}"
        );
    }
    let resp = with(&app, Method::POST, &url, &key)
        .header("Idempotency-Key", "k".repeat(256))
        .json(&json!({"topic": "ward", "template": "care.update"}))
        .send()
        .await
        .unwrap();
    expect(resp, 400).await;
    // An empty topic is accepted and its batch has nothing to do.
    let body = json!({"topic": "ward", "template": "care.update"});
    let accepted = expect(call(&app, &key, Method::POST, &url, Some(body)).await, 202).await;
    assert_eq!(accepted["recipients"], 0);
    let b = batch(&app, accepted["status_url"].as_str().unwrap()).await;
    assert_eq!(b["status"], "completed");
    // Another organisation cannot read the batch.
    let path = accepted["status_url"].as_str().unwrap();
    expect(call(&app, &other, Method::GET, path, None).await, 404).await;
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_broadcast_reaches_the_subscribers_of_the_organisations_named() {
    let app = TestApp::builder().spawn().await;
    let admin = platform_admin(&app).await;
    let (second, second_key) = app.other_tenant().await;
    let (third, third_key) = app.other_tenant().await;
    subscribers(&app, &app.api_key, "a", 0, 3).await;
    subscribers(&app, &second_key, "b", 0, 2).await;
    subscribers(&app, &third_key, "c", 0, 4).await;

    // The live alert, as every API instance hears it.
    let client = redis::Client::open(testkit::redis_url()).unwrap();
    let mut pubsub = client.get_async_pubsub().await.unwrap();
    pubsub
        .psubscribe(shared::events::channel_pattern(&app.redis_prefix))
        .await
        .unwrap();

    let url = "/api/v1/admin/broadcasts";
    let body = json!({"title": "Maintenance tonight", "body": "The portal is down 01:00-02:00 UTC.",
                      "severity": "warning", "email": true,
                      "organizations": [app.tenant_id.to_string(), second.to_string()]});
    // Not a platform admin: refused.
    expect(
        call(&app, &app.api_key, Method::POST, url, Some(body.clone())).await,
        403,
    )
    .await;
    let resp = with(&app, Method::POST, url, &admin.token)
        .header("Idempotency-Key", "maintenance-1")
        .json(&body)
        .send()
        .await
        .unwrap();
    let sent = expect(resp, 202).await;
    assert_eq!(sent["inapp"], 5);
    assert_eq!(sent["email"], 5);
    let id = sent["id"].as_str().unwrap().to_owned();
    let resp = with(&app, Method::POST, url, &admin.token)
        .header("Idempotency-Key", "maintenance-1")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["idempotent-replayed"], "true");
    assert_eq!(expect(resp, 202).await["id"], id.as_str());

    let mut alerted = Vec::new();
    let mut messages = pubsub.on_message();
    while alerted.len() < 2 {
        let msg = tokio::time::timeout(WAIT, messages.next())
            .await
            .unwrap()
            .unwrap();
        let event: Value = serde_json::from_str(&msg.get_payload::<String>().unwrap()).unwrap();
        if event["type"] == "system.alert" {
            assert_eq!(event["topic"], "org");
            assert_eq!(event["data"]["broadcast_id"], id.as_str());
            assert_eq!(event["data"]["title"], "Maintenance tonight");
            alerted.push(event["tenant_id"].as_str().unwrap().to_owned());
        }
    }
    alerted.sort();
    let mut expected = vec![app.tenant_id.to_string(), second.to_string()];
    expected.sort();
    assert_eq!(alerted, expected);

    let path = format!("{url}/{id}");
    let done = testkit::eventually("the broadcast to be delivered", WAIT, || async {
        let b = expect(
            with(&app, Method::GET, &path, &admin.token)
                .send()
                .await
                .unwrap(),
            200,
        )
        .await;
        (b["counts"]["inapp"]["sent"] == 5 && b["counts"]["email"]["sent"] == 5).then_some(b)
    })
    .await;
    assert_eq!(
        done["counts"]["inapp"].as_object().unwrap().len(),
        1,
        "{done}"
    );
    let inboxes: Vec<(String, String)> = sqlx::query_as(
        "select s.external_id, n.content->>'title' from notifications n
         join subscribers s on s.id = n.subscriber_id
         where n.broadcast_id = $1::uuid and n.channel = 'inapp' and n.status = 'sent'
         order by 1",
    )
    .bind(&id)
    .fetch_all(&app.pool)
    .await
    .unwrap();
    let who: Vec<&str> = inboxes.iter().map(|(s, _)| s.as_str()).collect();
    assert_eq!(who, ["a-0", "a-1", "a-2", "b-0", "b-1"]);
    assert!(inboxes.iter().all(|(_, t)| t == "Maintenance tonight"));
    let third_reached: i64 = sqlx::query_scalar(
        "select count(*) from notifications where broadcast_id = $1::uuid and tenant_id = $2",
    )
    .bind(&id)
    .bind(third)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(third_reached, 0, "an organisation not named is not reached");
    let mailed = app.smtp.received().len();
    assert_eq!(mailed, 5);
    let audited: i64 = sqlx::query_scalar(
        "select count(*) from audit_log where action = 'broadcast.send' and resource_id = $1 and result = 'success'",
    )
    .bind(&id)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(audited, 1);
    let refused: i64 = sqlx::query_scalar(
        "select count(*) from audit_log where action = 'broadcast.send' and result = 'failure'",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(refused, 1);

    // Bad input: precise fields.
    for (body, field) in [
        (json!({"title": "", "body": "x"}), "title"),
        (
            json!({"title": "t", "body": "x", "severity": "loud"}),
            "severity",
        ),
        (
            json!({"title": "t", "body": "x", "organizations": []}),
            "organizations",
        ),
        (
            json!({"title": "t", "body": "x", "organizations": ["nope"]}),
            "organizations[0]",
        ),
        (
            json!({"title": "t", "body": "x", "organizations": [third.to_string(), third.to_string()]}),
            "organizations[1]",
        ),
        (
            json!({"title": "t", "body": "x", "organizations": [uuid::Uuid::now_v7().to_string()]}),
            "organizations[0]",
        ),
        (
            json!({"title": "t", "body": "x", "email_subject": "s"}),
            "email_subject",
        ),
        (
            json!({"title": "t", "body": "x", "action_url": "javascript:alert(1)"}),
            "action_url",
        ),
        // In-app links follow the one rule of sends and templates.
        (
            json!({"title": "t", "body": "x", "action_url": "https://"}),
            "action_url",
        ),
        (
            json!({"title": "t", "body": "x", "action_url": "//evil.example/x"}),
            "action_url",
        ),
    ] {
        let resp = with(&app, Method::POST, url, &admin.token)
            .json(&body)
            .send()
            .await
            .unwrap();
        let names = invalid(resp).await;
        assert!(names.iter().any(|n| n == field), "{field}: {names:?}");
    }
    expect(
        with(&app, Method::GET, &format!("{url}/nope"), &admin.token)
            .send()
            .await
            .unwrap(),
        404,
    )
    .await;
    expect(
        call(&app, &app.api_key, Method::GET, &path, None).await,
        403,
    )
    .await;
    app.shutdown().await;
}
