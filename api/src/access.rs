//! Who may administer what, for the administrative routes.
//!
//! A caller is an [`Admin`] (a tenant API key or a JWT). The permission its
//! operation declares was checked when it was authenticated
//! ([`crate::permissions`]); what is left here is whose resource it is
//! ([`Principal::require`] for operations open to a resource's owner) and
//! where: the platform organisation (`tenants.type = 'platform'`) is
//! special, its `ADMIN` users (and its API keys) administer every
//! organisation. Anyone else acts inside their own organisation only;
//! another organisation's resources answer 404, as if they did not exist. A
//! tenant API key acts as that organisation's admin.
//!
//! Refusals (403, 404, 409, 410) of audited actions are written to the audit
//! log as `failure` rows by [`Principal::refused`].

use std::sync::LazyLock;

use argon2::{
    Algorithm, Argon2, Params, PasswordHash, PasswordHasher, PasswordVerifier, Version,
    password_hash::{
        SaltString,
        rand_core::{OsRng, RngCore},
    },
};
use serde_json::{Value, json};
use shared::{
    db::{
        audit, organizations, permissions as perms,
        scope::{self, Reach},
        users::Credentials,
    },
    domain::{TenantId, UserId},
    permissions::Permission,
    roles::Role,
};

use crate::{
    AppState,
    auth::{Admin, AdminCaller, ServiceKey, UserJwt},
    error::ApiError,
    extract::PathId,
    middleware::RequestId,
};

/// An authenticated caller of the administration routes.
#[derive(Debug, Clone)]
pub struct Principal {
    /// Tenant and audit actor.
    pub caller: AdminCaller,
    /// Whether it administers every organisation.
    pub platform: bool,
    /// Whose rows its reads reach: every organisation's (with the witness
    /// of its platform-wide request) when `platform`, else its own's.
    reach: Reach,
    /// Its role (an API key acts as `ADMIN`).
    pub role: Option<Role>,
    /// The platform user, when it is one.
    pub user_id: Option<UserId>,
    /// A user's effective permissions with their sources; `None` for an
    /// API key, whose scopes were checked when it was authenticated
    /// ([`crate::permissions::routes`]).
    pub permissions: Option<perms::Effective>,
}

/// What an audit row says was done: the action and the type of resource it
/// was done to (`Act { action: "user.create", resource_type: "user" }`).
#[derive(Debug, Clone, Copy)]
pub struct Act<'a> {
    /// The action, e.g. `user.create`.
    pub action: &'a str,
    /// The type of the resource acted on, e.g. `user`.
    pub resource_type: &'a str,
}

/// A [`Principal`] within one request ([`Principal::at`]).
#[derive(Debug, Clone, Copy)]
pub struct InRequest<'a> {
    principal: &'a Principal,
    state: &'a AppState,
    request_id: &'a RequestId,
}

impl<'a> InRequest<'a> {
    /// The application state.
    pub fn state(self) -> &'a AppState {
        self.state
    }

    /// `action` on resources of `resource_type`.
    pub fn acting(self, action: &'a str, resource_type: &'a str) -> Acting<'a> {
        Acting {
            caller: self,
            act: Act {
                action,
                resource_type,
            },
        }
    }
}

/// One action of a [`Principal`] on one type of resource, within one
/// request: what its audit rows ([`Acting::audit`]) and its recorded
/// refusals ([`Acting::refused`]) name.
#[derive(Debug, Clone, Copy)]
pub struct Acting<'a> {
    caller: InRequest<'a>,
    act: Act<'a>,
}

