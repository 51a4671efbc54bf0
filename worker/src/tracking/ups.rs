//! UPS: OAuth2 client credentials and the Track API.
//!
//! * **Token.** `POST {UPS_BASE_URL}/security/v1/oauth/token` with HTTP Basic
//!   client authentication and `grant_type=client_credentials`, through the
//!   `oauth2` crate. The access token is cached in Redis, sealed with the
//!   platform's key and keyed by the tenant's UPS config, until a minute
//!   before it expires, so every worker replica shares it. A missing token is
//!   fetched under a short Redis lock, so a hundred polls starting at once
//!   ask UPS once; the others wait for the token to appear.
//! * **Track.** `GET /api/track/v1/details/{inquiryNumber}` with the bearer
//!   token and the `transId` and `transactionSrc` headers. A 401 drops the
//!   cached token, fetches a new one and retries once. 5xx answers and
//!   timeouts are retried twice with a short pause; a 429 is returned with
//!   its `Retry-After`; UPS's "tracking information not found" (`TW0001`,
//!   404) is its own outcome.

use std::time::Duration;

use base64::Engine as _;
use chrono::{DateTime, NaiveDate, NaiveDateTime, NaiveTime, Utc};
use oauth2::{
    AccessToken, ClientId, ClientSecret, EndpointNotSet, EndpointSet, RefreshToken, Scope,
    StandardRevocableToken, TokenResponse, TokenUrl,
    basic::{
        BasicErrorResponse, BasicRevocationErrorResponse, BasicTokenIntrospectionResponse,
        BasicTokenType,
    },
};
use redis::aio::ConnectionManager;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Value, json};
use shared::{
    crypto::{Keyring, Sealed},
    db::shipments::ShipmentEvent,
    domain::{ProviderId, TenantId},
    providers::UpsCredentials,
    shipments::ShipmentStatus,
};
use uuid::Uuid;

use crate::providers::{http_client, retry_after};

/// The `transactionSrc` header UPS asks callers to identify themselves with.
pub const TRANSACTION_SRC: &str = "notify";
/// The largest Track answer read; UPS answers are a few kilobytes.
const MAX_ANSWER_BYTES: usize = 2 * 1024 * 1024;
/// Refresh this long before UPS says the token expires.
const TOKEN_MARGIN: Duration = Duration::from_secs(60);
/// How long the token lock is held at most.
const TOKEN_LOCK: Duration = Duration::from_secs(10);
/// How long to wait before a 429 that names no time is retried.
const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(60);

/// UPS's token answer. `expires_in` arrives as a string (`"14399"`), which
/// the standard response type refuses, so UPS gets a type of its own.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UpsTokenResponse {
    access_token: AccessToken,
    #[serde(default = "bearer")]
    token_type: BasicTokenType,
    #[serde(default, deserialize_with = "number_or_string")]
    expires_in: Option<u64>,
}

fn bearer() -> BasicTokenType {
    BasicTokenType::Bearer
}

fn number_or_string<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    match Option::<Value>::deserialize(d)? {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => Ok(n.as_u64()),
        Some(Value::String(s)) => s.trim().parse().map(Some).map_err(serde::de::Error::custom),
        Some(_) => Err(serde::de::Error::custom("expires_in is not a number")),
    }
}

impl TokenResponse for UpsTokenResponse {
    type TokenType = BasicTokenType;

    fn access_token(&self) -> &AccessToken {
        &self.access_token
    }
    fn token_type(&self) -> &BasicTokenType {
        &self.token_type
    }
    fn expires_in(&self) -> Option<Duration> {
        self.expires_in.map(Duration::from_secs)
    }
    fn refresh_token(&self) -> Option<&RefreshToken> {
        None
    }
    fn scopes(&self) -> Option<&Vec<Scope>> {
        None
    }
}

type OauthClient = oauth2::Client<
    BasicErrorResponse,
    UpsTokenResponse,
    BasicTokenIntrospectionResponse,
    StandardRevocableToken,
    BasicRevocationErrorResponse,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointSet,
>;

/// How a track call ended, other than with an answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TrackError {
    /// UPS has no tracking information for the number (yet).
    #[error("UPS has no tracking information for this number")]
    NotFound,
    /// UPS asked us to slow down.
    #[error("UPS asked to slow down (429)")]
    RateLimited(Duration),
    /// A 5xx, a timeout, a refused token, an unreadable answer: worth
    /// another poll later; counts against the tenant's circuit breaker.
    #[error("{0}")]
    Transient(String),
}

