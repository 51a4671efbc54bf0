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
    sqlx::query!(
        "insert into tenant_jwt_secrets (tenant_id, key_id, ciphertext) values ($1, $2, $3)
         on conflict (tenant_id) do update set key_id = excluded.key_id, ciphertext = excluded.ciphertext",
        tenant_id as _,
        sealed.key_id,
        sealed.bytes,
    )
    .execute(db)
    .await?;
    Ok(())
}

/// Stores the sealed secret of `tenant_id` unless it has one: of two first
/// sign-ins at once, the secret that landed first is kept.
#[tracing::instrument(skip_all)]
pub async fn put_if_absent(
    db: impl PgExecutor<'_>,
    tenant_id: TenantId,
    sealed: &Sealed,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "insert into tenant_jwt_secrets (tenant_id, key_id, ciphertext) values ($1, $2, $3)
         on conflict (tenant_id) do nothing",
        tenant_id as _,
        sealed.key_id,
        sealed.bytes,
    )
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
    let row = sqlx::query!(
        "select s.key_id, s.ciphertext from tenant_jwt_secrets s join tenants t on t.id = s.tenant_id
         where s.tenant_id = $1 and t.status = 'active'",
        tenant_id as _,
    )
    .fetch_optional(db)
    .await?;
    Ok(row.map(|r| Sealed {
        key_id: r.key_id,
        bytes: r.ciphertext,
    }))
}