impl Acting<'_> {
    /// [`Principal::refused`] for this action.
    pub async fn refused<T>(
        &self,
        id: Option<&str>,
        result: Result<T, ApiError>,
    ) -> Result<T, ApiError> {
        let InRequest {
            principal,
            state,
            request_id,
        } = self.caller;
        let Act {
            action,
            resource_type,
        } = self.act;
        principal
            .refused(state, request_id, action, resource_type, id, result)
            .await
    }

    /// The id in the path, a malformed one refused as one naming nothing
    /// (404 `no {what} with that id`, recorded).
    pub async fn id<T: Copy>(&self, id: &PathId<T>, what: &'static str) -> Result<T, ApiError> {
        self.refused(Some(id.raw()), id.get(what)).await
    }

    /// `row`, the resource the path's `id` names; 404 `no {what} with that
    /// id` (recorded) when there is none.
    pub async fn found<T, R>(
        &self,
        id: &PathId<T>,
        what: &'static str,
        row: Option<R>,
    ) -> Result<R, ApiError> {
        self.refused(Some(id.raw()), row.ok_or(ApiError::NotFound(what)))
            .await
    }

    /// [`Principal::audit`] of this action.
    pub async fn audit(
        &self,
        db: impl sqlx::PgExecutor<'_>,
        tenant: Option<TenantId>,
        id: impl std::fmt::Display,
        details: Value,
    ) -> Result<(), ApiError> {
        let caller = self.caller;
        caller
            .principal
            .audit(db, caller.request_id, tenant, self.act, id, details)
            .await
    }
}

impl Principal {
    /// Resolves the caller.
    pub async fn resolve(state: &AppState, auth: &Admin) -> Result<Self, ApiError> {
        let (caller, role, user_id) = match auth {
            Admin::Key(ServiceKey(owner)) => (
                AdminCaller {
                    tenant_id: owner.tenant_id,
                    actor: format!("api_key:{}", owner.key_id),
                },
                Some(Role::Admin),
                None,
            ),
            Admin::User(UserJwt(identity)) => {
                let roles: Vec<Role> = identity
                    .roles
                    .iter()
                    .filter_map(|r| Role::parse(r))
                    .collect();
                let role = if roles.contains(&Role::Admin) {
                    Some(Role::Admin)
                } else {
                    roles.first().copied()
                };
                (
                    AdminCaller {
                        tenant_id: identity.tenant_id,
                        actor: format!("user:{}", identity.subject),
                    },
                    role,
                    identity.subject.parse::<UserId>().ok(),
                )
            }
        };
        let platform = role == Some(Role::Admin)
            && organizations::get(&state.pool, caller.tenant_id)
                .await?
                .is_some_and(|o| o.kind == "platform");
        let permissions = match auth {
            Admin::Key(_) => None,
            Admin::User(UserJwt(identity)) => Some(match &identity.permissions {
                Some(held) => held.as_ref().clone(),
                None => {
                    crate::permissions::effective(state, caller.tenant_id, user_id, &identity.roles)
                        .await?
                        .as_ref()
                        .clone()
                }
            }),
        };
        let reach = if platform {
            // Its request was opened to the platform when it was
            // authenticated (`auth::wall_to`); without that, refuse rather
            // than read across organisations.
            Reach::Platform(scope::platform_wide().ok_or_else(|| {
                ApiError::Internal(anyhow::anyhow!(
                    "a platform administrator's request is walled to one organisation"
                ))
            })?)
        } else {
            Reach::Tenant(caller.tenant_id)
        };
        Ok(Self {
            caller,
            platform,
            reach,
            role,
            user_id,
            permissions,
        })
    }

    /// Whether it holds `permission` (an API key holds what its scopes
    /// allow, checked before any handler runs).
    pub fn holds(&self, permission: Permission) -> bool {
        self.permissions
            .as_ref()
            .is_none_or(|held| held.contains_key(&permission))
    }

    /// 403 naming `permission` unless it holds it: for operations declared
    /// [`crate::permissions::Access::Own`], where the handler decides
    /// whether the resource is the caller's own (every other declared
    /// permission was checked when the caller was authenticated).
    pub fn require(&self, permission: Permission) -> Result<(), ApiError> {
        if self.holds(permission) {
            Ok(())
        } else {
            Err(ApiError::Forbidden(permission.required()))
        }
    }

    /// 403 unless it is a platform admin.
    pub fn require_platform(&self) -> Result<(), ApiError> {
        if self.platform {
            Ok(())
        } else {
            Err(ApiError::Forbidden("a platform administrator is required"))
        }
    }

    /// Whose rows it reads: its own organisation's, or every
    /// organisation's for a platform admin.
    pub fn reach(&self) -> Reach {
        self.reach
    }

