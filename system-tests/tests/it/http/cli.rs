//! The admin command line: migrations, tenants and keys, and the audit trail
//! it leaves.

use std::process::Command;

use serde_json::json;
use sqlx::{Connection, Executor, PgConnection};
use testkit::{TestApp, spawn_app};

fn api(vars: &[(String, String)], args: &[&str]) -> (bool, String, String) {
    let out = Command::new(testkit::process::binary("api"))
        .envs(vars.iter().cloned())
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn value<'a>(stdout: &'a str, key: &str) -> &'a str {
    stdout
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("no {key} in {stdout}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn migrate_creates_a_missing_database_and_applies_the_schema() {
    let name = format!("notify_t_{}", uuid::Uuid::new_v4().simple());
    let url = format!("{}/{name}", testkit::postgres_server_url());
    let vars = vec![
        ("DATABASE_URL".to_owned(), url.clone()),
        (
            "JOBS_FILE".to_owned(),
            testkit::repo_root().join("jobs.toml").display().to_string(),
        ),
    ];
    let (ok, stdout, stderr) = api(&vars, &["migrate"]);
    assert!(ok, "{stderr}");
    assert!(
        stdout.contains("database created") && stdout.contains("migrations applied"),
        "{stdout}"
    );
    let (ok, stdout, _) = api(&vars, &["migrate"]);
    assert!(
        ok && !stdout.contains("database created"),
        "a second run only checks: {stdout}"
    );
    let mut conn = PgConnection::connect(&url).await.unwrap();
    let tables: Vec<String> = sqlx::query_scalar(
        "select tablename::text from pg_tables where schemaname = 'public' order by 1",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    for t in [
        "api_keys",
        "audit_log",
        "cron_ticks",
        "delivery_attempts",
        "notifications",
        "tenants",
    ] {
        assert!(tables.iter().any(|x| x == t), "{t} in {tables:?}");
    }
    conn.close().await.unwrap();
    let mut admin = PgConnection::connect(&format!("{}/postgres", testkit::postgres_server_url()))
        .await
        .unwrap();
    admin
        .execute(format!("drop database {name} with (force)").as_str())
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_tenant_and_key_made_on_the_command_line_can_send_until_the_key_is_revoked() {
    // The command line is another process: a running API trusts a key it
    // checked for `API_KEY_CACHE_SECS`, here 0 so the revocation shows at once.
    let app = TestApp::builder()
        .var("API_KEY_CACHE_SECS", 0)
        .spawn()
        .await;
    let (ok, stdout, stderr) = api(
        &app.vars,
        &["tenant", "create", "--name", "Riverside Clinic"],
    );
    assert!(ok, "{stderr}");
    let (tenant, key_id, key) = (
        value(&stdout, "tenant_id"),
        value(&stdout, "api_key_id"),
        value(&stdout, "api_key"),
    );
    assert!(key.starts_with("ntf_") && key.len() >= 40);
    let stored: i64 = sqlx::query_scalar("select count(*) from api_keys where key_prefix = left($1, 10) and key_hash <> convert_to($1, 'utf8')")
        .bind(key)
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(stored, 1, "only a hash of the key is stored");
    let send = || {
        app.client
            .post(app.url("/api/v1/services/notifications/send"))
            .bearer_auth(key)
            .json(&json!({"to": "pat@example.org", "subject": "Hi", "text": "Hello"}))
            .send()
    };
    assert_eq!(send().await.unwrap().status(), 202);
    // --reuse keeps the tenant and issues another key.
    let (ok, again, _) = api(
        &app.vars,
        &["tenant", "create", "--name", "Riverside Clinic", "--reuse"],
    );
    assert!(ok);
    assert_eq!(value(&again, "tenant_id"), tenant);
    assert_ne!(value(&again, "api_key"), key);
    let (ok, _, stderr) = api(
        &app.vars,
        &["key", "revoke", "--tenant", tenant, "--key", key_id],
    );
    assert!(ok, "{stderr}");
    assert_eq!(send().await.unwrap().status(), 401);
    let (ok, _, stderr) = api(
        &app.vars,
        &["key", "revoke", "--tenant", tenant, "--key", key_id],
    );
    assert!(!ok && stderr.contains("no active key"), "{stderr}");
    let (ok, _, stderr) = api(&app.vars, &["tenant", "create", "--name", ""]);
    assert!(!ok && stderr.contains("--name"), "{stderr}");

    let actions: Vec<(String, String)> = sqlx::query_as(
        "select action, actor from audit_log where tenant_id = $1::uuid order by id",
    )
    .bind(tenant)
    .fetch_all(&app.pool)
    .await
    .unwrap();
    let names: Vec<&str> = actions.iter().map(|(a, _)| a.as_str()).collect();
    assert_eq!(
        names,
        [
            "tenant.create",
            "api_key.create",
            "api_key.create",
            "api_key.revoke"
        ]
    );
    assert!(actions.iter().all(|(_, actor)| actor == "cli"));
    let details: Vec<serde_json::Value> = sqlx::query_scalar("select details from audit_log")
        .fetch_all(&app.pool)
        .await
        .unwrap();
    assert!(
        details.iter().all(|d| !d.to_string().contains(key)),
        "no key in the audit trail"
    );
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_audit_log_refuses_updates_and_deletes() {
    let app = spawn_app().await;
    let (ok, _, _) = api(&app.vars, &["tenant", "create", "--name", "Audit Clinic"]);
    assert!(ok);
    for sql in [
        "update audit_log set actor = 'someone else'",
        "delete from audit_log",
        "truncate audit_log",
    ] {
        // As the owner: the app role may not even try (`audit.rs`).
        let err = sqlx::query(sql)
            .execute(&mut app.owner().await)
            .await
            .expect_err(sql);
        assert!(err.to_string().contains("append only"), "{sql}: {err}");
    }
    let rows: i64 = sqlx::query_scalar("select count(*) from audit_log")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(rows, 2);
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_jwt_secret_issued_on_the_command_line_signs_user_tokens_and_is_stored_sealed() {
    let app = spawn_app().await;
    let tenant = app.tenant_id.to_string();
    let (ok, stdout, stderr) = api(&app.vars, &["tenant", "jwt-secret", "--tenant", &tenant]);
    assert!(ok, "{stderr}");
    let secret = value(&stdout, "jwt_secret").to_owned();
    let stored: Vec<u8> =
        sqlx::query_scalar("select ciphertext from tenant_jwt_secrets where tenant_id = $1::uuid")
            .bind(&tenant)
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert!(
        !stored.windows(secret.len()).any(|w| w == secret.as_bytes()),
        "sealed, not in plain text"
    );
    let claims =
        json!({"sub": "nurse-7", "tenant_id": tenant, "exp": chrono::Utc::now().timestamp() + 60});
    let token = jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap();
    let me = app.get_with_token("/api/v1/users/me", &token).await;
    assert_eq!(me.status(), 200);
    // Without encryption keys the command refuses rather than store it in the clear.
    let vars: Vec<(String, String)> = app
        .vars
        .iter()
        .filter(|(k, _)| !k.starts_with("ENCRYPTION_"))
        .cloned()
        .collect();
    let (ok, _, stderr) = api(&vars, &["tenant", "jwt-secret", "--tenant", &tenant]);
    assert!(!ok && stderr.contains("ENCRYPTION_KEYS"), "{stderr}");
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn platform_admin_bootstraps_the_platform_organization_once() {
    let app = TestApp::spawn_api_only().await;
    let mut vars = app.vars.clone();
    vars.push((
        "PLATFORM_ADMIN_PASSWORD".to_owned(),
        "Bootstrap-Pass-1".to_owned(),
    ));
    let (ok, stdout, stderr) = api(
        &vars,
        &["platform-admin", "--email", "ops@platform.example"],
    );
    assert!(ok, "{stderr}");
    let platform = value(&stdout, "platform_organization_id").to_owned();
    assert!(!stderr.contains("Bootstrap-Pass-1") && !stdout.contains("Bootstrap-Pass-1"));
    vars.push((
        "PLATFORM_ADMIN_PASSWORD".to_owned(),
        "Second-Admin-Pass-2".to_owned(),
    ));
    let (ok, stdout, stderr) = api(
        &vars,
        &["platform-admin", "--email", "ops2@platform.example"],
    );
    assert!(ok, "{stderr}");
    assert_eq!(
        value(&stdout, "platform_organization_id"),
        platform,
        "one platform organisation"
    );
    let mut weak = app.vars.clone();
    weak.push(("PLATFORM_ADMIN_PASSWORD".to_owned(), "weak".to_owned()));
    let (ok, _, stderr) = api(
        &weak,
        &["platform-admin", "--email", "ops3@platform.example"],
    );
    assert!(!ok && stderr.contains("--password"), "{stderr}");

    // The admin signs in with the temporary password, which it must change.
    let session: serde_json::Value = app
        .post_anonymous(
            "/api/v1/auth/login",
            &json!({"email": "ops@platform.example", "password": "Bootstrap-Pass-1"}),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(session["must_change_password"], true);
    assert_eq!(session["organization_id"], platform.as_str());
    app.shutdown().await;
}
