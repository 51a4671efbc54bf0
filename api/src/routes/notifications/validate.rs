//! Checking a send's fields: the recipient and content per channel, the
//! metadata, the WhatsApp template and the idempotency key, every problem
//! named.

use super::*;

/// A send that passed validation.
pub(super) struct ValidSend {
    pub(super) channel: Channel,
    /// The address, or the subscriber's external id.
    pub(super) recipient: String,
    /// The subscriber's external id, when the send names one.
    pub(super) subscriber: Option<String>,
    pub(super) content: Value,
    pub(super) category: Option<String>,
    pub(super) metadata: Value,
}

/// Collects every invalid field of a request.
#[derive(Default)]
pub(super) struct Problems(pub(super) Vec<InvalidParam>);

impl Problems {
    pub(super) fn add(&mut self, name: &str, reason: impl Into<String>) {
        self.0.push(InvalidParam {
            name: name.into(),
            reason: reason.into(),
        });
    }

    pub(super) fn required<'a>(
        &mut self,
        name: &str,
        value: &'a Option<String>,
    ) -> Option<&'a str> {
        if value.is_none() {
            self.add(name, "is required");
        }
        value.as_deref()
    }

    /// Flags every content field present in `req` that `channel` does not
    /// use.
    pub(super) fn only_fields_of(&mut self, req: &SendRequest, channel: &str, used: &[&str]) {
        for (name, present) in req.content_fields() {
            if present && !used.contains(&name) {
                self.add(name, format!("is not used by the {channel} channel"));
            }
        }
    }

    pub(super) fn object(&mut self, name: &str, value: &Option<Value>, max_keys: usize) -> Value {
        match value {
            None | Some(Value::Null) => Value::Object(Default::default()),
            Some(Value::Object(m)) if m.len() > max_keys => {
                self.add(name, format!("must have at most {max_keys} keys"));
                Value::Null
            }
            Some(v @ Value::Object(_)) => v.clone(),
            Some(_) => {
                self.add(name, "must be a JSON object");
                Value::Null
            }
        }
    }

    pub(super) fn text(
        &mut self,
        name: &str,
        value: &str,
        max_chars: usize,
        one_line: bool,
    ) -> Option<String> {
        if value.trim().is_empty() {
            self.add(name, "must not be empty");
        } else if value.chars().count() > max_chars {
            self.add(name, format!("must be at most {max_chars} characters"));
        } else if one_line && value.chars().any(char::is_control) {
            self.add(name, "must be one line without control characters");
        } else {
            return Some(value.to_owned());
        }
        None
    }
}

pub(super) fn action_url_ok(url: &str) -> bool {
    if url.len() > 2048 || url.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return false;
    }
    if url.starts_with('/') && !url.starts_with("//") {
        return true;
    }
    let lower = url.to_ascii_lowercase();
    (lower.starts_with("https://") || lower.starts_with("http://")) && url.len() > "https://".len()
}

/// Checks a WhatsApp template reference: a name, a language code and up to
/// 20 text parameters.
pub(super) fn whatsapp_template(p: &mut Problems, tpl: &Value) -> Option<Value> {
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
    let name_ok = !tpl.name.is_empty()
        && tpl.name.len() <= 512
        && tpl
            .name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if !name_ok {
        p.add(
            "whatsapp_template.name",
            "must be lower-case letters, digits and `_`",
        );
    }
    let lang_ok = (2..=15).contains(&tpl.language.len())
        && tpl
            .language
            .bytes()
            .all(|b| b.is_ascii_alphabetic() || b == b'_');
    if !lang_ok {
        p.add(
            "whatsapp_template.language",
            "must be a language code such as `en_US`",
        );
    }
    if tpl.parameters.len() > 20 {
        p.add("whatsapp_template.parameters", "at most 20");
    }
    for (i, param) in tpl.parameters.iter().enumerate() {
        if param.is_empty() || param.chars().count() > 1_024 {
            p.add(
                &format!("whatsapp_template.parameters[{i}]"),
                "must be 1 to 1024 characters",
            );
        }
    }
    (name_ok && lang_ok && tpl.parameters.len() <= 20).then(|| {
        serde_json::json!({
            "template_name": tpl.name,
            "language": tpl.language,
            "parameters": tpl.parameters,
        })
    })
}

