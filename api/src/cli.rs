//! The `api` command line: serve (the default), apply migrations, and manage
//! tenants and their API keys. Keys are printed once and never stored.

use clap::{Parser, Subcommand};
use secrecy::ExposeSecret;
use shared::{
    config::Settings,
    db::{self, api_keys, audit, jwt_secrets, tenants},
    domain::{ApiKeyId, TenantId},
};

/// The notification platform's API server and admin commands.
#[derive(Debug, Parser)]
#[command(name = "api", version)]
pub struct Cli {
    /// What to do; `serve` when omitted.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the HTTP API (applies migrations first).
    Serve,
    /// Apply pending database migrations and exit.
    Migrate,
    /// Manage tenants.
    Tenant {
        /// What to do.
        #[command(subcommand)]
        command: TenantCommand,
    },
    /// Re-seal every stored secret (provider credentials, webhook signing
    /// secrets, JWT secrets) with
    /// the active key, `ENCRYPTION_KEY_ID`. Keep the old key in
    /// `ENCRYPTION_KEYS` until this has run; then it can be removed.
    RotateSecrets,
    /// Create the platform organisation (once) and a platform admin with a
    /// temporary password, to be changed at first sign-in. Prints the
    /// ids.
    PlatformAdmin {
        /// The admin's email address.
        #[arg(long)]
        email: String,
        /// The temporary password (the password policy applies).
        #[arg(long, env = "PLATFORM_ADMIN_PASSWORD", hide_env_values = true)]
        password: String,
    },
    /// Manage API keys.
    Key {
        /// What to do.
        #[command(subcommand)]
        command: KeyCommand,
    },
}

/// Tenant subcommands.
#[derive(Debug, Subcommand)]
pub enum TenantCommand {
    /// Create a tenant and its first API key; prints both.
    Create {
        /// The organisation's name.
        #[arg(long)]
        name: String,
        /// Reuse an existing tenant of that name instead of creating another
        /// (a new key is still issued).
        #[arg(long)]
        reuse: bool,
    },
    /// Issue (or replace) the tenant's HS256 secret for user JWTs; prints it
    /// once. Needs ENCRYPTION_KEYS and ENCRYPTION_KEY_ID.
    JwtSecret {
        /// The tenant's id.
        #[arg(long)]
        tenant: TenantId,
    },
}

/// Key subcommands.
#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// Issue a new key for a tenant; prints it once.
    Create {
        /// The tenant's id.
        #[arg(long)]
        tenant: TenantId,
        /// A label for the key.
        #[arg(long, default_value = "default")]
        name: String,
    },
    /// Revoke a key.
    Revoke {
        /// The tenant's id.
        #[arg(long)]
        tenant: TenantId,
        /// The key's id.
        #[arg(long)]
        key: ApiKeyId,
    },
}

async fn audited(
    pool: impl sqlx::PgExecutor<'_>,
    tenant_id: TenantId,
    action: &str,
    kind: &str,
    id: String,
) -> anyhow::Result<()> {
    audit::record(
        pool,
        audit::Entry {
            tenant_id: Some(tenant_id),
            actor: "cli",
            action,
            resource_type: kind,
            resource_id: Some(id),
            result: "success",
            request_id: None,
            details: serde_json::json!({}),
        },
    )
    .await?;
    Ok(())
}

/// Re-seals, with the active key, every secret sealed with another one.
/// Returns how many of each kind were re-sealed. A value that does not open
/// (its key is gone, or it was altered) stops the run with an error naming
/// it; nothing else is changed for it.
async fn rotate_secrets(
    pool: &sqlx::PgPool,
    keyring: &shared::crypto::Keyring,
) -> anyhow::Result<Vec<(shared::db::sealed::SecretKind, u64)>> {
    use shared::db::sealed::{self, SecretKind};
    let active = keyring.active_key_id();
    let mut counts = Vec::new();
    for &kind in SecretKind::ALL {
        let mut resealed = 0;
        loop {
            let batch = sealed::sealed_with_other_keys(pool, kind, active, 500).await?;
            if batch.is_empty() {
                break;
            }
            for (tenant, id, old) in batch {
                let aad = kind.aad(tenant, id);
                let plain = keyring
                    .open(&old, &aad)
                    .map_err(|e| anyhow::anyhow!("{} {id}: {e}", kind.as_str()))?;
                let new = keyring.seal(&plain, &aad);
                if sealed::reseal(pool, kind, tenant, id, &old, &new).await? {
                    resealed += 1;
                }
            }
        }
        counts.push((kind, resealed));
    }
    Ok(counts)
}

