//! A batch's counts per status are kept by the statements that write its
//! notifications (appended deltas, folded by the scheduler) rather than
//! counted on every read: at every step they equal a count of the rows
//! themselves, before and after a fold, through inserts, updates that move
//! or keep a status, deletes and rolled-back statements.

use shared::db::group_counts;
use shared::domain::TenantId;
use sqlx::{Connection, Executor, PgConnection};

use super::*;

/// The batch's notifications per status, counted from the rows.
async fn counted(db: &mut PgConnection, batch: &str) -> Vec<(String, i64)> {
    sqlx::query_as(
        "select status, count(*) from notifications where batch_id = $1::uuid
         group by status order by status",
    )
    .bind(batch)
    .fetch_all(db)
    .await
    .unwrap()
}

/// The batch's counts as kept, read as the API reads them.
async fn kept(db: &mut PgConnection, tenant: TenantId, batch: &str) -> Vec<(String, i64)> {
    group_counts::by_status(db, tenant, batch.parse().unwrap())
        .await
        .unwrap()
}

/// Deltas of the batch not yet folded.
async fn pending(db: &mut PgConnection, batch: &str) -> i64 {
    sqlx::query_scalar("select count(*) from group_status_deltas where group_id = $1::uuid")
        .bind(batch)
        .fetch_one(db)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn counts_kept_per_statement_equal_the_rows_before_and_after_a_fold() {
    // The scheduler dispatches but does not fold: nothing folds but this
    // test.
    let app = TestApp::builder().var("REPORTS_TICK_SECS", 0).spawn().await;
    app.add_template(&template()).await;
    let id = create(
        &app,
        &json!({"template": "lab.ready", "channels": ["inapp", "email"],
                "defaults": {"kind": "blood"}, "recipients": mailed(0, 40)}),
    )
    .await;
    assert_eq!(chunk(&app, &id, 1, mailed(40, 25)).await.status(), 202);
    // No `name` for the last one: its notifications fail to render.
    let resp = chunk(
        &app,
        &id,
        2,
        vec![json!({"subscriber_id": "patient-x", "email": "x@example.org"})],
    )
    .await;
    assert_eq!(resp.status(), 202);
    assert_eq!(act(&app, &app.api_key, &id, "close").await.status(), 200);
    let done = wait_batch(&app, &id, "the batch to complete", |b| {
        b["status"] == "completed"
    })
    .await;
    assert_eq!(done["notifications"], 132, "{done}");
    assert_eq!(done["counts"]["sent"], 130, "{done}");
    assert_eq!(done["counts"]["failed"], 2, "{done}");

    let mut db = app.owner().await;
    db.execute("set app.tenant_id = 'platform'").await.unwrap();
    let rows = counted(&mut db, &id).await;
    assert_eq!(
        rows,
        [("failed".to_owned(), 2), ("sent".to_owned(), 130)],
        "the rows themselves"
    );
    assert_eq!(kept(&mut db, app.tenant_id, &id).await, rows);
    assert!(pending(&mut db, &id).await > 0, "nothing folded yet");

    // Folded: the same counts, from the folded rows alone.
    assert!(group_counts::fold_all_tenants(&app.pool).await.unwrap() > 0);
    assert_eq!(pending(&mut db, &id).await, 0);
    assert_eq!(kept(&mut db, app.tenant_id, &id).await, rows);

    // An update that moves some statuses and leaves others as they were,
    // in one statement.
    db.execute(
        format!(
            "update notifications set status = case when channel = 'email' then 'delivered' else status end,
                    delivered_at = case when channel = 'email' then now() else delivered_at end
             where batch_id = '{id}' and status = 'sent'"
        )
        .as_str(),
    )
    .await
    .unwrap();
    let rows = counted(&mut db, &id).await;
    assert_eq!(
        rows,
        [
            ("delivered".to_owned(), 65),
            ("failed".to_owned(), 2),
            ("sent".to_owned(), 65)
        ]
    );
    assert_eq!(kept(&mut db, app.tenant_id, &id).await, rows);

    // A statement rolled back counts for nothing.
    let mut tx = db.begin().await.unwrap();
    tx.execute(format!("delete from notifications where batch_id = '{id}'").as_str())
        .await
        .unwrap();
    assert_eq!(kept(&mut tx, app.tenant_id, &id).await, [], "inside");
    tx.rollback().await.unwrap();
    assert_eq!(kept(&mut db, app.tenant_id, &id).await, rows);

    // A delete counts; a status nobody has any more is not listed.
    db.execute(
        format!("delete from notifications where batch_id = '{id}' and status = 'failed'").as_str(),
    )
    .await
    .unwrap();
    let rows = counted(&mut db, &id).await;
    assert_eq!(rows.len(), 2);
    assert_eq!(kept(&mut db, app.tenant_id, &id).await, rows);
    group_counts::fold_all_tenants(&app.pool).await.unwrap();
    assert_eq!(kept(&mut db, app.tenant_id, &id).await, rows);
    let b = batch(&app, &id).await;
    assert_eq!(b["notifications"], 130, "{b}");
    assert_eq!(b["counts"]["delivered"], 65, "{b}");
    assert_eq!(b["counts"]["sent"], 65, "{b}");
    assert_eq!(b["counts"]["failed"], 0, "{b}");

    // Another organisation's session sees none of it.
    let other = TenantId::new();
    db.execute(format!("set role notify_app; set app.tenant_id = '{other}'").as_str())
        .await
        .unwrap();
    assert_eq!(kept(&mut db, app.tenant_id, &id).await, []);
    db.close().await.unwrap();
    app.shutdown().await;
}
