//! A notification or inbox event names a subscriber that exists, checked
//! once per statement: an insert naming an unknown (or another
//! organisation's) subscriber is refused as a foreign key would refuse it,
//! and an erasure and a send in flight for the same subscriber are ordered,
//! whichever starts first, so no notification keeps a link to an erased
//! subscriber.

use sqlx::{Connection, Executor, PgConnection};

use super::*;

/// An owner connection acting as the platform's pool does: the app role,
/// walled to `tenant`.
async fn as_app(app: &TestApp, tenant: TenantId) -> PgConnection {
    let mut db = app.owner().await;
    db.execute(format!("set role notify_app; set app.tenant_id = '{tenant}'").as_str())
        .await
        .unwrap();
    db
}

/// The API with one subscriber, `pat`.
async fn with_pat() -> (TestApp, SubscriberId) {
    let app = api_app().await;
    assert_eq!(
        put(&app, &app.api_key, "pat", &json!({})).await.status(),
        201
    );
    let pat = subscribers::find(&app.pool, app.tenant_id, "pat")
        .await
        .unwrap()
        .unwrap();
    (app, pat)
}

/// One queued in-app notification for `subscriber`.
async fn insert_notification(
    db: &mut PgConnection,
    tenant: TenantId,
    subscriber: SubscriberId,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "insert into notifications (id, tenant_id, channel, recipient, content, max_attempts, subscriber_id)
         values (gen_random_uuid(), $1, 'inapp', 'pat', '{\"title\": \"Result ready\"}', 3, $2)",
    )
    .bind(tenant)
    .bind(subscriber)
    .execute(db)
    .await
    .map(|_| ())
}

/// One inbox event of `subscriber`'s.
async fn insert_event(
    db: &mut PgConnection,
    tenant: TenantId,
    subscriber: SubscriberId,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "insert into subscriber_events (subscriber_id, seq, tenant_id, kind, payload)
         values ($2, 1, $1, 'unread_count.changed', '{\"count\": 1}')",
    )
    .bind(tenant)
    .bind(subscriber)
    .execute(db)
    .await
    .map(|_| ())
}

/// Waits until some session of the test database waits for a row lock
/// held by another: the order of two transactions is the behaviour under
/// test.
async fn until_a_session_waits_for_a_lock(app: &TestApp) {
    testkit::eventually("a session to wait for the lock", WAIT, || async {
        let waiting: i64 = sqlx::query_scalar(
            "select count(*) from pg_stat_activity
             where datname = current_database() and wait_event_type = 'Lock'",
        )
        .fetch_one(&mut app.owner().await)
        .await
        .unwrap();
        (waiting > 0).then_some(())
    })
    .await
}