pub(super) fn validate(req: &SendRequest) -> Result<ValidSend, ApiError> {
    let mut p = Problems::default();
    let category = req.category.as_ref().and_then(|c| {
        let ok = !c.is_empty()
            && c.len() <= 100
            && c.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        if !ok {
            p.add(
                "category",
                "must be 1 to 100 letters, digits, `.`, `_` or `-`",
            );
        }
        ok.then(|| c.clone())
    });
    let metadata = p.object("metadata", &req.metadata, MAX_METADATA_KEYS);
    let valid = match req.channel.as_deref().unwrap_or("email") {
        "email" => {
            p.only_fields_of(req, "email", &["to", "subject", "text", "html"]);
            let to = p
                .required("to", &req.to)
                .and_then(|to| EmailAddress::parse(to).map_err(|e| p.add("to", e.0)).ok());
            let subject = p
                .required("subject", &req.subject)
                .and_then(|s| Subject::parse(s).map_err(|e| p.add("subject", e.0)).ok());
            let subscriber = req
                .subscriber_id
                .as_deref()
                .and_then(|s| p.text("subscriber_id", s, 255, true));
            let non_empty =
                |s: &Option<String>| s.as_ref().filter(|s| !s.trim().is_empty()).cloned();
            let (text, html) = (non_empty(&req.text), non_empty(&req.html));
            if text.is_none() && html.is_none() {
                p.add("text", "`text` or `html` is required and must not be empty");
            }
            to.zip(subject).map(|(to, subject)| ValidSend {
                channel: Channel::Email,
                recipient: to.as_str().to_owned(),
                subscriber,
                content: serde_json::to_value(EmailContent {
                    subject: subject.as_str().to_owned(),
                    text,
                    html,
                })
                .unwrap_or_default(),
                category: category.clone(),
                metadata: metadata.clone(),
            })
        }
        "inapp" => {
            p.only_fields_of(req, "inapp", &["title", "body", "action_url", "data"]);
            let subscriber = p
                .required("subscriber_id", &req.subscriber_id)
                .and_then(|s| p.text("subscriber_id", s, 255, true));
            let title = p
                .required("title", &req.title)
                .and_then(|t| p.text("title", t, 200, true));
            let body = req
                .body
                .as_deref()
                .and_then(|b| p.text("body", b, 5_000, false));
            if let Some(url) = &req.action_url
                && !action_url_ok(url)
            {
                p.add(
                    "action_url",
                    "must be an http(s) URL or a path starting with `/`, at most 2048 characters",
                );
            }
            let data = p.object("data", &req.data, MAX_METADATA_KEYS);
            subscriber.zip(title).map(|(subscriber, title)| ValidSend {
                channel: Channel::InApp,
                recipient: subscriber.clone(),
                subscriber: Some(subscriber),
                content: serde_json::json!({"title": title, "body": body, "action_url": req.action_url, "data": data}),
                category: category.clone(),
                metadata: metadata.clone(),
            })
        }
        "sms" => {
            p.only_fields_of(req, "sms", &["to", "text"]);
            let to = p
                .required("to", &req.to)
                .and_then(|to| PhoneNumber::parse(to).map_err(|e| p.add("to", e.0)).ok());
            let text = p
                .required("text", &req.text)
                .and_then(|t| p.text("text", t, 1_600, false));
            let subscriber = req
                .subscriber_id
                .as_deref()
                .and_then(|s| p.text("subscriber_id", s, 255, true));
            to.zip(text).map(|(to, text)| ValidSend {
                channel: Channel::Sms,
                recipient: to.as_str().to_owned(),
                subscriber,
                content: serde_json::json!({"body": text}),
                category: category.clone(),
                metadata: metadata.clone(),
            })
        }
        "push" => {
            p.only_fields_of(req, "push", &["to", "title", "body", "data"]);
            let to = p.required("to", &req.to).and_then(|t| {
                let ok =
                    !t.is_empty() && t.len() <= 4096 && t.bytes().all(|b| b.is_ascii_graphic());
                if !ok {
                    p.add(
                        "to",
                        "must be a device registration token (1 to 4096 printable characters)",
                    );
                }
                ok.then(|| t.to_owned())
            });
            let title = p
                .required("title", &req.title)
                .and_then(|t| p.text("title", t, 200, true));
            let body = req
                .body
                .as_deref()
                .and_then(|b| p.text("body", b, 5_000, false));
            let data = p.object("data", &req.data, MAX_METADATA_KEYS);
            if let Value::Object(m) = &data
                && m.values().any(|v| !v.is_string())
            {
                p.add("data", "push data values must be strings");
            }
            let subscriber = req
                .subscriber_id
                .as_deref()
                .and_then(|s| p.text("subscriber_id", s, 255, true));
            to.zip(title).map(|(to, title)| ValidSend {
                channel: Channel::Push,
                recipient: to,
                subscriber,
                content: serde_json::json!({"title": title, "body": body, "data": data}),
                category: category.clone(),
                metadata: metadata.clone(),
            })
        }
        "whatsapp" => {
            p.only_fields_of(req, "whatsapp", &["to", "text", "whatsapp_template"]);
            let to = p
                .required("to", &req.to)
                .and_then(|to| PhoneNumber::parse(to).map_err(|e| p.add("to", e.0)).ok());
            let content = match (&req.text, &req.whatsapp_template) {
                (Some(t), None) => p
                    .text("text", t, 4_096, false)
                    .map(|t| serde_json::json!({"text": t})),
                (None, Some(tpl)) => whatsapp_template(&mut p, tpl),
                _ => {
                    p.add(
                        "text",
                        "exactly one of `text` and `whatsapp_template` is required",
                    );
                    None
                }
            };
            let subscriber = req
                .subscriber_id
                .as_deref()
                .and_then(|s| p.text("subscriber_id", s, 255, true));
            to.zip(content).map(|(to, content)| ValidSend {
                channel: Channel::WhatsApp,
                recipient: to.as_str().to_owned(),
                subscriber,
                content,
                category: category.clone(),
                metadata: metadata.clone(),
            })
        }
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
        Some(v) if p.0.is_empty() => Ok(v),
        _ => Err(ApiError::Invalid(p.0)),
    }
}