    /// The reach of a read that may name one organisation: `requested`'s
    /// (its own, or any for a platform admin; another answers 404, a
    /// malformed id 400 as [`Principal::target_tenant`] says), else its
    /// own [`Principal::reach`].
    pub fn reach_of(&self, requested: Option<&str>) -> Result<Reach, ApiError> {
        match requested {
            None => Ok(self.reach),
            other => self.target_tenant(other).map(Reach::Tenant),
        }
    }

    /// The organisation a create acts in: `requested` for a platform admin,
    /// its own otherwise (naming another one answers 404).
    pub fn target_tenant(&self, requested: Option<&str>) -> Result<TenantId, ApiError> {
        match requested {
            None => Ok(self.caller.tenant_id),
            Some(raw) => {
                let id: TenantId = crate::extract::id(raw, "organization")?;
                if self.platform || id == self.caller.tenant_id {
                    Ok(id)
                } else {
                    Err(ApiError::NotFound("organization"))
                }
            }
        }
    }

    /// This caller at the request `request_id`, to name an action it takes
    /// there ([`InRequest::acting`]): audited and refused as that action.
    pub fn at<'a>(&'a self, state: &'a AppState, request_id: &'a RequestId) -> InRequest<'a> {
        InRequest {
            principal: self,
            state,
            request_id,
        }
    }

    /// Records a successful action on resource `id` in `tenant` (the
    /// caller's own when `None`).
    pub async fn audit(
        &self,
        db: impl sqlx::PgExecutor<'_>,
        request_id: &RequestId,
        tenant: Option<TenantId>,
        act: Act<'_>,
        id: impl std::fmt::Display,
        details: Value,
    ) -> Result<(), ApiError> {
        let caller = AdminCaller {
            tenant_id: tenant.unwrap_or(self.caller.tenant_id),
            actor: self.caller.actor.clone(),
        };
        caller
            .audit(db, request_id, act.action, act.resource_type, id, details)
            .await
    }

    /// Passes `result` through, recording a refusal (403, 404, 409, 410) of
    /// `action` as a `failure` row first. Invalid input (400) is not an
    /// action and is not recorded.
    pub async fn refused<T>(
        &self,
        state: &AppState,
        request_id: &RequestId,
        action: &str,
        resource_type: &str,
        id: Option<&str>,
        result: Result<T, ApiError>,
    ) -> Result<T, ApiError> {
        if let Err(e) = &result {
            let status = match e {
                ApiError::Forbidden(_) => 403,
                ApiError::NotFound(_) => 404,
                ApiError::Conflict(_) => 409,
                ApiError::Gone(_) => 410,
                _ => return result,
            };
            let recorded = audit::record(
                &state.pool,
                audit::Entry {
                    tenant_id: Some(self.caller.tenant_id),
                    actor: &self.caller.actor,
                    action,
                    resource_type,
                    resource_id: id.map(|s| s.chars().take(64).collect()),
                    result: "failure",
                    request_id: Some(&request_id.0),
                    details: json!({"status": status, "reason": e.to_string()}),
                },
            )
            .await;
            if let Err(error) = recorded {
                tracing::error!(%error, "cannot record a refused action");
            }
        }
        result
    }
}

/// Shortest password accepted.
pub const MIN_PASSWORD: usize = 12;
/// Longest password accepted (argon2 input stays bounded).
pub const MAX_PASSWORD: usize = 128;

/// The password policy: 12 to 128 characters with a lower-case letter, an
/// upper-case letter and a digit, not all the same character.
pub fn check_password(field: &str, password: &str) -> Result<(), ApiError> {
    let len = password.chars().count();
    let reason = if !(MIN_PASSWORD..=MAX_PASSWORD).contains(&len) {
        Some(format!(
            "must be {MIN_PASSWORD} to {MAX_PASSWORD} characters"
        ))
    } else if !password.chars().any(|c| c.is_lowercase())
        || !password.chars().any(|c| c.is_uppercase())
        || !password.chars().any(|c| c.is_ascii_digit())
    {
        Some("must contain a lower-case letter, an upper-case letter and a digit".to_owned())
    } else {
        None
    };
    match reason {
        Some(r) => Err(ApiError::invalid(field, r)),
        None => Ok(()),
    }
}

