//! The `api` command line: serve (the default), apply migrations, and manage
//! tenants and their API keys. Keys are printed once and never stored.

mod failed;
mod queues;

use clap::{Parser, Subcommand};
use ipnet::IpNet;
use secrecy::ExposeSecret;
use shared::{
    config::Settings,
    db::{self, api_keys, audit, jwt_secrets, security_events, tenants},
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
    /// Print every queue: paused or running, Redis backlog, work waiting in
    /// Postgres, the last hour's counts and p99 duration.
    Queues,
    /// Pause a queue on every replica: the dispatcher stops feeding it and
    /// its work waits in Postgres (only queues fed from Postgres).
    Pause {
        /// The queue, as in `jobs.toml` (`sms`, `email`, …).
        queue: String,
        /// Why, shown to other operators.
        #[arg(long)]
        reason: Option<String>,
    },
    /// Resume a paused queue.
    Resume {
        /// The queue.
        queue: String,
    },
    /// Print failed work grouped by kind, error class, provider and
    /// channel (`--since 1h`, `--organization ID`, `--kind …`).
    Failed(failed::ListArgs),
    /// Retry failed work: a group (`--group KEY`, run in 1,000-row steps)
    /// or items (`--id KIND:ID`, up to 1,000).
    Retry(failed::SelectArgs),
    /// Discard failed work (same choices as retry): it leaves the failed
    /// lists and keeps its status.
    Discard(failed::SelectArgs),
    /// Build the delivery report rollups of everything that happened
    /// before the upgrade that brought reports, from the notifications
    /// themselves; run once after upgrading (a second run does nothing).
    BackfillReports,
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
        /// A network (CIDR such as `10.0.0.0/8` or `2001:db8::/32`, or a
        /// single address) the key may be used from; repeat for more. None:
        /// any address.
        #[arg(long = "allow", value_name = "CIDR", value_parser = parse_network)]
        allow: Vec<IpNet>,
        /// A permission the key holds (`notifications:send`, …); repeat
        /// for more. None: every permission, what keys could always do.
        #[arg(long = "scope", value_name = "PERMISSION", value_parser = parse_scope)]
        scope: Vec<shared::permissions::Permission>,
    },
    /// Replace the networks a key may be used from.
    Allow {
        /// The tenant's id.
        #[arg(long)]
        tenant: TenantId,
        /// The key's id.
        #[arg(long)]
        key: ApiKeyId,
        /// A network (CIDR or single address) the key may be used from;
        /// repeat for more.
        #[arg(
            long = "allow",
            value_name = "CIDR",
            value_parser = parse_network,
            required_unless_present = "any",
            conflicts_with = "any"
        )]
        allow: Vec<IpNet>,
        /// Let the key be used from any address again.
        #[arg(long)]
        any: bool,
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

/// A permission by name, for `--scope`.
pub fn parse_scope(s: &str) -> Result<shared::permissions::Permission, String> {
    shared::permissions::Permission::parse(s.trim()).ok_or_else(|| {
        format!("{s:?} is not a permission: expected resource:action such as notifications:send")
    })
}

/// Most networks in one key's allowlist.
pub const MAX_NETWORKS: usize = 64;

/// One allowlist entry: a CIDR (`10.0.0.0/8`, `2001:db8::/32`) or a single
/// address (taken as `/32` or `/128`). Host bits are dropped
/// (`10.1.2.3/8` is `10.0.0.0/8`).
pub fn parse_network(s: &str) -> Result<IpNet, String> {
    let s = s.trim();
    let net = match s.parse::<IpNet>() {
        Ok(net) => net,
        Err(_) => s.parse::<std::net::IpAddr>().map(IpNet::from).map_err(|_| {
            format!(
                "{s:?} is not a network: expected a CIDR such as 10.0.0.0/8 or 2001:db8::/32, or an address"
            )
        })?,
    };
    Ok(net.trunc())
}

/// `networks` without repeats, or an error when there are too many.
fn allowlist(mut networks: Vec<IpNet>) -> anyhow::Result<Vec<IpNet>> {
    networks.sort();
    networks.dedup();
    anyhow::ensure!(
        networks.len() <= MAX_NETWORKS,
        "at most {MAX_NETWORKS} networks per key"
    );
    Ok(networks)
}

