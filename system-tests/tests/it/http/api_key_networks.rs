//! API key network allowlists: a key with one works only from client
//! addresses inside it (403 from elsewhere), and key changes and refusals
//! leave security events.

use std::{net::IpAddr, process::Command, time::Duration};

use api::auth::{ApiKeyCache, KeyCheck, check_key};
use ipnet::IpNet;
use reqwest::Response;
use secrecy::ExposeSecret;
use serde_json::{Value, json};
use shared::db::api_keys;
use testkit::TestApp;

fn nets(list: &[&str]) -> Vec<IpNet> {
    list.iter().map(|n| n.parse().unwrap()).collect()
}

/// Behind a trusted proxy at 127.0.0.1, with keys re-read on every request.
async fn app() -> TestApp {
    TestApp::builder()
        .var("TRUSTED_PROXIES", "127.0.0.1/32")
        .var("API_KEY_CACHE_SECS", 0)
        .spawn()
        .await
}

async fn send(app: &TestApp, key: &str, forwarded_for: Option<&str>) -> Response {
    let mut req = app
        .client
        .post(app.url("/api/v1/services/notifications/send"))
        .bearer_auth(key)
        .json(&json!({"to": "pat@example.org", "subject": "Hi", "text": "Hello"}));
    if let Some(f) = forwarded_for {
        req = req.header("x-forwarded-for", f);
    }
    req.send().await.unwrap()
}

