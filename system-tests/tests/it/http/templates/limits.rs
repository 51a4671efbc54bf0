//! Templates at their limits: oversized and malformed bodies, who may manage
//! them, other organisations' templates, paging, repeated keys and the
//! OpenAPI description.

use super::*;

/// Templates over 64 KiB of JSON are refused by validation with 400 naming
/// `template`, as long as the request fits the API's body limit (256 KiB by
/// default); a request over that limit is refused with 413 before it is read,
/// like any other request.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn oversized_templates_are_refused() {
    let app = app().await;
    let admin = Admin::key(&app);
    let mut big = reminder("big");
    let mut data = serde_json::Map::new();
    for i in 0..5 {
        data.insert(format!("k{i}"), json!("x".repeat(15 * 1024)));
    }
    big["locales"]["en"]["inapp"]["data"] = Value::Object(data);
    let size = serde_json::to_vec(&big).unwrap().len();
    assert!((64 * 1024..256 * 1024).contains(&size), "{size}");
    let (field, reason) = invalid_field(admin.create(&big).await).await;
    assert_eq!(field, "template");
    assert!(reason.contains("65536"), "{reason}");

    let mut huge = reminder("huge");
    huge["description"] = json!("x".repeat(300 * 1024));
    problem(admin.create(&huge).await, 413).await;

    let mut long_field = reminder("long");
    long_field["locales"]["en"]["email"]["html"] = json!("x".repeat(16 * 1024 + 1));
    let (field, _) = invalid_field(admin.create(&long_field).await).await;
    assert_eq!(field, "locales.en.email.html");

    let mut many = reminder("many");
    for c in b'a'..=b'u' {
        many["locales"][format!("a{}", c as char)] = json!({"sms": {"body": "hi"}});
    }
    let (field, _) = invalid_field(admin.create(&many).await).await;
    assert_eq!(field, "locales");
    assert_eq!(count_templates(&app).await, 0);
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn malformed_json_and_unknown_fields_are_refused() {
    let app = app().await;
    let admin = Admin::key(&app);
    for raw in ["{\"key\": \"x\", ", "not json", ""] {
        let resp = app
            .client
            .post(app.url(BASE))
            .bearer_auth(&app.api_key)
            .header("content-type", "application/json")
            .body(raw)
            .send()
            .await
            .unwrap();
        problem(resp, 400).await;
    }
    let mut unknown = reminder("unknown");
    unknown["owner"] = json!("someone");
    let (field, reason) = invalid_field(admin.create(&unknown).await).await;
    assert_eq!(field, "owner");
    assert!(reason.contains("unknown field"), "{reason}");
    let mut nested = reminder("nested");
    nested["locales"]["en"]["email"]["bcc"] = json!("everyone@evil.example");
    let (field, _) = invalid_field(admin.create(&nested).await).await;
    assert_eq!(field, "locales.en.email.bcc");
    let (field, _) = invalid_field(admin.create(&json!(["a"])).await).await;
    assert_eq!(field, "template");
    assert_eq!(count_templates(&app).await, 0);
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn only_administrators_may_manage_templates() {
    let app = app().await;
    let secret = app.issue_jwt_secret(app.tenant_id).await;
    let user = Admin {
        app: &app,
        token: testkit::jwks::user_token(&secret, app.tenant_id, "pat", &["NURSE"]),
    };
    let body = problem(user.create(&reminder("by-user")).await, 403).await;
    assert!(body["detail"].as_str().unwrap().contains("ADMIN"));
    problem(user.get("").await, 403).await;
    assert_eq!(count_templates(&app).await, 0);

    let admin = Admin {
        app: &app,
        token: testkit::jwks::user_token(&secret, app.tenant_id, "dr-lee", &["ADMIN"]),
    };
    let id = admin.created(&reminder("by-admin")).await;
    assert_eq!(admin.get(&format!("/{id}")).await.status(), 200);
    problem(user.get(&format!("/{id}")).await, 403).await;
    let actor: String =
        sqlx::query_scalar("select actor from audit_log where action = 'template.create'")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(actor, "user:dr-lee");

    let anonymous = app.get_anonymous(BASE).await;
    problem(anonymous, 401).await;
    let forged = Admin {
        app: &app,
        token: "ntf_not-a-real-key".into(),
    };
    problem(forged.get("").await, 401).await;
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn another_organisations_template_is_not_found() {
    let app = app().await;
    let (other_tenant, other_key) = app.other_tenant().await;
    let other = Admin {
        app: &app,
        token: other_key,
    };
    let theirs = other.created(&reminder("theirs")).await;
    let admin = Admin::key(&app);
    problem(admin.get(&format!("/{theirs}")).await, 404).await;
    problem(admin.put(&theirs, &reminder("stolen")).await, 404).await;
    problem(admin.delete(&theirs).await, 404).await;
    problem(admin.preview(&theirs, &json!({"data": data()})).await, 404).await;
    for bad in ["not-a-uuid", "00000000-0000-0000-0000-000000000000"] {
        problem(admin.get(&format!("/{bad}")).await, 404).await;
        problem(admin.put(bad, &reminder("x")).await, 404).await;
        problem(admin.delete(bad).await, 404).await;
        problem(admin.preview(bad, &json!({})).await, 404).await;
    }
    let page: Value = admin.get("").await.json().await.unwrap();
    assert_eq!(page["items"], json!([]));
    assert!(
        shared::db::templates::get_by_key(&app.pool, app.tenant_id, "theirs")
            .await
            .unwrap()
            .is_none()
    );
    // Theirs is untouched, and nothing was audited for this tenant.
    let kept: Value = other.get(&format!("/{theirs}")).await.json().await.unwrap();
    assert_eq!(kept["key"], "theirs");
    let audited: i64 = sqlx::query_scalar("select count(*) from audit_log where tenant_id = $1")
        .bind(app.tenant_id)
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(audited, 0);
    let theirs_audited: i64 =
        sqlx::query_scalar("select count(*) from audit_log where tenant_id = $1")
            .bind(other_tenant)
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(theirs_audited, 1);
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn templates_are_listed_in_key_order_page_by_page() {
    let app = app().await;
    let admin = Admin::key(&app);
    for key in ["e.five", "a.one", "c.three", "b.two", "d.four"] {
        admin.created(&reminder(key)).await;
    }
    let (_, other_key) = app.other_tenant().await;
    Admin {
        app: &app,
        token: other_key,
    }
    .created(&reminder("a.other"))
    .await;

    let mut keys = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let query = match &cursor {
            Some(c) => format!("?limit=2&cursor={c}"),
            None => "?limit=2".to_owned(),
        };
        let page: Value = admin.get(&query).await.json().await.unwrap();
        pages += 1;
        let items = page["items"].as_array().unwrap();
        assert!(items.len() <= 2);
        for item in items {
            assert!(item.get("locales").is_none(), "a list carries no content");
            keys.push(item["key"].as_str().unwrap().to_owned());
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    assert_eq!(keys, ["a.one", "b.two", "c.three", "d.four", "e.five"]);
    assert_eq!(pages, 3);
    let all: Value = admin.get("").await.json().await.unwrap();
    assert_eq!(all["items"].as_array().unwrap().len(), 5);
    assert!(all["next_cursor"].is_null());

    for (query, field) in [
        ("?limit=0", "limit"),
        ("?limit=501", "limit"),
        ("?cursor=%25%25%25", "cursor"),
        ("?cursor=", "cursor"),
    ] {
        let (name, _) = invalid_field(admin.get(query).await).await;
        assert_eq!(name, field, "{query}");
    }
    let max: Value = admin.get("?limit=500").await.json().await.unwrap();
    assert_eq!(max["items"].as_array().unwrap().len(), 5);
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_key_already_used_in_the_organisation_is_a_conflict() {
    let app = app().await;
    let admin = Admin::key(&app);
    admin.created(&reminder("taken")).await;
    let body = problem(admin.create(&reminder("taken")).await, 409).await;
    assert!(body["detail"].as_str().unwrap().contains("key"), "{body}");
    let id = admin.created(&reminder("free")).await;
    problem(admin.put(&id, &reminder("taken")).await, 409).await;
    let kept: Value = admin.get(&format!("/{id}")).await.json().await.unwrap();
    assert_eq!(kept["key"], "free");
    assert_eq!(count_templates(&app).await, 2);
    let audited: i64 = sqlx::query_scalar("select count(*) from audit_log")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(audited, 2, "only the two creates");
    // Another organisation may use the same key.
    let (_, other_key) = app.other_tenant().await;
    Admin {
        app: &app,
        token: other_key,
    }
    .created(&reminder("taken"))
    .await;
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_template_endpoints_are_documented() {
    let app = app().await;
    let spec: Value = app.openapi_document().await;
    let paths = &spec["paths"];
    for (path, method, status) in [
        (BASE.to_owned(), "post", "201"),
        (BASE.to_owned(), "get", "200"),
        (format!("{BASE}/{{id}}"), "get", "200"),
        (format!("{BASE}/{{id}}"), "put", "200"),
        (format!("{BASE}/{{id}}"), "delete", "204"),
        (format!("{BASE}/{{id}}/preview"), "post", "200"),
    ] {
        let op = &paths[&path][method];
        assert_eq!(op["tags"], json!(["Admin"]), "{method} {path}");
        for s in [status, "400", "401", "403", "404"] {
            assert!(op["responses"][s].is_object(), "{method} {path} {s}");
        }
    }
    assert!(paths[BASE]["post"]["responses"]["409"].is_object());
    app.shutdown().await;
}