/// What UPS says about a shipment.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Tracking {
    /// Every activity of the package, newest first.
    pub events: Vec<ShipmentEvent>,
    /// The status of the newest activity UPS gave a known type.
    pub status: Option<ShipmentStatus>,
    /// The delivery date (scheduled, rescheduled or actual).
    pub eta: Option<DateTime<Utc>>,
}

impl Tracking {
    /// The newest event as shown in the API.
    pub fn last_event(&self) -> Option<Value> {
        self.events.first().map(|e| {
            json!({
                "occurred_at": e.occurred_at,
                "status": e.status,
                "status_type": e.status_type,
                "status_code": e.status_code,
                "description": e.description,
                "location": e.location,
            })
        })
    }
}

/// Talks to UPS for every tenant.
#[derive(Clone)]
pub struct UpsClient {
    client: reqwest::Client,
    base_url: String,
    conn: ConnectionManager,
    prefix: String,
    keyring: Option<Keyring>,
}

impl std::fmt::Debug for UpsClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpsClient")
            .field("base_url", &self.base_url)
            .finish_non_exhaustive()
    }
}

impl UpsClient {
    /// A client for the UPS API at `base_url`, caching tokens in Redis under
    /// `prefix`, sealed with `keyring` when there is one.
    pub fn new(
        base_url: &str,
        timeout: Duration,
        conn: ConnectionManager,
        prefix: &str,
        keyring: Option<Keyring>,
    ) -> anyhow::Result<Self> {
        Ok(Self {
            client: http_client(timeout)?,
            base_url: base_url.trim_end_matches('/').to_owned(),
            conn,
            prefix: prefix.to_owned(),
            keyring,
        })
    }

    fn token_key(&self, config_id: ProviderId) -> String {
        format!("{}:ups:token:{config_id}", self.prefix)
    }

    fn lock_key(&self, config_id: ProviderId) -> String {
        format!("{}:ups:token-lock:{config_id}", self.prefix)
    }

    fn token_aad(tenant_id: TenantId, config_id: ProviderId) -> Vec<u8> {
        format!("ups-token:{tenant_id}:{config_id}").into_bytes()
    }

    async fn cached_token(&self, tenant_id: TenantId, config_id: ProviderId) -> Option<String> {
        let mut conn = self.conn.clone();
        let raw: Option<String> = redis::cmd("GET")
            .arg(self.token_key(config_id))
            .query_async(&mut conn)
            .await
            .ok()
            .flatten();
        let raw = raw?;
        match &self.keyring {
            None => Some(raw),
            Some(ring) => {
                let (key_id, b64) = raw.split_once(':')?;
                let bytes = base64::engine::general_purpose::STANDARD.decode(b64).ok()?;
                let sealed = Sealed {
                    key_id: key_id.to_owned(),
                    bytes,
                };
                let plain = ring
                    .open(&sealed, &Self::token_aad(tenant_id, config_id))
                    .ok()?;
                String::from_utf8(plain).ok()
            }
        }
    }

    async fn store_token(
        &self,
        tenant_id: TenantId,
        config_id: ProviderId,
        token: &str,
        ttl: Duration,
    ) {
        let value = match &self.keyring {
            None => token.to_owned(),
            Some(ring) => {
                let sealed = ring.seal(token.as_bytes(), &Self::token_aad(tenant_id, config_id));
                format!(
                    "{}:{}",
                    sealed.key_id,
                    base64::engine::general_purpose::STANDARD.encode(&sealed.bytes)
                )
            }
        };
        let mut conn = self.conn.clone();
        let set: Result<(), _> = redis::cmd("SET")
            .arg(self.token_key(config_id))
            .arg(value)
            .arg("PX")
            .arg(ttl.as_millis().max(1) as u64)
            .query_async(&mut conn)
            .await;
        if let Err(error) = set {
            tracing::warn!(%error, "cannot cache the UPS token");
        }
    }

    /// Drops the cached token of a config (UPS refused it).
    pub async fn forget_token(&self, config_id: ProviderId) {
        let mut conn = self.conn.clone();
        let _: Result<(), _> = redis::cmd("DEL")
            .arg(self.token_key(config_id))
            .query_async(&mut conn)
            .await;
    }

