//! Push through Firebase Cloud Messaging HTTP v1: `POST
//! /v1/projects/{project}/messages:send` with an OAuth2 access token.
//!
//! The token comes from Google's token endpoint for a JWT the service
//! account signs (RS256, the JWT-bearer grant, RFC 7523), and is cached until
//! a minute before it expires. A 401 drops it so the next send gets a new one.
//! `UNREGISTERED` and invalid-token answers say the device token is gone: the
//! caller removes it from the subscriber.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use shared::{
    domain::PushContent,
    providers::{
        FailureReason, FcmCredentials, FcmSettings, ProviderCode, ProviderError, ProviderKind,
    },
};
use uuid::Uuid;

use super::{HttpProviders, Receipt, SendError, classify_status, retry_after};

/// FCM's documented error codes (`FcmError.errorCode`).
const ERROR_CODES: &[&str] = &[
    "UNSPECIFIED_ERROR",
    "INVALID_ARGUMENT",
    "UNREGISTERED",
    "SENDER_ID_MISMATCH",
    "QUOTA_EXCEEDED",
    "UNAVAILABLE",
    "INTERNAL",
    "THIRD_PARTY_AUTH_ERROR",
];

/// The OAuth2 scope FCM sends need.
pub const SCOPE: &str = "https://www.googleapis.com/auth/firebase.messaging";

/// Access tokens per provider config (and service account), with expiry.
#[derive(Debug, Default)]
pub struct TokenCache(Mutex<HashMap<(Uuid, String), (String, Instant)>>);

impl TokenCache {
    fn get(&self, key: &(Uuid, String)) -> Option<String> {
        let map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        map.get(key)
            .filter(|(_, until)| *until > Instant::now())
            .map(|(t, _)| t.clone())
    }

    fn put(&self, key: (Uuid, String), token: String, until: Instant) {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        map.insert(key, (token, until));
    }

    fn forget(&self, key: &(Uuid, String)) {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        map.remove(key);
    }
}

#[derive(Serialize)]
struct Assertion<'a> {
    iss: &'a str,
    scope: &'a str,
    aud: &'a str,
    iat: i64,
    exp: i64,
}

#[derive(Deserialize)]
struct TokenAnswer {
    access_token: String,
    expires_in: Option<u64>,
}

/// Why a push failed, beside the usual [`SendError`]: the device token is
/// no longer valid and should be removed.
#[derive(Debug)]
pub enum PushError {
    /// Remove this token from the subscriber.
    TokenGone(SendError),
    /// Any other failure.
    Other(SendError),
}

async fn access_token(
    http: &HttpProviders,
    config_id: Uuid,
    credentials: &FcmCredentials,
) -> Result<String, SendError> {
    let key = (config_id, credentials.client_email.clone());
    if let Some(token) = http.fcm_tokens.get(&key) {
        return Ok(token);
    }
    let now = chrono::Utc::now().timestamp();
    let claims = Assertion {
        iss: &credentials.client_email,
        scope: SCOPE,
        aud: &http.urls.google_token,
        iat: now,
        exp: now + 3600,
    };
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
    header.kid = credentials.private_key_id.clone();
    let signing_key = jsonwebtoken::EncodingKey::from_rsa_pem(credentials.private_key.as_bytes())
        .map_err(|_| SendError::transient(FailureReason::CredentialsUnusable))?;
    let assertion = jsonwebtoken::encode(&header, &claims, &signing_key)
        .map_err(|_| SendError::transient(FailureReason::CredentialsUnusable))?;
    let resp = http
        .client
        .post(&http.urls.google_token)
        .form(&[
            ("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer"),
            ("assertion", assertion.as_str()),
        ])
        .send()
        .await
        .map_err(SendError::from_reqwest)?;
    let status = resp.status();
    let wait = retry_after(resp.headers());
    if !status.is_success() {
        // A refused service account is the config's fault: fail over.
        return Err(
            match classify_status(
                ProviderKind::Fcm,
                status,
                wait,
                Some(FailureReason::TokenRefused),
                None,
            ) {
                SendError::Permanent { error } => SendError::Transient { error },
                e => e,
            },
        );
    }
    let answer: TokenAnswer = resp.json().await.map_err(|_| {
        SendError::transient(ProviderError::answered(
            ProviderKind::Fcm,
            FailureReason::UnreadableAnswer,
            Some(status.as_u16()),
        ))
    })?;
    let lifetime = Duration::from_secs(answer.expires_in.unwrap_or(3600));
    let until = Instant::now() + lifetime.saturating_sub(Duration::from_secs(60));
    http.fcm_tokens.put(key, answer.access_token.clone(), until);
    Ok(answer.access_token)
}

/// Sends one push to one device token.
pub async fn send(
    http: &HttpProviders,
    config_id: Uuid,
    settings: &FcmSettings,
    credentials: &FcmCredentials,
    device_token: &str,
    content: &PushContent,
) -> Result<Receipt, PushError> {
    let token = access_token(http, config_id, credentials)
        .await
        .map_err(PushError::Other)?;
    let mut notification = json!({"title": content.title});
    if let Some(body) = &content.body {
        notification["body"] = json!(body);
    }
    let mut message = json!({"token": device_token, "notification": notification});
    if !content.data.is_empty() {
        message["data"] = json!(content.data);
    }
    let resp = http
        .client
        .post(format!(
            "{}/v1/projects/{}/messages:send",
            http.urls.fcm, settings.project_id
        ))
        .bearer_auth(&token)
        .json(&json!({"message": message}))
        .send()
        .await
        .map_err(|e| PushError::Other(SendError::from_reqwest(e)))?;
    let status = resp.status();
    let wait = retry_after(resp.headers());
    let body: Value = resp.json().await.unwrap_or(Value::Null);
    if status.is_success() {
        let name = body["name"].as_str().ok_or_else(|| {
            PushError::Other(SendError::transient(ProviderError::answered(
                ProviderKind::Fcm,
                FailureReason::NoMessageId,
                Some(status.as_u16()),
            )))
        })?;
        return Ok(Receipt {
            message_id: name.to_owned(),
            response: format!("{} sent", status.as_u16()),
            code: Some(status.as_u16()),
        });
    }
    let error_code = body["error"]["details"]
        .as_array()
        .into_iter()
        .flatten()
        .find_map(|d| d["errorCode"].as_str())
        .unwrap_or_default();
    // The message is read to tell a bad token from a bad payload, never kept:
    // it can quote the request back.
    let message = body["error"]["message"].as_str().unwrap_or_default();
    let code = ProviderCode::named(error_code, ERROR_CODES);
    if status == reqwest::StatusCode::UNAUTHORIZED {
        http.fcm_tokens
            .forget(&(config_id, credentials.client_email.clone()));
    }
    let token_gone = error_code == "UNREGISTERED"
        || error_code == "SENDER_ID_MISMATCH"
        || (error_code == "INVALID_ARGUMENT" && message.contains("registration token"));
    if token_gone {
        return Err(PushError::TokenGone(SendError::permanent(
            ProviderError::answered(
                ProviderKind::Fcm,
                FailureReason::DeviceTokenGone,
                Some(status.as_u16()),
            )
            .with_code(code),
        )));
    }
    Err(PushError::Other(classify_status(
        ProviderKind::Fcm,
        status,
        wait,
        None,
        code,
    )))
}
