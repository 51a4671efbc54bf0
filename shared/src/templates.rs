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
use serde_json::{Value, json};

use crate::{
    db::notifications::EmailContent,
    domain::{Channel, Subject},
};

/// Largest template, as compact JSON.
pub const MAX_TEMPLATE_BYTES: usize = 64 * 1024;
/// Most locales in one template.
pub const MAX_LOCALES: usize = 20;
/// Largest single string in a template.
pub const MAX_FIELD_BYTES: usize = 16 * 1024;
/// Longest SMS body, in characters (before and after rendering).
pub const MAX_SMS_CHARS: usize = 1_600;
/// Most keys in a push or in-app `data` object.
pub const MAX_DATA_KEYS: usize = 50;
/// Most parameters of a WhatsApp template message.
pub const MAX_WHATSAPP_PARAMETERS: usize = 50;
/// Largest rendered field.
pub const MAX_OUTPUT_BYTES: usize = 256 * 1024;
/// Largest output of one render, over all fields.
pub const MAX_RENDER_BYTES: usize = 512 * 1024;
/// Most `{{#each}}` iterations in one render, over all fields.
pub const MAX_ITERATIONS: usize = 10_000;
/// Deepest nesting of blocks and subexpressions in one string.
pub const MAX_NESTING: usize = 16;
/// Longest in-app title, in characters (as for a direct send).
const MAX_INAPP_TITLE_CHARS: usize = 200;
/// Longest in-app body, in characters (as for a direct send).
const MAX_INAPP_BODY_CHARS: usize = 5_000;
/// Longest WhatsApp text body, in characters (the Cloud API's limit).
const MAX_WHATSAPP_TEXT_CHARS: usize = 4_096;
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

/// One invalid field of a template.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct FieldError {
    /// The field's path, e.g. `locales.fr.email.subject`.
    pub field: String,
    /// Why it was refused.
    pub reason: String,
}

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
        p.line("name", &input.name, MAX_NAME_CHARS);
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
        if !p.0.is_empty() {
            return Err(p.0);
        }
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

/// How a template string is checked when saved.
#[derive(Debug, Clone, Copy)]
struct Kind {
    /// Email HTML: values escaped, `{{{…}}}` refused.
    html: bool,
    /// No line breaks or other control characters in the source.
    one_line: bool,
    /// Most characters in the source, if less than [`MAX_FIELD_BYTES`].
    max_chars: Option<usize>,
}

impl Kind {
    const TEXT: Kind = Kind {
        html: false,
        one_line: false,
        max_chars: None,
    };
    const HTML: Kind = Kind {
        html: true,
        ..Kind::TEXT
    };
    const LINE: Kind = Kind {
        one_line: true,
        ..Kind::TEXT
    };
    const SUBJECT: Kind = Kind {
        one_line: true,
        max_chars: Some(Subject::MAX_CHARS),
        ..Kind::TEXT
    };
    const SMS: Kind = Kind {
        max_chars: Some(MAX_SMS_CHARS),
        ..Kind::TEXT
    };
}

/// Collects every invalid field.
#[derive(Default)]
struct Problems(Vec<FieldError>);

impl Problems {
    fn add(&mut self, field: impl Into<String>, reason: impl Into<String>) {
        self.0.push(error(field, reason));
    }

    /// A one-line, non-empty text of at most `max` characters.
    fn line(&mut self, field: &str, value: &str, max: usize) {
        if value.trim().is_empty() {
            self.add(field, "must not be empty");
        } else if value.chars().count() > max {
            self.add(field, format!("must be at most {max} characters"));
        } else if value.chars().any(char::is_control) {
            self.add(field, "must be one line without control characters");
        }
    }
}

fn error(field: impl Into<String>, reason: impl Into<String>) -> FieldError {
    FieldError {
        field: field.into(),
        reason: reason.into(),
    }
}

/// Names the field a serde error is about: its path (which for an unknown
/// field is that field), plus the field a `missing field` message names.
fn serde_error(e: serde_path_to_error::Error<serde_json::Error>) -> FieldError {
    let path = e.path().to_string();
    let reason = e.into_inner().to_string();
    let missing = reason
        .strip_prefix("missing field `")
        .and_then(|rest| rest.split('`').next());
    let field = match (path.as_str(), missing) {
        (".", Some(name)) => name.to_owned(),
        (".", None) => "template".to_owned(),
        (path, Some(name)) => format!("{path}.{name}"),
        (path, None) => path.to_owned(),
    };
    FieldError { field, reason }
}

fn json_size(value: &Value) -> usize {
    struct Count(usize);
    impl io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }
    let mut c = Count(0);
    // Writing a `Value` into a counter cannot fail.
    let _ = serde_json::to_writer(&mut c, value);
    c.0
}

fn key_ok(key: &str) -> bool {
    let b = key.as_bytes();
    (1..=100).contains(&b.len())
        && (b[0].is_ascii_lowercase() || b[0].is_ascii_digit())
        && b.iter().all(|c| {
            c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, b'.' | b'_' | b'-')
        })
}