    /// A valid access token for the config: the cached one, or a new one.
    pub async fn token(
        &self,
        tenant_id: TenantId,
        config_id: ProviderId,
        credentials: &UpsCredentials,
    ) -> Result<String, TrackError> {
        if let Some(t) = self.cached_token(tenant_id, config_id).await {
            return Ok(t);
        }
        let mut conn = self.conn.clone();
        let lock_key = self.lock_key(config_id);
        let holder = Uuid::new_v4().to_string();
        let deadline = tokio::time::Instant::now() + TOKEN_LOCK;
        loop {
            let got: Option<String> = redis::cmd("SET")
                .arg(&lock_key)
                .arg(&holder)
                .arg("NX")
                .arg("PX")
                .arg(TOKEN_LOCK.as_millis() as u64)
                .query_async(&mut conn)
                .await
                .unwrap_or(Some("OK".into()));
            if got.is_some() {
                break;
            }
            // Another worker is fetching it: wait for it to appear.
            tokio::time::sleep(Duration::from_millis(25)).await;
            if let Some(t) = self.cached_token(tenant_id, config_id).await {
                return Ok(t);
            }
            if tokio::time::Instant::now() > deadline {
                break;
            }
        }
        // Someone may have stored it just before the lock was ours.
        let result = match self.cached_token(tenant_id, config_id).await {
            Some(t) => Ok(t),
            None => self.fetch_token(tenant_id, config_id, credentials).await,
        };
        let _: Result<(), _> = redis::Script::new(
            "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0",
        )
        .key(&lock_key)
        .arg(&holder)
        .invoke_async(&mut conn)
        .await;
        result
    }

    async fn fetch_token(
        &self,
        tenant_id: TenantId,
        config_id: ProviderId,
        credentials: &UpsCredentials,
    ) -> Result<String, TrackError> {
        let url = TokenUrl::new(format!("{}/security/v1/oauth/token", self.base_url))
            .map_err(|_| TrackError::Transient("UPS_BASE_URL does not make a token URL".into()))?;
        let client: OauthClient = oauth2::Client::new(ClientId::new(credentials.client_id.clone()))
            .set_client_secret(ClientSecret::new(credentials.client_secret.clone()))
            .set_auth_type(oauth2::AuthType::BasicAuth)
            .set_token_uri(url);
        let answer = client
            .exchange_client_credentials()
            .request_async(&self.client)
            .await
            .map_err(|e| {
                let why = match &e {
                    oauth2::RequestTokenError::ServerResponse(r) => {
                        format!("UPS refused the token request: {}", r.error())
                    }
                    oauth2::RequestTokenError::Request(_) => {
                        "cannot reach the UPS token endpoint".to_owned()
                    }
                    oauth2::RequestTokenError::Parse(..) => {
                        "UPS's token answer is unreadable".to_owned()
                    }
                    oauth2::RequestTokenError::Other(what) => {
                        format!("UPS's token endpoint failed: {what}")
                    }
                };
                TrackError::Transient(why)
            })?;
        let token = answer.access_token().secret().clone();
        let lifetime = answer
            .expires_in()
            .unwrap_or(Duration::from_secs(3600))
            .saturating_sub(TOKEN_MARGIN);
        if !lifetime.is_zero() {
            self.store_token(tenant_id, config_id, &token, lifetime)
                .await;
        }
        Ok(token)
    }

    /// Tracks one number: token, call, one refresh on 401, and up to two
    /// retries of a 5xx or timeout.
    pub async fn track(
        &self,
        tenant_id: TenantId,
        config_id: ProviderId,
        credentials: &UpsCredentials,
        number: &str,
    ) -> Result<Tracking, TrackError> {
        let mut refreshed = false;
        let mut transient_tries = 0;
        loop {
            let token = self.token(tenant_id, config_id, credentials).await?;
            match self.track_once(&token, number).await {
                Err(Attempt::Unauthorized) if !refreshed => {
                    refreshed = true;
                    self.forget_token(config_id).await;
                }
                Err(Attempt::Unauthorized) => {
                    self.forget_token(config_id).await;
                    return Err(TrackError::Transient(
                        "UPS refused a fresh access token (401)".into(),
                    ));
                }
                Err(Attempt::Failed(TrackError::Transient(why))) if transient_tries < 2 => {
                    transient_tries += 1;
                    tracing::debug!(%why, "UPS track failed; trying again");
                    tokio::time::sleep(Duration::from_millis(200 * transient_tries)).await;
                }
                Err(Attempt::Failed(e)) => return Err(e),
                Ok(t) => return Ok(t),
            }
        }
    }

