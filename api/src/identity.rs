//! End-user and admin identity: bearer JWTs.
//!
//! Two ways to sign, both limited to the algorithms `JWT_ALGORITHMS` allows:
//!
//! * **HS256 with a per-tenant secret** (simple setups and development). The
//!   token's tenant claim picks the secret; a token signed with another
//!   tenant's secret does not verify.
//! * **RS256/ES256 from an OIDC provider's JWKS** (`JWT_JWKS_URL`: Keycloak,
//!   Cognito, Auth0 and the like). Keys are cached by `kid`; an unknown `kid`
//!   fetches the set again (at most once per [`JWKS_REFETCH`]), so a provider's
//!   key rotation is picked up without a restart.
//!
//! HMAC tokens are only ever checked against tenant secrets and asymmetric
//! tokens only against JWKS keys of the same family, so an HS256 token signed
//! with a public key (key confusion) fails, and `alg: none` is never
//! accepted. `exp` is required and checked, as are `nbf`, `iss` and `aud`
//! when configured, with `JWT_LEEWAY_SECS` of clock skew. Every failure is
//! one [`Rejected`] reason, logged without the token.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use jsonwebtoken::{
    Algorithm, DecodingKey, Validation, decode, decode_header, errors::ErrorKind, jwk::JwkSet,
};
use serde_json::Value;
use shared::{
    config::JwtSettings,
    crypto::Keyring,
    db::{jwt_secrets, tenants, users},
    domain::TenantId,
};
use sqlx::PgPool;
use tokio::sync::RwLock;

/// How soon an unknown `kid` may trigger another JWKS fetch.
pub const JWKS_REFETCH: Duration = Duration::from_secs(10);

/// Who a verified token speaks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The user's id at the identity provider (links to a subscriber).
    pub subject: String,
    /// The tenant the user belongs to.
    pub tenant_id: TenantId,
    /// The user's roles.
    pub roles: Vec<String>,
    /// `iat`, when the token has one.
    pub issued_at: Option<i64>,
    /// A platform user signed in with a temporary password: the token may
    /// only change the password.
    pub password_change_only: bool,
    /// The sign-in session the token belongs to (`sid`); tokens from an
    /// external identity provider have none.
    pub session_id: Option<uuid::Uuid>,
    /// The user's effective permissions, when the authentication step
    /// computed them to check the operation's declared permission
    /// ([`crate::permissions::authorize_user`]); `None` until then.
    pub permissions: Option<std::sync::Arc<shared::db::permissions::Effective>>,
}

/// Why a token was refused. Each answers 401; the reason is only logged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejected {
    /// Not a JWT, or an unreadable header or claims.
    #[error("malformed token")]
    Malformed,
    /// The header's algorithm is not allowed (including `none`).
    #[error("algorithm not allowed")]
    AlgorithmNotAllowed,
    /// No key for the token: unknown `kid`, no JWKS configured, or no secret
    /// for the tenant.
    #[error("no key for this token")]
    UnknownKey,
    /// The signature does not match.
    #[error("bad signature")]
    BadSignature,
    /// `exp` has passed.
    #[error("expired")]
    Expired,
    /// `nbf` is still ahead.
    #[error("not yet valid")]
    NotYetValid,
    /// `aud` is not ours.
    #[error("wrong audience")]
    WrongAudience,
    /// `iss` is not ours.
    #[error("wrong issuer")]
    WrongIssuer,
    /// A required claim is missing or has the wrong type.
    #[error("missing or invalid claim `{0}`")]
    Claim(String),
    /// The tenant does not exist or is not active.
    #[error("unknown tenant")]
    UnknownTenant,
    /// The keys could not be fetched or opened.
    #[error("keys unavailable")]
    KeysUnavailable,
    /// The platform user is deactivated, the token predates its last
    /// password change or deactivation, or its session was revoked or has
    /// ended.
    #[error("revoked")]
    Revoked,
}

#[derive(Debug, Default)]
struct JwksCache {
    set: Option<JwkSet>,
    fetched_at: Option<Instant>,
}

/// Verifies bearer JWTs.
#[derive(Debug, Clone)]
pub struct Verifier {
    settings: Arc<JwtSettings>,
    keyring: Option<Keyring>,
    pool: PgPool,
    http: reqwest::Client,
    jwks: Arc<RwLock<JwksCache>>,
}

