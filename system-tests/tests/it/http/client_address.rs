//! The client address behind a trusted load balancer: `X-Forwarded-For` is
//! believed only from `TRUSTED_PROXIES`, read from the right, and names the
//! client that anonymous rate limits, the sign-in throttle and security
//! events count and record.

use reqwest::Response;
use serde_json::json;
use testkit::{TestApp, TestAppBuilder};

/// Sign-in allows 2 requests per client address, then one every 1,000 s.
fn tiny_sign_in() -> TestAppBuilder {
    TestApp::builder()
        .without_worker()
        .without_scheduler()
        .var("JOBS__RATE_LIMITS__AUTH__PER_SEC", 0.001)
        .var("JOBS__RATE_LIMITS__AUTH__BURST", 2)
}

/// A failed sign-in (each with its own email, so no account waits) sent
/// with `forwarded_for`.
async fn sign_in(app: &TestApp, n: u32, forwarded_for: &str) -> Response {
    app.client
        .post(app.url("/api/v1/auth/login"))
        .header("x-forwarded-for", forwarded_for)
        .json(&json!({"email": format!("nobody{n}@example.org"), "password": "Wrong-Password-1"}))
        .send()
        .await
        .unwrap()
}

/// The `RateLimit-Remaining` of an answer that was let through.
fn remaining(resp: &Response) -> u64 {
    assert_eq!(
        resp.status(),
        401,
        "let through, then refused by the password check"
    );
    resp.headers()["ratelimit-remaining"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap()
}

async fn recorded_addresses(app: &TestApp) -> Vec<String> {
    sqlx::query_scalar(
        "select distinct ip from security_events where kind = 'login.failed' and ip is not null
         order by ip",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn behind_a_trusted_proxy_each_forwarded_client_has_its_own_sign_in_allowance() {
    let app = tiny_sign_in()
        .var("TRUSTED_PROXIES", "127.0.0.1/32")
        .spawn()
        .await;
    assert_eq!(remaining(&sign_in(&app, 1, "198.51.100.1").await), 1);
    // A client writing its own entries left of the proxy's is still counted
    // by the address the proxy appended.
    assert_eq!(
        remaining(&sign_in(&app, 2, "203.0.113.50, 198.51.100.1").await),
        0
    );
    let refused = sign_in(&app, 3, "198.51.100.1").await;
    assert_eq!(refused.status(), 429);
    assert_eq!(
        refused.headers()["content-type"],
        "application/problem+json"
    );

    // Another client behind the same proxy has its own allowance; a port
    // does not make it someone else.
    assert_eq!(remaining(&sign_in(&app, 4, "198.51.100.2").await), 1);
    assert_eq!(remaining(&sign_in(&app, 5, "198.51.100.2:4711").await), 0);
    assert_eq!(sign_in(&app, 6, "198.51.100.2").await.status(), 429);
    assert_eq!(remaining(&sign_in(&app, 7, "[2001:db8::7]:443").await), 1);

    // A malformed header counts against the proxy itself, never a 5xx.
    assert_eq!(remaining(&sign_in(&app, 8, "not-an-address").await), 1);
    assert_eq!(remaining(&sign_in(&app, 9, "198.51.100.9,,").await), 0);

    assert_eq!(
        recorded_addresses(&app).await,
        ["127.0.0.1", "198.51.100.1", "198.51.100.2", "2001:db8::7"],
        "security events record the client, not the proxy"
    );
    let throttled: Vec<String> =
        sqlx::query_scalar("select key from login_throttle where key like 'ip:%' order by key")
            .fetch_all(&app.pool)
            .await
            .unwrap();
    assert_eq!(
        throttled,
        [
            "ip:127.0.0.1",
            "ip:198.51.100.1",
            "ip:198.51.100.2",
            "ip:2001:db8::7"
        ],
        "failed sign-ins are counted per client"
    );
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn without_trusted_proxies_x_forwarded_for_is_ignored() {
    let app = tiny_sign_in().spawn().await;
    assert_eq!(remaining(&sign_in(&app, 1, "198.51.100.1").await), 1);
    assert_eq!(remaining(&sign_in(&app, 2, "198.51.100.2").await), 0);
    assert_eq!(
        sign_in(&app, 3, "198.51.100.3").await.status(),
        429,
        "every header value is the same caller: the TCP peer"
    );
    assert_eq!(recorded_addresses(&app).await, ["127.0.0.1"]);
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_peer_outside_the_trusted_networks_is_not_believed() {
    let app = tiny_sign_in()
        .var("TRUSTED_PROXIES", "10.0.0.0/8, fd00::/8")
        .spawn()
        .await;
    assert_eq!(remaining(&sign_in(&app, 1, "198.51.100.1").await), 1);
    assert_eq!(remaining(&sign_in(&app, 2, "198.51.100.2").await), 0);
    assert_eq!(sign_in(&app, 3, "198.51.100.3").await.status(), 429);
    assert_eq!(recorded_addresses(&app).await, ["127.0.0.1"]);
    app.shutdown().await;
}