/// Records an API key change in the audit log and as a security event,
/// together.
async fn key_changed(
    pool: &sqlx::PgPool,
    tenant_id: TenantId,
    key_id: ApiKeyId,
    action: &str,
    kind: &'static str,
    networks: Option<&[IpNet]>,
) -> anyhow::Result<()> {
    let details = match networks {
        Some(n) => serde_json::json!({
            "allowed_networks": n.iter().map(ToString::to_string).collect::<Vec<_>>(),
        }),
        None => serde_json::json!({}),
    };
    let mut tx = pool.begin().await?;
    audit::record(
        &mut *tx,
        audit::Entry {
            tenant_id: Some(tenant_id),
            actor: "cli",
            action,
            resource_type: "api_key",
            resource_id: Some(key_id.to_string()),
            result: "success",
            request_id: None,
            details: details.clone(),
        },
    )
    .await?;
    let mut details = details;
    details["api_key_id"] = key_id.to_string().into();
    details["actor"] = "cli".into();
    security_events::record(
        &mut *tx,
        &[security_events::Event::new(Some(tenant_id), kind, None, None, None).details(details)],
    )
    .await?;
    tx.commit().await?;
    Ok(())
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
    let pool = db::connect(settings, db::scope::Fallback::Platform("admin_command")).await?;
    db::migrate(&pool).await?;
    match command {
        Command::Serve => unreachable!("serve is not an admin command"),
        Command::Migrate => println!("migrations applied"),
        Command::Queues => queues::list(settings, &pool).await?,
        Command::Pause { queue, reason } => {
            queues::set(settings, &pool, &queue, true, reason.as_deref()).await?
        }
        Command::Resume { queue } => queues::set(settings, &pool, &queue, false, None).await?,
        Command::Failed(args) => failed::list(&pool, args).await?,
        Command::Retry(args) => failed::apply(&pool, db::failed_work::Action::Retry, args).await?,
        Command::Discard(args) => {
            failed::apply(&pool, db::failed_work::Action::Discard, args).await?
        }
        Command::BackfillReports => match shared::reports::rollup::backfill(&pool).await? {
            shared::reports::rollup::Backfill::Done(before) => {
                println!("report rollups built from the events before {before}")
            }
            shared::reports::rollup::Backfill::AlreadyDone(at) => {
                println!("report rollups were already backfilled at {at}; nothing to do")
            }
        },
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
            key_changed(
                &pool,
                tenant.id,
                key.id,
                "api_key.create",
                security_events::API_KEY_CREATED,
                Some(&[]),
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
            command:
                KeyCommand::Create {
                    tenant,
                    name,
                    allow,
                    mut scope,
                },
        } => {
            let allow = allowlist(allow)?;
            scope.sort();
            scope.dedup();
            anyhow::ensure!(
                tenants::get(&pool, tenant).await?.is_some(),
                "no tenant {tenant}"
            );
            let scopes = (!scope.is_empty()).then_some(scope.as_slice());
            let key = api_keys::create_scoped(&pool, tenant, &name, &allow, scopes).await?;
            key_changed(
                &pool,
                tenant,
                key.id,
                "api_key.create",
                security_events::API_KEY_CREATED,
                Some(&allow),
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
            key_changed(
                &pool,
                tenant,
                key,
                "api_key.revoke",
                security_events::API_KEY_REVOKED,
                None,
            )
            .await?;
            println!("revoked {key}");
        }
        Command::Key {
            command:
                KeyCommand::Allow {
                    tenant,
                    key,
                    allow,
                    any,
                },
        } => {
            let allow = if any { Vec::new() } else { allowlist(allow)? };
            anyhow::ensure!(
                api_keys::set_networks(&pool, tenant, key, &allow).await?,
                "no active key {key} for tenant {tenant}"
            );
            key_changed(
                &pool,
                tenant,
                key,
                "api_key.allow",
                security_events::API_KEY_NETWORKS_CHANGED,
                Some(&allow),
            )
            .await?;
            if allow.is_empty() {
                println!("key {key} may be used from any address");
            } else {
                let list: Vec<String> = allow.iter().map(ToString::to_string).collect();
                println!("key {key} may be used from {}", list.join(" "));
            }
        }
    }
    pool.close().await;
    Ok(())
}
