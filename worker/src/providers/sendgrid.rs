//! Email through the SendGrid v3 Mail Send API: `POST /v3/mail/send` with the
//! API key as a bearer token. A 202 carries the message id in `X-Message-Id`.
//! The notification and tenant ids travel as `custom_args`, so SendGrid's
//! event webhook can be matched back to the notification.

use serde::Deserialize;
use serde_json::json;
use shared::{
    db::notifications::EmailContent,
    domain::{NotificationId, TenantId},
    providers::{SendGridCredentials, SendGridSettings},
};

use super::{HttpProviders, Receipt, SendError, classify_status, retry_after};

#[derive(Debug, Deserialize)]
struct Errors {
    errors: Vec<ErrorItem>,
}

#[derive(Debug, Deserialize)]
struct ErrorItem {
    message: Option<String>,
    field: Option<String>,
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
        return Err(SendError::permanent("the notification has no body"));
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
            SendError::transient(status.as_u16(), "SendGrid answered without X-Message-Id")
        })?;
        return Ok(Receipt {
            message_id,
            response: format!("{} accepted", status.as_u16()),
            code: Some(status.as_u16()),
        });
    }
    let what = match serde_json::from_str::<Errors>(&text) {
        Ok(Errors { errors }) if !errors.is_empty() => {
            let items: Vec<String> = errors
                .iter()
                .map(|e| match (&e.field, &e.message) {
                    (Some(f), Some(m)) => format!("{f}: {m}"),
                    (None, Some(m)) => m.clone(),
                    _ => "unspecified".into(),
                })
                .collect();
            format!("SendGrid answered {status}: {}", items.join("; "))
        }
        _ => format!("SendGrid answered {status}"),
    };
    Err(classify_status(status, wait, what))
}
