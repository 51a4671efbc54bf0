//! SMS through Twilio Programmable Messaging: `POST
//! /2010-04-01/Accounts/{AccountSid}/Messages.json`, form-encoded, with the
//! account SID and auth token as HTTP Basic credentials. A 201 carries the
//! message SID (`SM…`), recorded as the provider message id.

use serde::Deserialize;
use shared::providers::{TwilioCredentials, TwilioSettings};

use super::{HttpProviders, Receipt, SendError, classify_status, retry_after};

/// Twilio's error body.
#[derive(Debug, Deserialize)]
struct TwilioError {
    code: Option<i64>,
    message: Option<String>,
}

/// Twilio error codes that no retry or other provider can fix: a bad or
/// unreachable number, or a recipient who replied STOP.
const PERMANENT_CODES: &[i64] = &[21211, 21214, 21408, 21601, 21610, 21612, 21614, 21617];

/// Sends `body` to `to` (E.164). With `status_callback`, Twilio reports the
/// message's delivery there (the API's `/webhooks/twilio/{provider_id}`).
pub async fn send(
    http: &HttpProviders,
    settings: &TwilioSettings,
    credentials: &TwilioCredentials,
    to: &str,
    body: &str,
    status_callback: Option<&str>,
) -> Result<Receipt, SendError> {
    let url = format!(
        "{}/2010-04-01/Accounts/{}/Messages.json",
        http.urls.twilio, settings.account_sid
    );
    let mut form: Vec<(&str, &str)> = vec![("To", to), ("Body", body)];
    if let Some(url) = status_callback {
        form.push(("StatusCallback", url));
    }
    match (&settings.from, &settings.messaging_service_sid) {
        (Some(from), _) => form.push(("From", from)),
        (None, Some(mg)) => form.push(("MessagingServiceSid", mg)),
        (None, None) => {
            return Err(SendError::permanent(
                "the Twilio config has neither `from` nor `messaging_service_sid`",
            ));
        }
    }
    let resp = http
        .client
        .post(url)
        .basic_auth(&settings.account_sid, Some(&credentials.auth_token))
        .form(&form)
        .send()
        .await
        .map_err(SendError::from_reqwest)?;
    let status = resp.status();
    let wait = retry_after(resp.headers());
    let text = resp.text().await.map_err(SendError::from_reqwest)?;
    if status.is_success() {
        #[derive(Deserialize)]
        struct Created {
            sid: String,
            status: Option<String>,
        }
        let created: Created = serde_json::from_str(&text).map_err(|_| {
            SendError::transient(status.as_u16(), "Twilio answered without a message SID")
        })?;
        return Ok(Receipt {
            message_id: created.sid,
            response: format!(
                "{} {}",
                status.as_u16(),
                created.status.unwrap_or_else(|| "accepted".into())
            ),
            code: Some(status.as_u16()),
        });
    }
    let err: Option<TwilioError> = serde_json::from_str(&text).ok();
    let code = err.as_ref().and_then(|e| e.code);
    let what = match &err {
        Some(TwilioError {
            code: Some(c),
            message: Some(m),
        }) => format!("Twilio error {c}: {m}"),
        _ => format!("Twilio answered {status}"),
    };
    if code.is_some_and(|c| PERMANENT_CODES.contains(&c)) {
        return Err(SendError::Permanent {
            code: Some(status.as_u16()),
            error: what,
        });
    }
    Err(classify_status(status, wait, what))
}
