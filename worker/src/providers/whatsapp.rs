//! WhatsApp through the Cloud API: `POST /{version}/{phone_number_id}/messages`
//! with the access token as a bearer token. A 200 carries the `wamid`.
//!
//! Free-form text is only allowed within 24 hours of the person's last
//! message to the business; outside it Meta answers error 131047 and the send
//! fails for good with that reason: a pre-approved template is needed.

use serde::Deserialize;
use serde_json::{Value, json};
use shared::{
    domain::WhatsAppContent,
    providers::{
        FailureReason, ProviderCode, ProviderError, ProviderKind, WhatsAppCredentials,
        WhatsAppSettings,
    },
};

use super::{HttpProviders, Receipt, SendError, classify_status, retry_after};

/// Meta's error codes that another attempt or provider cannot fix.
const PERMANENT_CODES: &[i64] = &[
    100, 131008, 131009, 131026, 131030, 131047, 131051, 132000, 132001,
];
/// What one of Meta's permanent codes says, in the platform's words.
fn reason(code: i64) -> FailureReason {
    match code {
        131047 => FailureReason::WhatsAppWindowClosed,
        131026 | 131030 => FailureReason::RecipientUnreachable,
        131051 | 132000 | 132001 => FailureReason::ContentRejected,
        _ => FailureReason::Rejected,
    }
}

/// Meta's rate-limit codes.
const RATE_CODES: &[i64] = &[4, 80007, 130429, 131048, 131056];

/// Sends one message to `to` (E.164).
pub async fn send(
    http: &HttpProviders,
    settings: &WhatsAppSettings,
    credentials: &WhatsAppCredentials,
    to: &str,
    content: &WhatsAppContent,
) -> Result<Receipt, SendError> {
    let to = to.trim_start_matches('+');
    let body = match content {
        WhatsAppContent::Text { text } => json!({
            "messaging_product": "whatsapp",
            "recipient_type": "individual",
            "to": to,
            "type": "text",
            "text": {"preview_url": false, "body": text},
        }),
        WhatsAppContent::Template {
            template_name,
            language,
            parameters,
        } => {
            let mut template = json!({"name": template_name, "language": {"code": language}});
            if !parameters.is_empty() {
                let params: Vec<Value> = parameters
                    .iter()
                    .map(|p| json!({"type": "text", "text": p}))
                    .collect();
                template["components"] = json!([{"type": "body", "parameters": params}]);
            }
            json!({
                "messaging_product": "whatsapp",
                "recipient_type": "individual",
                "to": to,
                "type": "template",
                "template": template,
            })
        }
    };
    let resp = http
        .client
        .post(format!(
            "{}/{}/{}/messages",
            http.urls.whatsapp, http.urls.whatsapp_version, settings.phone_number_id
        ))
        .bearer_auth(&credentials.access_token)
        .json(&body)
        .send()
        .await
        .map_err(SendError::from_reqwest)?;
    let status = resp.status();
    let wait = retry_after(resp.headers());
    let answer: Value = resp.json().await.unwrap_or(Value::Null);
    if status.is_success() {
        let wamid = answer["messages"][0]["id"].as_str().ok_or_else(|| {
            SendError::transient(ProviderError::answered(
                ProviderKind::WhatsApp,
                FailureReason::NoMessageId,
                Some(status.as_u16()),
            ))
        })?;
        return Ok(Receipt {
            message_id: wamid.to_owned(),
            response: format!("{} accepted", status.as_u16()),
            code: Some(status.as_u16()),
        });
    }
    // Only Meta's code is read: its message can quote the request back.
    #[derive(Deserialize)]
    struct MetaError {
        code: Option<i64>,
    }
    let code = serde_json::from_value::<MetaError>(answer["error"].clone())
        .ok()
        .and_then(|e| e.code);
    let answered = |reason: FailureReason| {
        ProviderError::answered(ProviderKind::WhatsApp, reason, Some(status.as_u16()))
            .with_code(code.and_then(ProviderCode::number))
    };
    match code {
        Some(c) if RATE_CODES.contains(&c) => Err(SendError::RateLimited {
            error: answered(FailureReason::RateLimited),
            retry_after: wait.unwrap_or(std::time::Duration::from_secs(60)),
        }),
        Some(c) if PERMANENT_CODES.contains(&c) => Err(SendError::permanent(answered(reason(c)))),
        Some(190) => Err(SendError::transient(answered(
            FailureReason::CredentialsRefused,
        ))),
        _ => Err(classify_status(
            ProviderKind::WhatsApp,
            status,
            wait,
            None,
            code.and_then(ProviderCode::number),
        )),
    }
}
