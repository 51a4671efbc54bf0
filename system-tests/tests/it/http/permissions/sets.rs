//! Roles mapped onto sets, custom sets with inheritance, cycles, and who
//! may edit sets.

use reqwest::Method;
use serde_json::json;
use shared::permissions::Permission;

use super::{
    app, assign_set, audit_rows, changed_events, foreign_set, grant, held, names, statistics,
    status_detail,
};
use crate::http::org_support::{answer, answer_json, expect, request, request_json, user, with};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn roles_keep_what_they_could_do_through_their_sets() {
    let app = app().await;
    let admin = user(&app, app.tenant_id, "ADMIN", "admin@clinic.example").await;
    let doctor = user(&app, app.tenant_id, "DOCTOR", "doc@clinic.example").await;

    // ADMIN holds every permission, through the Owner set its role maps to.
    let all: Vec<String> = Permission::ALL
        .iter()
        .map(|p| p.as_str().to_owned())
        .collect();
    let mut admin_held = names(&app, &admin.token, &admin.id).await;
    admin_held.sort();
    let mut expected = all.clone();
    expected.sort();
    assert_eq!(admin_held, expected);
    let body = answer(
        &app,
        Method::GET,
        &format!("/api/v1/users/{}/permissions", admin.id),
        &admin.token,
        200,
    )
    .await;
    let source = &body["permissions"][0]["sources"][0];
    assert_eq!(source["kind"], "set");
    assert_eq!(source["set"], "owner");
    assert_eq!(source["via"], "role:ADMIN");
    assert_eq!(body["set_assigned"], false);

    // Any other role: invite and track shipments, as before; its own
    // permissions are readable by itself.
    let mut doc_held = names(&app, &doctor.token, &doctor.id).await;
    doc_held.sort();
    assert_eq!(
        doc_held,
        [
            "lookups:read",
            "shipments:read",
            "shipments:write",
            "users:invite"
        ]
    );

    // Admin routes still refuse it, now naming the permission.
    for (path, permission) in [
        ("/api/v1/admin/templates", "templates:read"),
        ("/api/v1/admin/providers", "providers:read"),
        ("/api/v1/admin/audit", "audit:read"),
        ("/api/v1/admin/users", "users:read"),
    ] {
        let (status, detail) =
            status_detail(request(&app, Method::GET, path, &doctor.token).await).await;
        assert_eq!(status, 403, "{path}");
        assert_eq!(
            detail,
            Permission::parse(permission).unwrap().required(),
            "{path}"
        );
        let ok = request(&app, Method::GET, path, &admin.token).await;
        assert_eq!(ok.status(), 200, "{path} for the admin");
    }
    // Reading someone else's permissions needs permissions:read.
    let other = request(
        &app,
        Method::GET,
        &format!("/api/v1/users/{}/permissions", admin.id),
        &doctor.token,
    )
    .await;
    assert_eq!(other.status(), 403);
    // The tenant's API key keeps doing what keys always did.
    let by_key = request(&app, Method::GET, "/api/v1/admin/templates", &app.api_key).await;
    assert_eq!(by_key.status(), 200);
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_custom_set_holds_what_it_includes_and_opens_the_routes_it_names() {
    let app = app().await;
    let admin = user(&app, app.tenant_id, "ADMIN", "admin@clinic.example").await;
    let doctor = user(&app, app.tenant_id, "DOCTOR", "doc@clinic.example").await;
    let created = answer_json(
        &app,
        Method::POST,
        "/api/v1/permissions/sets",
        &admin.token,
        &json!({"key": "template-editors", "name": "Template editors",
                "permissions": ["templates:write"], "includes": ["viewer"]}),
        201,
    )
    .await;
    let set_id = created["id"].as_str().unwrap().to_owned();
    assert_eq!(created["built_in"], false);
    assert_eq!(created["includes"], json!(["viewer"]));
    let all = created["all_permissions"].as_array().unwrap();
    assert!(all.contains(&json!("templates:read")), "from viewer");
    assert!(all.contains(&json!("templates:write")));
    assert!(!all.contains(&json!("audit:read")));

    assign_set(&app, &admin.token, &doctor.id, &set_id).await;
    // The set replaces the role's: templates open, shipments:write gone.
    let got = held(&app, &doctor.token, &doctor.id).await;
    let templates_read = got.iter().find(|(n, _)| n == "templates:read").unwrap();
    assert_eq!(templates_read.1, ["set"]);
    assert!(!got.iter().any(|(n, _)| n == "shipments:write"));
    let list = request(&app, Method::GET, "/api/v1/admin/templates", &doctor.token).await;
    assert_eq!(list.status(), 200);
    let audit = request(&app, Method::GET, "/api/v1/admin/audit", &doctor.token).await;
    assert_eq!(audit.status(), 403);

    // A single grant adds audit:read; removing it takes it away again.
    grant(&app, &admin.token, &doctor.id, "audit:read").await;
    let audit = request(&app, Method::GET, "/api/v1/admin/audit", &doctor.token).await;
    assert_eq!(audit.status(), 200);
    let removed = request(
        &app,
        Method::DELETE,
        &format!("/api/v1/users/{}/permissions/audit:read", doctor.id),
        &admin.token,
    )
    .await;
    assert_eq!(removed.status(), 204);
    let audit = request(&app, Method::GET, "/api/v1/admin/audit", &doctor.token).await;
    assert_eq!(audit.status(), 403);
    let again = request(
        &app,
        Method::DELETE,
        &format!("/api/v1/users/{}/permissions/audit:read", doctor.id),
        &admin.token,
    )
    .await;
    assert_eq!(again.status(), 404);

    // Every change is audited and recorded as a security event.
    assert_eq!(
        audit_rows(&app, "permission_set.create", "success").await,
        1
    );
    assert_eq!(
        audit_rows(&app, "permission_set.assign", "success").await,
        1
    );
    assert_eq!(audit_rows(&app, "permission.grant", "success").await, 1);
    assert_eq!(audit_rows(&app, "permission.revoke", "success").await, 1);
    assert_eq!(changed_events(&app).await, 4);

    // Statistics count the assignment and the role holders.
    let stats = statistics(&app, &admin.token).await;
    let row = |key: &str| {
        stats["sets"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["key"] == key)
            .unwrap()
            .clone()
    };
    assert_eq!(row("template-editors")["assigned"], 1);
    assert_eq!(row("owner")["by_role"], 1);
    assert_eq!(stats["custom_sets"], 1);
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cycles_unknown_names_and_non_managers_are_refused() {
    let app = app().await;
    let admin = user(&app, app.tenant_id, "ADMIN", "admin@clinic.example").await;
    let doctor = user(&app, app.tenant_id, "DOCTOR", "doc@clinic.example").await;
    let create = |key: &str, includes: Vec<&str>| {
        with(&app, Method::POST, "/api/v1/permissions/sets", &admin.token)
            .json(&json!({"key": key, "name": key, "permissions": ["reports:read"], "includes": includes}))
    };
    let a = expect(create("a", vec![]).send().await.unwrap(), 201).await;
    expect(create("b", vec!["a"]).send().await.unwrap(), 201).await;
    expect(create("c", vec!["b"]).send().await.unwrap(), 201).await;
    let (status, _) = status_detail(create("c", vec![]).send().await.unwrap()).await;
    assert_eq!(status, 409, "a key is unique in the organisation");

    let cycle = request_json(
        &app,
        Method::PUT,
        &format!("/api/v1/permissions/sets/{}", a["id"].as_str().unwrap()),
        &admin.token,
        &json!({"key": "a", "name": "a", "includes": ["c"]}),
    )
    .await;
    assert_eq!(cycle.status(), 400);
    let body: serde_json::Value = cycle.json().await.unwrap();
    assert_eq!(body["invalid_params"][0]["name"], "includes");
    assert_eq!(
        body["invalid_params"][0]["reason"],
        "would form a cycle: a → c → b → a"
    );

    let unknown = request_json(
        &app,
        Method::POST,
        "/api/v1/permissions/sets",
        &admin.token,
        &json!({"key": "d", "name": "d", "permissions": ["reports:read", "reports:fly"]}),
    )
    .await;
    assert_eq!(unknown.status(), 400);
    let body: serde_json::Value = unknown.json().await.unwrap();
    assert_eq!(body["invalid_params"][0]["name"], "permissions[1]");

    // Built-in sets cannot change; a doctor cannot edit sets (audited).
    let sets = answer(
        &app,
        Method::GET,
        "/api/v1/permissions/sets",
        &admin.token,
        200,
    )
    .await;
    let owner = sets["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["key"] == "owner")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let builtin = request_json(
        &app,
        Method::PUT,
        &format!("/api/v1/permissions/sets/{owner}"),
        &admin.token,
        &json!({"key": "mine", "name": "mine"}),
    )
    .await;
    assert_eq!(builtin.status(), 404);
    let (status, detail) = status_detail(
        request_json(
            &app,
            Method::POST,
            "/api/v1/permissions/sets",
            &doctor.token,
            &json!({"key": "e", "name": "e"}),
        )
        .await,
    )
    .await;
    assert_eq!(
        (status, detail.as_str()),
        (403, Permission::PermissionsManage.required())
    );
    let grant = request_json(
        &app,
        Method::POST,
        &format!("/api/v1/users/{}/permissions", doctor.id),
        &doctor.token,
        &json!({"permission": "audit:read"}),
    )
    .await;
    assert_eq!(grant.status(), 403);
    // Refused for lack of the permission before any handler ran: one
    // audit row each, naming the operation.
    assert_eq!(
        audit_rows(&app, api::permissions::DENIED_ACTION, "failure").await,
        2
    );
    let bad_grant = request_json(
        &app,
        Method::POST,
        &format!("/api/v1/users/{}/permissions", doctor.id),
        &admin.token,
        &json!({"permission": "everything"}),
    )
    .await;
    assert_eq!(bad_grant.status(), 400);
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_built_in_sets_in_the_database_are_those_the_code_describes() {
    let app = app().await;
    for set in shared::permissions::BUILT_IN {
        let id: shared::domain::PermissionSetId = sqlx::query_scalar(
            "select id from permission_sets where tenant_id is null and key = $1",
        )
        .bind(set.key)
        .fetch_one(&app.pool)
        .await
        .unwrap();
        let stored = shared::db::permissions::set_closure(&app.pool, id)
            .await
            .unwrap();
        let mut expected: Vec<String> = shared::permissions::built_in_permissions(set.key)
            .iter()
            .map(|p| p.as_str().to_owned())
            .collect();
        expected.sort();
        assert_eq!(stored, expected, "{}", set.key);
    }
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_custom_set_is_deleted_only_when_nobody_holds_or_includes_it() {
    let app = app().await;
    let admin = user(&app, app.tenant_id, "ADMIN", "admin@clinic.example").await;
    let doctor = user(&app, app.tenant_id, "DOCTOR", "doc@clinic.example").await;
    let make = |body: serde_json::Value| {
        with(&app, Method::POST, "/api/v1/permissions/sets", &admin.token)
            .json(&body)
            .send()
    };
    let inner = expect(
        make(json!({"key": "inner", "name": "Inner", "permissions": ["audit:read"]}))
            .await
            .unwrap(),
        201,
    )
    .await;
    let inner = inner["id"].as_str().unwrap().to_owned();
    let outer = expect(
        make(json!({"key": "outer", "name": "Outer", "includes": ["inner"]}))
            .await
            .unwrap(),
        201,
    )
    .await;
    let outer = outer["id"].as_str().unwrap().to_owned();
    let set_path = |id: &str| format!("/api/v1/permissions/sets/{id}");
    let delete =
        |id: String, token: String| with(&app, Method::DELETE, &set_path(&id), &token).send();
    let assign = |set: &str| {
        with(
            &app,
            Method::PUT,
            &format!("/api/v1/users/{}/permission-set", doctor.id),
            &admin.token,
        )
        .json(&json!({"set_id": set}))
        .send()
    };
    expect(assign(&outer).await.unwrap(), 200).await;

    // Included by another set, or assigned to a user: kept, 409 saying why.
    let (status, detail) =
        status_detail(delete(inner.clone(), admin.token.clone()).await.unwrap()).await;
    assert_eq!(status, 409);
    assert!(detail.contains("included by outer"), "{detail}");
    let (status, detail) =
        status_detail(delete(outer.clone(), admin.token.clone()).await.unwrap()).await;
    assert_eq!(status, 409);
    assert!(detail.contains("assigned to 1 user"), "{detail}");
    assert_eq!(names(&app, &doctor.token, &doctor.id).await, ["audit:read"]);
    // Without permissions:manage: 403 (the doctor holds only audit:read).
    let by_doctor = delete(outer.clone(), doctor.token.clone()).await.unwrap();
    assert_eq!(by_doctor.status(), 403);

    // Reassigned, the outer set goes, and then the inner one.
    let viewer = "00000000-0000-7000-8000-000000000002";
    expect(assign(viewer).await.unwrap(), 200).await;
    let gone = delete(outer.clone(), admin.token.clone()).await.unwrap();
    assert_eq!(gone.status(), 204);
    let gone = delete(inner.clone(), app.api_key.clone()).await.unwrap();
    assert_eq!(gone.status(), 204);
    let read = request(&app, Method::GET, &set_path(&outer), &admin.token).await;
    assert_eq!(read.status(), 404);

    // Gone, built in, another organisation's, or not an id: 404.
    let (_, other_key) = app.other_tenant().await;
    let theirs = foreign_set(&app, &other_key).await;
    for id in [
        outer.clone(),
        viewer.to_owned(),
        theirs,
        "not-an-id".to_owned(),
    ] {
        let resp = delete(id.clone(), admin.token.clone()).await.unwrap();
        assert_eq!(resp.status(), 404, "{id}");
    }
    assert_eq!(
        audit_rows(&app, "permission_set.delete", "success").await,
        2
    );
    assert_eq!(
        audit_rows(&app, "permission_set.delete", "failure").await,
        6
    );
    app.shutdown().await;
}
