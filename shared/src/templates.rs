//! Notification templates: a tenant's reusable messages, one per key, with
//! content per locale and channel, and the renderer that fills them with a
//! send's data.
//!
//! A template is JSON such as
//!
//! ```json
//! {
//!   "key": "appointment.reminder",
//!   "name": "Appointment reminder",
//!   "default_locale": "en",
//!   "default_channels": ["email", "sms"],
//!   "locales": {
//!     "en": {
//!       "email": {"subject": "See you {{day}}", "html": "<p>Hi {{name}}</p>"},
//!       "sms": {"body": "Hi {{name}}, see you {{day}}."}
//!     },
//!     "fr": {"sms": {"body": "Bonjour {{name}}, à {{day}}."}}
//!   }
//! }
//! ```
//!
//! [`Template::parse`] checks the shape, the limits and the syntax of every
//! string, naming each bad field by its path (`locales.fr.email.subject`).
//! Partials, inline partials and decorators are refused, and so are helpers
//! other than the built-in block and comparison helpers: a template can only
//! ever see its own strings and the data it is rendered with.
//!
//! [`render`] is a pure function. Each call builds a fresh Handlebars registry
//! in strict mode that holds only the strings it renders, so an unknown
//! variable is an error naming the variable and the field. Email HTML escapes
//! every value (and `{{{…}}}` is refused there); every other field is plain
//! text and is not escaped. Output is capped per field and `{{#each}}` loops
//! share an iteration budget, so no data can make a render explode.

use std::{
    cell::Cell,
    collections::{BTreeMap, BTreeSet, HashMap},
    fmt, io,
    sync::LazyLock,
};

use handlebars::{
    Context, Handlebars, Helper, HelperDef, HelperResult, Output, RenderContext, RenderErrorReason,
    template::{HelperTemplate, Parameter, Template as Compiled, TemplateElement},
};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::domain::{
    Channel, Content, EmailContent, InAppContent, Invalid, MAX_BODY_CHARS, MAX_TITLE_CHARS,
    MAX_WHATSAPP_TEXT_CHARS, Problems, PushContent, SmsContent, Subject, WhatsAppContent,
    WhatsAppLanguage, action_url_ok, category_ok, key_ok, whatsapp_parameter,
    whatsapp_parameter_count, whatsapp_template_name,
};

/// Largest template, as compact JSON.
pub const MAX_TEMPLATE_BYTES: usize = 64 * 1024;
/// Most locales in one template.
pub const MAX_LOCALES: usize = 20;
/// Largest single string in a template.
pub const MAX_FIELD_BYTES: usize = 16 * 1024;
/// Longest SMS body, in characters (before and after rendering).
pub use crate::domain::MAX_SMS_CHARS;
/// Most keys in a push or in-app `data` object.
pub const MAX_DATA_KEYS: usize = 50;
/// Largest rendered field.
pub const MAX_OUTPUT_BYTES: usize = 256 * 1024;
/// Largest output of one render, over all fields.
pub const MAX_RENDER_BYTES: usize = 512 * 1024;
/// Most `{{#each}}` iterations in one render, over all fields.
pub const MAX_ITERATIONS: usize = 10_000;
/// Deepest nesting of blocks and subexpressions in one string.
pub const MAX_NESTING: usize = 16;
/// Longest name, in characters.
const MAX_NAME_CHARS: usize = 200;
/// Longest description, in characters.
const MAX_DESCRIPTION_CHARS: usize = 2_000;

/// The helpers a template may call. Everything else (partials, decorators,
/// `log`, custom helpers) is refused.
const HELPERS: &[&str] = &[
    "if", "unless", "each", "with", "lookup", "eq", "ne", "gt", "gte", "lt", "lte", "and", "or",
    "not", "len", "raw",
];

/// FCM refuses these as data keys.
const RESERVED_PUSH_KEYS: &[&str] = &["from", "message_type", "collapse_key", "notification"];

pub use crate::domain::FieldError;

