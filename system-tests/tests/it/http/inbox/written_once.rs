//! Sends accepted together (`notifications::insert_many`, the API's shared
//! accept) write an in-app row that leaves nothing to decide once, already
//! `sent` in its subscriber's inbox; every other row is inserted `queued`
//! for a worker to decide.

use std::collections::BTreeSet;

use serde_json::json;
use shared::{
    db::{
        notifications::{self, NewRow},
        preferences, subscribers,
    },
    domain::{Channel, NotificationId, SubscriberId, TenantId},
};
use sqlx::{Connection, Row};

use super::*;

fn row(tenant: TenantId, channel: Channel, subscriber: SubscriberId, critical: bool) -> NewRow {
    let id = NotificationId::new();
    NewRow {
        id,
        tenant_id: tenant,
        channel,
        recipient: "pat".into(),
        content: json!({"title": "Result ready", "body": "Open the app for details."}),
        metadata: json!({}),
        max_attempts: 3,
        subscriber_id: Some(subscriber),
        category: Some("results".into()),
        template_key: None,
        critical,
        dispatched: false,
        send_id: id,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_inapp_row_with_nothing_to_decide_is_inserted_sent_and_the_rest_queued() {
    let app = TestApp::spawn_api_only().await;
    let (other, _) = app.other_tenant().await;
    let mut db = app.owner().await;
    let mut tx = db.begin().await.unwrap();
    let pat = subscribers::upsert(&mut tx, app.tenant_id, "pat")
        .await
        .unwrap();
    let sam = subscribers::upsert(&mut tx, app.tenant_id, "sam")
        .await
        .unwrap();
    let kim = subscribers::upsert(&mut tx, other, "kim").await.unwrap();
    // Sam has stored preferences: a non-critical message to Sam is the
    // worker's to decide.
    let prefs =
        serde_json::from_value(json!({"channels": {"sms": false}, "categories": {}})).unwrap();
    preferences::put(&mut *tx, app.tenant_id, sam, &prefs)
        .await
        .unwrap();
    tx.commit().await.unwrap();

    let rows = vec![
        row(app.tenant_id, Channel::InApp, pat, false), // placed
        row(app.tenant_id, Channel::InApp, sam, false), // preferences to look at
        row(app.tenant_id, Channel::InApp, sam, true),  // critical: placed
        row(app.tenant_id, Channel::Email, pat, false), // not in-app
        row(other, Channel::InApp, kim, false),         // its tenant is not placing
    ];
    let placing = BTreeSet::from([app.tenant_id]);
    let mut tx = db.begin().await.unwrap();
    let placed = notifications::insert_many(&mut tx, &rows, &placing)
        .await
        .unwrap();
    tx.commit().await.unwrap();

    let mut got: Vec<(SubscriberId, NotificationId)> =
        placed.iter().map(|(s, item)| (*s, item.id)).collect();
    got.sort();
    let mut want = vec![(pat, rows[0].id), (sam, rows[2].id)];
    want.sort();
    assert_eq!(got, want);
    for (_, item) in &placed {
        assert_eq!(item.category.as_deref(), Some("results"));
        assert_eq!(item.content.0["title"], "Result ready");
        assert!(item.read_at.is_none() && item.archived_at.is_none());
    }
    for (i, r) in rows.iter().enumerate() {
        let stored = sqlx::query(
            "select status, attempts, provider_message_id, sent_at is not null as sent,
                    dispatched_at is null as undispatched
             from notifications where id = $1",
        )
        .bind(r.id)
        .fetch_one(&mut db)
        .await
        .unwrap();
        let status: String = stored.get("status");
        let attempts: i32 = stored.get("attempts");
        let message_id: Option<String> = stored.get("provider_message_id");
        let sent: bool = stored.get("sent");
        if i == 0 || i == 2 {
            assert_eq!(status, "sent", "row {i}");
            assert_eq!(attempts, 1, "row {i}");
            assert_eq!(message_id, Some(format!("inapp:{}", r.id)), "row {i}");
            assert!(sent, "row {i}");
        } else {
            assert_eq!(status, "queued", "row {i}");
            assert_eq!((attempts, message_id, sent), (0, None, false), "row {i}");
        }
        assert!(stored.get::<bool, _>("undispatched"), "row {i}");
    }
}
