//! Checking a template when it is saved: its shape, limits and the syntax
//! of every string, each problem named by the field's path.

use super::*;

/// How a template string is checked when saved.
#[derive(Debug, Clone, Copy)]
pub(super) struct Kind {
    /// Email HTML: values escaped, `{{{…}}}` refused.
    pub(super) html: bool,
    /// No line breaks or other control characters in the source.
    pub(super) one_line: bool,
    /// Most characters in the source, if less than [`MAX_FIELD_BYTES`].
    pub(super) max_chars: Option<usize>,
}

impl Kind {
    pub(super) const TEXT: Kind = Kind {
        html: false,
        one_line: false,
        max_chars: None,
    };
    pub(super) const HTML: Kind = Kind {
        html: true,
        ..Kind::TEXT
    };
    pub(super) const LINE: Kind = Kind {
        one_line: true,
        ..Kind::TEXT
    };
    pub(super) const SUBJECT: Kind = Kind {
        one_line: true,
        max_chars: Some(Subject::MAX_CHARS),
        ..Kind::TEXT
    };
    pub(super) const SMS: Kind = Kind {
        max_chars: Some(MAX_SMS_CHARS),
        ..Kind::TEXT
    };
}

pub(super) fn error(field: impl Into<String>, reason: impl Into<String>) -> FieldError {
    FieldError::new(field, reason)
}

/// Names the field a serde error is about: its path (which for an unknown
/// field is that field), plus the field a `missing field` message names.
pub(super) fn serde_error(e: serde_path_to_error::Error<serde_json::Error>) -> FieldError {
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

pub(super) fn json_size(value: &Value) -> usize {
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

pub(super) fn data_key_ok(k: &str) -> bool {
    (1..=64).contains(&k.len())
        && k.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// Why a requested locale is refused.
pub const LOCALE_REASON: &str = "is not a locale tag such as `en`, `en-US` or `pt-BR`";

/// Checks a locale a send asks its template to be rendered in: a tag that
/// [`canonical_locale`] reads, as rendering will.
pub fn requested_locale(raw: &str) -> Result<(), Invalid> {
    match canonical_locale(raw) {
        Some(_) => Ok(()),
        None => Err(Invalid(LOCALE_REASON.into())),
    }
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

pub(super) fn validate_locales(t: &TemplateInput, p: &mut Problems) {
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

pub(super) fn validate_channel(
    content: &LocaleContent,
    channel: Channel,
    base: &str,
    p: &mut Problems,
) {
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

pub(super) fn validate_whatsapp(w: &WhatsAppTemplate, base: &str, p: &mut Problems) {
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
            p.parse(format!("{base}.template_name"), name, whatsapp_template_name);
            match &w.language {
                None => p.add(format!("{base}.language"), "is required with `template_name`"),
                Some(l) => {
                    p.parse(format!("{base}.language"), l, WhatsAppLanguage::parse);
                }
            }
            if let Err(e) = whatsapp_parameter_count(w.parameters.len()) {
                p.add(format!("{base}.parameters"), e.0);
            }
        }
    }
}

/// Checks one template string's size and compiles it.
pub(super) fn check_source(source: &str, kind: Kind) -> Result<(), String> {
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
pub(super) fn compile(source: &str, html: bool) -> Result<Compiled, String> {
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

pub(super) fn check_elements(t: &Compiled, html: bool, depth: usize) -> Result<(), String> {
    t.elements
        .iter()
        .try_for_each(|e| check_element(e, html, depth))
}

pub(super) fn check_element(e: &TemplateElement, html: bool, depth: usize) -> Result<(), String> {
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

pub(super) fn check_helper(h: &HelperTemplate, html: bool, depth: usize) -> Result<(), String> {
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
