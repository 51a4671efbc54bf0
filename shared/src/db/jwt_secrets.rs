//! Tenants' HS256 JWT secrets, sealed at rest (see [`crate::crypto`]).

use sqlx::PgExecutor;

use crate::{crypto::Sealed, domain::TenantId};

/// The associated data a tenant's JWT secret is sealed with.
pub fn aad(tenant_id: TenantId) -> Vec<u8> {
    format!("tenant:{tenant_id}/jwt-hs256").into_bytes()
}

/// Stores (or replaces) the sealed secret of `tenant_id`.
#[tracing::instrument(skip_all)]
pub async fn put(
    db: impl PgExecutor<'_>,
    tenant_id: TenantId,
    sealed: &Sealed,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "insert into tenant_jwt_secrets (tenant_id, key_id, ciphertext) values ($1, $2, $3)
         on conflict (tenant_id) do update set key_id = excluded.key_id, ciphertext = excluded.ciphertext",
    )
    .bind(tenant_id)
    .bind(&sealed.key_id)
    .bind(&sealed.bytes)
    .execute(db)
    .await?;
    Ok(())
}

/// The sealed secret of an active tenant, if it has one.
#[tracing::instrument(skip_all)]
pub async fn get(
    db: impl PgExecutor<'_>,
    tenant_id: TenantId,
) -> Result<Option<Sealed>, sqlx::Error> {
    let row: Option<(String, Vec<u8>)> = sqlx::query_as(
        "select s.key_id, s.ciphertext from tenant_jwt_secrets s join tenants t on t.id = s.tenant_id
         where s.tenant_id = $1 and t.status = 'active'",
    )
    .bind(tenant_id)
    .fetch_optional(db)
    .await?;
    Ok(row.map(|(key_id, bytes)| Sealed { key_id, bytes }))
}

/// Secrets not sealed with `key_id`, across tenants: what a key rotation
/// must re-seal. At most `limit`.
#[tracing::instrument(skip_all)]
pub async fn sealed_with_other_keys(
    db: impl PgExecutor<'_>,
    key_id: &str,
    limit: i64,
) -> Result<Vec<(TenantId, Sealed)>, sqlx::Error> {
    let rows: Vec<(TenantId, String, Vec<u8>)> = sqlx::query_as(
        "select tenant_id, key_id, ciphertext from tenant_jwt_secrets
         where key_id <> $1 order by tenant_id limit $2",
    )
    .bind(key_id)
    .bind(limit)
    .fetch_all(db)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(t, key_id, bytes)| (t, Sealed { key_id, bytes }))
        .collect())
}

/// Replaces a sealed secret after a rotation, if it is still the one read.
#[tracing::instrument(skip_all)]
pub async fn reseal(
    db: impl PgExecutor<'_>,
    tenant_id: TenantId,
    old: &Sealed,
    new: &Sealed,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "update tenant_jwt_secrets set key_id = $4, ciphertext = $5
         where tenant_id = $1 and key_id = $2 and ciphertext = $3",
    )
    .bind(tenant_id)
    .bind(&old.key_id)
    .bind(&old.bytes)
    .bind(&new.key_id)
    .bind(&new.bytes)
    .execute(db)
    .await?;
    Ok(done.rows_affected() == 1)
}