async fn events(app: &TestApp, kind: &str) -> Vec<(Option<String>, Value)> {
    sqlx::query_as(
        "select ip, details from security_events where tenant_id = $1 and kind = $2 order by id",
    )
    .bind(app.tenant_id)
    .bind(kind)
    .fetch_all(&app.pool)
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_allowlisted_key_works_only_from_its_networks_and_refusals_are_recorded_once_a_minute() {
    let app = app().await;
    let key = api_keys::create_with_networks(
        &app.pool,
        app.tenant_id,
        "office",
        &nets(&["10.0.0.0/8", "2001:db8::/32"]),
    )
    .await
    .unwrap();
    let token = key.secret.expose_secret().to_owned();

    assert_eq!(send(&app, &token, Some("10.1.2.3")).await.status(), 202);
    assert_eq!(
        send(&app, &token, Some("[2001:db8::5]:443")).await.status(),
        202
    );

    let refused = send(&app, &token, Some("198.51.100.7")).await;
    assert_eq!(refused.status(), 403);
    assert_eq!(
        refused.headers()["content-type"],
        "application/problem+json"
    );
    let body: Value = refused.json().await.unwrap();
    let detail = body["detail"].as_str().unwrap();
    assert!(
        detail.contains("may not be used from this address"),
        "{body}"
    );
    assert!(
        !body.to_string().contains("10.0.0.0") && !body.to_string().contains("2001:db8"),
        "the allowlist is not told: {body}"
    );
    // Without X-Forwarded-For the client is the proxy itself, outside too;
    // an admin route refuses the key the same way.
    assert_eq!(send(&app, &token, None).await.status(), 403);
    let admin = app
        .client
        .get(app.url("/api/v1/security/events"))
        .bearer_auth(&token)
        .header("x-forwarded-for", "198.51.100.8")
        .send()
        .await
        .unwrap();
    assert_eq!(admin.status(), 403);
    // The tenant's unrestricted key is untouched.
    assert_eq!(
        send(&app, &app.api_key, Some("198.51.100.7"))
            .await
            .status(),
        202
    );

    // Three refusals within the minute: one event, naming the key and the
    // first refused address.
    let refusals = events(&app, "api_key.address_refused").await;
    assert_eq!(refusals.len(), 1, "{refusals:?}");
    assert_eq!(refusals[0].0.as_deref(), Some("198.51.100.7"));
    assert_eq!(refusals[0].1["api_key_id"], key.id.to_string());

    // An emptied allowlist admits any address again.
    assert!(
        api_keys::set_networks(&app.pool, app.tenant_id, key.id, &[])
            .await
            .unwrap()
    );
    assert_eq!(send(&app, &token, Some("198.51.100.7")).await.status(), 202);
    assert_eq!(send(&app, &token, None).await.status(), 202);
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_key_cache_carries_the_allowlist_until_its_bound() {
    let app = TestApp::spawn_api_only().await;
    let key = api_keys::create_with_networks(&app.pool, app.tenant_id, "k", &nets(&["10.0.0.0/8"]))
        .await
        .unwrap();
    let token = key.secret.expose_secret();
    let inside: IpAddr = "10.9.9.9".parse().unwrap();
    let outside: IpAddr = "192.0.2.1".parse().unwrap();
    let cache = ApiKeyCache::new(Duration::from_secs(3600), 10);
    assert!(matches!(
        check(&app, &cache, token, Some(inside)).await,
        KeyCheck::Allowed(o) if o.key_id == key.id
    ));
    // Answered from the cache: no address at all is refused by the list.
    assert!(matches!(
        check(&app, &cache, token, None).await,
        KeyCheck::Refused(_)
    ));
    assert!(
        api_keys::set_networks(&app.pool, app.tenant_id, key.id, &nets(&["192.0.2.0/24"]))
            .await
            .unwrap()
    );
    // The cached allowlist holds until the entry expires ...
    assert!(matches!(
        check(&app, &cache, token, Some(outside)).await,
        KeyCheck::Refused(_)
    ));
    // ... a fresh read sees the new one.
    let fresh = ApiKeyCache::new(Duration::from_secs(3600), 10);
    assert!(matches!(
        check(&app, &fresh, token, Some(outside)).await,
        KeyCheck::Allowed(_)
    ));
    assert!(matches!(
        check(&app, &fresh, token, Some(inside)).await,
        KeyCheck::Refused(_)
    ));
    assert_eq!(
        check(&app, &fresh, "ntf_wrong", Some(inside)).await,
        KeyCheck::Unknown
    );
    app.shutdown().await;
}

/// What `check_key` answers for `token` from `addr`, through `cache`.
async fn check(app: &TestApp, cache: &ApiKeyCache, token: &str, addr: Option<IpAddr>) -> KeyCheck {
    check_key(&app.pool, cache, token, addr).await.unwrap()
}

fn cli(vars: &[(String, String)], args: &[&str]) -> (bool, String, String) {
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

#[test]
fn networks_parse_as_cidrs_or_single_addresses() {
    use api::cli::parse_network;
    assert_eq!(
        parse_network("10.1.2.3/8").unwrap().to_string(),
        "10.0.0.0/8"
    );
    assert_eq!(
        parse_network("192.0.2.7").unwrap().to_string(),
        "192.0.2.7/32"
    );
    assert_eq!(
        parse_network(" 2001:db8::1/32 ").unwrap().to_string(),
        "2001:db8::/32"
    );
    for bad in [
        "10.0.0.0/33",
        "10.0.0",
        "",
        "example.org/8",
        "2001:db8::/129",
    ] {
        let err = parse_network(bad).unwrap_err();
        assert!(err.contains("expected a CIDR"), "{bad}: {err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_command_line_sets_and_clears_allowlists_and_each_change_is_a_security_event() {
    let app = app().await;
    let tenant = app.tenant_id.to_string();

    let (ok, _, stderr) = cli(
        &app.vars,
        &[
            "key",
            "create",
            "--tenant",
            &tenant,
            "--allow",
            "10.0.0.0/33",
        ],
    );
    assert!(!ok && stderr.contains("expected a CIDR"), "{stderr}");

    let (ok, stdout, stderr) = cli(
        &app.vars,
        &[
            "key",
            "create",
            "--tenant",
            &tenant,
            "--name",
            "office",
            "--allow",
            "10.0.0.0/8",
            "--allow",
            "2001:db8::/32",
        ],
    );
    assert!(ok, "{stderr}");
    let value = |key: &str| {
        stdout
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{key}=")))
            .unwrap()
            .to_owned()
    };
    let (key_id, token) = (value("api_key_id"), value("api_key"));
    // `key allow --tenant <tenant> --key <key_id>` and then `extra`.
    let allow = |tenant: &str, extra: &[&str]| {
        let args = [
            &["key", "allow", "--tenant", tenant, "--key", &key_id],
            extra,
        ]
        .concat();
        cli(&app.vars, &args)
    };
    let stored: Option<Vec<String>> =
        sqlx::query_scalar("select allowed_networks from api_keys where id = $1::uuid")
            .bind(&key_id)
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(
        stored.unwrap(),
        ["10.0.0.0/8".to_owned(), "2001:db8::/32".to_owned()]
    );
    assert_eq!(send(&app, &token, Some("10.0.0.1")).await.status(), 202);
    assert_eq!(send(&app, &token, Some("192.0.2.1")).await.status(), 403);

    let (ok, _, stderr) = allow(&tenant, &[]);
    assert!(
        !ok && stderr.contains("--allow"),
        "neither --allow nor --any: {stderr}"
    );
    let (ok, _, stderr) = allow(&tenant, &["--allow", "192.0.2.0/24", "--any"]);
    assert!(!ok && stderr.contains("--any"), "both: {stderr}");
    let (ok, _, stderr) = allow(&tenant, &["--allow", "not-a-net"]);
    assert!(!ok && stderr.contains("expected a CIDR"), "{stderr}");

    let (ok, stdout, stderr) = allow(&tenant, &["--allow", "192.0.2.0/24"]);
    assert!(ok && stdout.contains("192.0.2.0/24"), "{stderr}");
    assert_eq!(send(&app, &token, Some("192.0.2.1")).await.status(), 202);
    assert_eq!(send(&app, &token, Some("10.0.0.1")).await.status(), 403);

    let (ok, _, stderr) = allow(&tenant, &["--any"]);
    assert!(ok, "{stderr}");
    assert_eq!(send(&app, &token, Some("10.0.0.1")).await.status(), 202);

    // Another tenant's key cannot be changed through this tenant.
    let (other, _) = app.other_tenant().await;
    let (ok, _, stderr) = allow(&other.to_string(), &["--allow", "10.0.0.0/8"]);
    assert!(!ok && stderr.contains("no active key"), "{stderr}");

    let (ok, _, stderr) = cli(
        &app.vars,
        &["key", "revoke", "--tenant", &tenant, "--key", &key_id],
    );
    assert!(ok, "{stderr}");
    let (ok, _, _) = allow(&tenant, &["--any"]);
    assert!(!ok, "a revoked key has no allowlist to change");

    let rows: Vec<(String, Value)> = sqlx::query_as(
        "select kind, details from security_events
         where tenant_id = $1 and kind like 'api_key.%' and kind <> 'api_key.address_refused'
         order by id",
    )
    .bind(app.tenant_id)
    .fetch_all(&app.pool)
    .await
    .unwrap();
    let kinds: Vec<&str> = rows.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        kinds,
        [
            "api_key.created",
            "api_key.networks_changed",
            "api_key.networks_changed",
            "api_key.revoked"
        ]
    );
    assert!(rows.iter().all(|(_, d)| d["api_key_id"] == key_id.as_str()));
    assert_eq!(
        rows[0].1["allowed_networks"],
        json!(["10.0.0.0/8", "2001:db8::/32"])
    );
    assert_eq!(rows[1].1["allowed_networks"], json!(["192.0.2.0/24"]));
    assert_eq!(rows[2].1["allowed_networks"], json!([]));
    let refusals = events(&app, "api_key.address_refused").await;
    assert_eq!(refusals.len(), 1, "once per key per minute: {refusals:?}");
    let audited: Vec<String> =
        sqlx::query_scalar("select action from audit_log where resource_id = $1 order by id")
            .bind(&key_id)
            .fetch_all(&app.pool)
            .await
            .unwrap();
    assert_eq!(
        audited,
        [
            "api_key.create",
            "api_key.allow",
            "api_key.allow",
            "api_key.revoke"
        ]
    );
    let stored: Vec<Value> = sqlx::query_scalar("select details from security_events")
        .fetch_all(&app.pool)
        .await
        .unwrap();
    assert!(stored.iter().all(|d| !d.to_string().contains(&token)));
    app.shutdown().await;
}