/// The one argon2id configuration: every password hash is made with it,
/// and so is [`DUMMY_HASH`], so that checking either costs the same.
fn hasher() -> Argon2<'static> {
    Argon2::new(Algorithm::Argon2id, Version::V0x13, Params::DEFAULT)
}

/// A PHC string of `password` under [`hasher`], with a fresh salt.
fn hash_with_salt(password: &[u8]) -> Result<String, argon2::password_hash::Error> {
    let salt = SaltString::generate(&mut OsRng);
    hasher()
        .hash_password(password, &salt)
        .map(|h| h.to_string())
}

/// Hashes a password with argon2id ([`hasher`]'s parameters), on a blocking
/// thread.
pub async fn hash_password(password: String) -> Result<String, ApiError> {
    tokio::task::spawn_blocking(move || {
        hash_with_salt(password.as_bytes())
            .map_err(|e| anyhow::anyhow!("while hashing a password: {e}"))
    })
    .await
    .map_err(|e| anyhow::anyhow!("the hashing thread failed: {e}"))?
    .map_err(ApiError::Internal)
}

/// The hash checked when there is no stored one (unknown address, no
/// password set, an unreadable stored hash): a random password nobody
/// knows, hashed by [`hasher`] like every stored password, so it has the
/// same algorithm, version, m/t/p costs, salt and output lengths, and
/// checking it costs what checking a real one does.
static DUMMY_HASH: LazyLock<String> = LazyLock::new(|| {
    let mut password = [0u8; 32];
    OsRng.fill_bytes(&mut password);
    hash_with_salt(&password).expect("a random password hashes")
});

/// The counter of argon2 password checks: one per sign-in attempt,
/// whatever the outcome.
pub const VERIFICATIONS_METRIC: &str = "password_verifications_total";

/// Whether `password` is the one `stored` was made from: exactly one argon2
/// computation whatever `stored` is, so a missing or unreadable hash is
/// checked against [`DUMMY_HASH`] instead (and never matches) rather than
/// answered at once.
fn verify_blocking(password: &[u8], stored: Option<&str>) -> bool {
    // Made on first use by whichever path comes first, not only by the
    // unknown address.
    let dummy = DUMMY_HASH.as_str();
    let (hash, genuine) = match stored.and_then(|s| PasswordHash::new(s).ok()) {
        Some(h) => (h, true),
        None => match PasswordHash::new(dummy) {
            Ok(h) => (h, false),
            Err(_) => return false,
        },
    };
    metrics::counter!(VERIFICATIONS_METRIC).increment(1);
    let matches = hasher().verify_password(password, &hash).is_ok();
    matches && genuine
}

/// Whether `password` matches `hash` (the dummy hash when `None`), on a
/// blocking thread; the same work either way.
pub async fn verify_password(password: String, hash: Option<String>) -> bool {
    tokio::task::spawn_blocking(move || verify_blocking(password.as_bytes(), hash.as_deref()))
        .await
        .unwrap_or(false)
}

/// [`authenticate`], on the calling thread.
fn authenticate_blocking(creds: Option<Credentials>, password: &[u8]) -> Option<Credentials> {
    let matches = verify_blocking(
        password,
        creds.as_ref().and_then(|c| c.password_hash.as_deref()),
    );
    creds.filter(|c| matches && c.status == "active" && c.tenant_status == "active")
}

/// The sign-in decision, on a blocking thread: the user `creds` names (if
/// any) when `password` is theirs and both they and their organisation are
/// active. An unknown address, a user without a password, a wrong password
/// and an inactive user or organisation all do the same work: one argon2
/// check with [`hasher`]'s parameters (for hashes it made: all of them).
pub async fn authenticate(creds: Option<Credentials>, password: String) -> Option<Credentials> {
    tokio::task::spawn_blocking(move || authenticate_blocking(creds, password.as_bytes()))
        .await
        .unwrap_or(None)
}