/// A validated template; only [`Template::parse`] makes one from caller input.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Template {
    pub(crate) key: String,
    pub(crate) name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) description: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) category: Option<String>,
    pub(crate) critical: bool,
    pub(crate) default_locale: String,
    pub(crate) default_channels: Vec<Channel>,
    pub(crate) locales: BTreeMap<String, LocaleContent>,
}

/// One locale's content, per channel.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocaleContent {
    /// Email content.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<EmailTemplate>,
    /// SMS content.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sms: Option<SmsTemplate>,
    /// Push content.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub push: Option<PushTemplate>,
    /// WhatsApp content.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub whatsapp: Option<WhatsAppTemplate>,
    /// In-app content.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inapp: Option<InAppTemplate>,
}

/// Email: a subject and at least one of `html` and `text`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmailTemplate {
    /// The subject; one line.
    pub subject: String,
    /// The HTML body; every value is HTML-escaped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub html: Option<String>,
    /// The plain-text body.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
}

/// SMS: the message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmsTemplate {
    /// The message, at most [`MAX_SMS_CHARS`].
    pub body: String,
}

/// Push: a title, a body and string data for the app.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PushTemplate {
    /// The title; one line.
    pub title: String,
    /// The message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    /// Key/value data for the app; each value is a template.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub data: BTreeMap<String, String>,
}

/// WhatsApp: either free `text`, or a template approved in WhatsApp Business
/// (`template_name`, `language`) with its body `parameters`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WhatsAppTemplate {
    /// Free text (only within a customer-service window).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// The approved template's name (literal, not a template).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template_name: Option<String>,
    /// The approved template's language code, e.g. `en_US` (literal).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub language: Option<String>,
    /// The approved template's body parameters, in order; each is a template.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub parameters: Vec<String>,
}

/// In-app: as a direct in-app send, with every string a template.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InAppTemplate {
    /// The title; one line, at most 200 characters once rendered.
    pub title: String,
    /// The message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    /// Where a click leads: once rendered, an `http(s)://` URL or a path
    /// starting with `/`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action_url: Option<String>,
    /// Key/value data for the app; each value is a template.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub data: BTreeMap<String, String>,
}

/// What callers send: the same shape, before validation.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TemplateInput {
    key: String,
    name: String,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    category: Option<String>,
    #[serde(default)]
    critical: bool,
    default_locale: String,
    default_channels: Vec<Channel>,
    locales: BTreeMap<String, LocaleContent>,
}

impl Template {
    /// Parses and validates a template, naming every bad field.
    pub fn parse(value: Value) -> Result<Self, Vec<FieldError>> {
        let size = json_size(&value);
        if size > MAX_TEMPLATE_BYTES {
            return Err(vec![error(
                "template",
                format!("is {size} bytes as JSON; at most {MAX_TEMPLATE_BYTES} are allowed"),
            )]);
        }
        if !value.is_object() {
            return Err(vec![error("template", "must be a JSON object")]);
        }
        let input: TemplateInput =
            serde_path_to_error::deserialize(value).map_err(|e| vec![serde_error(e)])?;
        let mut p = Problems::default();
        if !key_ok(&input.key) {
            p.add(
                "key",
                "must be 1 to 100 lower-case letters, digits, `.`, `_` or `-`, starting with a letter or digit",
            );
        }
        p.text("name", &input.name, MAX_NAME_CHARS, true);
        if let Some(d) = &input.description {
            if d.chars().count() > MAX_DESCRIPTION_CHARS {
                p.add(
                    "description",
                    format!("must be at most {MAX_DESCRIPTION_CHARS} characters"),
                );
            } else if d.contains('\0') {
                p.add("description", "must not contain a NUL character (\\u0000)");
            }
        }
        if let Some(c) = &input.category
            && !category_ok(c)
        {
            p.add(
                "category",
                "must be 1 to 100 letters, digits, `.`, `_` or `-`",
            );
        }
        validate_locales(&input, &mut p);
        p.into_result(())?;
        Ok(Self {
            key: input.key,
            name: input.name,
            description: input.description,
            category: input.category,
            critical: input.critical,
            default_locale: input.default_locale,
            default_channels: input.default_channels,
            locales: input.locales,
        })
    }

