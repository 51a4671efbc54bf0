//! Checking a send's fields: the recipient and content per channel, the
//! metadata, the WhatsApp template and the idempotency key, every problem
//! named.

use serde_json::Value;
use shared::domain::{
    ACTION_URL_REASON, CATEGORY_REASON, Channel, Content, EmailContent, ExternalId, InAppContent,
    MAX_BODY_CHARS, MAX_SMS_CHARS, MAX_TITLE_CHARS, MAX_WHATSAPP_TEXT_CHARS, Problems, PushContent,
    SmsContent, Subject, WhatsAppContent, WhatsAppLanguage, action_url_ok, category_ok, recipient,
    whatsapp_parameter, whatsapp_parameter_count, whatsapp_template_name,
};

use super::{MAX_METADATA_KEYS, SendRequest};
use crate::error::ApiError;

/// A send that passed validation.
pub(super) struct ValidSend {
    /// The address, or the subscriber's external id.
    pub(super) recipient: String,
    /// The subscriber's external id, when the send names one.
    pub(super) subscriber: Option<String>,
    /// What it says; its channel is the send's.
    pub(super) content: Content,
    pub(super) category: Option<String>,
    pub(super) metadata: Value,
}

impl ValidSend {
    /// The channel it goes out on.
    pub(super) fn channel(&self) -> Channel {
        self.content.channel()
    }
}

/// Flags every content field present in `req` that `channel` does not use.
pub(super) fn only_fields_of(p: &mut Problems, req: &SendRequest, channel: &str, used: &[&str]) {
    for (name, present) in req.content_fields() {
        if present && !used.contains(&name) {
            p.add(name, format!("is not used by the {channel} channel"));
        }
    }
}

/// The subscriber a send names, by their external id.
pub(super) fn subscriber_id(p: &mut Problems, raw: Option<&str>) -> Option<String> {
    p.opt("subscriber_id", raw, ExternalId::parse)
        .map(|id| id.as_str().to_owned())
}

/// Checks a WhatsApp template reference: an approved template's name, its
/// language code and its body parameters.
pub(super) fn whatsapp_template(p: &mut Problems, tpl: &Value) -> Option<WhatsAppContent> {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Tpl {
        name: String,
        language: String,
        #[serde(default)]
        parameters: Vec<String>,
    }
    let tpl: Tpl = match serde_json::from_value(tpl.clone()) {
        Ok(t) => t,
        Err(e) => {
            p.add("whatsapp_template", e.to_string());
            return None;
        }
    };
    let before = p.len();
    p.parse("whatsapp_template.name", &tpl.name, whatsapp_template_name);
    let language = p.parse(
        "whatsapp_template.language",
        &tpl.language,
        WhatsAppLanguage::parse,
    );
    if let Err(e) = whatsapp_parameter_count(tpl.parameters.len()) {
        p.add("whatsapp_template.parameters", e.0);
    } else {
        for (i, param) in tpl.parameters.iter().enumerate() {
            p.parse(
                format!("whatsapp_template.parameters[{i}]"),
                param,
                whatsapp_parameter,
            );
        }
    }
    let language = language.filter(|_| p.len() == before)?;
    Some(WhatsAppContent::Template {
        template_name: tpl.name,
        language: language.as_str().to_owned(),
        parameters: tpl.parameters,
    })
}

/// What a raw send has besides its channel's own fields, checked.
struct Common {
    category: Option<String>,
    metadata: Value,
}

/// Checks a raw send: its channel's fields, none of another channel's, and
/// every problem named.
pub(super) fn validate(req: &SendRequest) -> Result<ValidSend, ApiError> {
    let mut p = Problems::default();
    let category = req.category.as_ref().and_then(|c| {
        let ok = category_ok(c);
        if !ok {
            p.add("category", CATEGORY_REASON);
        }
        ok.then(|| c.clone())
    });
    let metadata = p.object("metadata", req.metadata.as_ref(), MAX_METADATA_KEYS);
    let common = Common { category, metadata };
    let valid = match req.channel.as_deref().unwrap_or("email") {
        "email" => email(&mut p, req, common),
        "inapp" => inapp(&mut p, req, common),
        "sms" => sms(&mut p, req, common),
        "push" => push(&mut p, req, common),
        "whatsapp" => whatsapp(&mut p, req, common),
        other => {
            p.add(
                "channel",
                format!(
                    "`{other}` is not a channel; use `email`, `sms`, `push`, `whatsapp` or `inapp`"
                ),
            );
            None
        }
    };
    match valid {
        Some(v) if p.is_empty() => Ok(v),
        _ => Err(p.into()),
    }
}

