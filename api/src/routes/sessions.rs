//! `POST /api/v1/auth/login`: platform users sign in with their email
//! address and password and get a short-lived JWT that the API's own
//! verifier accepts: HS256 with their organisation's secret (created on first
//! use), `sub` the user's id, `tenant_id` and `roles`.
//!
//! A wrong address, a wrong password, a user without a password and a
//! deactivated user or organisation all answer the same 401 after the same
//! work: one lookup and one argon2id check with the same parameters (see
//! [`access::authenticate`]); nothing is written and no token is made before
//! the password matched. A user with a temporary password gets a token that
//! may only change it. `cargo bench -p api --bench login` compares the
//! refusals' times.

use base64::Engine as _;
use chrono::Utc;
use jsonwebtoken::{EncodingKey, Header};
use poem::web::Data;
use poem_openapi::{ApiResponse, Object, OpenApi, payload::Json};
use rand::RngCore;
use serde_json::json;
use shared::db::{audit, jwt_secrets, users};

use crate::body::StrictJson;
use crate::{AppState, access, error::ApiError, middleware::RequestId, routes::ApiTags};

/// How long an issued token lives.
pub const TOKEN_TTL_SECS: i64 = 15 * 60;

/// The sign-in endpoint.
#[derive(Debug)]
pub struct SessionsApi;

/// Credentials.
#[derive(Debug, Object, serde::Deserialize)]
#[oai(deny_unknown_fields)]
#[serde(deny_unknown_fields)]
pub struct Login {
    /// The user's email address.
    pub email: String,
    /// The password.
    pub password: String,
}

/// An issued token.
#[derive(Debug, Object)]
pub struct Session {
    /// The bearer JWT.
    pub access_token: String,
    /// `Bearer`.
    pub token_type: String,
    /// Seconds until it expires.
    pub expires_in: i64,
    /// The user's id (the token's `sub`).
    pub user_id: String,
    /// The user's organisation.
    pub organization_id: String,
    /// The user's role.
    pub role: String,
    /// Whether the password is temporary: the token may only change it.
    pub must_change_password: bool,
}

/// Answers to a sign-in.
#[derive(Debug, ApiResponse)]
pub enum LoginResponse {
    /// Signed in.
    #[oai(status = 200)]
    Ok(Json<Session>),
}

/// The organisation's HS256 secret, created (sealed) on first use.
async fn tenant_secret(
    state: &AppState,
    tenant: shared::domain::TenantId,
) -> Result<Vec<u8>, ApiError> {
    let keyring = state.keyring.as_ref().ok_or_else(|| {
        ApiError::Unavailable("sign-in needs ENCRYPTION_KEYS to keep token secrets".into())
    })?;
    let aad = jwt_secrets::aad(tenant);
    if jwt_secrets::get(&state.pool, tenant).await?.is_none() {
        let mut raw = [0u8; 32];
        rand::rng().fill_bytes(&mut raw);
        let secret = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw);
        let sealed = keyring.seal(secret.as_bytes(), &aad);
        // Two first sign-ins at once keep the secret that landed first.
        sqlx::query(
            "insert into tenant_jwt_secrets (tenant_id, key_id, ciphertext) values ($1, $2, $3)
             on conflict (tenant_id) do nothing",
        )
        .bind(tenant)
        .bind(&sealed.key_id)
        .bind(&sealed.bytes)
        .execute(&state.pool)
        .await?;
    }
    let sealed = jwt_secrets::get(&state.pool, tenant)
        .await?
        .ok_or(ApiError::Unauthorized)?;
    keyring
        .open(&sealed, &aad)
        .map_err(|e| ApiError::Internal(anyhow::anyhow!("while opening a JWT secret: {e}")))
}

#[OpenApi(prefix_path = "/api/v1/auth", tag = "ApiTags::Users")]
impl SessionsApi {
    /// Sign in with email and password.
    #[oai(path = "/login", method = "post", operation_id = "auth.login")]
    async fn login(
        &self,
        state: Data<&AppState>,
        request_id: Data<&RequestId>,
        body: StrictJson<Login>,
    ) -> Result<LoginResponse, ApiError> {
        let Login { email, password } = body.0;
        if email.len() > 254 || password.len() > access::MAX_PASSWORD * 4 {
            return Err(ApiError::Unauthorized);
        }
        // Every refusal past this point costs the same: one lookup, one
        // password check, nothing written (see `access::authenticate`).
        let creds = users::credentials(&state.pool, &email).await?;
        let Some(c) = access::authenticate(creds, password).await else {
            return Err(ApiError::Unauthorized);
        };
        let secret = tenant_secret(&state, c.tenant_id).await?;
        let settings = state.verifier.settings();
        let now = Utc::now().timestamp();
        let mut claims = serde_json::Map::new();
        claims.insert(settings.subject_claim.clone(), json!(c.id.to_string()));
        claims.insert(
            settings.tenant_claim.clone(),
            json!(c.tenant_id.to_string()),
        );
        claims.insert(settings.roles_claim.clone(), json!([c.role]));
        claims.insert("iat".into(), json!(now));
        claims.insert("exp".into(), json!(now + TOKEN_TTL_SECS));
        if let Some(iss) = &settings.issuer {
            claims.insert("iss".into(), json!(iss));
        }
        if let Some(aud) = &settings.audience {
            claims.insert("aud".into(), json!(aud));
        }
        let token = jsonwebtoken::encode(
            &Header::new(jsonwebtoken::Algorithm::HS256),
            &serde_json::Value::Object(claims),
            &EncodingKey::from_secret(&secret),
        )
        .map_err(|e| ApiError::Internal(anyhow::anyhow!("while signing a token: {e}")))?;
        let mut tx = state.pool.begin().await?;
        users::touch_login(&mut *tx, c.id).await?;
        audit::record(
            &mut *tx,
            audit::Entry {
                tenant_id: Some(c.tenant_id),
                actor: &format!("user:{}", c.id),
                action: "user.login",
                resource_type: "user",
                resource_id: Some(c.id.to_string()),
                result: "success",
                request_id: Some(&request_id.0.0),
                details: json!({}),
            },
        )
        .await?;
        tx.commit().await?;
        Ok(LoginResponse::Ok(Json(Session {
            access_token: token,
            token_type: "Bearer".into(),
            expires_in: TOKEN_TTL_SECS,
            user_id: c.id.to_string(),
            organization_id: c.tenant_id.to_string(),
            role: c.role,
            must_change_password: c.must_change_password,
        })))
    }
}