#[cfg(test)]
mod tests {
    use std::sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    };

    use argon2::{PasswordHash, password_hash::Ident};
    use metrics::{
        Counter, CounterFn, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit,
    };
    use shared::db::users::Credentials;

    use super::{DUMMY_HASH, VERIFICATIONS_METRIC, authenticate_blocking, hash_with_salt};

    /// Counts the password checks made on this thread.
    #[derive(Default)]
    struct Checks(Arc<AtomicU64>);

    struct Add(Arc<AtomicU64>);

    impl CounterFn for Add {
        fn increment(&self, value: u64) {
            self.0.fetch_add(value, Ordering::SeqCst);
        }
        fn absolute(&self, value: u64) {
            self.0.store(value, Ordering::SeqCst);
        }
    }

    impl Recorder for Checks {
        fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
            if key.name() == VERIFICATIONS_METRIC {
                Counter::from_arc(Arc::new(Add(self.0.clone())))
            } else {
                Counter::noop()
            }
        }
        fn register_gauge(&self, _: &Key, _: &Metadata<'_>) -> Gauge {
            Gauge::noop()
        }
        fn register_histogram(&self, _: &Key, _: &Metadata<'_>) -> Histogram {
            Histogram::noop()
        }
    }

    /// What decides an argon2 check's cost, read from a PHC string.
    fn cost(phc: &str) -> (Ident<'_>, Option<u32>, Vec<(String, String)>, usize, usize) {
        let h = PasswordHash::new(phc).unwrap();
        let params = h
            .params
            .iter()
            .map(|(k, v)| (k.as_str().to_owned(), v.as_str().to_owned()))
            .collect();
        let salt_len = h.salt.unwrap().as_str().len();
        let output_len = h.hash.unwrap().len();
        (h.algorithm, h.version, params, salt_len, output_len)
    }

    #[test]
    fn the_dummy_hash_costs_what_a_stored_password_hash_costs() {
        let stored = hash_with_salt(b"Correct-Horse-42").unwrap();
        assert_eq!(cost(&DUMMY_HASH), cost(&stored));
        let (algorithm, version, params, _, output_len) = cost(&stored);
        assert_eq!(algorithm.as_str(), "argon2id");
        assert_eq!(version, Some(0x13));
        assert_eq!(
            params,
            [("m", "19456"), ("t", "2"), ("p", "1")].map(|(k, v)| (k.to_owned(), v.to_owned()))
        );
        assert_eq!(output_len, 32);
        assert_ne!(*DUMMY_HASH, stored, "a salt of its own");
    }

    fn creds(hash: Option<&str>, status: &str, tenant_status: &str) -> Credentials {
        Credentials {
            id: shared::domain::UserId::new(),
            tenant_id: "018f2a4e-0000-7000-8000-000000000001".parse().unwrap(),
            role: "DOCTOR".into(),
            status: status.into(),
            password_hash: hash.map(str::to_owned),
            must_change_password: false,
            tenant_status: tenant_status.into(),
        }
    }

    #[test]
    fn every_refused_sign_in_makes_exactly_one_password_check() {
        let right = "Correct-Horse-42";
        let stored = hash_with_salt(right.as_bytes()).unwrap();
        let cases: Vec<(&str, Option<Credentials>, &str, bool)> = vec![
            ("unknown address", None, right, false),
            (
                "wrong password",
                Some(creds(Some(&stored), "active", "active")),
                "Wrong-Horse-42",
                false,
            ),
            (
                "no password set",
                Some(creds(None, "active", "active")),
                right,
                false,
            ),
            // The password the dummy hash was once made from: never a way in.
            (
                "no password set, the old dummy's password",
                Some(creds(None, "active", "active")),
                "no such user",
                false,
            ),
            (
                "unreadable stored hash",
                Some(creds(Some("not a phc string"), "active", "active")),
                right,
                false,
            ),
            (
                "inactive user",
                Some(creds(Some(&stored), "inactive", "active")),
                right,
                false,
            ),
            (
                "inactive organisation",
                Some(creds(Some(&stored), "active", "inactive")),
                right,
                false,
            ),
            (
                "right password",
                Some(creds(Some(&stored), "active", "active")),
                right,
                true,
            ),
        ];
        for (what, c, password, signed_in) in cases {
            let checks = Checks::default();
            let got = metrics::with_local_recorder(&checks, || {
                authenticate_blocking(c, password.as_bytes())
            });
            assert_eq!(got.is_some(), signed_in, "{what}");
            assert_eq!(checks.0.load(Ordering::SeqCst), 1, "{what}: one check");
        }
    }
}