/// An email: an address, a subject, and text or HTML.
fn email(p: &mut Problems, req: &SendRequest, common: Common) -> Option<ValidSend> {
    only_fields_of(p, req, "email", &["to", "subject", "text", "html"]);
    let to = p
        .required("to", &req.to)
        .and_then(|to| p.parse("to", to, |t| recipient(Channel::Email, t)));
    let subject = p
        .required("subject", &req.subject)
        .and_then(|s| p.parse("subject", s, Subject::parse));
    let subscriber = subscriber_id(p, req.subscriber_id.as_deref());
    let non_empty = |s: &Option<String>| s.as_ref().filter(|s| !s.trim().is_empty()).cloned();
    let (text, html) = (non_empty(&req.text), non_empty(&req.html));
    if text.is_none() && html.is_none() {
        p.add("text", "`text` or `html` is required and must not be empty");
    }
    to.zip(subject).map(|(to, subject)| ValidSend {
        recipient: to,
        subscriber,
        content: Content::Email(EmailContent {
            subject,
            text,
            html,
        }),
        category: common.category,
        metadata: common.metadata,
    })
}

/// An in-app message: a subscriber, a title, and optionally a body, a link
/// and data.
fn inapp(p: &mut Problems, req: &SendRequest, common: Common) -> Option<ValidSend> {
    only_fields_of(p, req, "inapp", &["title", "body", "action_url", "data"]);
    let subscriber = p
        .required("subscriber_id", &req.subscriber_id)
        .and_then(|s| subscriber_id(p, Some(s)));
    let title = p
        .required("title", &req.title)
        .and_then(|t| p.text("title", t, MAX_TITLE_CHARS, true));
    let body = req
        .body
        .as_deref()
        .and_then(|b| p.text("body", b, MAX_BODY_CHARS, false));
    if let Some(url) = &req.action_url
        && !action_url_ok(url)
    {
        p.add("action_url", ACTION_URL_REASON);
    }
    let data = match p.object("data", req.data.as_ref(), MAX_METADATA_KEYS) {
        Value::Object(data) => Some(data),
        _ => None,
    };
    subscriber
        .zip(title)
        .zip(data)
        .map(|((subscriber, title), data)| ValidSend {
            recipient: subscriber.clone(),
            subscriber: Some(subscriber),
            content: Content::InApp(InAppContent {
                title,
                body,
                action_url: req.action_url.clone(),
                data,
            }),
            category: common.category,
            metadata: common.metadata,
        })
}

/// An SMS: a number and the message.
fn sms(p: &mut Problems, req: &SendRequest, common: Common) -> Option<ValidSend> {
    only_fields_of(p, req, "sms", &["to", "text"]);
    let to = p
        .required("to", &req.to)
        .and_then(|to| p.parse("to", to, |t| recipient(Channel::Sms, t)));
    let text = p
        .required("text", &req.text)
        .and_then(|t| p.text("text", t, MAX_SMS_CHARS, false));
    let subscriber = subscriber_id(p, req.subscriber_id.as_deref());
    to.zip(text).map(|(to, text)| ValidSend {
        recipient: to,
        subscriber,
        content: Content::Sms(SmsContent { body: text }),
        category: common.category,
        metadata: common.metadata,
    })
}

/// A push: a device token, a title, and optionally a body and string data.
fn push(p: &mut Problems, req: &SendRequest, common: Common) -> Option<ValidSend> {
    only_fields_of(p, req, "push", &["to", "title", "body", "data"]);
    let to = p
        .required("to", &req.to)
        .and_then(|to| p.parse("to", to, |t| recipient(Channel::Push, t)));
    let title = p
        .required("title", &req.title)
        .and_then(|t| p.text("title", t, MAX_TITLE_CHARS, true));
    let body = req
        .body
        .as_deref()
        .and_then(|b| p.text("body", b, MAX_BODY_CHARS, false));
    let data = match p.object("data", req.data.as_ref(), MAX_METADATA_KEYS) {
        Value::Object(m) => PushContent::data_from(&m)
            .map_err(|e| p.add("data", e.0))
            .ok(),
        _ => None,
    };
    let subscriber = subscriber_id(p, req.subscriber_id.as_deref());
    to.zip(title)
        .zip(data)
        .map(|((to, title), data)| ValidSend {
            recipient: to,
            subscriber,
            content: Content::Push(PushContent { title, body, data }),
            category: common.category,
            metadata: common.metadata,
        })
}

/// A WhatsApp message: a number, and free-form text or an approved
/// template.
fn whatsapp(p: &mut Problems, req: &SendRequest, common: Common) -> Option<ValidSend> {
    only_fields_of(p, req, "whatsapp", &["to", "text", "whatsapp_template"]);
    let to = p
        .required("to", &req.to)
        .and_then(|to| p.parse("to", to, |t| recipient(Channel::WhatsApp, t)));
    let content = match (&req.text, &req.whatsapp_template) {
        (Some(t), None) => p
            .text("text", t, MAX_WHATSAPP_TEXT_CHARS, false)
            .map(|text| WhatsAppContent::Text { text }),
        (None, Some(tpl)) => whatsapp_template(p, tpl),
        _ => {
            p.add(
                "text",
                "exactly one of `text` and `whatsapp_template` is required",
            );
            None
        }
    };
    let subscriber = subscriber_id(p, req.subscriber_id.as_deref());
    to.zip(content).map(|(to, content)| ValidSend {
        recipient: to,
        subscriber,
        content: Content::WhatsApp(content),
        category: common.category,
        metadata: common.metadata,
    })
}
