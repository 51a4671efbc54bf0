//! The subscriber service API: profiles with contact points stored one at a
//! time or a thousand at once, every invalid field named and nothing
//! half-written, preferences shared with the user's own endpoint, tenant
//! isolation, and erasure.

use std::time::Duration;

use serde_json::{Value, json};
use shared::{
    db::subscribers,
    domain::{ExternalId, SubscriberId, TenantId},
};
use testkit::TestApp;

mod delivery;
mod references;

const WAIT: Duration = Duration::from_secs(20);

/// Percent-encodes an external id as one path segment.
fn enc(external_id: &str) -> String {
    external_id
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn url(app: &TestApp, external_id: &str, rest: &str) -> String {
    app.url(&format!(
        "/api/v1/services/subscribers/{}{rest}",
        enc(external_id)
    ))
}

async fn put(app: &TestApp, key: &str, external_id: &str, body: &Value) -> reqwest::Response {
    app.client
        .put(url(app, external_id, ""))
        .bearer_auth(key)
        .json(body)
        .send()
        .await
        .unwrap()
}

async fn get(app: &TestApp, key: &str, external_id: &str) -> reqwest::Response {
    app.client
        .get(url(app, external_id, ""))
        .bearer_auth(key)
        .send()
        .await
        .unwrap()
}

async fn delete(app: &TestApp, key: &str, external_id: &str) -> reqwest::Response {
    app.client
        .delete(url(app, external_id, ""))
        .bearer_auth(key)
        .send()
        .await
        .unwrap()
}

async fn bulk(app: &TestApp, body: &Value) -> reqwest::Response {
    app.post_with_key("/api/v1/services/subscribers/bulk", body)
        .await
}

async fn put_prefs(app: &TestApp, key: &str, external_id: &str, body: &Value) -> reqwest::Response {
    app.client
        .put(url(app, external_id, "/preferences"))
        .bearer_auth(key)
        .json(body)
        .send()
        .await
        .unwrap()
}

async fn get_prefs(app: &TestApp, key: &str, external_id: &str) -> reqwest::Response {
    app.client
        .get(url(app, external_id, "/preferences"))
        .bearer_auth(key)
        .send()
        .await
        .unwrap()
}

/// The names in a 400 problem, asserting its shape.
async fn invalid_names(resp: reqwest::Response) -> Vec<String> {
    let status = resp.status();
    if status != 400 {
        panic!("expected 400, got {status}: {}", resp.text().await.unwrap());
    }
    assert_eq!(
        resp.headers()["content-type"],
        "application/problem+json",
        "problem+json"
    );
    let problem: Value = resp.json().await.unwrap();
    problem["invalid_params"]
        .as_array()
        .unwrap_or_else(|| panic!("no invalid_params in {problem}"))
        .iter()
        .map(|p| p["name"].as_str().unwrap().to_owned())
        .collect()
}

async fn count_subscribers(app: &TestApp, tenant: TenantId) -> i64 {
    sqlx::query_scalar("select count(*) from subscribers where tenant_id = $1")
        .bind(tenant)
        .fetch_one(&app.pool)
        .await
        .unwrap()
}

fn full_profile() -> Value {
    json!({
        "email": "pat.doe@example.org",
        "phone": "+15005550006",
        "whatsapp": "+447700900123",
        "push_tokens": ["fcm-token-1", "fcm:token/2"],
        "locale": "en-US",
        "timezone": "America/Chicago",
        "first_name": "Pat",
        "last_name": "Doe",
        "data": {"mrn": "A-1042", "plan": {"tier": 2}},
    })
}

async fn api_app() -> TestApp {
    TestApp::spawn_api_only().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_subscriber_is_created_read_replaced_and_deleted() {
    let app = api_app().await;
    // Slashes, spaces and non-ASCII survive percent-encoding.
    let pat = "clinic/pat 42-é";
    assert_eq!(get(&app, &app.api_key, pat).await.status(), 404);

    let resp = put(&app, &app.api_key, pat, &full_profile()).await;
    assert_eq!(resp.status(), 201);
    let created: Value = resp.json().await.unwrap();
    let mut expected = full_profile();
    expected["external_id"] = json!(pat);
    for (k, v) in expected.as_object().unwrap() {
        assert_eq!(&created[k], v, "{k}");
    }

    let resp = get(&app, &app.api_key, pat).await;
    assert_eq!(resp.status(), 200);
    let read: Value = resp.json().await.unwrap();
    assert_eq!(read, created);

    // PUT replaces the whole profile: what it leaves out is erased. Values
    // are normalised (locale case, email domain) and repeated tokens kept once.
    let resp = put(
        &app,
        &app.api_key,
        pat,
        &json!({"email": "Pat@EXAMPLE.org", "locale": "es-mx", "push_tokens": ["t1", "t1", "t2"], "timezone": null}),
    )
    .await;
    assert_eq!(resp.status(), 200);
    let replaced: Value = resp.json().await.unwrap();
    assert_eq!(replaced["email"], "Pat@example.org");
    assert_eq!(replaced["locale"], "es-MX");
    assert_eq!(replaced["push_tokens"], json!(["t1", "t2"]));
    for erased in ["phone", "whatsapp", "timezone", "first_name", "last_name"] {
        assert_eq!(replaced[erased], Value::Null, "{erased}");
    }
    assert_eq!(replaced["data"], json!({}));
    assert_eq!(replaced["created_at"], created["created_at"]);
    assert_eq!(
        get(&app, &app.api_key, pat)
            .await
            .json::<Value>()
            .await
            .unwrap(),
        replaced
    );

    // An empty body is an empty profile.
    let resp = put(&app, &app.api_key, pat, &json!({})).await;
    assert_eq!(resp.status(), 200);
    let emptied: Value = resp.json().await.unwrap();
    assert_eq!(emptied["email"], Value::Null);
    assert_eq!(emptied["push_tokens"], json!([]));

    let resp = delete(&app, &app.api_key, pat).await;
    assert_eq!(resp.status(), 204);
    assert_eq!(get(&app, &app.api_key, pat).await.status(), 404);
    assert_eq!(delete(&app, &app.api_key, pat).await.status(), 404);
    assert_eq!(count_subscribers(&app, app.tenant_id).await, 0);

    // `bulk` names a subscriber too, though it is also the bulk call's path.
    assert_eq!(get(&app, &app.api_key, "bulk").await.status(), 404);
    assert_eq!(
        put(&app, &app.api_key, "bulk", &json!({"first_name": "Bulk"}))
            .await
            .status(),
        201
    );
    assert_eq!(
        put(&app, &app.api_key, "bulk", &json!({"first_name": "Bulk"}))
            .await
            .status(),
        200
    );
    let read: Value = get(&app, &app.api_key, "bulk").await.json().await.unwrap();
    assert_eq!(read["first_name"], "Bulk");
    assert_eq!(
        put_prefs(&app, &app.api_key, "bulk", &json!({"enabled": false}))
            .await
            .status(),
        200
    );
    assert_eq!(
        get_prefs(&app, &app.api_key, "bulk")
            .await
            .json::<Value>()
            .await
            .unwrap()["enabled"],
        false
    );
    assert_eq!(delete(&app, &app.api_key, "bulk").await.status(), 204);
    assert_eq!(get(&app, &app.api_key, "bulk").await.status(), 404);

    // A key is required.
    let anon = app.client.get(url(&app, pat, "")).send().await.unwrap();
    assert_eq!(anon.status(), 401);
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_invalid_field_is_named_and_nothing_is_written() {
    let app = api_app().await;
    let eleven: Vec<String> = (0..11).map(|i| format!("token-{i}")).collect();
    let many_keys: serde_json::Map<String, Value> =
        (0..51).map(|i| (format!("k{i}"), json!(i))).collect();
    for (body, name) in [
        (json!({"email": "not-an-address"}), "email"),
        (
            json!({"email": "pat@example.org\r\nBcc: x@evil.example"}),
            "email",
        ),
        (json!({"phone": "(555) 010-0000"}), "phone"),
        (json!({"phone": "+0123456789"}), "phone"),
        (json!({"phone": 15005550006u64}), "phone"),
        (json!({"whatsapp": "+1555"}), "whatsapp"),
        (
            json!({"push_tokens": ["ok", "has space"]}),
            "push_tokens[1]",
        ),
        (json!({"push_tokens": [""]}), "push_tokens[0]"),
        (json!({"push_tokens": ["t".repeat(4097)]}), "push_tokens[0]"),
        (json!({"push_tokens": eleven}), "push_tokens"),
        (json!({"push_tokens": vec![""; 50_000]}), "push_tokens"),
        (json!({"push_tokens": "one-token"}), "push_tokens"),
        (json!({"push_tokens": [42]}), "push_tokens[0]"),
        (json!({"locale": "en_US"}), "locale"),
        (json!({"locale": "en-subtagtoolong"}), "locale"),
        (json!({"timezone": "Mars/Olympus"}), "timezone"),
        (json!({"timezone": "+02:00"}), "timezone"),
        (json!({"first_name": ""}), "first_name"),
        (json!({"first_name": "Pat\u{0}"}), "first_name"),
        (json!({"last_name": "x".repeat(201)}), "last_name"),
        (json!({"data": [1, 2]}), "data"),
        (json!({"data": "text"}), "data"),
        (json!({"data": many_keys}), "data"),
        (json!({"fax": "+15005550006"}), "fax"),
        (json!({"external_id": "pat"}), "external_id"),
        (json!([]), "body"),
        (json!("pat@example.org"), "body"),
    ] {
        let names = invalid_names(put(&app, &app.api_key, "pat", &body).await).await;
        assert_eq!(names, vec![name.to_owned()], "{body}");
    }
    // Every problem at once.
    let names = invalid_names(
        put(
            &app,
            &app.api_key,
            "pat",
            &json!({"email": "x", "phone": "y", "locale": "z", "timezone": "w"}),
        )
        .await,
    )
    .await;
    assert_eq!(names, vec!["email", "phone", "locale", "timezone"]);
    // Malformed JSON.
    let resp = app
        .client
        .put(url(&app, "pat", ""))
        .bearer_auth(&app.api_key)
        .header("content-type", "application/json")
        .body("{\"email\": ")
        .send()
        .await
        .unwrap();
    assert_eq!(invalid_names(resp).await, vec!["body"]);
    // Bad external ids in the path, with a body problem named beside them.
    for bad in ["x".repeat(256), "pat\u{7}".into(), "   ".into()] {
        let names =
            invalid_names(put(&app, &app.api_key, &bad, &json!({"email": "x"})).await).await;
        assert_eq!(names, vec!["external_id", "email"], "{bad:?}");
        let names = invalid_names(get(&app, &app.api_key, &bad).await).await;
        assert_eq!(names, vec!["external_id"], "{bad:?}");
    }
    // The longest external id is fine.
    let longest = "é".repeat(255);
    assert_eq!(
        put(&app, &app.api_key, &longest, &json!({})).await.status(),
        201
    );
    assert_eq!(
        count_subscribers(&app, app.tenant_id).await,
        1,
        "only the valid one"
    );
    assert_eq!(get(&app, &app.api_key, "pat").await.status(), 404);
    app.shutdown().await;
}

fn item(i: usize) -> Value {
    json!({
        "external_id": format!("patient-{i:04}"),
        "email": format!("patient{i}@example.org"),
        "phone": format!("+1500555{i:04}"),
        "locale": "en",
        "timezone": "Europe/Berlin",
        "push_tokens": [format!("tok-{i}")],
        "data": {"row": i},
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_thousand_subscribers_are_stored_in_one_call_and_more_are_refused() {
    let app = api_app().await;
    let items: Vec<Value> = (0..1_000).map(item).collect();
    let resp = bulk(&app, &json!({"subscribers": items})).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.json::<Value>().await.unwrap(),
        json!({"created": 1000, "updated": 0})
    );
    assert_eq!(count_subscribers(&app, app.tenant_id).await, 1_000);
    let read: Value = get(&app, &app.api_key, "patient-0999")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(read["email"], "patient999@example.org");
    assert_eq!(read["phone"], "+15005550999");
    assert_eq!(read["data"], json!({"row": 999}));

    // Half again (replaced) and half new.
    let items: Vec<Value> = (500..1_500)
        .map(|i| {
            let mut v = item(i);
            v["first_name"] = json!("Again");
            v
        })
        .collect();
    let resp = bulk(&app, &json!({"subscribers": items})).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.json::<Value>().await.unwrap(),
        json!({"created": 500, "updated": 500})
    );
    let read: Value = get(&app, &app.api_key, "patient-0500")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(read["first_name"], "Again");
    assert_eq!(count_subscribers(&app, app.tenant_id).await, 1_500);

    // 1,001 is refused whole, as is none.
    let items: Vec<Value> = (2_000..3_001).map(item).collect();
    let resp = bulk(&app, &json!({"subscribers": items})).await;
    assert_eq!(invalid_names(resp).await, vec!["subscribers"]);
    for empty in [json!({"subscribers": []}), json!({})] {
        assert_eq!(
            invalid_names(bulk(&app, &empty).await).await,
            vec!["subscribers"]
        );
    }
    assert_eq!(count_subscribers(&app, app.tenant_id).await, 1_500);

    // The database function holds the same line for other callers.
    let row = |i: usize| {
        (
            ExternalId::parse(&format!("direct-{i}")).unwrap(),
            subscribers::Profile::default(),
        )
    };
    let too_many: Vec<_> = (0..1_001).map(row).collect();
    let err = subscribers::bulk_upsert(&app.pool, app.tenant_id, &too_many)
        .await
        .unwrap_err();
    assert!(matches!(err, sqlx::Error::InvalidArgument(_)), "{err}");
    let repeated = vec![row(1), row(2), row(1)];
    let err = subscribers::bulk_upsert(&app.pool, app.tenant_id, &repeated)
        .await
        .unwrap_err();
    assert!(matches!(err, sqlx::Error::InvalidArgument(_)), "{err}");
    assert_eq!(count_subscribers(&app, app.tenant_id).await, 1_500);
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_bad_item_in_a_bulk_call_writes_nothing_and_is_named() {
    let app = api_app().await;
    let with = |changes: &[(usize, &str, Value)]| {
        let mut items: Vec<Value> = (0..400).map(item).collect();
        for (i, field, value) in changes {
            if value.is_null() {
                items[*i].as_object_mut().unwrap().remove(*field);
            } else {
                items[*i][*field] = value.clone();
            }
        }
        json!({"subscribers": items})
    };
    for (body, names) in [
        (
            with(&[(17, "phone", json!("555-0100"))]),
            vec!["subscribers[17].phone"],
        ),
        (
            with(&[
                (17, "phone", json!("555-0100")),
                (250, "locale", json!("en_US")),
                (399, "push_tokens", json!(["a b"])),
            ]),
            vec![
                "subscribers[17].phone",
                "subscribers[250].locale",
                "subscribers[399].push_tokens[0]",
            ],
        ),
        (
            with(&[(3, "fax", json!("+15005550006"))]),
            vec!["subscribers[3].fax"],
        ),
        (
            with(&[(5, "push_tokens", json!("tok"))]),
            vec!["subscribers[5].push_tokens"],
        ),
        (
            with(&[(1, "external_id", Value::Null)]),
            vec!["subscribers[1].external_id"],
        ),
        (
            with(&[(9, "external_id", json!("a\u{1b}[31m"))]),
            vec!["subscribers[9].external_id"],
        ),
        (
            with(&[(2, "external_id", json!("patient-0300"))]),
            vec!["subscribers[300].external_id"],
        ),
        (
            json!({"subscribers": [item(1)], "mode": "merge"}),
            vec!["mode"],
        ),
        (json!({"subscribers": {"a": 1}}), vec!["subscribers"]),
    ] {
        let names_seen = invalid_names(bulk(&app, &body).await).await;
        assert_eq!(names_seen, names);
    }
    assert_eq!(
        count_subscribers(&app, app.tenant_id).await,
        0,
        "nothing written"
    );

    // An existing subscriber is not touched by a refused call either.
    assert_eq!(
        put(
            &app,
            &app.api_key,
            "patient-0001",
            &json!({"first_name": "Kept"})
        )
        .await
        .status(),
        201
    );
    let resp = bulk(&app, &with(&[(17, "email", json!("nope"))])).await;
    assert_eq!(invalid_names(resp).await, vec!["subscribers[17].email"]);
    let kept: Value = get(&app, &app.api_key, "patient-0001")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(kept["first_name"], "Kept");
    assert_eq!(kept["email"], Value::Null);
    assert_eq!(count_subscribers(&app, app.tenant_id).await, 1);
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn another_tenants_subscriber_is_not_found() {
    let app = api_app().await;
    let (other_tenant, other_key) = app.other_tenant().await;
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

    assert_eq!(get(&app, &other_key, "pat").await.status(), 404);
    assert_eq!(get_prefs(&app, &other_key, "pat").await.status(), 404);
    assert_eq!(
        put_prefs(&app, &other_key, "pat", &json!({"enabled": false}))
            .await
            .status(),
        404
    );
    assert_eq!(delete(&app, &other_key, "pat").await.status(), 404);

    // The same external id in the other tenant is another subscriber.
    let resp = put(
        &app,
        &other_key,
        "pat",
        &json!({"email": "someone.else@example.org"}),
    )
    .await;
    assert_eq!(resp.status(), 201);
    assert_eq!(count_subscribers(&app, other_tenant).await, 1);
    assert_eq!(delete(&app, &other_key, "pat").await.status(), 204);

    let mine: Value = get(&app, &app.api_key, "pat").await.json().await.unwrap();
    assert_eq!(mine["email"], "pat.doe@example.org");
    assert_eq!(
        get_prefs(&app, &app.api_key, "pat")
            .await
            .json::<Value>()
            .await
            .unwrap(),
        prefs
    );

    // Delivery-time reads and token removal are tenant-scoped too.
    let id = subscribers::find(&app.pool, app.tenant_id, "pat")
        .await
        .unwrap()
        .unwrap();
    assert!(
        subscribers::contacts(&app.pool, other_tenant, id)
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        !subscribers::remove_push_token(&app.pool, other_tenant, id, "fcm-token-1")
            .await
            .unwrap()
    );
    assert_eq!(
        subscribers::contacts(&app.pool, app.tenant_id, id)
            .await
            .unwrap()
            .unwrap()
            .push_tokens
            .len(),
        2
    );
    app.shutdown().await;
}