    async fn track_once(&self, token: &str, number: &str) -> Result<Tracking, Attempt> {
        let trans_id = Uuid::new_v4().simple().to_string();
        let resp = self
            .client
            .get(format!("{}/api/track/v1/details/{number}", self.base_url))
            .query(&[("locale", "en_US"), ("returnSignature", "false")])
            .bearer_auth(token)
            .header("transId", &trans_id)
            .header("transactionSrc", TRANSACTION_SRC)
            .send()
            .await
            .map_err(|e| {
                Attempt::Failed(TrackError::Transient(if e.is_timeout() {
                    "no answer from UPS in time".into()
                } else {
                    "cannot reach UPS".into()
                }))
            })?;
        let status = resp.status();
        let wait = retry_after(resp.headers());
        let body = read_limited(resp).await?;
        match status.as_u16() {
            200 => parse_tracking(&body).map_err(Attempt::Failed),
            401 => Err(Attempt::Unauthorized),
            404 => {
                if error_codes(&body).iter().any(|c| c.starts_with("TW")) || body.is_empty() {
                    Err(Attempt::Failed(TrackError::NotFound))
                } else {
                    Err(Attempt::Failed(TrackError::Transient(
                        "UPS answered 404 without a tracking error".into(),
                    )))
                }
            }
            429 => Err(Attempt::Failed(TrackError::RateLimited(
                wait.unwrap_or(DEFAULT_RETRY_AFTER),
            ))),
            s => {
                let codes = error_codes(&body).join(",");
                Err(Attempt::Failed(TrackError::Transient(format!(
                    "UPS answered {s} {codes}"
                ))))
            }
        }
    }
}

enum Attempt {
    Unauthorized,
    Failed(TrackError),
}