/// Runs an admin command (anything but `serve`). `migrate` also creates the
/// database when it does not exist yet.
pub async fn admin(settings: &Settings, command: Command) -> anyhow::Result<()> {
    if matches!(command, Command::Migrate) {
        use sqlx::migrate::MigrateDatabase;
        let url = settings.database_url.expose_secret();
        if !sqlx::Postgres::database_exists(url).await? {
            sqlx::Postgres::create_database(url).await?;
            println!("database created");
        }
    }
    let pool = db::connect(settings).await?;
    db::migrate(&pool).await?;
    match command {
        Command::Serve => unreachable!("serve is not an admin command"),
        Command::Migrate => println!("migrations applied"),
        Command::Tenant {
            command: TenantCommand::Create { name, reuse },
        } => {
            let name = name.trim();
            anyhow::ensure!(
                !name.is_empty() && name.len() <= 200,
                "--name must be 1 to 200 characters"
            );
            let existing = if reuse {
                tenants::find_by_name(&pool, name).await?
            } else {
                None
            };
            let tenant = match existing {
                Some(t) => t,
                None => {
                    let t = tenants::create(&pool, name).await?;
                    audited(&pool, t.id, "tenant.create", "tenant", t.id.to_string()).await?;
                    t
                }
            };
            let key = api_keys::create(&pool, tenant.id, "default").await?;
            audited(
                &pool,
                tenant.id,
                "api_key.create",
                "api_key",
                key.id.to_string(),
            )
            .await?;
            println!("tenant_id={}", tenant.id);
            println!("api_key_id={}", key.id);
            println!("api_key={}", key.secret.expose_secret());
        }
        Command::Tenant {
            command: TenantCommand::JwtSecret { tenant },
        } => {
            use base64::Engine as _;
            use rand::RngCore;
            let keyring = settings.encryption.as_ref().ok_or_else(|| {
                anyhow::anyhow!("set ENCRYPTION_KEYS and ENCRYPTION_KEY_ID to store secrets")
            })?;
            anyhow::ensure!(
                tenants::get(&pool, tenant).await?.is_some(),
                "no tenant {tenant}"
            );
            let mut raw = [0u8; 32];
            rand::rng().fill_bytes(&mut raw);
            let secret = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw);
            let sealed = keyring.seal(secret.as_bytes(), &jwt_secrets::aad(tenant));
            jwt_secrets::put(&pool, tenant, &sealed).await?;
            audited(
                &pool,
                tenant,
                "tenant.jwt_secret.issue",
                "tenant",
                tenant.to_string(),
            )
            .await?;
            println!("jwt_secret={secret}");
        }
        Command::PlatformAdmin { email, password } => {
            use shared::db::{organizations, users};
            let email = shared::domain::EmailAddress::parse(email.trim())
                .map_err(|e| anyhow::anyhow!("--email: {e}"))?;
            crate::access::check_password("password", &password)
                .map_err(|e| anyhow::anyhow!("--password {e}: at least 12 characters with a lower-case letter, an upper-case letter and a digit"))?;
            let hash = crate::access::hash_password(password)
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            let mut tx = pool.begin().await?;
            let platform = match organizations::platform(&mut *tx).await? {
                Some(p) => p,
                None => {
                    let p = organizations::create(
                        &mut tx,
                        organizations::NewOrganization {
                            name: "Platform",
                            kind: "platform",
                            contact: serde_json::json!({}),
                            address: serde_json::json!({}),
                            settings: serde_json::json!({}),
                        },
                    )
                    .await?;
                    audited(
                        &mut *tx,
                        p.id,
                        "organization.create",
                        "organization",
                        p.id.to_string(),
                    )
                    .await?;
                    p
                }
            };
            let user = users::insert(
                &mut *tx,
                users::NewUser {
                    tenant_id: platform.id,
                    email: email.as_str(),
                    first_name: None,
                    last_name: None,
                    role: "ADMIN",
                    password_hash: Some(&hash),
                    must_change_password: true,
                    created_by: "cli",
                },
            )
            .await?;
            shared::db::subscribers::link_user(&mut *tx, &user).await?;
            audited(
                &mut *tx,
                platform.id,
                "user.create",
                "user",
                user.id.to_string(),
            )
            .await?;
            tx.commit().await?;
            println!("platform_organization_id={}", platform.id);
            println!("user_id={}", user.id);
        }
        Command::RotateSecrets => {
            let keyring = settings.encryption.as_ref().ok_or_else(|| {
                anyhow::anyhow!("set ENCRYPTION_KEYS and ENCRYPTION_KEY_ID to rotate secrets")
            })?;
            let counts = rotate_secrets(&pool, keyring).await?;
            let details: serde_json::Map<String, serde_json::Value> = counts
                .iter()
                .map(|(kind, n)| (kind.as_str().to_owned(), (*n).into()))
                .collect();
            audit::record(
                &pool,
                audit::Entry {
                    tenant_id: None,
                    actor: "cli",
                    action: "secrets.rotate",
                    resource_type: "encryption_key",
                    resource_id: Some(keyring.active_key_id().to_owned()),
                    result: "success",
                    request_id: None,
                    details: details.into(),
                },
            )
            .await?;
            let summary: Vec<String> = counts
                .iter()
                .map(|(kind, n)| format!("{}={n}", kind.as_str()))
                .collect();
            println!("resealed {}", summary.join(" "));
        }
        Command::Key {
            command: KeyCommand::Create { tenant, name },
        } => {
            anyhow::ensure!(
                tenants::get(&pool, tenant).await?.is_some(),
                "no tenant {tenant}"
            );
            let key = api_keys::create(&pool, tenant, &name).await?;
            audited(
                &pool,
                tenant,
                "api_key.create",
                "api_key",
                key.id.to_string(),
            )
            .await?;
            println!("api_key_id={}", key.id);
            println!("api_key={}", key.secret.expose_secret());
        }
        Command::Key {
            command: KeyCommand::Revoke { tenant, key },
        } => {
            anyhow::ensure!(
                api_keys::revoke(&pool, tenant, key).await?,
                "no active key {key} for tenant {tenant}"
            );
            audited(&pool, tenant, "api_key.revoke", "api_key", key.to_string()).await?;
            println!("revoked {key}");
        }
    }
    pool.close().await;
    Ok(())
}
