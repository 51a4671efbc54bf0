//! The API's database work sees no organisation's rows until it says whose:
//! a task without a scope (one spawned from a request) and a request before
//! its caller is known read nothing; platform scope is entered only on an
//! explicit path that names its reason and is counted.

use secrecy::ExposeSecret;
use shared::db::scope::{self, Scope};
use sqlx::PgPool;
use testkit::TestApp;

async fn notifications(pool: &PgPool) -> i64 {
    sqlx::query_scalar("select count(*) from notifications")
        .fetch_one(pool)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_api_task_without_a_scope_or_before_authentication_reads_no_tenant_rows() {
    let app = TestApp::spawn_api_only().await;
    app.send_to("pat@example.com").await;
    // The assertions' pool falls back to platform scope.
    assert_eq!(notifications(&app.pool).await, 1);

    let (other, _) = app.other_tenant().await;
    // A pool as the API opens it.
    let url = app.settings.database_url.expose_secret().to_owned();
    let pool = shared::db::connect_url(&url, 2, api::DB_FALLBACK)
        .await
        .unwrap();
    // A task with no scope, as one spawned from a request runs.
    assert_eq!(scope::current(), None);
    assert_eq!(notifications(&pool).await, 0);
    // A request before authentication, then walled to its caller.
    scope::request(async {
        assert_eq!(scope::current(), Some(Scope::Nobody));
        assert_eq!(notifications(&pool).await, 0);
        scope::tenant(other, async {
            assert_eq!(notifications(&pool).await, 0);
        })
        .await;
        assert!(scope::narrow(app.tenant_id));
        assert_eq!(notifications(&pool).await, 1);
    })
    .await;
    // The explicit path, and nothing beyond it.
    scope::request(async {
        assert_eq!(scope::platform("test", notifications(&pool)).await, 1);
        assert_eq!(notifications(&pool).await, 0);
    })
    .await;
    pool.close().await;

    // The API itself found the sender's key on the counted path.
    let metrics = app.metrics_page().await;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("db_platform_scope_total{reason=\"api_key_lookup\"}")),
        "{metrics}"
    );
    app.shutdown().await;
}
