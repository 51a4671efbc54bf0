//! Effective permissions are kept per replica for
//! `PERMISSIONS_CACHE_SECS`: a change made through a replica applies there
//! to the very next request; on another replica (or straight in Postgres)
//! once the bound has passed on the permissions clock, which the test moves.

use std::time::Duration as StdDuration;

use chrono::{Duration, Utc};
use reqwest::Method;
use serde_json::json;
use testkit::TestApp;

use crate::http::org_support::{request_json, user};
use crate::support::ManualClock;

const BOUND: i64 = api::permissions::cache::PERMISSIONS_CACHE_SECS;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_revoked_permission_is_refused_at_once_here_and_on_other_replicas_once_the_bound_passed()
{
    let clock = ManualClock::at(Utc::now());
    let app = TestApp::builder()
        .without_worker()
        .without_scheduler()
        .permissions_clock(clock.clone())
        .spawn()
        .await;
    // A second replica on the same database, reading the same clock.
    let mut replica = api::Application::build(&app.settings).await.unwrap();
    replica.set_permissions_clock(clock.clone());
    let b = format!("http://{}", replica.addr());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let replica_task = tokio::spawn(replica.run_until(
        async move {
            let _ = stopped.await;
        },
        StdDuration::from_secs(1),
    ));

    let admin = user(&app, app.tenant_id, "ADMIN", "admin@clinic.example").await;
    let doctor = user(&app, app.tenant_id, "DOCTOR", "doc@clinic.example").await;
    let grants = format!("/api/v1/users/{}/permissions", doctor.id);
    let audit_on = |base: &str| {
        app.client
            .get(format!("{base}/api/v1/admin/audit"))
            .bearer_auth(&doctor.token)
    };
    let status = |r: reqwest::RequestBuilder| async move { r.send().await.unwrap().status() };
    assert_eq!(status(audit_on(&app.base)).await, 403);
    assert_eq!(status(audit_on(&b)).await, 403);

    // Granted through A: A answers at once; B trusts its refusal until the
    // bound has passed.
    let grant = request_json(
        &app,
        Method::POST,
        &grants,
        &admin.token,
        &json!({"permission": "audit:read"}),
    )
    .await;
    assert!(grant.status().is_success(), "{}", grant.status());
    assert_eq!(status(audit_on(&app.base)).await, 200, "A, at once");
    assert_eq!(status(audit_on(&b)).await, 403, "B, within the bound");
    clock.advance(Duration::seconds(BOUND));
    assert_eq!(status(audit_on(&b)).await, 200, "B, once the bound passed");
    assert_eq!(status(audit_on(&app.base)).await, 200);

    // Revoked through B: B refuses at once; A keeps what it read until the
    // bound has passed, and not a moment longer.
    let revoke = app
        .client
        .delete(format!("{b}{grants}/audit:read"))
        .bearer_auth(&admin.token)
        .send()
        .await
        .unwrap();
    assert!(revoke.status().is_success(), "{}", revoke.status());
    assert_eq!(status(audit_on(&b)).await, 403, "B, at once");
    clock.advance(Duration::seconds(BOUND) - Duration::milliseconds(1));
    assert_eq!(
        status(audit_on(&app.base)).await,
        200,
        "A, within the bound"
    );
    clock.advance(Duration::milliseconds(1));
    assert_eq!(
        status(audit_on(&app.base)).await,
        403,
        "A, once the bound passed"
    );

    // A change straight in Postgres (another process) counts the same way.
    sqlx::query(
        "insert into user_permissions (id, tenant_id, user_id, permission, granted_by)
         values (gen_random_uuid(), $1, $2::uuid, 'audit:read', 'test')",
    )
    .bind(app.tenant_id)
    .bind(&doctor.id)
    .execute(&app.pool)
    .await
    .unwrap();
    assert_eq!(status(audit_on(&app.base)).await, 403, "within the bound");
    clock.advance(Duration::seconds(BOUND));
    assert_eq!(
        status(audit_on(&app.base)).await,
        200,
        "once the bound passed"
    );

    let _ = stop.send(());
    replica_task.await.unwrap().unwrap();
    app.shutdown().await;
}