fn assert_refused(result: Result<(), sqlx::Error>, table: &str) {
    let err = result.expect_err("the insert names no existing subscriber");
    let db = err.as_database_error().expect("a database error");
    assert_eq!(db.code().as_deref(), Some("23503"), "{db}");
    assert_eq!(
        db.constraint(),
        Some(format!("{table}_subscriber_id_fkey").as_str())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_or_foreign_subscriber_is_refused_and_a_known_one_accepted() {
    let (app, pat) = with_pat().await;
    let (other, other_key) = app.other_tenant().await;
    assert_eq!(put(&app, &other_key, "sam", &json!({})).await.status(), 201);
    let sam = subscribers::find(&app.pool, other, "sam")
        .await
        .unwrap()
        .unwrap();
    let mut db = as_app(&app, app.tenant_id).await;

    assert_refused(
        insert_notification(&mut db, app.tenant_id, SubscriberId::new()).await,
        "notifications",
    );
    // Another organisation's subscriber is not there for this one.
    assert_refused(
        insert_notification(&mut db, app.tenant_id, sam).await,
        "notifications",
    );
    assert_refused(
        insert_event(&mut db, app.tenant_id, SubscriberId::new()).await,
        "subscriber_events",
    );
    // One statement naming a known and an unknown subscriber writes nothing.
    let mixed = sqlx::query(
        "insert into notifications (id, tenant_id, channel, recipient, content, max_attempts, subscriber_id)
         select gen_random_uuid(), $1, 'inapp', 'pat', '{}', 3, s
         from unnest($2::uuid[]) as s",
    )
    .bind(app.tenant_id)
    .bind(vec![pat, SubscriberId::new(), pat])
    .execute(&mut db)
    .await
    .map(|_| ());
    assert_refused(mixed, "notifications");

    insert_notification(&mut db, app.tenant_id, pat)
        .await
        .unwrap();
    insert_event(&mut db, app.tenant_id, pat).await.unwrap();
    // A subscriber created by the same transaction needs no lock to be named.
    let mut tx = db.begin().await.unwrap();
    let created = SubscriberId::new();
    sqlx::query("insert into subscribers (id, tenant_id, external_id) values ($1, $2, 'kim')")
        .bind(created)
        .bind(app.tenant_id)
        .execute(&mut *tx)
        .await
        .unwrap();
    insert_notification(&mut tx, app.tenant_id, created)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let named: i64 =
        sqlx::query_scalar("select count(*) from notifications where subscriber_id = any($1)")
            .bind(vec![pat, created])
            .fetch_one(&mut db)
            .await
            .unwrap();
    assert_eq!(named, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_send_during_an_erasure_waits_for_it_and_is_refused() {
    let (app, pat) = with_pat().await;
    let mut erasing = as_app(&app, app.tenant_id).await;
    let mut tx = erasing.begin().await.unwrap();
    subscribers::delete(&mut tx, app.tenant_id, "pat")
        .await
        .unwrap()
        .expect("pat is there to erase");

    let tenant = app.tenant_id;
    let mut sending = as_app(&app, tenant).await;
    let send = tokio::spawn(async move {
        let result = insert_notification(&mut sending, tenant, pat).await;
        (result, sending)
    });
    until_a_session_waits_for_a_lock(&app).await;
    tx.commit().await.unwrap();
    let (result, _) = send.await.unwrap();
    assert_refused(result, "notifications");
    let left: i64 =
        sqlx::query_scalar("select count(*) from notifications where subscriber_id = $1")
            .bind(pat)
            .fetch_one(&mut erasing)
            .await
            .unwrap();
    assert_eq!(left, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_erasure_during_a_send_waits_for_it_and_detaches_what_it_wrote() {
    let (app, pat) = with_pat().await;
    let mut sending = as_app(&app, app.tenant_id).await;
    let mut tx = sending.begin().await.unwrap();
    insert_notification(&mut tx, app.tenant_id, pat)
        .await
        .unwrap();
    insert_event(&mut tx, app.tenant_id, pat).await.unwrap();

    let tenant = app.tenant_id;
    let mut erasing = as_app(&app, tenant).await;
    let erase = tokio::spawn(async move {
        let mut tx = erasing.begin().await.unwrap();
        let deleted = subscribers::delete(&mut tx, tenant, "pat").await.unwrap();
        tx.commit().await.unwrap();
        deleted
    });
    until_a_session_waits_for_a_lock(&app).await;
    tx.commit().await.unwrap();
    let deleted = erase.await.unwrap().expect("pat was erased");
    assert_eq!(deleted.id, pat);
    // The send committed first, so the erasure saw its notification: it was
    // cancelled (queued, never sent) and detached, and its event went.
    assert_eq!((deleted.cancelled, deleted.detached), (1, 1));
    let (linked, events, subscriber): (i64, i64, i64) = sqlx::query_as(
        "select (select count(*) from notifications where subscriber_id = $1),
                (select count(*) from subscriber_events where subscriber_id = $1),
                (select count(*) from subscribers where id = $1)",
    )
    .bind(pat)
    .fetch_one(&mut sending)
    .await
    .unwrap();
    assert_eq!((linked, events, subscriber), (0, 0, 0));
}
