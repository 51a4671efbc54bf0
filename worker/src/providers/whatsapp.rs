//! WhatsApp through the Cloud API: `POST /{version}/{phone_number_id}/messages`
//! with the access token as a bearer token. A 200 carries the `wamid`.
//!
//! Free-form text is only allowed within 24 hours of the person's last
//! message to the business; outside it Meta answers error 131047 and the send
//! fails for good with that reason: a pre-approved template is needed.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use shared::providers::{WhatsAppCredentials, WhatsAppSettings};

use super::{HttpProviders, Receipt, SendError, classify_status, retry_after};

/// A WhatsApp message's content: free-form text, or a pre-approved template.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum WhatsAppContent {
    /// Text, only inside the 24-hour customer-service window.
    Text {
        /// The text.
        text: String,
    },
    /// A template approved by Meta.
    Template {
        /// Its name.
        template_name: String,
        /// Its language code, e.g. `en_US`.
        language: String,
        /// The body's parameters, in order.
        #[serde(default)]
        parameters: Vec<String>,
    },
}

/// Meta's error codes that another attempt or provider cannot fix.
const PERMANENT_CODES: &[i64] = &[
    100, 131008, 131009, 131026, 131030, 131047, 131051, 132000, 132001,
];
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
            SendError::transient(status.as_u16(), "WhatsApp answered without a message id")
        })?;
        return Ok(Receipt {
            message_id: wamid.to_owned(),
            response: format!("{} accepted", status.as_u16()),
            code: Some(status.as_u16()),
        });
    }
    #[derive(Deserialize)]
    struct MetaError {
        code: Option<i64>,
        message: Option<String>,
    }
    let err: Option<MetaError> = serde_json::from_value(answer["error"].clone()).ok();
    let code = err.as_ref().and_then(|e| e.code);
    let message = err.and_then(|e| e.message).unwrap_or_default();
    let what = match code {
        Some(131047) => format!(
            "WhatsApp error 131047: more than 24 hours since the person last wrote; free-form text is not allowed, send a template ({message})"
        ),
        Some(c) => format!("WhatsApp error {c}: {message}"),
        None => format!("WhatsApp answered {status}"),
    };
    let http_code = Some(status.as_u16());
    match code {
        Some(c) if RATE_CODES.contains(&c) => Err(SendError::RateLimited {
            code: http_code,
            error: what,
            retry_after: wait.unwrap_or(std::time::Duration::from_secs(60)),
        }),
        Some(c) if PERMANENT_CODES.contains(&c) => Err(SendError::Permanent {
            code: http_code,
            error: what,
        }),
        Some(190) => Err(SendError::Transient {
            code: http_code,
            error: what,
        }),
        _ => Err(classify_status(status, wait, what)),
    }
}