    /// The key, unique in its tenant (`appointment.reminder`).
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The name shown to administrators.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// What it is for.
    pub fn description(&self) -> Option<&str> {
        self.description.as_deref()
    }

    /// The category its sends get.
    pub fn category(&self) -> Option<&str> {
        self.category.as_deref()
    }

    /// Whether its sends ignore preferences and quiet hours.
    pub fn critical(&self) -> bool {
        self.critical
    }

    /// The locale every render falls back to; it has every channel.
    pub fn default_locale(&self) -> &str {
        &self.default_locale
    }

    /// The channels a send uses when it names none.
    pub fn default_channels(&self) -> &[Channel] {
        &self.default_channels
    }

    /// The content, per locale tag.
    pub fn locales(&self) -> &BTreeMap<String, LocaleContent> {
        &self.locales
    }

    /// The channels the template has content for (all in the default locale).
    pub fn channels(&self) -> Vec<Channel> {
        self.locales
            .get(&self.default_locale)
            .map(|l| Channel::ALL.iter().copied().filter(|c| l.has(*c)).collect())
            .unwrap_or_default()
    }
}

impl LocaleContent {
    /// Whether this locale has content for `channel`.
    pub fn has(&self, channel: Channel) -> bool {
        match channel {
            Channel::Email => self.email.is_some(),
            Channel::Sms => self.sms.is_some(),
            Channel::Push => self.push.is_some(),
            Channel::WhatsApp => self.whatsapp.is_some(),
            Channel::InApp => self.inapp.is_some(),
        }
    }

    /// Every template string of one channel's content: path below the
    /// channel, the string, and how it is checked.
    fn strings<'a>(&'a self, channel: Channel) -> Vec<(String, &'a str, Kind)> {
        let mut out = Vec::new();
        let mut push = |path: String, s: &'a str, kind: Kind| out.push((path, s, kind));
        match channel {
            Channel::Email => {
                if let Some(e) = &self.email {
                    push("subject".into(), &e.subject, Kind::SUBJECT);
                    if let Some(h) = &e.html {
                        push("html".into(), h, Kind::HTML);
                    }
                    if let Some(t) = &e.text {
                        push("text".into(), t, Kind::TEXT);
                    }
                }
            }
            Channel::Sms => {
                if let Some(s) = &self.sms {
                    push("body".into(), &s.body, Kind::SMS);
                }
            }
            Channel::Push => {
                if let Some(t) = &self.push {
                    push("title".into(), &t.title, Kind::LINE);
                    if let Some(b) = &t.body {
                        push("body".into(), b, Kind::TEXT);
                    }
                    for (k, v) in &t.data {
                        push(format!("data.{k}"), v, Kind::TEXT);
                    }
                }
            }
            Channel::WhatsApp => {
                if let Some(w) = &self.whatsapp {
                    if let Some(t) = &w.text {
                        push("text".into(), t, Kind::TEXT);
                    }
                    for (i, v) in w.parameters.iter().enumerate() {
                        push(format!("parameters[{i}]"), v, Kind::LINE);
                    }
                }
            }
            Channel::InApp => {
                if let Some(a) = &self.inapp {
                    push("title".into(), &a.title, Kind::LINE);
                    if let Some(b) = &a.body {
                        push("body".into(), b, Kind::TEXT);
                    }
                    if let Some(u) = &a.action_url {
                        push("action_url".into(), u, Kind::LINE);
                    }
                    for (k, v) in &a.data {
                        push(format!("data.{k}"), v, Kind::TEXT);
                    }
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod properties;
mod render;
#[cfg(test)]
mod tests;
mod validate;

pub use render::*;
pub use validate::*;