impl Verifier {
    /// A verifier with these settings.
    pub fn new(settings: JwtSettings, keyring: Option<Keyring>, pool: PgPool) -> Self {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("a plain HTTP client builds");
        Self {
            settings: Arc::new(settings),
            keyring,
            pool,
            http,
            jwks: Arc::default(),
        }
    }

    /// The settings tokens are checked against (issuer, audience, claim
    /// names), for issuing tokens this verifier accepts.
    pub fn settings(&self) -> &JwtSettings {
        &self.settings
    }

    /// Verifies `token` and maps its claims to an [`Identity`].
    pub async fn verify(&self, token: &str) -> Result<Identity, Rejected> {
        let header = decode_header(token).map_err(|_| Rejected::Malformed)?;
        if !self.settings.algorithms.contains(&header.alg) {
            return Err(Rejected::AlgorithmNotAllowed);
        }
        let key = match header.alg {
            Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => {
                self.tenant_secret(token).await?
            }
            alg => self.jwks_key(header.kid.as_deref(), alg).await?,
        };
        let mut validation = Validation::new(header.alg);
        validation.leeway = self.settings.leeway_secs;
        validation.validate_nbf = true;
        let mut required = vec!["exp"];
        if let Some(iss) = &self.settings.issuer {
            validation.set_issuer(&[iss]);
            required.push("iss");
        }
        match &self.settings.audience {
            Some(aud) => {
                validation.set_audience(&[aud]);
                required.push("aud");
            }
            None => validation.validate_aud = false,
        }
        validation.set_required_spec_claims(&required);
        let data = decode::<Value>(token, &key, &validation).map_err(|e| match e.kind() {
            ErrorKind::ExpiredSignature => Rejected::Expired,
            ErrorKind::ImmatureSignature => Rejected::NotYetValid,
            ErrorKind::InvalidAudience => Rejected::WrongAudience,
            ErrorKind::InvalidIssuer => Rejected::WrongIssuer,
            ErrorKind::InvalidSignature => Rejected::BadSignature,
            ErrorKind::InvalidAlgorithm => Rejected::AlgorithmNotAllowed,
            ErrorKind::MissingRequiredClaim(c) => Rejected::Claim(c.clone()),
            _ => Rejected::Malformed,
        })?;
        let mut identity = self.identity(&data.claims)?;
        let active = tenants::get(&self.pool, identity.tenant_id)
            .await
            .map_err(|_| Rejected::KeysUnavailable)?
            .is_some_and(|t| t.status == "active");
        if !active {
            return Err(Rejected::UnknownTenant);
        }
        // A platform user (its `sub` is its users.id) must still be active,
        // the token newer than its last password change or deactivation, and
        // its session (`sid`, when it has one) live: one query.
        let user_id = identity.subject.parse::<shared::domain::UserId>().ok();
        match user_id {
            Some(user_id) => {
                let state = shared::db::scope::tenant(
                    identity.tenant_id,
                    users::token_state(
                        &self.pool,
                        identity.tenant_id,
                        user_id,
                        identity.session_id,
                    ),
                )
                .await
                .map_err(|_| Rejected::KeysUnavailable)?;
                match state {
                    Some(state) => {
                        let fresh = identity
                            .issued_at
                            .is_some_and(|iat| iat >= state.tokens_valid_after.timestamp());
                        if state.status != "active" || !fresh || state.session_live == Some(false) {
                            return Err(Rejected::Revoked);
                        }
                        identity.password_change_only = state.must_change_password;
                    }
                    None if identity.session_id.is_some() => return Err(Rejected::Revoked),
                    None => {}
                }
            }
            None if identity.session_id.is_some() => return Err(Rejected::Revoked),
            None => {}
        }
        Ok(identity)
    }