async fn read_limited(mut resp: reqwest::Response) -> Result<Vec<u8>, Attempt> {
    let mut body = Vec::new();
    loop {
        match resp.chunk().await {
            Ok(Some(chunk)) => {
                if body.len() + chunk.len() > MAX_ANSWER_BYTES {
                    return Err(Attempt::Failed(TrackError::Transient(
                        "UPS's answer is too large".into(),
                    )));
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => return Ok(body),
            Err(_) => {
                return Err(Attempt::Failed(TrackError::Transient(
                    "UPS's answer was cut off".into(),
                )));
            }
        }
    }
}

/// The `response.errors[].code` values of an error answer that look like
/// UPS's short codes (`151044`, `TW0001`); anything longer could be a
/// tracking number quoted back, and is dropped. Messages are never read.
fn error_codes(body: &[u8]) -> Vec<String> {
    let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    v["response"]["errors"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e["code"].as_str())
        .filter(|c| (1..=8).contains(&c.len()) && c.bytes().all(|b| b.is_ascii_alphanumeric()))
        .map(str::to_owned)
        .collect()
}

#[derive(Deserialize)]
struct Answer {
    #[serde(rename = "trackResponse")]
    track_response: TrackResponse,
}

#[derive(Deserialize)]
struct TrackResponse {
    #[serde(default)]
    shipment: Vec<UpsShipment>,
}

#[derive(Deserialize)]
struct UpsShipment {
    #[serde(default)]
    package: Vec<Package>,
    #[serde(default)]
    warnings: Vec<Warning>,
}

#[derive(Deserialize)]
struct Warning {
    #[serde(default)]
    code: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Package {
    #[serde(default)]
    activity: Vec<Activity>,
    #[serde(default)]
    delivery_date: Vec<DeliveryDate>,
}

#[derive(Deserialize)]
struct DeliveryDate {
    #[serde(default, rename = "type")]
    kind: String,
    date: String,
}

#[derive(Deserialize)]
struct Activity {
    #[serde(default)]
    location: Option<Location>,
    status: ActivityStatus,
    date: String,
    #[serde(default)]
    time: String,
}

#[derive(Deserialize)]
struct Location {
    #[serde(default)]
    address: Option<Address>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Address {
    #[serde(default)]
    city: String,
    #[serde(default)]
    state_province: String,
    #[serde(default)]
    country_code: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ActivityStatus {
    #[serde(default, rename = "type")]
    kind: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    code: String,
}

/// UPS dates are `YYYYMMDD` and times `HHMMSS`, local to the scan's place
/// without an offset; they are kept as if UTC.
fn when(date: &str, time: &str) -> Option<DateTime<Utc>> {
    let d = NaiveDate::parse_from_str(date, "%Y%m%d").ok()?;
    let t = if time.is_empty() {
        NaiveTime::MIN
    } else {
        NaiveTime::parse_from_str(time, "%H%M%S").ok()?
    };
    Some(NaiveDateTime::new(d, t).and_utc())
}

/// Reads a Track answer (status 200).
pub fn parse_tracking(body: &[u8]) -> Result<Tracking, TrackError> {
    let answer: Answer = serde_json::from_slice(body)
        .map_err(|_| TrackError::Transient("UPS's tracking answer is unreadable".into()))?;
    let Some(shipment) = answer.track_response.shipment.into_iter().next() else {
        return Err(TrackError::NotFound);
    };
    let Some(package) = shipment.package.into_iter().next() else {
        if shipment.warnings.iter().any(|w| w.code.starts_with("TW")) {
            return Err(TrackError::NotFound);
        }
        return Err(TrackError::Transient(
            "UPS's tracking answer has no package".into(),
        ));
    };
    let mut events = Vec::new();
    for a in package.activity {
        let Some(occurred_at) = when(&a.date, &a.time) else {
            continue;
        };
        let status = ShipmentStatus::from_ups_type(&a.status.kind);
        let location = a
            .location
            .and_then(|l| l.address)
            .map(|a| {
                [a.city, a.state_province, a.country_code]
                    .into_iter()
                    .filter(|p| !p.is_empty())
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .unwrap_or_default();
        events.push(ShipmentEvent {
            occurred_at,
            status: status
                .map(ShipmentStatus::as_str)
                .unwrap_or("unknown")
                .to_owned(),
            status_type: a.status.kind.chars().take(8).collect(),
            status_code: a.status.code.chars().take(16).collect(),
            description: a.status.description.chars().take(500).collect(),
            location: location.chars().take(200).collect(),
        });
    }
    events.sort_by_key(|e| std::cmp::Reverse(e.occurred_at));
    let status = events.iter().find_map(|e| ShipmentStatus::parse(&e.status));
    let eta = package
        .delivery_date
        .iter()
        .find(|d| d.kind == "DEL")
        .or_else(|| package.delivery_date.iter().find(|d| d.kind == "RDD"))
        .or_else(|| package.delivery_date.iter().find(|d| d.kind == "SDD"))
        .or(package.delivery_date.first())
        .and_then(|d| when(&d.date, ""));
    Ok(Tracking {
        events,
        status,
        eta,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_documented_answer_reads_newest_first_with_its_status() {
        let body = json!({"trackResponse": {"shipment": [{"inquiryNumber": "1Z999AA10123456784", "package": [{
        "trackingNumber": "1Z999AA10123456784",
        "deliveryDate": [{"type": "SDD", "date": "20261124"}],
        "activity": [
            {"location": {"address": {"city": "ATLANTA", "stateProvince": "GA", "countryCode": "US"}},
             "status": {"type": "I", "description": "Departed from Facility", "code": "DP", "statusCode": "005"},
             "date": "20261122", "time": "031500"},
            {"location": {"address": {"city": "ATLANTA", "stateProvince": "GA", "countryCode": "US"}},
             "status": {"type": "O", "description": "Out For Delivery Today", "code": "OT", "statusCode": "021"},
             "date": "20261123", "time": "080000"},
            {"status": {"type": "M", "description": "Shipper created a label", "code": "MP", "statusCode": "003"},
             "date": "20261121", "time": "120000"}
        ]}]}]}});
        let t = parse_tracking(body.to_string().as_bytes()).unwrap();
        assert_eq!(t.status, Some(ShipmentStatus::OutForDelivery));
        assert_eq!(t.events.len(), 3);
        assert_eq!(t.events[0].location, "ATLANTA, GA, US");
        assert_eq!(t.events[2].status, "label_created");
        assert_eq!(t.eta.unwrap().to_rfc3339(), "2026-11-24T00:00:00+00:00");
    }

    #[test]
    fn malformed_answers_are_transient_and_warnings_mean_not_found() {
        assert!(matches!(
            parse_tracking(b"{not json"),
            Err(TrackError::Transient(_))
        ));
        let warned = json!({"trackResponse": {"shipment": [{"warnings": [{"code": "TW0001", "message": "Tracking Information Not Found"}]}]}});
        assert_eq!(
            parse_tracking(warned.to_string().as_bytes()),
            Err(TrackError::NotFound)
        );
    }

    #[test]
    fn ups_expires_in_arrives_as_a_string() {
        let t: UpsTokenResponse = serde_json::from_value(json!({
            "token_type": "Bearer", "issued_at": "1700000000000", "client_id": "x",
            "access_token": "abc", "expires_in": "14399", "status": "approved"
        }))
        .unwrap();
        assert_eq!(t.expires_in(), Some(Duration::from_secs(14399)));
    }
}