/// The rule for a notification's category.
fn category_ok(c: &str) -> bool {
    !c.is_empty()
        && c.len() <= 100
        && c.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

fn data_key_ok(k: &str) -> bool {
    (1..=64).contains(&k.len())
        && k.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// Whether a rendered in-app `action_url` is a link the app may follow: an
/// `http(s)://` URL or a path on the app's own origin.
pub fn action_url_ok(url: &str) -> bool {
    if url.len() > 2048 || url.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return false;
    }
    if url.starts_with('/') && !url.starts_with("//") {
        return true;
    }
    let lower = url.to_ascii_lowercase();
    (lower.starts_with("https://") || lower.starts_with("http://")) && url.len() > "https://".len()
}

/// A locale tag in canonical form (`en`, `en-US`, `pt-BR`, `zh-Hant-TW`,
/// `es-419`), read case-insensitively and with `_` or `-`; `None` when it is
/// not one.
pub fn canonical_locale(raw: &str) -> Option<String> {
    let mut parts = raw.split(['-', '_']).peekable();
    let lang = parts.next()?;
    if !(2..=3).contains(&lang.len()) || !lang.bytes().all(|b| b.is_ascii_alphabetic()) {
        return None;
    }
    let mut out = lang.to_ascii_lowercase();
    if let Some(script) = parts.next_if(|s| s.len() == 4) {
        if !script.bytes().all(|b| b.is_ascii_alphabetic()) {
            return None;
        }
        out.push('-');
        out.push_str(&script[..1].to_ascii_uppercase());
        out.push_str(&script[1..].to_ascii_lowercase());
    }
    if let Some(region) = parts.next() {
        let alpha = region.len() == 2 && region.bytes().all(|b| b.is_ascii_alphabetic());
        let digits = region.len() == 3 && region.bytes().all(|b| b.is_ascii_digit());
        if !alpha && !digits {
            return None;
        }
        out.push('-');
        out.push_str(&region.to_ascii_uppercase());
    }
    parts.next().is_none().then_some(out)
}

fn whatsapp_name_ok(n: &str) -> bool {
    (1..=512).contains(&n.len())
        && n.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

fn whatsapp_language_ok(l: &str) -> bool {
    let (lang, region) = l.split_once('_').unwrap_or((l, ""));
    (2..=3).contains(&lang.len())
        && lang.bytes().all(|b| b.is_ascii_lowercase())
        && (region.is_empty()
            || (region.len() == 2 && region.bytes().all(|b| b.is_ascii_uppercase())))
}

fn validate_locales(t: &TemplateInput, p: &mut Problems) {
    if t.locales.is_empty() {
        p.add("locales", "must have at least one locale");
    } else if t.locales.len() > MAX_LOCALES {
        p.add(
            "locales",
            format!("must have at most {MAX_LOCALES} locales"),
        );
    }
    let default = t.locales.get(&t.default_locale);
    if canonical_locale(&t.default_locale).as_deref() != Some(t.default_locale.as_str()) {
        p.add(
            "default_locale",
            "must be a locale tag such as `en`, `en-US` or `pt-BR`",
        );
    } else if default.is_none() {
        p.add(
            "default_locale",
            format!(
                "`{}` is not one of the template's locales",
                t.default_locale
            ),
        );
    }
    if t.default_channels.is_empty() {
        p.add("default_channels", "must name at least one channel");
    }
    let mut seen = BTreeSet::new();
    for (i, c) in t.default_channels.iter().enumerate() {
        if !seen.insert(*c) {
            p.add(format!("default_channels[{i}]"), "is named twice");
        } else if default.is_some_and(|d| !d.has(*c)) {
            p.add(
                format!("default_channels[{i}]"),
                format!(
                    "the default locale `{}` has no {} content",
                    t.default_locale,
                    c.as_str()
                ),
            );
        }
    }
    for (tag, content) in &t.locales {
        let at = format!("locales.{tag}");
        match canonical_locale(tag) {
            Some(c) if &c == tag => {}
            Some(c) => p.add(&at, format!("write the locale tag as `{c}`")),
            None => p.add(&at, "is not a locale tag such as `en`, `en-US` or `pt-BR`"),
        }
        if !Channel::ALL.iter().any(|c| content.has(*c)) {
            p.add(&at, "must have content for at least one channel");
        }
        for &channel in Channel::ALL {
            if !content.has(channel) {
                continue;
            }
            let base = format!("{at}.{}", channel.as_str());
            if let Some(d) = default
                && !d.has(channel)
            {
                p.add(
                    &base,
                    format!(
                        "the default locale `{}` must have {} content too, as the fallback",
                        t.default_locale,
                        channel.as_str()
                    ),
                );
            }
            validate_channel(content, channel, &base, p);
        }
    }
}

fn validate_channel(content: &LocaleContent, channel: Channel, base: &str, p: &mut Problems) {
    for (path, source, kind) in content.strings(channel) {
        let field = format!("{base}.{path}");
        if let Err(reason) = check_source(source, kind) {
            p.add(field, reason);
        }
    }
    match channel {
        Channel::Email => {
            if let Some(e) = &content.email {
                let blank = |s: &Option<String>| s.as_deref().is_none_or(|s| s.trim().is_empty());
                if blank(&e.html) && blank(&e.text) {
                    p.add(
                        format!("{base}.text"),
                        "`text` or `html` is required and must not be empty",
                    );
                }
            }
        }
        Channel::WhatsApp => {
            if let Some(w) = &content.whatsapp {
                validate_whatsapp(w, base, p);
            }
        }
        Channel::Sms | Channel::Push | Channel::InApp => {}
    }
    let data = match channel {
        Channel::Push => content.push.as_ref().map(|t| &t.data),
        Channel::InApp => content.inapp.as_ref().map(|a| &a.data),
        Channel::Email | Channel::Sms | Channel::WhatsApp => None,
    };
    if let Some(data) = data {
        if data.len() > MAX_DATA_KEYS {
            p.add(
                format!("{base}.data"),
                format!("must have at most {MAX_DATA_KEYS} keys"),
            );
        }
        for k in data.keys() {
            if !data_key_ok(k) {
                p.add(
                    format!("{base}.data"),
                    format!("`{k}` is not a key of 1 to 64 letters, digits, `.`, `_` or `-`"),
                );
            } else if channel == Channel::Push
                && (RESERVED_PUSH_KEYS.contains(&k.as_str())
                    || k.starts_with("google")
                    || k.starts_with("gcm"))
            {
                p.add(
                    format!("{base}.data.{k}"),
                    "is reserved by Firebase Cloud Messaging",
                );
            }
        }
    }
}

fn validate_whatsapp(w: &WhatsAppTemplate, base: &str, p: &mut Problems) {
    match (&w.text, &w.template_name) {
        (Some(_), Some(_)) => p.add(
            base,
            "use either `text` or an approved template (`template_name`, `language`, `parameters`), not both",
        ),
        (None, None) => p.add(
            base,
            "needs `text` or an approved template (`template_name`, `language`, `parameters`)",
        ),
        (Some(_), None) => {
            if w.language.is_some() {
                p.add(format!("{base}.language"), "is only used with `template_name`");
            }
            if !w.parameters.is_empty() {
                p.add(format!("{base}.parameters"), "are only used with `template_name`");
            }
        }
        (None, Some(name)) => {
            if !whatsapp_name_ok(name) {
                p.add(
                    format!("{base}.template_name"),
                    "must be the approved template's name: 1 to 512 lower-case letters, digits or `_`",
                );
            }
            match &w.language {
                None => p.add(format!("{base}.language"), "is required with `template_name`"),
                Some(l) if !whatsapp_language_ok(l) => p.add(
                    format!("{base}.language"),
                    "must be a WhatsApp language code such as `en` or `en_US`",
                ),
                Some(_) => {}
            }
            if w.parameters.len() > MAX_WHATSAPP_PARAMETERS {
                p.add(
                    format!("{base}.parameters"),
                    format!("must have at most {MAX_WHATSAPP_PARAMETERS} parameters"),
                );
            }
        }
    }
}

/// Checks one template string's size and compiles it.
fn check_source(source: &str, kind: Kind) -> Result<(), String> {
    if source.len() > MAX_FIELD_BYTES {
        return Err(format!("must be at most {MAX_FIELD_BYTES} bytes"));
    }
    if let Some(max) = kind.max_chars
        && source.chars().count() > max
    {
        return Err(format!("must be at most {max} characters"));
    }
    if source.trim().is_empty() {
        return Err("must not be empty".into());
    }
    if kind.one_line && source.chars().any(char::is_control) {
        return Err("must be one line without control characters".into());
    }
    if source.contains('\0') {
        return Err("must not contain a NUL character (\\u0000)".into());
    }
    compile(source, kind.html).map(|_| ())
}

/// Compiles a template string and checks that it only uses what templates
/// may use.
fn compile(source: &str, html: bool) -> Result<Compiled, String> {
    let compiled = Compiled::compile(source).map_err(|e| {
        let at = e
            .pos()
            .map(|(line, col)| format!(" at line {line}, column {col}"))
            .unwrap_or_default();
        format!("is not a valid template{at}: {}", e.reason())
    })?;
    check_elements(&compiled, html, 0)?;
    Ok(compiled)
}

fn check_elements(t: &Compiled, html: bool, depth: usize) -> Result<(), String> {
    t.elements
        .iter()
        .try_for_each(|e| check_element(e, html, depth))
}

fn check_element(e: &TemplateElement, html: bool, depth: usize) -> Result<(), String> {
    if depth > MAX_NESTING {
        return Err(format!(
            "nests blocks or subexpressions more than {MAX_NESTING} deep"
        ));
    }
    match e {
        TemplateElement::RawString(_) | TemplateElement::Comment(_) => Ok(()),
        TemplateElement::HtmlExpression(_) if html => {
            Err("may not use `{{{…}}}` or `{{&…}}`: values in email html are always escaped".into())
        }
        TemplateElement::HtmlExpression(h)
        | TemplateElement::Expression(h)
        | TemplateElement::HelperBlock(h) => check_helper(h, html, depth),
        TemplateElement::PartialExpression(_) | TemplateElement::PartialBlock(_) => {
            Err("may not use partials (`{{> …}}` or `{{#> …}}`)".into())
        }
        TemplateElement::DecoratorExpression(_) | TemplateElement::DecoratorBlock(_) => {
            Err("may not use inline partials or decorators (`{{#* …}}`)".into())
        }
        _ => Err("uses a construct templates do not support".into()),
    }
}

fn check_helper(h: &HelperTemplate, html: bool, depth: usize) -> Result<(), String> {
    let call = h.block || !h.params.is_empty() || !h.hash.is_empty();
    match &h.name {
        Parameter::Subexpression(s) => check_element(s.as_element(), html, depth + 1)?,
        name if call => {
            let name = name.as_name().unwrap_or_default();
            if !HELPERS.contains(&name) {
                return Err(format!(
                    "calls `{name}`, which is not a helper templates may use ({})",
                    HELPERS.join(", ")
                ));
            }
        }
        _ => {}
    }
    for p in h.params.iter().chain(h.hash.values()) {
        if let Parameter::Subexpression(s) = p {
            check_element(s.as_element(), html, depth + 1)?;
        }
    }
    for t in [&h.template, &h.inverse].into_iter().flatten() {
        check_elements(t, html, depth + 1)?;
    }
    Ok(())
}

/// Why a template could not be rendered. Messages name the template field and
/// the variable, never the data's values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RenderError {
    /// The requested locale is not a locale tag.
    #[error("is not a locale tag such as `en`, `en-US` or `pt-BR`")]
    Locale,
    /// The template has no content for the channel in any locale.
    #[error("the template has no {} content", .0.as_str())]
    NoContent(Channel),
    /// A variable the data does not have (strict mode).
    #[error("{field}: {}", missing_reason(.variable, *.at))]
    MissingVariable {
        /// The template field, e.g. `locales.fr.email.subject`.
        field: String,
        /// The variable's path, e.g. `patient.name` (unknown for some helpers).
        variable: Option<String>,
        /// Line and column in the field.
        at: Option<(usize, usize)>,
    },
    /// The field renders to something it may not be: too long, a subject
    /// with a line break, an unsafe link, or more output than allowed.
    #[error("{field}: {reason}")]
    Invalid {
        /// The template field.
        field: String,
        /// Why.
        reason: String,
    },
}

fn missing_reason(variable: &Option<String>, at: Option<(usize, usize)>) -> String {
    let at = at
        .map(|(l, c)| format!(" (line {l}, column {c})"))
        .unwrap_or_default();
    match variable {
        Some(v) => format!("uses the variable `{v}`, which the data does not have{at}"),
        None => format!("looks up a value the data does not have{at}"),
    }
}

impl RenderError {
    /// The template field the error is about (`locale` for a bad locale,
    /// `channels` for a missing channel).
    pub fn field(&self) -> &str {
        match self {
            RenderError::Locale => "locale",
            RenderError::NoContent(_) => "channels",
            RenderError::MissingVariable { field, .. } | RenderError::Invalid { field, .. } => {
                field
            }
        }
    }

    /// Why, without the field.
    pub fn reason(&self) -> String {
        match self {
            RenderError::MissingVariable { variable, at, .. } => missing_reason(variable, *at),
            RenderError::Invalid { reason, .. } => reason.clone(),
            other => other.to_string(),
        }
    }
}

/// One channel's rendered content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    /// The channel.
    pub channel: Channel,
    /// The locale whose content was used.
    pub locale: String,
    /// The content, shaped as a send's content for the channel: email
    /// `{"subject","text","html"}` (absent parts omitted), sms `{"body"}`,
    /// push `{"title","body","data"}`, whatsapp `{"text"}` or
    /// `{"template_name","language","parameters"}`, in-app
    /// `{"title","body","action_url","data"}` (absent ones null).
    pub content: Value,
}

