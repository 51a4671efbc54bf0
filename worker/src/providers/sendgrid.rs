//! Email through the SendGrid v3 Mail Send API: `POST /v3/mail/send` with the
//! API key as a bearer token. A 202 carries the message id in `X-Message-Id`.
//! The notification and tenant ids travel as `custom_args`, so SendGrid's
//! event webhook can be matched back to the notification.

use serde::Deserialize;
use serde_json::json;
use shared::{
    domain::{EmailContent, NotificationId, TenantId},
    providers::{
        FailureReason, ProviderError, ProviderKind, SendGridCredentials, SendGridSettings,
    },
};

use super::{HttpProviders, Receipt, SendError, classify_status, retry_after};

#[derive(Debug, Deserialize)]
struct Errors {
    errors: Vec<ErrorItem>,
}

/// One error of SendGrid's answer. Only the field it names is read, to
/// tell a bad recipient from bad content; its `message` can quote the
/// request back, so it is never kept.
#[derive(Debug, Deserialize)]
struct ErrorItem {
    field: Option<String>,
}

/// What the fields SendGrid's errors name say, in the platform's words.
fn reason(errors: &[ErrorItem]) -> Option<FailureReason> {
    errors.iter().find_map(|e| {
        let field = e.field.as_deref()?;
        if field.starts_with("personalizations") {
            Some(FailureReason::RecipientInvalid)
        } else if field.starts_with("from") || field.starts_with("reply_to") {
            Some(FailureReason::SenderRejected)
        } else if field.starts_with("content") || field.starts_with("subject") {
            Some(FailureReason::ContentRejected)
        } else {
            None
        }
    })
}

/// Sends one email.
pub async fn send(
    http: &HttpProviders,
    settings: &SendGridSettings,
    credentials: &SendGridCredentials,
    ids: (TenantId, NotificationId),
    to: &str,
    content: &EmailContent,
) -> Result<Receipt, SendError> {
    let mut parts = Vec::new();
    // SendGrid requires text/plain before text/html.
    if let Some(text) = &content.text {
        parts.push(json!({"type": "text/plain", "value": text}));
    }
    if let Some(html) = &content.html {
        parts.push(json!({"type": "text/html", "value": html}));
    }
    if parts.is_empty() {
        return Err(SendError::permanent(FailureReason::NoBody));
    }
    let mut from = json!({"email": settings.from_email});
    if let Some(name) = &settings.from_name {
        from["name"] = json!(name);
    }
    let body = json!({
        "personalizations": [{"to": [{"email": to}]}],
        "from": from,
        "subject": content.subject,
        "content": parts,
        "custom_args": {"notification_id": ids.1.to_string(), "tenant_id": ids.0.to_string()},
    });
    let resp = http
        .client
        .post(format!("{}/v3/mail/send", http.urls.sendgrid))
        .bearer_auth(&credentials.api_key)
        .json(&body)
        .send()
        .await
        .map_err(SendError::from_reqwest)?;
    let status = resp.status();
    let wait = retry_after(resp.headers());
    let message_id = resp
        .headers()
        .get("x-message-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let text = resp.text().await.map_err(SendError::from_reqwest)?;
    if status.is_success() {
        let message_id = message_id.ok_or_else(|| {
            SendError::transient(ProviderError::answered(
                ProviderKind::SendGrid,
                FailureReason::NoMessageId,
                Some(status.as_u16()),
            ))
        })?;
        return Ok(Receipt {
            message_id,
            response: format!("{} accepted", status.as_u16()),
            code: Some(status.as_u16()),
        });
    }
    let reason = serde_json::from_str::<Errors>(&text)
        .ok()
        .and_then(|e| reason(&e.errors));
    Err(classify_status(
        ProviderKind::SendGrid,
        status,
        wait,
        reason,
        None,
    ))
}