/// Checks an `Idempotency-Key` header: 1 to 255 printable ASCII characters
/// without spaces. Every route that honours the key uses this one.
pub(crate) fn idempotency_key(raw: Option<String>) -> Result<Option<String>, ApiError> {
    match raw {
        None => Ok(None),
        Some(k) if k.is_empty() || k.len() > MAX_IDEMPOTENCY_KEY_LEN => Err(ApiError::BadHeader(
            "Idempotency-Key",
            "must be 1 to 255 characters",
        )),
        Some(k) if !k.bytes().all(|b| b.is_ascii_graphic()) => Err(ApiError::BadHeader(
            "Idempotency-Key",
            "must be printable ASCII without spaces",
        )),
        Some(k) => Ok(Some(k)),
    }
}

/// `Idempotency-Key` properties: any header value is accepted or refused
/// without a panic, and what is accepted is 1 to 255 printable ASCII
/// characters (no NUL, no spaces), unchanged.
#[cfg(test)]
mod idempotency_key_properties {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #[test]
        fn accepted_keys_are_short_printable_ascii(raw in prop_oneof![
            any::<String>(),
            "[ -~\\x00]{0,300}",
            "[!-~]{250,260}",
        ]) {
            if let Ok(Some(key)) = idempotency_key(Some(raw.clone())) {
                prop_assert!((1..=255).contains(&key.len()));
                prop_assert!(key.bytes().all(|b| b.is_ascii_graphic()), "{key:?}");
                prop_assert_eq!(key, raw);
            }
        }
    }
}
