//! The in-app channel and the user's inbox: sends land in the right inbox,
//! read/unread/archive/delete, pagination and filters, exact counts, and
//! nobody sees anyone else's notifications.

use std::time::Duration;

use crate::support::invalid_param_names;
use serde_json::{Value, json};
use testkit::TestApp;

mod written_once;

const WAIT: Duration = Duration::from_secs(20);

struct User<'a> {
    app: &'a TestApp,
    token: String,
}

impl User<'_> {
    fn url(&self, path: &str) -> String {
        self.app
            .url(&format!("/api/v1/users/me/notifications{path}"))
    }

    async fn get(&self, path: &str) -> reqwest::Response {
        self.app
            .client
            .get(self.url(path))
            .bearer_auth(&self.token)
            .send()
            .await
            .unwrap()
    }

    async fn json(&self, path: &str) -> Value {
        let resp = self.get(path).await;
        assert_eq!(resp.status(), 200, "GET {path}");
        resp.json().await.unwrap()
    }

    async fn patch(&self, path: &str) -> reqwest::Response {
        self.app
            .client
            .patch(self.url(path))
            .bearer_auth(&self.token)
            .send()
            .await
            .unwrap()
    }

    async fn delete(&self, path: &str) -> reqwest::Response {
        self.app
            .client
            .delete(self.url(path))
            .bearer_auth(&self.token)
            .send()
            .await
            .unwrap()
    }

    async fn mark_all_read(&self) -> reqwest::Response {
        self.app
            .client
            .post(self.url("/mark-all-read"))
            .bearer_auth(&self.token)
            .send()
            .await
            .unwrap()
    }

    async fn unread(&self) -> i64 {
        self.json("/unread-count").await["unread"].as_i64().unwrap()
    }

    async fn ids(&self, query: &str) -> Vec<String> {
        let page = self.json(query).await;
        page["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["id"].as_str().unwrap().to_owned())
            .collect()
    }
}

async fn user<'a>(
    app: &'a TestApp,
    secret: &str,
    tenant: shared::domain::TenantId,
    subject: &str,
) -> User<'a> {
    User {
        app,
        token: testkit::jwks::user_token(secret, tenant, subject, &[]),
    }
}