/// The locales tried for `requested`, best first: the exact tag, its
/// language, then the template's default.
fn candidates(template: &Template, requested: Option<&str>) -> Result<Vec<String>, RenderError> {
    let mut out = Vec::new();
    if let Some(raw) = requested {
        let tag = canonical_locale(raw).ok_or(RenderError::Locale)?;
        let language = tag.split('-').next().unwrap_or_default().to_owned();
        out.push(tag);
        out.push(language);
    }
    out.push(template.default_locale.clone());
    out.dedup();
    Ok(out)
}

/// Renders `template` for `channel` with `data`, in the first locale of
/// `locale` (exact tag), its language, and the default locale that has the
/// channel.
pub fn render(
    template: &Template,
    channel: Channel,
    locale: Option<&str>,
    data: &Value,
) -> Result<Rendered, RenderError> {
    render_with(template, None, channel, locale, data)
}

/// Each template string of a template, by field: registered in its
/// [`Prepared`]'s registry for its kind, or why it does not compile.
type CompiledFields = HashMap<String, Result<(), String>>;

/// A template with every string compiled once, for rendering it for many
/// recipients (a batch chunk, a CSV file, a cached template). Its strings
/// are registered once in two registries (email HTML escaped, everything
/// else not) that every render shares; templates cannot name each other
/// (partials are refused), so a render still sees only the field it renders
/// and its own data, with its own loop budget and output limits. The results
/// are the same as [`render`]'s.
pub struct Prepared {
    template: Template,
    compiled: CompiledFields,
    /// The registries the compiled fields are in: plain text, email HTML.
    registries: [Handlebars<'static>; 2],
}

impl fmt::Debug for Prepared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Prepared")
            .field("template", &self.template.key)
            .field("fields", &self.compiled.len())
            .finish_non_exhaustive()
    }
}

impl Prepared {
    /// Compiles every string of every locale and channel of `template`.
    pub fn new(template: Template) -> Self {
        let mut compiled = HashMap::new();
        let mut registries = [registry(false), registry(true)];
        for (tag, content) in &template.locales {
            for &channel in Channel::ALL {
                for (path, source, kind) in content.strings(channel) {
                    let field = format!("locales.{tag}.{}.{path}", channel.as_str());
                    let entry = compile(source, kind.html).map(|mut c| {
                        instrument(&mut c, &TICK_TEMPLATE);
                        registries[usize::from(kind.html)].register_template(&field, c);
                    });
                    compiled.insert(field, entry);
                }
            }
        }
        Self {
            template,
            compiled,
            registries,
        }
    }

    /// The template.
    pub fn template(&self) -> &Template {
        &self.template
    }

    /// Renders like [`render`], without compiling anything again.
    pub fn render(
        &self,
        channel: Channel,
        locale: Option<&str>,
        data: &Value,
    ) -> Result<Rendered, RenderError> {
        render_with(&self.template, Some(self), channel, locale, data)
    }
}

/// A registry in strict mode with the iteration helper, escaping values
/// for email HTML or not at all.
fn registry(html: bool) -> Handlebars<'static> {
    let mut hbs = Handlebars::new();
    hbs.set_strict_mode(true);
    hbs.register_helper(TICK, Box::new(Tick));
    if html {
        hbs.register_escape_fn(handlebars::html_escape);
    } else {
        hbs.register_escape_fn(handlebars::no_escape);
    }
    hbs
}

fn render_with(
    template: &Template,
    compiled: Option<&Prepared>,
    channel: Channel,
    locale: Option<&str>,
    data: &Value,
) -> Result<Rendered, RenderError> {
    let (tag, content) = candidates(template, locale)?
        .into_iter()
        .find_map(|tag| {
            let content = template.locales.get(&tag).filter(|c| c.has(channel))?;
            Some((tag, content))
        })
        .ok_or(RenderError::NoContent(channel))?;
    let base = format!("locales.{tag}.{}", channel.as_str());
    let mut r = Renderer::new(data, compiled);
    let field = |path: &str| format!("{base}.{path}");
    let content = match channel {
        Channel::Email => {
            let e = content
                .email
                .as_ref()
                .ok_or(RenderError::NoContent(channel))?;
            let subject_field = field("subject");
            let subject = r.text(&subject_field, &e.subject, Kind::SUBJECT)?;
            let subject = Subject::parse(&subject).map_err(|e| RenderError::Invalid {
                field: subject_field,
                reason: format!("renders to a subject that {}", e.0),
            })?;
            let html = r.optional(&field("html"), e.html.as_deref(), Kind::HTML)?;
            let text = r.optional(&field("text"), e.text.as_deref(), Kind::TEXT)?;
            if html.is_none() && text.is_none() {
                return Err(invalid(
                    field("text"),
                    "`text` and `html` both render empty",
                ));
            }
            serde_json::to_value(EmailContent {
                subject: subject.as_str().to_owned(),
                text,
                html,
            })
            .unwrap_or_default()
        }
        Channel::Sms => {
            let s = content
                .sms
                .as_ref()
                .ok_or(RenderError::NoContent(channel))?;
            let f = field("body");
            let body = r.text(&f, &s.body, Kind::SMS)?;
            non_empty(&f, &body)?;
            max_chars(&f, &body, MAX_SMS_CHARS)?;
            json!({ "body": body })
        }
        Channel::Push => {
            let t = content
                .push
                .as_ref()
                .ok_or(RenderError::NoContent(channel))?;
            let f = field("title");
            let title = r.text(&f, &t.title, Kind::LINE)?;
            one_line(&f, &title)?;
            let body = r.optional(&field("body"), t.body.as_deref(), Kind::TEXT)?;
            let data = r.data(&field("data"), &t.data)?;
            let mut out = json!({ "title": title, "data": data });
            if let Some(b) = body {
                out["body"] = Value::String(b);
            }
            out
        }
        Channel::WhatsApp => {
            let w = content
                .whatsapp
                .as_ref()
                .ok_or(RenderError::NoContent(channel))?;
            match (&w.text, &w.template_name, &w.language) {
                (Some(text), _, _) => {
                    let f = field("text");
                    let text = r.text(&f, text, Kind::TEXT)?;
                    non_empty(&f, &text)?;
                    max_chars(&f, &text, MAX_WHATSAPP_TEXT_CHARS)?;
                    json!({ "text": text })
                }
                (None, Some(name), Some(language)) => {
                    let mut parameters = Vec::with_capacity(w.parameters.len());
                    for (i, p) in w.parameters.iter().enumerate() {
                        let f = field(&format!("parameters[{i}]"));
                        let value = r.text(&f, p, Kind::LINE)?;
                        one_line(&f, &value)?;
                        parameters.push(value);
                    }
                    json!({ "template_name": name, "language": language, "parameters": parameters })
                }
                _ => {
                    return Err(invalid(
                        base,
                        "has neither `text` nor `template_name` with `language`",
                    ));
                }
            }
        }
        Channel::InApp => {
            let a = content
                .inapp
                .as_ref()
                .ok_or(RenderError::NoContent(channel))?;
            let f = field("title");
            let title = r.text(&f, &a.title, Kind::LINE)?;
            one_line(&f, &title)?;
            max_chars(&f, &title, MAX_INAPP_TITLE_CHARS)?;
            let f = field("body");
            let body = r.optional(&f, a.body.as_deref(), Kind::TEXT)?;
            if let Some(b) = &body {
                max_chars(&f, b, MAX_INAPP_BODY_CHARS)?;
            }
            let f = field("action_url");
            let action_url = r.optional(&f, a.action_url.as_deref(), Kind::LINE)?;
            if let Some(u) = &action_url
                && !action_url_ok(u)
            {
                return Err(invalid(
                    f,
                    "must render to an http(s) URL or a path starting with `/`, at most 2048 characters",
                ));
            }
            let data = r.data(&field("data"), &a.data)?;
            json!({ "title": title, "body": body, "action_url": action_url, "data": data })
        }
    };
    Ok(Rendered {
        channel,
        locale: tag,
        content,
    })
}

