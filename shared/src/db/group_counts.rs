//! Notifications per status of each batch and CSV job (a "group"), kept by
//! the statements that write notifications (migration
//! `2026121500000001_group_status_counts`): triggers append deltas, the
//! scheduler folds them into `group_status_counts`, and a read sums both in
//! one statement, so it is exact whether or not a fold ran.

use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::domain::TenantId;

/// Deltas folded per statement: bounded so a fold never holds many row
/// locks or builds a large transaction.
const FOLD_LIMIT: i64 = 10_000;

/// The notifications of group `group_id` (a batch's or CSV job's id) of
/// `tenant_id` per status, as `(status, count)` sorted by status, without
/// statuses no notification has.
#[tracing::instrument(skip_all)]
pub async fn by_status(
    db: &mut PgConnection,
    tenant_id: TenantId,
    group_id: Uuid,
) -> Result<Vec<(String, i64)>, sqlx::Error> {
    let rows = sqlx::query!(
        r#"select status as "status!", sum(n)::int8 as "n!" from (
             select status, n from group_status_counts where group_id = $2 and tenant_id = $1
             union all
             select status, n from group_status_deltas where group_id = $2 and tenant_id = $1
         ) c
         group by status having sum(n) <> 0 order by status"#,
        tenant_id as _,
        group_id,
    )
    .fetch_all(db)
    .await?;
    Ok(rows.into_iter().map(|r| (r.status, r.n)).collect())
}

/// Folds pending deltas into the counts until none is left (every
/// organisation's: the scheduler's task); returns how many were folded.
/// Two folds at once take disjoint deltas.
#[tracing::instrument(skip_all)]
pub async fn fold_all_tenants(pool: &PgPool) -> Result<u64, sqlx::Error> {
    let mut folded = 0;
    loop {
        let n: i64 = sqlx::query_scalar!(
            r#"with taken as (
                 delete from group_status_deltas
                 where id in (select id from group_status_deltas order by id limit $1
                              for update skip locked)
                 returning tenant_id, group_id, status, n
             ),
             summed as (
                 select tenant_id, group_id, status, sum(n)::int8 as n from taken
                 group by tenant_id, group_id, status
                 order by group_id, status
             ),
             upserted as (
                 insert into group_status_counts as c (tenant_id, group_id, status, n)
                 select tenant_id, group_id, status, n from summed
                 on conflict (group_id, status) do update set n = c.n + excluded.n
                 returning 1
             )
             select (select count(*) from taken) + 0 * (select count(*) from upserted) as "n!""#,
            FOLD_LIMIT,
        )
        .fetch_one(pool)
        .await?;
        folded += n as u64;
        if n < FOLD_LIMIT {
            return Ok(folded);
        }
    }
}
