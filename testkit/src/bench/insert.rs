//! The raw insert limit the platform's in-app rates are judged against:
//! in-app notification rows inserted by plain `insert … select … from
//! unnest(…)` statements, with nothing of the platform in the way.

use std::time::Instant;

use futures::StreamExt;
use serde_json::json;
use sqlx::{Connection, PgConnection};
use uuid::Uuid;

/// Rows per insert statement.
pub const STATEMENT_ROWS: usize = 1_000;

/// Inserts `rows` in-app notifications, as an in-app batch leaves them
/// (placed in the inbox, `sent`), into `table` through `writers`
/// connections; answers rows/s.
pub async fn insert_limit(url: &str, table: &str, rows: usize, writers: usize) -> f64 {
    let sql = format!(
        "insert into {table}
             (id, tenant_id, channel, recipient, content, max_attempts, subscriber_id, category,
              send_id, status, sent_at, batch_id, batch_seq, batch_index)
         select r.id, $1, 'inapp', r.recipient, r.content, 5, r.subscriber_id, 'results',
                r.id, 'sent', now(), $2, $3, r.idx
         from unnest($4::uuid[], $5::int4[], $6::text[], $7::jsonb[], $8::uuid[])
              as r(id, idx, recipient, content, subscriber_id)"
    );
    let tenant = Uuid::new_v4();
    let batch = Uuid::new_v4();
    let statements = rows.div_ceil(STATEMENT_ROWS);
    let started = Instant::now();
    futures::stream::iter(0..writers)
        .map(|w| {
            let sql = sql.clone();
            async move {
                let mut conn = PgConnection::connect(url)
                    .await
                    .expect("Postgres must be running for the benches (see README)");
                for seq in (w..statements).step_by(writers) {
                    let range = seq * STATEMENT_ROWS..((seq + 1) * STATEMENT_ROWS).min(rows);
                    let ids: Vec<Uuid> = range.clone().map(|_| Uuid::new_v4()).collect();
                    let idx: Vec<i32> = range.clone().map(|i| (i % STATEMENT_ROWS) as i32).collect();
                    let recipients: Vec<String> =
                        range.clone().map(|i| format!("patient-{i}")).collect();
                    let contents: Vec<serde_json::Value> = range
                        .clone()
                        .map(|i| json!({"title": format!("Results for P{i}"), "action_url": "/results/7"}))
                        .collect();
                    let subscribers: Vec<Uuid> = range.map(|_| Uuid::new_v4()).collect();
                    sqlx::query(&sql)
                        .bind(tenant)
                        .bind(batch)
                        .bind(seq as i32)
                        .bind(&ids)
                        .bind(&idx)
                        .bind(&recipients)
                        .bind(&contents)
                        .bind(&subscribers)
                        .execute(&mut conn)
                        .await
                        .expect("the insert");
                }
            }
        })
        .buffer_unordered(writers)
        .collect::<Vec<()>>()
        .await;
    rows as f64 / started.elapsed().as_secs_f64()
}