fn invalid(field: impl Into<String>, reason: impl Into<String>) -> RenderError {
    RenderError::Invalid {
        field: field.into(),
        reason: reason.into(),
    }
}

fn non_empty(field: &str, value: &str) -> Result<(), RenderError> {
    if value.trim().is_empty() {
        return Err(invalid(field, "renders empty"));
    }
    Ok(())
}

fn one_line(field: &str, value: &str) -> Result<(), RenderError> {
    non_empty(field, value)?;
    if value.chars().any(char::is_control) {
        return Err(invalid(
            field,
            "renders to more than one line or to control characters",
        ));
    }
    Ok(())
}

fn max_chars(field: &str, value: &str, max: usize) -> Result<(), RenderError> {
    if value.chars().count() > max {
        return Err(invalid(
            field,
            format!("renders to more than {max} characters"),
        ));
    }
    Ok(())
}

/// The helper [`instrument`] puts first in every `{{#each}}` body: it writes
/// nothing and charges one iteration to the budget of the render running on
/// this thread ([`ITERATIONS`]).
const TICK: &str = "__iteration";

/// `{{__iteration}}`, compiled.
static TICK_TEMPLATE: LazyLock<Compiled> =
    LazyLock::new(|| Compiled::compile(&format!("{{{{{TICK}}}}}")).unwrap_or_default());

thread_local! {
    /// The iteration budget of the field rendering on this thread: the
    /// iterations left and whether one was refused. A render is synchronous,
    /// so the renderer sets it before each field and reads it back after.
    static ITERATIONS: Cell<(usize, bool)> = const { Cell::new((0, false)) };
}

struct Tick;

impl HelperDef for Tick {
    fn call<'reg: 'rc, 'rc>(
        &self,
        _: &Helper<'rc>,
        _: &'reg Handlebars<'reg>,
        _: &'rc Context,
        _: &mut RenderContext<'reg, 'rc>,
        _: &mut dyn Output,
    ) -> HelperResult {
        let (left, _) = ITERATIONS.get();
        if left == 0 {
            ITERATIONS.set((0, true));
            return Err(RenderErrorReason::Other("the iteration budget is spent".into()).into());
        }
        ITERATIONS.set((left - 1, false));
        Ok(())
    }
}

/// Puts `tick` (a compiled `{{__iteration}}`) first in the body of every
/// `{{#each}}`, so every iteration is charged, however the loops nest.
fn instrument(t: &mut Compiled, tick: &Compiled) {
    for e in &mut t.elements {
        if let TemplateElement::HelperBlock(h) = e {
            let each = h.name.as_name() == Some("each");
            if let Some(body) = &mut h.template {
                instrument(body, tick);
                if each {
                    body.elements.splice(0..0, tick.elements.iter().cloned());
                    body.mapping.splice(0..0, tick.mapping.iter().cloned());
                }
            }
            if let Some(inverse) = &mut h.inverse {
                instrument(inverse, tick);
            }
        }
    }
}

/// Collects a field's output, refusing to grow past `limit`.
struct Capped {
    buf: Vec<u8>,
    limit: usize,
    overflowed: bool,
}

impl io::Write for Capped {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        if self.buf.len() + bytes.len() > self.limit {
            self.overflowed = true;
            return Err(io::Error::other("the output limit is reached"));
        }
        self.buf.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// One render: a prepared template's shared registries, or for a template
/// not prepared a fresh registry that only ever holds the fields it renders.
struct Renderer<'c> {
    /// The registry of a template not prepared, made at its first field.
    own: Option<Handlebars<'static>>,
    ctx: Context,
    /// Iterations left to the render's loops, and whether one was refused.
    budget: (usize, bool),
    /// The template's strings compiled ahead, when it was prepared.
    prepared: Option<&'c Prepared>,
    /// Output bytes left for the remaining fields.
    output_left: usize,
}

impl fmt::Debug for Renderer<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Renderer")
            .field("budget", &self.budget)
            .finish_non_exhaustive()
    }
}

impl<'c> Renderer<'c> {
    fn new(data: &Value, prepared: Option<&'c Prepared>) -> Self {
        Self {
            own: None,
            ctx: Context::from(data.clone()),
            budget: (MAX_ITERATIONS, false),
            prepared,
            output_left: MAX_RENDER_BYTES,
        }
    }

    /// Renders one field.
    fn text(&mut self, field: &str, source: &str, kind: Kind) -> Result<String, RenderError> {
        if source.len() > MAX_FIELD_BYTES {
            return Err(invalid(
                field,
                format!("must be at most {MAX_FIELD_BYTES} bytes"),
            ));
        }
        let hbs = match self.prepared.map(|p| (p, p.compiled.get(field))) {
            Some((p, Some(Ok(())))) => &p.registries[usize::from(kind.html)],
            Some((_, Some(Err(reason)))) => return Err(invalid(field, reason.clone())),
            _ => {
                let mut compiled =
                    compile(source, kind.html).map_err(|reason| invalid(field, reason))?;
                instrument(&mut compiled, &TICK_TEMPLATE);
                let hbs = self.own.get_or_insert_with(|| registry(false));
                hbs.register_template(field, compiled);
                if kind.html {
                    hbs.register_escape_fn(handlebars::html_escape);
                } else {
                    hbs.register_escape_fn(handlebars::no_escape);
                }
                &*hbs
            }
        };
        let mut out = Capped {
            buf: Vec::new(),
            limit: MAX_OUTPUT_BYTES.min(self.output_left),
            overflowed: false,
        };
        ITERATIONS.set(self.budget);
        let rendered = hbs.render_with_context_to_write(field, &self.ctx, &mut out);
        self.budget = ITERATIONS.get();
        self.output_left -= out.buf.len();
        match rendered {
            Ok(()) => {
                let text = String::from_utf8(out.buf)
                    .map_err(|_| invalid(field, "renders invalid UTF-8"))?;
                // Postgres stores no NUL in text or JSON: refuse it here, by
                // field, rather than fail the insert.
                if text.contains('\0') {
                    return Err(invalid(field, "renders a NUL character (\\u0000)"));
                }
                Ok(text)
            }
            Err(_) if out.overflowed && out.limit < MAX_OUTPUT_BYTES => Err(invalid(
                field,
                format!("takes the render past {MAX_RENDER_BYTES} bytes in all"),
            )),
            Err(_) if out.overflowed => Err(invalid(
                field,
                format!("renders to more than {MAX_OUTPUT_BYTES} bytes"),
            )),
            Err(_) if self.budget.1 => Err(invalid(
                field,
                format!("loops more than {MAX_ITERATIONS} times in one render"),
            )),
            Err(e) => Err(match e.reason() {
                RenderErrorReason::MissingVariable(variable) => RenderError::MissingVariable {
                    field: field.to_owned(),
                    variable: variable.clone(),
                    at: e.line_no.zip(e.column_no),
                },
                other => invalid(field, format!("cannot be rendered: {other}")),
            }),
        }
    }

