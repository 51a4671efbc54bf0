//! SMS through Twilio Programmable Messaging: `POST
//! /2010-04-01/Accounts/{AccountSid}/Messages.json`, form-encoded, with the
//! account SID and auth token as HTTP Basic credentials. A 201 carries the
//! message SID (`SM…`), recorded as the provider message id.

use serde::Deserialize;
use shared::{
    domain::SmsContent,
    providers::{
        FailureReason, ProviderCode, ProviderError, ProviderKind, TwilioCredentials, TwilioSettings,
    },
};

use super::{HttpProviders, Receipt, SendError, classify_status, retry_after};

/// Twilio's error body. Only its code is read: its `message` can quote the
/// request back (the number, the text), so it is never kept.
#[derive(Debug, Deserialize)]
struct TwilioError {
    code: Option<i64>,
}

/// Twilio error codes that no retry or other provider can fix: a bad or
/// unreachable number, or a recipient who replied STOP.
const PERMANENT_CODES: &[i64] = &[21211, 21214, 21408, 21601, 21610, 21612, 21614, 21617];

/// The statuses Twilio gives an accepted message.
const ACCEPTED_STATUSES: &[&str] = &["accepted", "scheduled", "queued", "sending", "sent"];

/// What a Twilio error code says, in the platform's words.
fn reason(code: i64) -> Option<FailureReason> {
    Some(match code {
        21211 | 21604 | 21614 => FailureReason::RecipientInvalid,
        21214 | 21408 | 21601 | 21612 => FailureReason::RecipientUnreachable,
        21610 => FailureReason::RecipientOptedOut,
        21602 | 21617 => FailureReason::ContentRejected,
        21212 | 21603 | 21606 | 21659 => FailureReason::SenderRejected,
        _ => return None,
    })
}

/// Sends `content` to `to` (E.164). With `status_callback`, Twilio reports the
/// message's delivery there (the API's `/webhooks/twilio/{provider_id}`).
pub async fn send(
    http: &HttpProviders,
    settings: &TwilioSettings,
    credentials: &TwilioCredentials,
    to: &str,
    content: &SmsContent,
    status_callback: Option<&str>,
) -> Result<Receipt, SendError> {
    let url = format!(
        "{}/2010-04-01/Accounts/{}/Messages.json",
        http.urls.twilio, settings.account_sid
    );
    let mut form: Vec<(&str, &str)> = vec![("To", to), ("Body", &content.body)];
    if let Some(url) = status_callback {
        form.push(("StatusCallback", url));
    }
    match (&settings.from, &settings.messaging_service_sid) {
        (Some(from), _) => form.push(("From", from)),
        (None, Some(mg)) => form.push(("MessagingServiceSid", mg)),
        (None, None) => {
            return Err(SendError::permanent(FailureReason::ConfigIncomplete));
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
            SendError::transient(ProviderError::answered(
                ProviderKind::Twilio,
                FailureReason::NoMessageId,
                Some(status.as_u16()),
            ))
        })?;
        return Ok(Receipt {
            message_id: created.sid,
            response: format!(
                "{} {}",
                status.as_u16(),
                // Only Twilio's own status words, never free text.
                created
                    .status
                    .as_deref()
                    .and_then(|s| ACCEPTED_STATUSES.iter().find(|k| **k == s))
                    .unwrap_or(&"accepted")
            ),
            code: Some(status.as_u16()),
        });
    }
    let code = serde_json::from_str::<TwilioError>(&text)
        .ok()
        .and_then(|e| e.code);
    let known = code.and_then(ProviderCode::number);
    if let Some(c) = code.filter(|c| PERMANENT_CODES.contains(c)) {
        return Err(SendError::permanent(
            ProviderError::answered(
                ProviderKind::Twilio,
                reason(c).unwrap_or(FailureReason::Rejected),
                Some(status.as_u16()),
            )
            .with_code(known),
        ));
    }
    Err(classify_status(
        ProviderKind::Twilio,
        status,
        wait,
        code.and_then(reason),
        known,
    ))
}
