//! Every secret sealed at rest (see [`crate::crypto`]), read and re-sealed
//! in one place, so a key rotation cannot miss a kind of secret.

use sqlx::PgExecutor;
use uuid::Uuid;

use crate::{crypto::Sealed, domain::TenantId};

/// A kind of sealed secret, and where it is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecretKind {
    /// Provider configs' credentials (`provider_configs`).
    ProviderCredentials,
    /// Webhook endpoints' signing secrets (`webhook_endpoints`).
    WebhookSecret,
    /// Tenants' HS256 JWT secrets (`tenant_jwt_secrets`, one per tenant).
    JwtSecret,
}

impl SecretKind {
    /// Every kind.
    pub const ALL: &'static [SecretKind] = &[
        SecretKind::ProviderCredentials,
        SecretKind::WebhookSecret,
        SecretKind::JwtSecret,
    ];

    /// The kind's name, for output and the audit log.
    pub fn as_str(self) -> &'static str {
        match self {
            SecretKind::ProviderCredentials => "provider_configs",
            SecretKind::WebhookSecret => "webhook_endpoints",
            SecretKind::JwtSecret => "jwt_secrets",
        }
    }

    /// Table, row id expression and ciphertext column.
    fn columns(self) -> (&'static str, &'static str, &'static str) {
        match self {
            SecretKind::ProviderCredentials => ("provider_configs", "id", "ciphertext"),
            SecretKind::WebhookSecret => ("webhook_endpoints", "id", "secret_ciphertext"),
            SecretKind::JwtSecret => ("tenant_jwt_secrets", "tenant_id", "ciphertext"),
        }
    }

    /// The associated data a secret of this kind is sealed with.
    pub fn aad(self, tenant_id: TenantId, id: Uuid) -> Vec<u8> {
        match self {
            SecretKind::ProviderCredentials => {
                crate::providers::aad(tenant_id, crate::domain::ProviderId(id))
            }
            SecretKind::WebhookSecret => {
                crate::webhooks::aad(tenant_id, crate::domain::WebhookEndpointId(id))
            }
            SecretKind::JwtSecret => super::jwt_secrets::aad(tenant_id),
        }
    }
}

/// Secrets of `kind` not sealed with `key_id`, across tenants: what a key
/// rotation must re-seal. `(tenant, row id, sealed)`, at most `limit`; the
/// row id of a JWT secret is its tenant's id.
#[tracing::instrument(skip_all)]
pub async fn sealed_with_other_keys(
    db: impl PgExecutor<'_>,
    kind: SecretKind,
    key_id: &str,
    limit: i64,
) -> Result<Vec<(TenantId, Uuid, Sealed)>, sqlx::Error> {
    let (table, id, ciphertext) = kind.columns();
    let rows: Vec<(TenantId, Uuid, String, Vec<u8>)> = sqlx::query_as(&format!(
        "select tenant_id, {id}, key_id, {ciphertext} from {table}
         where key_id is not null and key_id <> $1 order by {id} limit $2"
    ))
    .bind(key_id)
    .bind(limit)
    .fetch_all(db)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(t, id, key_id, bytes)| (t, id, Sealed { key_id, bytes }))
        .collect())
}

/// Replaces a sealed secret after a rotation, if it is still the one read (a
/// concurrent change wins).
#[tracing::instrument(skip_all)]
pub async fn reseal(
    db: impl PgExecutor<'_>,
    kind: SecretKind,
    tenant_id: TenantId,
    id: Uuid,
    old: &Sealed,
    new: &Sealed,
) -> Result<bool, sqlx::Error> {
    let (table, id_column, ciphertext) = kind.columns();
    let done = sqlx::query(&format!(
        "update {table} set key_id = $5, {ciphertext} = $6
         where tenant_id = $1 and {id_column} = $2 and key_id = $3 and {ciphertext} = $4"
    ))
    .bind(tenant_id)
    .bind(id)
    .bind(&old.key_id)
    .bind(&old.bytes)
    .bind(&new.key_id)
    .bind(&new.bytes)
    .execute(db)
    .await?;
    Ok(done.rows_affected() == 1)
}