    /// Renders an optional field; one that renders blank counts as absent.
    fn optional(
        &mut self,
        field: &str,
        source: Option<&str>,
        kind: Kind,
    ) -> Result<Option<String>, RenderError> {
        let Some(source) = source else {
            return Ok(None);
        };
        let value = self.text(field, source, kind)?;
        Ok((!value.trim().is_empty()).then_some(value))
    }

    /// Renders every value of a `data` object.
    fn data(&mut self, base: &str, data: &BTreeMap<String, String>) -> Result<Value, RenderError> {
        let mut out = serde_json::Map::new();
        for (k, v) in data {
            let value = self.text(&format!("{base}.{k}"), v, Kind::TEXT)?;
            out.insert(k.clone(), Value::String(value));
        }
        Ok(Value::Object(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> Value {
        json!({
            "key": "appointment.reminder",
            "name": "Appointment reminder",
            "description": "Sent the day before",
            "category": "appointments",
            "critical": false,
            "default_locale": "en",
            "default_channels": ["email", "sms"],
            "locales": {
                "en": {
                    "email": {
                        "subject": "See you {{day}}, {{name}}",
                        "html": "<p>Hi {{name}}</p>",
                        "text": "Hi {{name}}"
                    },
                    "sms": {"body": "Hi {{name}}, see you {{day}}."},
                    "push": {"title": "Tomorrow", "body": "See you {{day}}", "data": {"kind": "reminder", "day": "{{day}}"}},
                    "whatsapp": {"template_name": "appointment_reminder", "language": "en_US", "parameters": ["{{name}}", "{{day}}"]},
                    "inapp": {"title": "See you {{day}}", "action_url": "/appointments/{{id}}", "data": {"id": "{{id}}"}}
                },
                "fr": {
                    "email": {"subject": "À {{day}}, {{name}}", "text": "Bonjour {{name}}"},
                    "sms": {"body": "Bonjour {{name}}"}
                },
                "fr-CA": {"sms": {"body": "Allô {{name}}"}}
            }
        })
    }

    fn parsed() -> Template {
        Template::parse(base()).unwrap()
    }

    fn with(path: &[&str], value: Value) -> Value {
        let mut t = base();
        let mut at = &mut t;
        for p in &path[..path.len() - 1] {
            at = &mut at[*p];
        }
        at[path[path.len() - 1]] = value;
        t
    }

    /// The single error a template is refused with.
    fn refused(t: Value) -> FieldError {
        let errors = Template::parse(t).unwrap_err();
        assert_eq!(errors.len(), 1, "{errors:?}");
        errors.into_iter().next().unwrap()
    }

    fn data() -> Value {
        json!({"name": "Pat", "day": "Monday", "id": 42})
    }

    #[test]
    fn a_valid_template_parses_and_serializes_to_the_same_json() {
        let t = parsed();
        assert_eq!(t.key(), "appointment.reminder");
        assert_eq!(t.default_channels(), &[Channel::Email, Channel::Sms]);
        assert_eq!(t.channels(), Channel::ALL.to_vec());
        let again = Template::parse(serde_json::to_value(&t).unwrap()).unwrap();
        assert_eq!(again, t);
        assert_eq!(serde_json::to_value(&t).unwrap(), base());
    }

    #[test]
    fn syntax_errors_name_the_field() {
        let e = refused(with(
            &["locales", "fr", "email", "subject"],
            json!("Hi {{#if name}}"),
        ));
        assert_eq!(e.field, "locales.fr.email.subject");
        assert!(e.reason.starts_with("is not a valid template"), "{e}");
        let e = refused(with(
            &["locales", "en", "push", "data", "day"],
            json!("{{day"),
        ));
        assert_eq!(e.field, "locales.en.push.data.day");
        let e = refused(with(
            &["locales", "en", "whatsapp", "parameters"],
            json!(["ok", "{{/if}}"]),
        ));
        assert_eq!(e.field, "locales.en.whatsapp.parameters[1]");
    }

    #[test]
    fn partials_inline_partials_and_decorators_are_refused() {
        for (source, needle) in [
            ("{{> footer}}", "partials"),
            ("{{#> layout}}body{{/layout}}", "partials"),
            ("{{#*inline \"x\"}}y{{/inline}}{{> x}}", "inline partials"),
            ("{{*decorator}}", "decorators"),
            ("{{#if name}}{{> footer}}{{/if}}", "partials"),
            ("{{#each items}}{{else}}{{> footer}}{{/each}}", "partials"),
        ] {
            let e = refused(with(&["locales", "en", "email", "text"], json!(source)));
            assert_eq!(e.field, "locales.en.email.text", "{source}");
            assert!(e.reason.contains(needle), "{source}: {e}");
        }
    }

    #[test]
    fn only_the_built_in_helpers_may_be_called() {
        for source in [
            "{{log name}}",
            "{{lowercase name}}",
            "{{#custom}}x{{/custom}}",
            "{{#if (lookup this (concat \"a\" \"b\"))}}x{{/if}}",
        ] {
            let e = refused(with(&["locales", "en", "sms", "body"], json!(source)));
            assert!(e.reason.contains("not a helper"), "{source}: {e}");
        }
        let ok = with(
            &["locales", "en", "sms", "body"],
            json!(
                "{{#each items as |item|}}{{#if (eq item.kind \"lab\")}}{{len ../items}} {{lookup item \"name\"}}{{/if}}{{/each}}"
            ),
        );
        assert!(Template::parse(ok).is_ok());
    }

    #[test]
    fn triple_stash_is_refused_in_email_html_only() {
        for source in [
            "<p>{{{name}}}</p>",
            "<p>{{& name}}</p>",
            "{{#if a}}{{{name}}}{{/if}}",
        ] {
            let e = refused(with(&["locales", "en", "email", "html"], json!(source)));
            assert_eq!(e.field, "locales.en.email.html");
            assert!(e.reason.contains("escaped"), "{e}");
        }
        let text = with(&["locales", "en", "email", "text"], json!("{{{name}}}"));
        assert!(Template::parse(text).is_ok());
    }

    #[test]
    fn deep_nesting_is_refused() {
        let deep = format!("{}x{}", "{{#if a}}".repeat(20), "{{/if}}".repeat(20));
        let e = refused(with(&["locales", "en", "sms", "body"], json!(deep)));
        assert!(e.reason.contains("deep"), "{e}");
        let fine = format!("{}x{}", "{{#if a}}".repeat(10), "{{/if}}".repeat(10));
        assert!(Template::parse(with(&["locales", "en", "sms", "body"], json!(fine))).is_ok());
    }

    #[test]
    fn limits_are_enforced() {
        let mut big = base();
        big["description"] = json!("x".repeat(MAX_TEMPLATE_BYTES));
        assert_eq!(refused(big).field, "template");
        let e = refused(with(
            &["locales", "en", "email", "html"],
            json!("x".repeat(MAX_FIELD_BYTES + 1)),
        ));
        assert_eq!(e.field, "locales.en.email.html");
        assert!(e.reason.contains("bytes"));
        let e = refused(with(
            &["locales", "en", "email", "subject"],
            json!("x".repeat(999)),
        ));
        assert_eq!(e.field, "locales.en.email.subject");
        let e = refused(with(
            &["locales", "en", "sms", "body"],
            json!("é".repeat(MAX_SMS_CHARS + 1)),
        ));
        assert_eq!(e.field, "locales.en.sms.body");
        assert!(
            Template::parse(with(
                &["locales", "en", "sms", "body"],
                json!("é".repeat(MAX_SMS_CHARS))
            ))
            .is_ok()
        );
        let e = refused(with(
            &["locales", "en", "email", "subject"],
            json!("Hi\r\nBcc: x@evil.example"),
        ));
        assert_eq!(e.field, "locales.en.email.subject");
        let mut many = base();
        for c in (b'a'..).take(MAX_LOCALES) {
            many["locales"][format!("a{}", c as char)] = json!({"sms": {"body": "hi"}});
        }
        assert_eq!(refused(many).field, "locales");
        let data: serde_json::Map<String, Value> = (0..=MAX_DATA_KEYS)
            .map(|i| (format!("k{i}"), json!("v")))
            .collect();
        let e = refused(with(
            &["locales", "en", "push", "data"],
            Value::Object(data),
        ));
        assert_eq!(e.field, "locales.en.push.data");
    }

    #[test]
    fn every_bad_field_is_named_at_once() {
        let mut t = base();
        t["key"] = json!("Not A Slug");
        t["name"] = json!("");
        t["category"] = json!("bad category");
        t["locales"]["fr"]["email"]["subject"] = json!("{{#if}}");
        let fields: Vec<String> = Template::parse(t)
            .unwrap_err()
            .into_iter()
            .map(|e| e.field)
            .collect();
        assert_eq!(
            fields,
            ["key", "name", "category", "locales.fr.email.subject"]
        );
    }

    #[test]
    fn unknown_and_missing_fields_are_named() {
        let mut t = base();
        t["colour"] = json!("blue");
        let e = refused(t);
        assert_eq!(e.field, "colour");
        assert!(e.reason.contains("unknown field"), "{e}");
        let e = refused(with(&["locales", "fr", "email", "subjet"], json!("x")));
        assert_eq!(e.field, "locales.fr.email.subjet");
        let mut t = base();
        t.as_object_mut().unwrap().remove("name");
        assert_eq!(refused(t).field, "name");
        let e = refused(with(&["locales", "fr", "email"], json!({"text": "x"})));
        assert_eq!(e.field, "locales.fr.email.subject");
        let e = refused(with(&["default_channels"], json!(["email", "fax"])));
        assert_eq!(e.field, "default_channels[1]");
        assert_eq!(refused(json!([1, 2])).field, "template");
    }

    #[test]
    fn locales_and_channels_must_fall_back_to_the_default_locale() {
        let e = refused(with(&["default_locale"], json!("de")));
        assert_eq!(e.field, "default_locale");
        let e = refused(with(&["locales", "fr", "email", "subject"], json!(null)));
        assert_eq!(e.field, "locales.fr.email.subject");
        let e = refused(with(&["locales", "en_GB"], json!({"sms": {"body": "x"}})));
        assert_eq!(e.field, "locales.en_GB");
        assert!(e.reason.contains("`en-GB`"), "{e}");
        let e = refused(with(&["locales", "english"], json!({"sms": {"body": "x"}})));
        assert_eq!(e.field, "locales.english");
        let e = refused(with(&["locales", "de"], json!({})));
        assert_eq!(e.field, "locales.de");
        let mut t = base();
        t["locales"]["en"].as_object_mut().unwrap().remove("sms");
        let fields: Vec<String> = Template::parse(t)
            .unwrap_err()
            .into_iter()
            .map(|e| e.field)
            .collect();
        assert_eq!(
            fields,
            ["default_channels[1]", "locales.fr.sms", "locales.fr-CA.sms"]
        );
        let e = refused(with(&["default_channels"], json!([])));
        assert_eq!(e.field, "default_channels");
        let e = refused(with(&["default_channels"], json!(["sms", "sms"])));
        assert_eq!(e.field, "default_channels[1]");
    }

    #[test]
    fn locale_tags_are_read_in_canonical_form() {
        for (raw, tag) in [
            ("en", "en"),
            ("EN-us", "en-US"),
            ("pt_br", "pt-BR"),
            ("zh-hant-tw", "zh-Hant-TW"),
            ("es-419", "es-419"),
            ("fil", "fil"),
        ] {
            assert_eq!(canonical_locale(raw).as_deref(), Some(tag), "{raw}");
        }
        for bad in [
            "", "e", "english", "en-", "en-USA", "en-US-x", "1n", "en US",
        ] {
            assert_eq!(canonical_locale(bad), None, "{bad}");
        }
    }

    #[test]
    fn whatsapp_takes_text_or_an_approved_template() {
        let path = ["locales", "en", "whatsapp"];
        assert!(Template::parse(with(&path, json!({"text": "Hi {{name}}"}))).is_ok());
        for (bad, field) in [
            (json!({}), "locales.en.whatsapp"),
            (
                json!({"text": "x", "template_name": "y", "language": "en"}),
                "locales.en.whatsapp",
            ),
            (
                json!({"template_name": "reminder"}),
                "locales.en.whatsapp.language",
            ),
            (
                json!({"template_name": "Reminder!", "language": "en"}),
                "locales.en.whatsapp.template_name",
            ),
            (
                json!({"template_name": "reminder", "language": "english"}),
                "locales.en.whatsapp.language",
            ),
            (
                json!({"text": "x", "parameters": ["a"]}),
                "locales.en.whatsapp.parameters",
            ),
        ] {
            assert_eq!(refused(with(&path, bad.clone())).field, field, "{bad}");
        }
    }

    #[test]
    fn reserved_push_data_keys_are_refused() {
        let e = refused(with(
            &["locales", "en", "push", "data"],
            json!({"google.sent_time": "x"}),
        ));
        assert_eq!(e.field, "locales.en.push.data.google.sent_time");
        let e = refused(with(
            &["locales", "en", "inapp", "data"],
            json!({"has space": "x"}),
        ));
        assert_eq!(e.field, "locales.en.inapp.data");
    }

    #[test]
    fn every_channel_renders_to_its_send_shape() {
        let t = parsed();
        let r = |c| render(&t, c, None, &data()).unwrap();
        let email = r(Channel::Email);
        assert_eq!(email.locale, "en");
        assert_eq!(
            email.content,
            json!({"subject": "See you Monday, Pat", "html": "<p>Hi Pat</p>", "text": "Hi Pat"})
        );
        assert_eq!(
            serde_json::from_value::<EmailContent>(email.content).unwrap(),
            EmailContent {
                subject: "See you Monday, Pat".into(),
                text: Some("Hi Pat".into()),
                html: Some("<p>Hi Pat</p>".into()),
            }
        );
        assert_eq!(
            r(Channel::Sms).content,
            json!({"body": "Hi Pat, see you Monday."})
        );
        assert_eq!(
            r(Channel::Push).content,
            json!({"title": "Tomorrow", "body": "See you Monday", "data": {"kind": "reminder", "day": "Monday"}})
        );
        assert_eq!(
            r(Channel::WhatsApp).content,
            json!({"template_name": "appointment_reminder", "language": "en_US", "parameters": ["Pat", "Monday"]})
        );
        assert_eq!(
            r(Channel::InApp).content,
            json!({"title": "See you Monday", "body": null, "action_url": "/appointments/42", "data": {"id": "42"}})
        );
    }

    #[test]
    fn an_unknown_variable_is_an_error_naming_it_and_the_field() {
        let t = parsed();
        let e = render(&t, Channel::Email, None, &json!({"name": "Pat"})).unwrap_err();
        assert_eq!(e.field(), "locales.en.email.subject");
        assert!(
            matches!(&e, RenderError::MissingVariable { variable: Some(v), .. } if v == "day"),
            "{e:?}"
        );
        assert!(e.to_string().contains("`day`"), "{e}");
        let e = render(&t, Channel::Sms, Some("fr"), &json!({"nom": "Pat"})).unwrap_err();
        assert_eq!(e.field(), "locales.fr.sms.body");
        let nested = with(
            &["locales", "en", "sms", "body"],
            json!("{{#each items}}{{this.name}}{{/each}}{{patient.name}}"),
        );
        let t = Template::parse(nested).unwrap();
        let e = render(
            &t,
            Channel::Sms,
            None,
            &json!({"items": [{"name": "a"}], "patient": {}}),
        )
        .unwrap_err();
        assert!(e.reason().contains("`patient.name`"), "{e}");
        let e = render(&t, Channel::Sms, None, &json!({"patient": {"name": "x"}})).unwrap_err();
        assert!(e.reason().contains("`items`"), "{e}");
    }

    #[test]
    fn optional_values_can_be_tested_with_if() {
        let t = Template::parse(with(
            &["locales", "en", "sms", "body"],
            json!("Hi{{#if name}} {{name}}{{/if}}."),
        ))
        .unwrap();
        let r = |d| render(&t, Channel::Sms, None, &d).unwrap().content["body"].clone();
        assert_eq!(r(json!({})), "Hi.");
        assert_eq!(r(json!({"name": "Pat"})), "Hi Pat.");
    }

    #[test]
    fn email_html_escapes_data_and_other_fields_do_not() {
        let t = parsed();
        let hostile =
            json!({"name": "<script>alert(1)</script>", "day": "\"Mon\" & 'Tue'", "id": 1});
        let email = render(&t, Channel::Email, None, &hostile).unwrap().content;
        assert_eq!(
            email["html"],
            "<p>Hi &lt;script&gt;alert(1)&lt;/script&gt;</p>"
        );
        assert_eq!(email["text"], "Hi <script>alert(1)</script>");
        assert_eq!(
            email["subject"],
            "See you \"Mon\" & 'Tue', <script>alert(1)</script>"
        );
        let sms = render(&t, Channel::Sms, None, &hostile).unwrap().content;
        assert_eq!(
            sms["body"],
            "Hi <script>alert(1)</script>, see you \"Mon\" & 'Tue'."
        );
    }

    #[test]
    fn a_line_break_injected_into_the_subject_is_refused() {
        let t = parsed();
        for day in ["Monday\r\nBcc: x@evil.example", "Monday\n", "Mon\u{0}"] {
            let e = render(
                &t,
                Channel::Email,
                None,
                &json!({"name": "Pat", "day": day}),
            )
            .unwrap_err();
            assert_eq!(e.field(), "locales.en.email.subject", "{day:?}");
            assert!(matches!(e, RenderError::Invalid { .. }), "{e:?}");
        }
        let e = render(&t, Channel::InApp, None, &json!({"day": "a\nb", "id": 1})).unwrap_err();
        assert_eq!(e.field(), "locales.en.inapp.title");
    }

    #[test]
    fn locales_fall_back_from_the_tag_to_its_language_to_the_default() {
        let t = parsed();
        let used = |c, l: Option<&str>| render(&t, c, l, &data()).unwrap();
        assert_eq!(used(Channel::Sms, Some("fr-CA")).locale, "fr-CA");
        assert_eq!(
            used(Channel::Sms, Some("fr-ca")).content["body"],
            "Allô Pat"
        );
        assert_eq!(used(Channel::Email, Some("fr-CA")).locale, "fr");
        assert_eq!(used(Channel::Sms, Some("fr-BE")).locale, "fr");
        assert_eq!(used(Channel::Sms, Some("fr")).locale, "fr");
        assert_eq!(used(Channel::Push, Some("fr-CA")).locale, "en");
        assert_eq!(used(Channel::Sms, Some("de-DE")).locale, "en");
        assert_eq!(used(Channel::Sms, None).locale, "en");
        assert_eq!(
            render(&t, Channel::Sms, Some("not a locale"), &data()).unwrap_err(),
            RenderError::Locale
        );
    }

    #[test]
    fn a_channel_without_content_is_an_error() {
        let t = Template::parse(json!({
            "key": "k", "name": "n", "default_locale": "en", "default_channels": ["sms"],
            "locales": {"en": {"sms": {"body": "hi"}}}
        }))
        .unwrap();
        assert_eq!(
            render(&t, Channel::Email, None, &json!({})).unwrap_err(),
            RenderError::NoContent(Channel::Email)
        );
    }

    #[test]
    fn unsafe_action_urls_are_refused_once_rendered() {
        let t = parsed();
        // The template's path stays a path, and data cannot break out of it.
        let path = |id: &str| render(&t, Channel::InApp, None, &json!({"day": "Mon", "id": id}));
        assert_eq!(
            path("../javascript:alert(1)").unwrap().content["action_url"],
            "/appointments/../javascript:alert(1)"
        );
        for id in ["1 onclick=x", "1\nLocation: x"] {
            assert_eq!(
                path(id).unwrap_err().field(),
                "locales.en.inapp.action_url",
                "{id:?}"
            );
        }
        let t = Template::parse(with(
            &["locales", "en", "inapp", "action_url"],
            json!("{{url}}"),
        ))
        .unwrap();
        for url in ["javascript:alert(1)", "//evil.example", "data:text/html,x"] {
            let e = render(
                &t,
                Channel::InApp,
                None,
                &json!({"day": "Mon", "id": 1, "url": url}),
            )
            .unwrap_err();
            assert_eq!(e.field(), "locales.en.inapp.action_url", "{url}");
        }
        let ok = render(
            &t,
            Channel::InApp,
            None,
            &json!({"day": "Mon", "id": 1, "url": "https://clinic.example/a"}),
        )
        .unwrap();
        assert_eq!(ok.content["action_url"], "https://clinic.example/a");
    }

    #[test]
    fn loops_and_output_are_bounded() {
        let nested = Template::parse(with(
            &["locales", "en", "sms", "body"],
            json!("{{#each a}}{{#each ../a}}{{/each}}{{/each}}"),
        ))
        .unwrap();
        let a: Vec<u32> = (0..200).collect();
        let e = render(&nested, Channel::Sms, None, &json!({"a": a})).unwrap_err();
        assert!(e.reason().contains("loops more than"), "{e}");
        let small: Vec<u32> = (0..50).collect();
        let e = render(&nested, Channel::Sms, None, &json!({"a": small})).unwrap_err();
        assert_eq!(e.reason(), "renders empty", "2,550 iterations are allowed");

        let wide = Template::parse(with(
            &["locales", "en", "email", "text"],
            json!("{{#each a}}{{../big}}{{/each}}"),
        ))
        .unwrap();
        let big = "x".repeat(1024);
        let a: Vec<u32> = (0..300).collect();
        let e = render(
            &wide,
            Channel::Email,
            None,
            &json!({"name": "Pat", "day": "Mon", "a": a, "big": big}),
        )
        .unwrap_err();
        assert_eq!(e.field(), "locales.en.email.text");
        assert!(e.reason().contains("bytes"), "{e}");
    }

    #[test]
    fn a_prepared_template_renders_what_render_does_for_every_channel_and_locale() {
        let mut t = base();
        t["locales"]["es"] = json!({"sms": {"body": "Hola {{name}}"}});
        let t = Template::parse(t).unwrap();
        let prepared = Prepared::new(t.clone());
        for data in [
            data(),
            json!({"name": "Ann", "day": "Friday", "id": "7"}),
            json!({}),
        ] {
            for &channel in Channel::ALL {
                for locale in [
                    None,
                    Some("es"),
                    Some("es-MX"),
                    Some("fr"),
                    Some("not a tag!"),
                ] {
                    assert_eq!(
                        prepared.render(channel, locale, &data),
                        render(&t, channel, locale, &data),
                        "{channel:?} {locale:?} {data}"
                    );
                }
            }
        }
    }

    #[test]
    fn each_render_of_a_prepared_template_has_its_own_budgets() {
        let nested = Template::parse(with(
            &["locales", "en", "sms", "body"],
            json!("{{#each a}}{{#each ../a}}x{{/each}}{{/each}}"),
        ))
        .unwrap();
        let prepared = Prepared::new(nested);
        let small: Vec<u32> = (0..90).collect();
        let big: Vec<u32> = (0..200).collect();
        // 90 × 91 iterations fit one budget; three renders in a row would not.
        for _ in 0..3 {
            let r = prepared.render(Channel::Sms, None, &json!({"a": small}));
            assert!(r.is_err_and(|e| e.reason().contains("1600 characters")));
        }
        let e = prepared
            .render(Channel::Sms, None, &json!({"a": big}))
            .unwrap_err();
        assert!(e.reason().contains("loops more than"), "{e}");
        let ok = prepared.render(Channel::Sms, None, &json!({"a": [1, 2]}));
        assert_eq!(ok.unwrap().content, json!({"body": "xxxx"}));
    }

    #[test]
    fn the_output_of_all_fields_together_is_bounded() {
        let each = "{{#each a}}{{../big}}{{/each}}";
        let t = Template::parse(with(
            &["locales", "en", "push", "data"],
            json!({"a": each, "b": each, "c": each}),
        ))
        .unwrap();
        let a: Vec<u32> = (0..200).collect();
        let data = json!({"day": "Mon", "a": a, "big": "x".repeat(1024)});
        let e = render(&t, Channel::Push, None, &data).unwrap_err();
        assert_eq!(e.field(), "locales.en.push.data.c");
        assert!(e.reason().contains("in all"), "{e}");
        let two = Template::parse(with(
            &["locales", "en", "push", "data"],
            json!({"a": each, "b": each}),
        ))
        .unwrap();
        let ok = render(&two, Channel::Push, None, &data).unwrap();
        assert_eq!(ok.content["data"]["b"].as_str().unwrap().len(), 200 * 1024);
    }

    #[test]
    fn a_stored_template_cannot_reach_partials_even_unvalidated() {
        let mut t = parsed();
        t.locales.get_mut("en").unwrap().sms = Some(SmsTemplate {
            body: "{{> locales.en.email.subject}}".into(),
        });
        let e = render(&t, Channel::Sms, None, &data()).unwrap_err();
        assert_eq!(e.field(), "locales.en.sms.body");
        assert!(e.reason().contains("partials"), "{e}");
    }
}

/// Properties of compiling and rendering with hostile input: hostile
/// Handlebars, deep nesting and huge loops are refused or rendered within
/// the limits, never a panic or a hang, and nothing rendered carries a NUL
/// (which Postgres cannot store).
#[cfg(test)]
mod properties {
    use proptest::prelude::*;

    use super::*;

    /// Template text assembled from the constructs that break renderers.
    fn hostile_source() -> impl Strategy<Value = String> {
        let piece = prop_oneof![
            Just("{{".to_owned()),
            Just("}}".to_owned()),
            Just("{{name}}".to_owned()),
            Just("{{{name}}}".to_owned()),
            Just("{{&name}}".to_owned()),
            Just("{{#each xs}}".to_owned()),
            Just("{{/each}}".to_owned()),
            Just("{{#if a}}".to_owned()),
            Just("{{else}}".to_owned()),
            Just("{{/if}}".to_owned()),
            Just("{{#with o}}".to_owned()),
            Just("{{/with}}".to_owned()),
            Just("{{> p}}".to_owned()),
            Just("{{#> p}}x{{/p}}".to_owned()),
            Just("{{#*inline \"p\"}}x{{/inline}}".to_owned()),
            Just("{{log a}}".to_owned()),
            Just("{{lookup xs 0}}".to_owned()),
            Just("{{../name}}".to_owned()),
            Just("{{@root.name}}".to_owned()),
            Just("{{@index}}".to_owned()),
            Just("{{this}}".to_owned()),
            Just("{{o.p.q}}".to_owned()),
            Just("{{xs.[0]}}".to_owned()),
            Just("{{(eq a (not (len xs)))}}".to_owned()),
            Just("{{!-- c --}}".to_owned()),
            Just("{{~name~}}".to_owned()),
            Just("\\{{name}}".to_owned()),
            Just("{{{{raw}}}}{{x}}{{{{/raw}}}}".to_owned()),
            Just("\0".to_owned()),
            Just("\n".to_owned()),
            "[ -~]{0,8}",
            any::<String>(),
        ];
        proptest::collection::vec(piece, 0..30).prop_map(|p| p.concat())
    }

    /// Data with every shape a variable can meet, NUL and long strings
    /// included, nested a few levels.
    fn hostile_data() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<f64>().prop_map(|f| json!(f)),
            any::<String>().prop_map(Value::from),
            Just(Value::from("a\0b")),
            (0..3000_usize).prop_map(|n| Value::from("x".repeat(n))),
        ];
        let value = leaf.prop_recursive(6, 64, 8, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..8).prop_map(Value::from),
                proptest::collection::btree_map("[a-z]{1,3}", inner, 0..6)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        });
        (value.clone(), value.clone(), value.clone(), value).prop_map(|(name, a, xs, o)| {
            json!({"name": name, "a": a, "xs": xs, "o": o, "id": 7, "day": "Monday"})
        })
    }

    /// A template with `source` in every string of every channel.
    fn template_with(source: &str) -> Value {
        json!({
            "key": "hostile",
            "name": "Hostile",
            "description": source,
            "default_locale": "en",
            "default_channels": ["email"],
            "locales": {"en": {
                "email": {"subject": source, "html": source, "text": source},
                "sms": {"body": source},
                "push": {"title": source, "body": source, "data": {"k": source}},
                "whatsapp": {"text": source},
                "inapp": {"title": source, "body": source, "action_url": format!("/x/{source}"), "data": {"k": source}}
            }}
        })
    }

    fn strings(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::String(s) => out.push(s.clone()),
            Value::Array(a) => a.iter().for_each(|v| strings(v, out)),
            Value::Object(o) => o.values().for_each(|v| strings(v, out)),
            _ => {}
        }
    }

    /// Renders `template` on every channel, directly and prepared, and
    /// checks what comes out.
    fn check_renders(template: &Template, data: &Value) -> Result<(), TestCaseError> {
        let prepared = Prepared::new(template.clone());
        for &channel in Channel::ALL {
            let direct = render(template, channel, Some("en-GB"), data);
            prop_assert_eq!(&prepared.render(channel, Some("en-GB"), data), &direct);
            if let Ok(r) = direct {
                let mut out = Vec::new();
                strings(&r.content, &mut out);
                let total: usize = out.iter().map(String::len).sum();
                prop_assert!(total <= MAX_RENDER_BYTES + 1024, "{total} bytes");
                for s in out {
                    prop_assert!(s.len() <= MAX_OUTPUT_BYTES);
                    prop_assert!(!s.contains('\0'), "{channel:?} rendered a NUL");
                }
            }
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        #[test]
        fn hostile_templates_are_refused_or_render_within_the_limits(
            source in hostile_source(),
            data in hostile_data(),
        ) {
            match Template::parse(template_with(&source)) {
                Ok(template) => {
                    // What is accepted can be stored: Postgres takes no NUL.
                    let stored = serde_json::to_string(&template).unwrap();
                    prop_assert!(!stored.contains("\\u0000"), "{stored}");
                    check_renders(&template, &data)?;
                }
                Err(errors) => prop_assert!(!errors.is_empty()),
            }
        }

        #[test]
        fn hostile_data_renders_within_the_limits_or_is_refused(data in hostile_data()) {
            let source = "{{name}} {{a}} {{#each xs}}{{this}}{{#each ../xs}}{{@index}}{{/each}}{{/each}} {{#with o}}{{this}}{{/with}} {{lookup xs 0}}";
            let template = Template::parse(template_with(source)).unwrap();
            check_renders(&template, &data)?;
        }

        #[test]
        fn deep_nesting_is_refused_not_a_crash(depth in 0_usize..1_000, kind in 0_usize..3) {
            let (open, close) = [
                ("{{#if a}}", "{{/if}}"),
                ("{{#each xs}}", "{{/each}}"),
                ("{{#with o}}", "{{/with}}"),
            ][kind];
            let source = format!("{}x{}", open.repeat(depth), close.repeat(depth));
            let parsed = Template::parse(template_with(&source));
            if depth > MAX_NESTING + 1 {
                prop_assert!(parsed.is_err());
            }
            let sub = format!("{}a{}", "{{(not ".repeat(depth.min(2_000)), ")}}".repeat(depth.min(2_000)));
            let _ = Template::parse(template_with(&sub));
        }

        #[test]
        fn huge_loops_stop_at_the_iteration_budget(n in 0_usize..400, levels in 1_usize..5) {
            let mut source = "x".to_owned();
            for _ in 0..levels {
                source = format!("{{{{#each @root.xs}}}}{source}{{{{/each}}}}");
            }
            let template = Template::parse(template_with(&source)).unwrap();
            let data = json!({"xs": vec![1; n]});
            let r = render(&template, Channel::Sms, None, &data);
            let iterations = (1..=levels as u32).map(|l| n.pow(l)).sum::<usize>();
            if iterations > MAX_ITERATIONS {
                prop_assert!(r.is_err());
            } else if let Ok(r) = r {
                prop_assert_eq!(r.content["body"].as_str().unwrap().len(), n.pow(levels as u32));
            }
        }
    }
}
