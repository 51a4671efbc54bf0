//! Tenant API keys. A key is shown once when it is created; only its SHA-256
//! hash is stored. Keys carry 240 random bits, so a fast hash is the right
//! tool (a password hash would only slow every request down).

use base64::Engine as _;
use ipnet::IpNet;
use rand::RngCore;
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use sqlx::PgExecutor;

use crate::{
    domain::{ApiKeyId, TenantId},
    permissions::Permission,
};

/// The visible start of every key, so leaked keys are easy to find in code.
pub const KEY_PREFIX: &str = "ntf_";

/// A newly created key; the secret is never retrievable again.
#[derive(Debug)]
pub struct NewApiKey {
    /// The key's id.
    pub id: ApiKeyId,
    /// The key itself.
    pub secret: SecretString,
}

/// Whose key a request presented.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyOwner {
    /// The tenant.
    pub tenant_id: TenantId,
    /// The key.
    pub key_id: ApiKeyId,
}

/// The stored hash of `secret`.
pub fn hash(secret: &str) -> Vec<u8> {
    Sha256::digest(secret.as_bytes()).to_vec()
}

/// Creates a key for `tenant_id`, usable from any address.
#[tracing::instrument(skip_all)]
pub async fn create(
    db: impl PgExecutor<'_>,
    tenant_id: TenantId,
    name: &str,
) -> Result<NewApiKey, sqlx::Error> {
    create_with_networks(db, tenant_id, name, &[]).await
}

/// Creates a key for `tenant_id` usable only from client addresses in
/// `networks` (empty: any address).
#[tracing::instrument(skip_all)]
pub async fn create_with_networks(
    db: impl PgExecutor<'_>,
    tenant_id: TenantId,
    name: &str,
    networks: &[IpNet],
) -> Result<NewApiKey, sqlx::Error> {
    create_scoped(db, tenant_id, name, networks, None).await
}

/// Creates a key for `tenant_id` usable from `networks` (empty: any
/// address) for the operations `scopes` allow (`None`: every permission,
/// what keys could always do).
#[tracing::instrument(skip_all)]
pub async fn create_scoped(
    db: impl PgExecutor<'_>,
    tenant_id: TenantId,
    name: &str,
    networks: &[IpNet],
    scopes: Option<&[Permission]>,
) -> Result<NewApiKey, sqlx::Error> {
    let mut raw = [0u8; 30];
    rand::rng().fill_bytes(&mut raw);
    let secret = format!(
        "{KEY_PREFIX}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
    );
    let id = ApiKeyId::new();
    sqlx::query!(
        "insert into api_keys (id, tenant_id, name, key_prefix, key_hash, allowed_networks, scopes)
         values ($1, $2, $3, $4, $5, $6, $7)",
        id as _,
        tenant_id as _,
        name,
        &secret[..KEY_PREFIX.len() + 6],
        hash(&secret),
        networks_text(networks) as _,
        scopes.map(|s| s.iter().map(|p| p.as_str()).collect::<Vec<_>>()) as _,
    )
    .execute(db)
    .await?;
    Ok(NewApiKey {
        id,
        secret: SecretString::from(secret),
    })
}

/// The owner of an active key of an active tenant, if `secret` is one.
#[tracing::instrument(skip_all)]
pub async fn authenticate(
    db: impl PgExecutor<'_>,
    secret: &SecretString,
) -> Result<Option<KeyOwner>, sqlx::Error> {
    authenticate_hash(db, &hash(secret.expose_secret())).await
}

/// A working key: its owner, the networks it may be used from (empty:
/// any), and its scopes (`None`: every permission).
pub type KeyLookup = (KeyOwner, Vec<IpNet>, Option<Vec<Permission>>);

/// The owner of an active key of an active tenant whose stored hash is
/// `key_hash` (see [`hash`]), if there is one. Ignores the key's allowlist:
/// see [`lookup_hash`].
#[tracing::instrument(skip_all)]
pub async fn authenticate_hash(
    db: impl PgExecutor<'_>,
    key_hash: &[u8],
) -> Result<Option<KeyOwner>, sqlx::Error> {
    Ok(lookup_hash(db, key_hash).await?.map(|(owner, _, _)| owner))
}

/// The owner of an active key of an active tenant whose stored hash is
/// `key_hash`, with the networks the key may be used from (empty: any).
#[tracing::instrument(skip_all)]
pub async fn lookup_hash(
    db: impl PgExecutor<'_>,
    key_hash: &[u8],
) -> Result<Option<KeyLookup>, sqlx::Error> {
    let row = sqlx::query!(
        r#"select k.tenant_id as "tenant_id: TenantId", k.id as "id: ApiKeyId",
                k.allowed_networks, k.scopes
         from api_keys k join tenants t on t.id = k.tenant_id
         where k.key_hash = $1 and k.revoked_at is null and t.status = 'active'"#,
        key_hash,
    )
    .fetch_optional(db)
    .await?;
    row.map(|r| {
        let (tenant_id, key_id, networks, scopes) =
            (r.tenant_id, r.id, r.allowed_networks, r.scopes);
        // Names no longer in the vocabulary grant nothing.
        let scopes = scopes.map(|s| s.iter().filter_map(|n| Permission::parse(n)).collect());
        let networks = networks
            .unwrap_or_default()
            .iter()
            .map(|n| {
                n.parse::<IpNet>()
                    .map_err(|e| sqlx::Error::Decode(Box::new(e)))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok((KeyOwner { tenant_id, key_id }, networks, scopes))
    })
    .transpose()
}

/// Replaces the allowlist of an active key of `tenant_id` (empty: any
/// address); false when there is no such active key.
#[tracing::instrument(skip_all)]
pub async fn set_networks(
    db: impl PgExecutor<'_>,
    tenant_id: TenantId,
    key_id: ApiKeyId,
    networks: &[IpNet],
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query!(
        "update api_keys set allowed_networks = $3
         where tenant_id = $1 and id = $2 and revoked_at is null",
        tenant_id as _,
        key_id as _,
        networks_text(networks) as _,
    )
    .execute(db)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Whether `networks` (empty: any address) admit `client`. An unknown
/// client address is admitted only by an empty list.
pub fn admits(networks: &[IpNet], client: Option<std::net::IpAddr>) -> bool {
    networks.is_empty()
        || client.is_some_and(|c| {
            let c = c.to_canonical();
            networks.iter().any(|n| n.contains(&c))
        })
}

fn networks_text(networks: &[IpNet]) -> Option<Vec<String>> {
    (!networks.is_empty()).then(|| networks.iter().map(|n| n.trunc().to_string()).collect())
}

/// Revokes a key of `tenant_id`; false when there is no such active key.
#[tracing::instrument(skip_all)]
pub async fn revoke(
    db: impl PgExecutor<'_>,
    tenant_id: TenantId,
    key_id: ApiKeyId,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query!(
        "update api_keys set revoked_at = now()
         where tenant_id = $1 and id = $2 and revoked_at is null",
        tenant_id as _,
        key_id as _,
    )
    .execute(db)
    .await?;
    Ok(done.rows_affected() == 1)
}
