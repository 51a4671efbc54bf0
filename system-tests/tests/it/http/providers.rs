//! `/api/v1/admin/providers`: configs checked field by field, credentials
//! sealed and only ever shown masked, changes audited, other tenants' configs
//! invisible, and the key rotation command.

use crate::support::{call_parts, invalid_param_names};
use serde_json::{Value, json};
use testkit::{
    TestApp,
    providers::{TWILIO_AUTH_TOKEN, TWILIO_SID_A, fcm_service_account, twilio_config},
};

fn twilio(name: &str) -> Value {
    twilio_config(name, TWILIO_SID_A, Some(5))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn configs_round_trip_with_credentials_only_ever_masked() {
    let app = TestApp::spawn_api_only().await;
    let key = app.api_key.clone();
    let (status, created, text) = call_parts(
        &app,
        reqwest::Method::POST,
        "/api/v1/admin/providers",
        &key,
        Some(&twilio("twilio-main")),
    )
    .await;
    assert_eq!(status, 201, "{text}");
    assert!(!text.contains(TWILIO_AUTH_TOKEN));
    assert_eq!(created["channel"], "sms");
    assert_eq!(created["credentials"], json!({"auth_token": "••••6789"}));
    let id = created["id"].as_str().unwrap();

    let (status, _, text) = call_parts(
        &app,
        reqwest::Method::GET,
        "/api/v1/admin/providers",
        &key,
        None,
    )
    .await;
    assert_eq!(status, 200);
    assert!(text.contains("twilio-main") && !text.contains(TWILIO_AUTH_TOKEN));

    // A settings change keeps the stored credentials.
    let (status, updated, _) = call_parts(
        &app,
        reqwest::Method::PUT,
        &format!("/api/v1/admin/providers/{id}"),
        &key,
        Some(&json!({"name": "twilio-renamed", "priority": 1, "settings": {"account_sid": TWILIO_SID_A, "messaging_service_sid": format!("MG{}", "b".repeat(32))}})),
    )
    .await;
    assert_eq!(status, 200, "{updated}");
    assert_eq!(updated["credentials"], json!({"auth_token": "••••6789"}));
    assert_eq!(updated["priority"], 1);

    // FCM service-account files are accepted whole; the private key is never shown.
    let (status, fcm, text) = call_parts(
        &app,
        reqwest::Method::POST,
        "/api/v1/admin/providers",
        &key,
        Some(&json!({"provider": "fcm", "name": "firebase", "settings": {"project_id": "test-project"}, "credentials": fcm_service_account()})),
    )
    .await;
    assert_eq!(status, 201, "{text}");
    assert!(!text.contains("PRIVATE KEY"));
    assert_eq!(fcm["credentials"]["private_key"], "••••");

    let (status, _, _) = call_parts(
        &app,
        reqwest::Method::DELETE,
        &format!("/api/v1/admin/providers/{id}"),
        &key,
        None,
    )
    .await;
    assert_eq!(status, 204);
    let actions: Vec<String> = sqlx::query_scalar(
        "select action from audit_log where resource_type = 'provider' order by id",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap();
    assert_eq!(
        actions,
        [
            "provider.create",
            "provider.update",
            "provider.create",
            "provider.delete"
        ]
    );
    let leaked: i64 = sqlx::query_scalar(
        "select count(*) from audit_log where details::text like '%' || $1 || '%'",
    )
    .bind(TWILIO_AUTH_TOKEN)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(leaked, 0);
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_configs_are_refused_naming_each_field_and_nothing_is_stored() {
    let app = TestApp::spawn_api_only().await;
    let key = app.api_key.clone();
    let post = |body: Value| {
        let app = &app;
        let key = key.clone();
        async move {
            call_parts(
                app,
                reqwest::Method::POST,
                "/api/v1/admin/providers",
                &key,
                Some(&body),
            )
            .await
        }
    };
    let (status, p, _) = post(json!({
        "provider": "twilio", "name": "",
        "priority": 5000,
        "settings": {"account_sid": "AC123", "from": "555-0100"},
        "credentials": {"auth_token": "has a space"},
    }))
    .await;
    assert_eq!(status, 400);
    assert_eq!(
        invalid_param_names(&p),
        [
            "name",
            "priority",
            "settings.account_sid",
            "settings.from",
            "credentials.auth_token"
        ]
    );
    // A tenant cannot point a provider at an address of its choosing.
    let mut hostile = twilio("x");
    hostile["settings"]["base_url"] = json!("http://169.254.169.254/latest/meta-data");
    let (status, p, _) = post(hostile).await;
    assert_eq!(status, 400);
    assert_eq!(invalid_param_names(&p), ["settings.base_url"]);
    let (status, p, _) = post(json!({"provider": "pigeon", "name": "x"})).await;
    assert_eq!(
        (status, invalid_param_names(&p)),
        (400, vec!["provider".to_owned()])
    );
    let (status, p, _) = post(json!({"provider": "fcm", "name": "x", "settings": {"project_id": "p"}, "credentials": {"client_email": "a@b.example", "private_key": "not a key"}})).await;
    assert_eq!(
        (status, invalid_param_names(&p)),
        (400, vec!["credentials.private_key".to_owned()])
    );
    let (status, _, _) = post(json!({"provider": "twilio", "name": "x", "surprise": 1})).await;
    assert_eq!(status, 400);
    let (status, p, _) =
        post(json!({"provider": "smtp", "name": "relay", "credentials": {"password": "x"}})).await;
    assert_eq!(
        (status, invalid_param_names(&p)),
        (400, vec!["credentials".to_owned()])
    );
    let count: i64 = sqlx::query_scalar("select count(*) from provider_configs")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(count, 0);

    let (status, _, _) = post(twilio("same")).await;
    assert_eq!(status, 201);
    let (status, p, _) = post(twilio("same")).await;
    assert_eq!(status, 409);
    assert_eq!(p["type"], "/problems/conflict");
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn other_tenants_configs_are_not_found_and_users_need_the_admin_role() {
    let app = TestApp::spawn_api_only().await;
    let id = app.add_provider(&twilio("mine")).await;
    let (other, other_key) = app.other_tenant().await;
    for (method, body) in [
        (reqwest::Method::GET, None),
        (reqwest::Method::PUT, Some(json!({"name": "stolen"}))),
        (reqwest::Method::DELETE, None),
    ] {
        let (status, p, _) = call_parts(
            &app,
            method.clone(),
            &format!("/api/v1/admin/providers/{id}"),
            &other_key,
            body.as_ref(),
        )
        .await;
        assert_eq!(status, 404, "{method} {p}");
    }
    let (_, list, _) = call_parts(
        &app,
        reqwest::Method::GET,
        "/api/v1/admin/providers",
        &other_key,
        None,
    )
    .await;
    assert_eq!(list["items"], json!([]));
    let (status, _, _) = call_parts(
        &app,
        reqwest::Method::GET,
        "/api/v1/admin/providers/not-a-uuid",
        &app.api_key,
        None,
    )
    .await;
    assert_eq!(status, 404);

    let secret = app.issue_jwt_secret(app.tenant_id).await;
    let user = testkit::jwks::user_token(&secret, app.tenant_id, "pat", &[]);
    let (status, p, _) = call_parts(
        &app,
        reqwest::Method::GET,
        "/api/v1/admin/providers",
        &user,
        None,
    )
    .await;
    assert_eq!(status, 403, "{p}");
    let admin = testkit::jwks::user_token(&secret, app.tenant_id, "dr-lee", &["ADMIN"]);
    let (status, list, _) = call_parts(
        &app,
        reqwest::Method::GET,
        "/api/v1/admin/providers",
        &admin,
        None,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(list["items"][0]["id"], id.as_str());
    let _ = other;
    let (status, _, _) = call_parts(
        &app,
        reqwest::Method::GET,
        "/api/v1/admin/providers",
        "nope",
        None,
    )
    .await;
    assert_eq!(status, 401);
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rotate_secrets_reseals_everything_with_the_new_key() {
    let app = TestApp::builder()
        .without_worker()
        .without_scheduler()
        .var("WEBHOOKS_ALLOW_LOOPBACK", true)
        .spawn()
        .await;
    app.add_provider(&twilio("main")).await;
    app.issue_jwt_secret(app.tenant_id).await;
    let hook = app
        .post_with_key(
            "/api/v1/admin/webhooks",
            &json!({"url": "http://127.0.0.1:9/hook", "events": ["notification.sent"]}),
        )
        .await;
    assert_eq!(hook.status(), 201);
    let mut vars: Vec<(String, String)> = app
        .vars
        .iter()
        .filter(|(k, _)| !k.starts_with("ENCRYPTION_"))
        .cloned()
        .collect();
    let new_key = "next:AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=";
    vars.push((
        "ENCRYPTION_KEYS".into(),
        format!("test:KioqKioqKioqKioqKioqKioqKioqKioqKioqKioqKio=,{new_key}"),
    ));
    vars.push(("ENCRYPTION_KEY_ID".into(), "next".into()));
    let out = std::process::Command::new(testkit::process::binary("api"))
        .envs(vars.iter().cloned())
        .arg("rotate-secrets")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("provider_configs=1 webhook_endpoints=1 jwt_secrets=1"),
        "{stdout}"
    );
    let keys: Vec<String> = sqlx::query_scalar(
        "select key_id from provider_configs union all select key_id from webhook_endpoints
         union all select key_id from tenant_jwt_secrets",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap();
    assert_eq!(keys, ["next", "next", "next"]);

    // With only the new key, the resealed credentials still open: a
    // settings-only update checks them.
    let only_new: Vec<(String, String)> = vars
        .iter()
        .filter(|(k, _)| k != "ENCRYPTION_KEYS")
        .cloned()
        .chain([("ENCRYPTION_KEYS".to_owned(), new_key.to_owned())])
        .collect();
    let keyring = shared::config::Settings::from_vars(only_new)
        .unwrap()
        .encryption
        .unwrap();
    let (tenant, id, ciphertext): (
        shared::domain::TenantId,
        shared::domain::ProviderId,
        Vec<u8>,
    ) = sqlx::query_as("select tenant_id, id, ciphertext from provider_configs")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    let sealed = shared::crypto::Sealed {
        key_id: "next".into(),
        bytes: ciphertext,
    };
    let plain = keyring
        .open(&sealed, &shared::providers::aad(tenant, id))
        .unwrap();
    assert!(
        String::from_utf8(plain)
            .unwrap()
            .contains(TWILIO_AUTH_TOKEN)
    );
    let audited: i64 =
        sqlx::query_scalar("select count(*) from audit_log where action = 'secrets.rotate'")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(audited, 1);
    app.shutdown().await;
}