    fn tenant_of(&self, claims: &Value) -> Result<TenantId, Rejected> {
        let claim = &self.settings.tenant_claim;
        claims
            .get(claim)
            .and_then(Value::as_str)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| Rejected::Claim(claim.clone()))
    }

    fn identity(&self, claims: &Value) -> Result<Identity, Rejected> {
        let s = &self.settings;
        let subject = claims
            .get(&s.subject_claim)
            .and_then(Value::as_str)
            .filter(|v| !v.is_empty() && v.len() <= 255)
            .ok_or_else(|| Rejected::Claim(s.subject_claim.clone()))?
            .to_owned();
        let roles = match claims.get(&s.roles_claim) {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::String(list)) => list.split_whitespace().map(str::to_owned).collect(),
            Some(Value::Array(items)) => items
                .iter()
                .map(|r| r.as_str().map(str::to_owned))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| Rejected::Claim(s.roles_claim.clone()))?,
            Some(_) => return Err(Rejected::Claim(s.roles_claim.clone())),
        };
        Ok(Identity {
            subject,
            tenant_id: self.tenant_of(claims)?,
            roles,
            issued_at: claims.get("iat").and_then(Value::as_i64),
            password_change_only: false,
            session_id: match claims.get("sid") {
                None | Some(Value::Null) => None,
                Some(v) => Some(
                    v.as_str()
                        .and_then(|s| uuid::Uuid::parse_str(s).ok())
                        .ok_or_else(|| Rejected::Claim("sid".into()))?,
                ),
            },
            permissions: None,
        })
    }

    /// The HS256 secret of the tenant the (not yet verified) token names.
    async fn tenant_secret(&self, token: &str) -> Result<DecodingKey, Rejected> {
        let claims: Value = jsonwebtoken::dangerous::insecure_decode_claims(token)
            .map_err(|_| Rejected::Malformed)?;
        let tenant_id = self.tenant_of(&claims)?;
        let keyring = self.keyring.as_ref().ok_or(Rejected::UnknownKey)?;
        let sealed = shared::db::scope::tenant(tenant_id, jwt_secrets::get(&self.pool, tenant_id))
            .await
            .map_err(|_| Rejected::KeysUnavailable)?
            .ok_or(Rejected::UnknownKey)?;
        let secret = keyring
            .open(&sealed, &jwt_secrets::aad(tenant_id))
            .map_err(|_| Rejected::KeysUnavailable)?;
        Ok(DecodingKey::from_secret(&secret))
    }

    /// The JWKS key with `kid`, fetching the set again when it is unknown.
    async fn jwks_key(&self, kid: Option<&str>, alg: Algorithm) -> Result<DecodingKey, Rejected> {
        let kid = kid.ok_or(Rejected::UnknownKey)?;
        let url = self
            .settings
            .jwks_url
            .as_deref()
            .ok_or(Rejected::UnknownKey)?;
        if let Some(key) = self.cached(kid, alg).await? {
            return Ok(key);
        }
        {
            let mut cache = self.jwks.write().await;
            let fresh = cache
                .fetched_at
                .is_some_and(|at| at.elapsed() < JWKS_REFETCH);
            if !fresh {
                cache.fetched_at = Some(Instant::now());
                let set = self.fetch(url).await?;
                cache.set = Some(set);
            }
        }
        self.cached(kid, alg).await?.ok_or(Rejected::UnknownKey)
    }

    async fn cached(&self, kid: &str, alg: Algorithm) -> Result<Option<DecodingKey>, Rejected> {
        let cache = self.jwks.read().await;
        let Some(jwk) = cache.set.as_ref().and_then(|s| s.find(kid)) else {
            return Ok(None);
        };
        let key = DecodingKey::from_jwk(jwk).map_err(|_| Rejected::UnknownKey)?;
        // The key's own family must match the token's algorithm.
        let family_matches = matches!(
            (&jwk.algorithm, alg),
            (
                jsonwebtoken::jwk::AlgorithmParameters::RSA(_),
                Algorithm::RS256
                    | Algorithm::RS384
                    | Algorithm::RS512
                    | Algorithm::PS256
                    | Algorithm::PS384
                    | Algorithm::PS512
            ) | (
                jsonwebtoken::jwk::AlgorithmParameters::EllipticCurve(_),
                Algorithm::ES256 | Algorithm::ES384
            )
        );
        if !family_matches {
            return Err(Rejected::AlgorithmNotAllowed);
        }
        Ok(Some(key))
    }

    async fn fetch(&self, url: &str) -> Result<JwkSet, Rejected> {
        let resp = self.http.get(url).send().await.map_err(|e| {
            tracing::warn!(error = %e, "cannot fetch the JWKS");
            Rejected::KeysUnavailable
        })?;
        if !resp.status().is_success() {
            tracing::warn!(status = resp.status().as_u16(), "the JWKS endpoint refused");
            return Err(Rejected::KeysUnavailable);
        }
        resp.json::<JwkSet>().await.map_err(|e| {
            tracing::warn!(error = %e, "the JWKS is not a key set");
            Rejected::KeysUnavailable
        })
    }
}
