//! Caches cleared on every api instance, and provider state the workers
//! share.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn clearing_a_cache_makes_the_next_request_read_postgres() {
    let app = TestApp::builder()
        .var("API_KEY_CACHE_SECS", 3600)
        .without_worker()
        .without_scheduler()
        .spawn()
        .await;
    let admin = platform_admin(&app).await;
    let (other_tenant, other_key) = app.other_tenant().await;
    let ours = app.api_key.clone();
    assert_eq!(probe(&app, &ours).await, 404);
    assert_eq!(probe(&app, &other_key).await, 404);
    let body = expect(get(&app, "/api/v1/ops/caches", &admin.token).await, 200).await;
    let keys = cache(&body, "api_keys");
    assert_eq!(keys["entries"], 2, "{body}");
    assert_eq!(keys["staleness_secs"], 3600);
    assert!(keys["misses"].as_u64().unwrap() >= 2);
    assert!(cache(&body, "templates")["entries"].is_u64());

    // Keys revoked behind the cache's back still work from the cache...
    revoke_keys(&app).await;
    assert_eq!(probe(&app, &ours).await, 404);
    assert_eq!(probe(&app, &other_key).await, 404);

    // ...until one organisation's entries are invalidated: its key is read
    // from Postgres again (and refused); the other's still comes from the
    // cache.
    let misses = keys["misses"].as_u64().unwrap();
    let after = expect(
        post(
            &app,
            "/api/v1/ops/caches/api_keys/invalidate",
            &admin.token,
            Some(json!({"tag": other_tenant.to_string()})),
        )
        .await,
        200,
    )
    .await;
    assert_eq!(after["name"], "api_keys");
    assert_eq!(after["entries"], 1, "{after}");
    assert_eq!(probe(&app, &other_key).await, 401);
    assert_eq!(probe(&app, &ours).await, 404);

    let cleared = expect(
        post(
            &app,
            "/api/v1/ops/caches/api_keys/clear",
            &admin.token,
            None,
        )
        .await,
        200,
    )
    .await;
    assert_eq!(cleared["entries"], 0);
    assert_eq!(probe(&app, &ours).await, 401, "read from Postgres: revoked");
    let body = expect(get(&app, "/api/v1/ops/caches", &admin.token).await, 200).await;
    assert!(cache(&body, "api_keys")["misses"].as_u64().unwrap() > misses);
    assert_eq!(audit_rows(&app, "cache.invalidate", "success").await, 1);
    assert_eq!(audit_rows(&app, "cache.clear", "success").await, 1);

    // Bad input.
    for (path, body, status) in [
        ("/api/v1/ops/caches/nope/clear", None, 404),
        (
            "/api/v1/ops/caches/templates/invalidate",
            Some(json!({"tag": "not-an-organisation"})),
            400,
        ),
        (
            "/api/v1/ops/caches/templates/invalidate",
            Some(json!({"tag": other_tenant.to_string(), "extra": 1})),
            400,
        ),
        (
            "/api/v1/ops/caches/templates/invalidate",
            Some(json!({})),
            400,
        ),
        ("/api/v1/ops/caches/templates/invalidate", None, 415),
    ] {
        let resp = post(&app, path, &admin.token, body.clone()).await;
        assert_eq!(resp.status(), status, "{path} {body:?}");
        assert!(
            resp.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("application/problem+json")
        );
    }
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cache_commands_reach_every_api_instance() {
    let app = TestApp::builder()
        .var("API_KEY_CACHE_SECS", 3600)
        .without_worker()
        .without_scheduler()
        .spawn()
        .await;
    // A second API instance on the same database and Redis.
    let second = api::Application::build(&app.settings).await.unwrap();
    let second_url = format!("http://{}", second.addr());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(second.run_until(
        async {
            let _ = stopped.await;
        },
        Duration::from_secs(5),
    ));
    let on_second = |key: &str| {
        app.client
            .get(format!(
                "{second_url}/api/v1/services/notifications/{}",
                uuid::Uuid::new_v4()
            ))
            .bearer_auth(key.to_owned())
            .send()
    };
    let key = app.api_key.clone();
    assert_eq!(on_second(&key).await.unwrap().status(), 404);
    revoke_keys(&app).await;
    assert_eq!(on_second(&key).await.unwrap().status(), 404, "cached there");

    let admin = platform_admin(&app).await;
    // The second instance follows the command channel before it is told.
    testkit::eventually("both instances to report", WAIT, || async {
        let body = expect(get(&app, "/api/v1/ops/caches", &admin.token).await, 200).await;
        (cache(&body, "api_keys")["instances"] == 2).then_some(())
    })
    .await;
    expect(
        post(
            &app,
            "/api/v1/ops/caches/api_keys/clear",
            &admin.token,
            None,
        )
        .await,
        200,
    )
    .await;
    testkit::eventually("the other instance to clear its cache", WAIT, || async {
        (on_second(&key).await.unwrap().status() == 401).then_some(())
    })
    .await;
    let _ = stop.send(());
    serving.await.unwrap().unwrap();
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn providers_show_the_state_workers_share_and_the_scheduler_sets_the_fleet_gauges() {
    let fake = FakeProviders::start().await;
    fake.script(
        Kind::Twilio,
        TWILIO_SID_A,
        [testkit::providers::Answer::Unavailable],
    );
    let app = TestApp::builder()
        .providers(&fake)
        .var("WORKER_QUEUES", "email,sms")
        .spawn()
        .await;
    let mut config = twilio("primary", TWILIO_SID_A, 1);
    config["settings"]["rate_per_sec"] = json!(10);
    let id = app.add_provider(&config).await;
    let admin = platform_admin(&app).await;
    let key = app.api_key.clone();
    sms(&app).await;
    let failed = testkit::eventually("the provider's error to be recorded", WAIT, || async {
        let body = expect(get(&app, "/api/v1/ops/providers", &key).await, 200).await;
        let item = body["items"][0].clone();
        item["last_error"].is_string().then_some(item)
    })
    .await;
    assert!(
        failed["last_error"].as_str().unwrap().contains("503"),
        "{failed}"
    );
    assert!(failed["last_error_at"].is_string());
    assert_eq!(failed["circuit"], "closed", "one failure does not open it");
    let tokens = failed["rate_tokens"].as_f64().unwrap();
    assert!(
        (0.0..=20.0).contains(&tokens),
        "burst is twice the rate: {tokens}"
    );

    // The breaker opened and a 429 paused it, as workers record them.
    let mut conn = app.redis().await;
    let part = |p: &str| format!("{}:provider:{id}:{p}", app.redis_prefix);
    let _: () = redis::pipe()
        .cmd("SET")
        .arg(part("open"))
        .arg(1)
        .arg("PX")
        .arg(60_000)
        .ignore()
        .cmd("SET")
        .arg(part("paused"))
        .arg(1)
        .arg("PX")
        .arg(30_000)
        .ignore()
        .query_async(&mut conn)
        .await
        .unwrap();
    let body = expect(get(&app, "/api/v1/ops/providers", &admin.token).await, 200).await;
    let item = &body["items"][0];
    assert_eq!(item["circuit"], "open");
    let until: chrono::DateTime<chrono::Utc> =
        item["paused_until"].as_str().unwrap().parse().unwrap();
    assert!(
        until > chrono::Utc::now() + chrono::Duration::seconds(20),
        "{item}"
    );
    let exists: i64 = redis::cmd("EXISTS")
        .arg(part("open"))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(exists, 1, "reading changes nothing");

    testkit::eventually("the fleet gauges", WAIT, || async {
        let text = app.metrics_page().await;
        let value = |series: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(series)?.trim().parse::<f64>().ok())
        };
        [
            (r#"workers_alive{queue="email"}"#, 1.0),
            (r#"workers_alive{queue="sms"}"#, 1.0),
            (r#"workers_alive{queue="push"}"#, 0.0),
            (r#"workers_alive{queue="ups_poll"}"#, 0.0),
            (r#"provider_circuits_open{channel="sms"}"#, 1.0),
            (r#"provider_circuits_open{channel="email"}"#, 0.0),
        ]
        .iter()
        .all(|(series, want)| value(series) == Some(*want))
        .then_some(())
    })
    .await;
    app.shutdown().await;
}