async fn send_inapp(
    app: &TestApp,
    key: &str,
    subscriber: &str,
    title: &str,
    category: Option<&str>,
) -> String {
    let mut body = json!({
        "channel": "inapp",
        "subscriber_id": subscriber,
        "title": title,
        "body": "Open the app for details.",
        "action_url": "/results/42",
        "data": {"result_id": 42},
    });
    if let Some(c) = category {
        body["category"] = json!(c);
    }
    let resp = app.post_send(key, None, &body).await;
    assert_eq!(resp.status(), 202);
    resp.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_inapp_send_lands_in_the_inbox_and_can_be_read_archived_and_deleted() {
    let app = TestApp::builder().spawn().await;
    let secret = app.issue_jwt_secret(app.tenant_id).await;
    let pat = user(&app, &secret, app.tenant_id, "pat").await;
    let first = send_inapp(
        &app,
        &app.api_key,
        "pat",
        "Lab results ready",
        Some("results"),
    )
    .await;
    let second = send_inapp(
        &app,
        &app.api_key,
        "pat",
        "Appointment tomorrow",
        Some("appointments"),
    )
    .await;
    let third = send_inapp(&app, &app.api_key, "pat", "Refill approved", None).await;
    for id in [&first, &second, &third] {
        let n = app.wait_for_status(id, "sent", WAIT).await;
        assert_eq!(n["channel"], "inapp");
        // Placed in the inbox as it was accepted: no provider, no attempt.
        assert_eq!(n["attempts"], json!([]));
    }
    let page = pat.json("").await;
    let items = page["items"].as_array().unwrap();
    assert_eq!(items.len(), 3);
    assert_eq!(items[0]["id"], third.as_str(), "newest first");
    let lab = &items[2];
    assert_eq!(lab["title"], "Lab results ready");
    assert_eq!(lab["body"], "Open the app for details.");
    assert_eq!(lab["action_url"], "/results/42");
    assert_eq!(lab["data"], json!({"result_id": 42}));
    assert_eq!(lab["category"], "results");
    assert_eq!(lab["read"], false);
    assert!(page["next_cursor"].is_null());
    assert_eq!(pat.unread().await, 3);

    let read: Value = pat
        .patch(&format!("/{first}/read"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(read["read"], true);
    assert_eq!(pat.unread().await, 2);
    let unread: Value = pat
        .patch(&format!("/{first}/unread"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(unread["read"], false);
    assert_eq!(pat.unread().await, 3);

    let archived: Value = pat
        .patch(&format!("/{second}/archive"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(archived["archived"], true);
    assert_eq!(pat.ids("").await, vec![third.clone(), first.clone()]);
    assert_eq!(pat.ids("?archived=true").await, vec![second.clone()]);
    assert_eq!(pat.unread().await, 2, "archived entries are not counted");

    let changed: Value = pat.mark_all_read().await.json().await.unwrap();
    assert_eq!(changed["count"], 3);
    assert_eq!(pat.unread().await, 0);
    assert_eq!(pat.ids("?read=false").await, Vec::<String>::new());

    assert_eq!(pat.delete(&format!("/{third}")).await.status(), 204);
    assert_eq!(pat.get(&format!("/{third}")).await.status(), 404);
    assert_eq!(
        pat.delete(&format!("/{third}")).await.status(),
        404,
        "already gone"
    );
    let bulk: Value = pat
        .delete(&format!("?ids={first},{second},{third}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(bulk["count"], 2, "only what was still there");
    assert!(pat.ids("").await.is_empty() && pat.ids("?archived=true").await.is_empty());
    // The delivery record stays for the sender.
    assert_eq!(app.notification(&first).await["status"], "sent");
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_inbox_pages_by_cursor_and_filters_by_category_and_read_state() {
    let app = TestApp::builder().spawn().await;
    let secret = app.issue_jwt_secret(app.tenant_id).await;
    let pat = user(&app, &secret, app.tenant_id, "pat").await;
    let mut ids = Vec::new();
    for i in 0..25 {
        let category = if i % 5 == 0 { "billing" } else { "care" };
        ids.push(
            send_inapp(
                &app,
                &app.api_key,
                "pat",
                &format!("Message {i}"),
                Some(category),
            )
            .await,
        );
    }
    testkit::eventually("all 25 in the inbox", WAIT, || async {
        (pat.unread().await == 25).then_some(())
    })
    .await;
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = Vec::new();
    loop {
        let q = match &cursor {
            Some(c) => format!("?limit=10&cursor={c}"),
            None => "?limit=10".to_owned(),
        };
        let page = pat.json(&q).await;
        let items: Vec<String> = page["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["id"].as_str().unwrap().to_owned())
            .collect();
        pages.push(items.len());
        seen.extend(items);
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    assert_eq!(pages, vec![10, 10, 5]);
    ids.reverse();
    assert_eq!(seen, ids, "every entry once, newest first");
    assert_eq!(pat.ids("?category=billing&limit=100").await.len(), 5);
    pat.patch(&format!("/{}/read", ids[0])).await;
    assert_eq!(pat.ids("?read=true").await, vec![ids[0].clone()]);
    assert_eq!(pat.ids("?read=false&limit=100").await.len(), 24);
    for bad in [
        "?limit=0",
        "?limit=501",
        "?limit=many",
        "?cursor=not-a-cursor",
        "?read=maybe",
    ] {
        let resp = pat.get(bad).await;
        assert_eq!(resp.status(), 400, "{bad}");
        assert_eq!(resp.headers()["content-type"], "application/problem+json");
    }
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nobody_sees_another_users_or_tenants_notifications() {
    let app = TestApp::builder().spawn().await;
    let secret = app.issue_jwt_secret(app.tenant_id).await;
    let pat = user(&app, &secret, app.tenant_id, "pat").await;
    let sam = user(&app, &secret, app.tenant_id, "sam").await;
    let (other_tenant, other_key) = app.other_tenant().await;
    let other_secret = app.issue_jwt_secret(other_tenant).await;
    // The same subject in another tenant is another person.
    let other_pat = user(&app, &other_secret, other_tenant, "pat").await;
    let mine = send_inapp(&app, &app.api_key, "pat", "For Pat", None).await;
    let theirs = send_inapp(&app, &other_key, "pat", "For the other Pat", None).await;
    let email = app.send_to("pat@example.org").await;
    app.wait_for_status(&mine, "sent", WAIT).await;
    app.wait_for_status(&email, "sent", WAIT).await;
    testkit::eventually("the other tenant's send", WAIT, || async {
        (other_pat.unread().await == 1).then_some(())
    })
    .await;

    assert_eq!(
        pat.ids("").await,
        vec![mine.clone()],
        "emails are not inbox entries"
    );
    assert_eq!(other_pat.ids("").await, vec![theirs.clone()]);
    for (who, id) in [(&sam, &mine), (&other_pat, &mine), (&pat, &theirs)] {
        assert_eq!(who.get(&format!("/{id}")).await.status(), 404);
        assert_eq!(who.patch(&format!("/{id}/read")).await.status(), 404);
        assert_eq!(who.patch(&format!("/{id}/archive")).await.status(), 404);
        assert_eq!(who.delete(&format!("/{id}")).await.status(), 404);
    }
    let none: Value = sam
        .delete(&format!("?ids={mine}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(none["count"], 0);
    assert_eq!(pat.unread().await, 1, "untouched by the others");
    assert_eq!(sam.unread().await, 0);
    assert_eq!(pat.get("/not-an-id").await.status(), 404);
    assert_eq!(pat.delete("?ids=not-an-id").await.status(), 400);
    // No token, or an API key instead of one.
    let anon = app.client.get(pat.url("")).send().await.unwrap();
    assert_eq!(anon.status(), 401);
    let with_key = app
        .client
        .get(pat.url(""))
        .bearer_auth(&app.api_key)
        .send()
        .await
        .unwrap();
    assert_eq!(with_key.status(), 401);
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn invalid_inapp_sends_are_rejected_with_nothing_stored() {
    let app = TestApp::spawn_api_only().await;
    let ok = json!({"channel": "inapp", "subscriber_id": "pat", "title": "Hello"});
    let with = |k: &str, v: Value| {
        let mut b = ok.clone();
        b[k] = v;
        b
    };
    let without = |k: &str| {
        let mut b = ok.clone();
        b.as_object_mut().unwrap().remove(k);
        b
    };
    let cases = vec![
        (without("subscriber_id"), "subscriber_id"),
        (without("title"), "title"),
        (with("title", json!("x".repeat(201))), "title"),
        (with("title", json!("two\nlines")), "title"),
        (with("subscriber_id", json!("")), "subscriber_id"),
        (
            with("subscriber_id", json!("x".repeat(256))),
            "subscriber_id",
        ),
        (with("body", json!("x".repeat(5_001))), "body"),
        (
            with("action_url", json!("javascript:alert(1)")),
            "action_url",
        ),
        (with("action_url", json!("//evil.example/x")), "action_url"),
        (
            with("action_url", json!("https://ok.example/a b")),
            "action_url",
        ),
        (with("data", json!("not an object")), "data"),
        (with("to", json!("pat@example.org")), "to"),
        (with("subject", json!("s")), "subject"),
        (with("category", json!("bad category!")), "category"),
        (with("channel", json!("fax")), "channel"),
        (
            json!({"to": "pat@example.org", "subject": "s", "text": "t", "title": "x"}),
            "title",
        ),
    ];
    for (body, field) in cases {
        let resp = app.send_email(&body).await;
        assert_eq!(resp.status(), 400, "{body}");
        let problem: Value = resp.json().await.unwrap();
        let names = invalid_param_names(&problem);
        assert!(
            names.iter().any(|n| n == field),
            "{body}: expected {field}, got {problem}"
        );
    }
    let rows: i64 = sqlx::query_scalar("select count(*) from notifications")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    let subs: i64 = sqlx::query_scalar("select count(*) from subscribers")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!((rows, subs), (0, 0));
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_unread_count_is_exact_after_concurrent_sends_and_reads() {
    const N: usize = 1_000;
    let app = TestApp::builder().spawn().await;
    let secret = app.issue_jwt_secret(app.tenant_id).await;
    let pat = user(&app, &secret, app.tenant_id, "pat").await;
    let body = json!({"channel": "inapp", "subscriber_id": "pat", "title": "Reminder"});
    let sends = app.send_many(N, 50, &body);
    let reads = async {
        for _ in 0..20 {
            let resp = pat.mark_all_read().await;
            assert_eq!(resp.status(), 200);
            // Spreads the reads over the sends: reads racing sends are the
            // behaviour under test.
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    };
    let (answers, ()) = tokio::join!(sends, reads);
    assert!(answers.iter().all(|(s, _)| *s == 202));
    testkit::eventually("every send delivered", Duration::from_secs(60), || async {
        (app.count_status("sent").await == N as i64).then_some(())
    })
    .await;
    // Count the unread entries one by one and compare.
    let mut unread_listed = 0;
    let mut total = 0;
    let mut cursor: Option<String> = None;
    loop {
        let q = match &cursor {
            Some(c) => format!("?limit=100&cursor={c}"),
            None => "?limit=100".to_owned(),
        };
        let page = pat.json(&q).await;
        for item in page["items"].as_array().unwrap() {
            total += 1;
            if item["read"] == false {
                unread_listed += 1;
            }
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    assert_eq!(total, N);
    assert_eq!(pat.unread().await, unread_listed);
    let changed: Value = pat.mark_all_read().await.json().await.unwrap();
    assert_eq!(changed["count"], unread_listed);
    assert_eq!(pat.unread().await, 0);
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn templated_inapp_sends_from_many_callers_create_each_new_subscriber_once() {
    const EACH: usize = 12;
    let app = TestApp::builder().without_worker().spawn().await;
    app.add_template(&json!({
        "key": "results", "name": "Results ready", "category": "results",
        "default_locale": "en", "default_channels": ["inapp"],
        "locales": {"en": {"inapp": {"title": "Results for {{name}}", "body": "Ready."}}}
    }))
    .await;
    let people = ["ana", "ben", "cal", "dee"];
    let send = |person: &'static str| {
        let body = json!({"template": "results", "subscriber_id": person, "template_data": {"name": person}});
        let app = &app;
        async move { app.send_many(EACH, EACH, &body).await }
    };
    let (a, b, c, d) = tokio::join!(
        send(people[0]),
        send(people[1]),
        send(people[2]),
        send(people[3])
    );
    for answers in [a, b, c, d] {
        assert!(answers.iter().all(|(s, _)| *s == 202), "{answers:?}");
    }
    let created: i64 = sqlx::query_scalar(
        "select count(*) from subscribers where tenant_id = $1 and external_id = any($2)",
    )
    .bind(app.tenant_id.0)
    .bind(&people[..])
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(created, people.len() as i64);
    // Placed as they were accepted, with no worker running.
    assert_eq!(app.count_status("sent").await, (EACH * people.len()) as i64);
    let secret = app.issue_jwt_secret(app.tenant_id).await;
    for person in people {
        let inbox = user(&app, &secret, app.tenant_id, person).await;
        assert_eq!(inbox.unread().await, EACH as i64, "{person}");
        let titles: Vec<String> = inbox.json("?limit=100").await["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["title"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(titles, vec![format!("Results for {person}"); EACH]);
    }
    app.shutdown().await;
}
