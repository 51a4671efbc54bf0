//! Batch input at its edges: malformed batches and chunks, idempotency keys,
//! and in-app rows placed as their chunk expands.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn malformed_batches_and_chunks_answer_precise_problems() {
    let app = app_with(false, false).await;
    let key = app.api_key.clone();
    let names = invalid(
        post(
            &app,
            &key,
            "/send-batch",
            &json!({"template": "lab.ready", "colour": "red"}),
        )
        .await,
    )
    .await;
    assert_eq!(names, ["colour"]);
    let names = invalid(post(&app, &key, "/send-batch", &json!({"template": "nope"})).await).await;
    assert_eq!(names, ["template"]);
    let names = invalid(
        post(
            &app,
            &key,
            "/send-batch",
            &json!({"template": "lab.ready", "channels": ["push", "fax", "inapp", "inapp"]}),
        )
        .await,
    )
    .await;
    assert_eq!(names, ["channels[0]", "channels[1]", "channels[3]"]);
    let names = invalid(
        post(
            &app,
            &key,
            "/send-batch",
            &json!({"template": "lab.ready", "defaults": [1]}),
        )
        .await,
    )
    .await;
    assert_eq!(names, ["defaults"]);
    let names = invalid(
        post(
            &app,
            &key,
            "/send-batch",
            &json!({"template": "lab.ready", "channels": ["email", "inapp"], "recipients": [
                {"subscriber_id": "a", "email": "a@example.org"},
                {"subscriber_id": "b", "email": "not an email"},
                {"email": "c@example.org", "data": "x"},
                {"subscriber_id": "d\nx", "email": "d@example.org", "phone": "12"}
            ]}),
        )
        .await,
    )
    .await;
    assert_eq!(
        names,
        [
            "recipients[1].email",
            "recipients[2].data",
            "recipients[2].subscriber_id",
            "recipients[3].subscriber_id",
            "recipients[3].phone"
        ]
    );
    let resp = app
        .client
        .post(app.url(&format!("{BASE}/send-batch")))
        .bearer_auth(&key)
        .header("content-type", "application/json")
        .body("{\"template\": ")
        .send()
        .await
        .unwrap();
    assert_eq!(invalid(resp).await, ["body"]);
    let resp = app
        .client
        .post(app.url(&format!("{BASE}/send-batch")))
        .bearer_auth(&key)
        .header("idempotency-key", "has space")
        .json(&json!({"template": "lab.ready"}))
        .send()
        .await
        .unwrap();
    problem(resp, 400).await;
    assert_eq!(
        sqlx::query_scalar::<_, i64>("select count(*) from batches")
            .fetch_one(&app.pool)
            .await
            .unwrap(),
        0,
        "nothing invalid was stored"
    );

    let id = create(&app, &json!({"template": "lab.ready"})).await;
    let names = invalid(chunk(&app, &id, 0, vec![]).await).await;
    assert_eq!(names, ["recipients"]);
    let names = invalid(chunk(&app, &id, 0, people(0, 1001)).await).await;
    assert_eq!(names, ["recipients"]);
    let names = invalid(chunk(&app, &id, -1, people(0, 1)).await).await;
    assert_eq!(names, ["seq"]);
    let names = invalid(chunk(&app, &id, 0, vec![json!({"email": "a@example.org"})]).await).await;
    assert_eq!(names, ["recipients[0].subscriber_id"]);
    let names = invalid(
        post(
            &app,
            &key,
            "/send-chunk",
            &json!({"batch_id": id, "seq": "one", "recipients": people(0, 1)}),
        )
        .await,
    )
    .await;
    assert_eq!(names, ["seq"]);
    // Data over its limit.
    let big = "x".repeat(17 * 1024);
    let names = invalid(
        chunk(
            &app,
            &id,
            0,
            vec![json!({"subscriber_id": "a", "data": {"note": big}})],
        )
        .await,
    )
    .await;
    assert_eq!(names, ["recipients[0].data"]);
    // A body over the configured limit.
    let huge: Vec<Value> = (0..1000)
        .map(|i| json!({"subscriber_id": format!("patient-{i}"), "data": {"pad": "y".repeat(300)}}))
        .collect();
    problem(chunk(&app, &id, 0, huge).await, 413).await;
    let b = batch(&app, &id).await;
    assert_eq!(b["chunks"], 0, "no invalid chunk was stored");
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn send_batch_honours_the_idempotency_key() {
    let app = app_with(false, false).await;
    let body = json!({"template": "lab.ready", "recipients": people(0, 3)});
    let send = |body: Value| {
        let app = &app;
        async move {
            app.client
                .post(app.url(&format!("{BASE}/send-batch")))
                .bearer_auth(&app.api_key)
                .header("idempotency-key", "batch-2026-11-21")
                .json(&body)
                .send()
                .await
                .unwrap()
        }
    };
    let first = send(body.clone()).await;
    assert_eq!(first.status(), 202);
    let first: Value = first.json().await.unwrap();
    let again = send(body.clone()).await;
    assert_eq!(again.status(), 202);
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    let again: Value = again.json().await.unwrap();
    assert_eq!(again["batch_id"], first["batch_id"]);
    assert_eq!(again["chunk"], first["chunk"]);
    problem(
        send(json!({"template": "lab.ready", "recipients": people(0, 4)})).await,
        422,
    )
    .await;
    let batches: i64 = sqlx::query_scalar("select count(*) from batches")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    let chunks: i64 = sqlx::query_scalar("select count(*) from batch_chunks")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!((batches, chunks), (1, 1));
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn inapp_rows_are_placed_as_their_chunk_expands_and_stored_preferences_still_rule() {
    // No dispatcher: only what the chunk's own statement places is sent.
    let mut app = app_with(true, false).await;
    let subscriber = |rest: &str| app.url(&format!("/api/v1/services/subscribers/patient-1{rest}"));
    let resp = app
        .client
        .put(subscriber(""))
        .bearer_auth(&app.api_key)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    let resp = app
        .client
        .put(subscriber("/preferences"))
        .bearer_auth(&app.api_key)
        .json(&json!({"categories": {"results": {"enabled": false, "channels": {}}}}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);

    let id = create(
        &app,
        &json!({"template": "lab.ready", "recipients": people(0, 3)}),
    )
    .await;
    let expanded = wait_batch(&app, &id, "the chunk to expand", |b| {
        b["chunks_pending"] == 0
    })
    .await;
    // patient-0 and patient-2 are in their inboxes; patient-1's stored
    // preferences must be consulted, so theirs waits for the queue.
    assert_eq!(expanded["counts"]["sent"], 2);
    assert_eq!(expanded["counts"]["queued"], 1);
    let secret = app.issue_jwt_secret(app.tenant_id).await;
    let inbox: Value = app
        .get_with_token(
            "/api/v1/users/me/notifications",
            testkit::jwks::user_token(&secret, app.tenant_id, "patient-2", &[]),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(inbox["items"][0]["title"], "Results for P2");
    // Written once: no attempt rows; the real-time events are kept for
    // catch-up, numbered from 1.
    let attempts: i64 = sqlx::query_scalar(
        "select count(*) from delivery_attempts a join notifications n on n.id = a.notification_id
         where n.batch_id = $1::uuid",
    )
    .bind(&id)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(attempts, 0);
    // Kept as one row for the placement, which a replay unfolds into a
    // `notification.created` and the unread count after it.
    let stored: Vec<(i64, Option<i64>, String)> = sqlx::query_as(
        "select e.seq, e.last_seq, e.kind from subscriber_events e
         join subscribers s on s.id = e.subscriber_id
         where s.external_id = 'patient-0' order by e.seq",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap();
    assert_eq!(stored, vec![(1, Some(2), "inbox.placed".to_owned())]);
    let patient: shared::domain::SubscriberId =
        sqlx::query_scalar("select id from subscribers where external_id = 'patient-0'")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    let replay = shared::db::events::since(&app.pool, app.tenant_id, patient, 0, 100)
        .await
        .unwrap();
    let kinds: Vec<(i64, &str)> = replay.iter().map(|e| (e.seq, e.kind.as_str())).collect();
    assert_eq!(
        kinds,
        vec![(1, "notification.created"), (2, "unread_count.changed")]
    );
    assert_eq!(replay[0].payload["title"], "Results for P0");
    assert_eq!(replay[0].payload["read"], false);
    assert_eq!(replay[1].payload["unread"], 1);

    // The dispatcher hands patient-1's to the in-app worker, which honours
    // the opt-out.
    app.start_scheduler();
    let done = wait_batch(&app, &id, "the held row to be decided", |b| {
        b["counts"]["suppressed"] == 1
    })
    .await;
    assert_eq!(done["counts"]["sent"], 2);
    assert_eq!(sum_counts(&done), 3);
    app.shutdown().await;
}

/// The events a reconnecting client of `external` is replayed after `since`.
async fn replayed(app: &TestApp, external: &str, since: i64) -> Vec<(i64, String, Value)> {
    let subscriber: shared::domain::SubscriberId =
        sqlx::query_scalar("select id from subscribers where external_id = $1")
            .bind(external)
            .fetch_one(&app.pool)
            .await
            .unwrap();
    shared::db::events::since(&app.pool, app.tenant_id, subscriber, since, 100)
        .await
        .unwrap()
        .into_iter()
        .map(|e| (e.seq, e.kind, e.payload.0))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_placement_is_replayed_event_by_event_for_new_and_known_subscribers() {
    // No dispatcher: only what the chunk's own statement places is sent.
    let app = app_with(true, false).await;
    // patient-1 exists already and has one entry (events 1 and 2);
    // patient-0 is created by the chunk.
    let first = create(
        &app,
        &json!({"template": "lab.ready", "recipients": people(1, 1)}),
    )
    .await;
    wait_batch(&app, &first, "the first batch", |b| {
        b["counts"]["sent"] == 1
    })
    .await;
    let mut recipients = people(0, 2);
    recipients.extend(people(0, 2));
    recipients.push(json!({"subscriber_id": "patient-0", "data": {"name": "Third"}}));
    let id = create(
        &app,
        &json!({"template": "lab.ready", "recipients": recipients}),
    )
    .await;
    wait_batch(&app, &id, "the chunk to be placed", |b| {
        b["counts"]["sent"] == 5
    })
    .await;

    let new = replayed(&app, "patient-0", 0).await;
    let kinds: Vec<(i64, &str)> = new.iter().map(|(n, k, _)| (*n, k.as_str())).collect();
    assert_eq!(
        kinds,
        vec![
            (1, "notification.created"),
            (2, "notification.created"),
            (3, "notification.created"),
            (4, "unread_count.changed"),
        ]
    );
    // Entries placed in one statement share their time and follow each
    // other by id.
    let mut titles: Vec<&str> = new[..3]
        .iter()
        .map(|(_, _, p)| p["title"].as_str().unwrap())
        .collect();
    titles.sort_unstable();
    assert_eq!(
        titles,
        ["Results for P0", "Results for P0", "Results for Third"]
    );
    assert!(new[..3].iter().all(|(_, _, p)| p["read"] == false));
    assert_eq!(new[3].2, json!({"unread": 3}));
    // From the middle of the placement: only what came after.
    let later = replayed(&app, "patient-0", 2).await;
    assert_eq!(later, new[2..].to_vec());

    let known = replayed(&app, "patient-1", 0).await;
    let kinds: Vec<(i64, &str)> = known.iter().map(|(n, k, _)| (*n, k.as_str())).collect();
    assert_eq!(
        kinds,
        vec![
            (1, "notification.created"),
            (2, "unread_count.changed"),
            (3, "notification.created"),
            (4, "notification.created"),
            (5, "unread_count.changed"),
        ]
    );
    assert_eq!(known[4].2, json!({"unread": 3}));
    // The subscribers' last numbers match what was replayed: the next
    // event continues from them.
    let seqs: Vec<(String, i64)> =
        sqlx::query_as("select external_id, event_seq from subscribers order by external_id")
            .fetch_all(&app.pool)
            .await
            .unwrap();
    assert_eq!(seqs, vec![("patient-0".into(), 4), ("patient-1".into(), 5)]);
    // An entry deleted since is still replayed as it was announced.
    let gone = &new[1].2["id"];
    sqlx::query("update notifications set deleted_at = now() where id = $1::uuid")
        .bind(gone.as_str().unwrap())
        .execute(&app.pool)
        .await
        .unwrap();
    let after = replayed(&app, "patient-0", 0).await;
    assert_eq!(after, new);
    app.shutdown().await;
}
