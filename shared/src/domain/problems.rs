//! [`Problems`]: every invalid field of one request, collected so a caller
//! hears about all of them at once (the api answers them as problem+json
//! `invalid_params`).

use serde_json::Value;

use super::{Invalid, one_line_ok};

/// One invalid field: its path and why it was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct FieldError {
    /// The field's path, e.g. `locales.fr.email.subject` or
    /// `recipients[3].email`.
    pub field: String,
    /// Why it was refused.
    pub reason: String,
}

impl FieldError {
    /// A field error.
    pub fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

/// Collects every invalid field of a request.
#[derive(Debug, Default)]
pub struct Problems(pub Vec<FieldError>);

impl Problems {
    /// Records that `field` is invalid.
    pub fn add(&mut self, field: impl Into<String>, reason: impl Into<String>) {
        self.0.push(FieldError::new(field, reason));
    }

    /// Whether nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// How many problems were recorded.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// `Ok(value)` when nothing was recorded, else every problem.
    pub fn into_result<T>(self, value: T) -> Result<T, Vec<FieldError>> {
        if self.0.is_empty() {
            Ok(value)
        } else {
            Err(self.0)
        }
    }

    /// Parses `raw` with `parse`, recording why it does not parse.
    pub fn parse<T>(
        &mut self,
        field: impl Into<String>,
        raw: &str,
        parse: impl FnOnce(&str) -> Result<T, Invalid>,
    ) -> Option<T> {
        parse(raw).map_err(|e| self.add(field, e.0)).ok()
    }

    /// Parses an optional field, recording why it does not parse.
    pub fn opt<T>(
        &mut self,
        field: impl Into<String>,
        raw: Option<&str>,
        parse: impl FnOnce(&str) -> Result<T, Invalid>,
    ) -> Option<T> {
        raw.and_then(|v| self.parse(field, v, parse))
    }

    /// The value of a required field, recording it as missing when absent.
    pub fn required<'a>(&mut self, field: &str, value: &'a Option<String>) -> Option<&'a str> {
        if value.is_none() {
            self.add(field, "is required");
        }
        value.as_deref()
    }

    /// A non-blank text of at most `max_chars` characters; with `one_line`
    /// also without line breaks or other control characters.
    pub fn text(
        &mut self,
        field: &str,
        value: &str,
        max_chars: usize,
        one_line: bool,
    ) -> Option<String> {
        if value.trim().is_empty() {
            self.add(field, "must not be empty");
        } else if value.chars().count() > max_chars {
            self.add(field, format!("must be at most {max_chars} characters"));
        } else if one_line && !one_line_ok(value, max_chars) {
            self.add(field, "must be one line without control characters");
        } else {
            return Some(value.to_owned());
        }
        None
    }

    /// A JSON object of at most `max_keys` keys; absent or `null` is the
    /// empty object. `Value::Null` when it is refused.
    pub fn object(&mut self, field: &str, value: Option<&Value>, max_keys: usize) -> Value {
        match value {
            None | Some(Value::Null) => Value::Object(Default::default()),
            Some(Value::Object(m)) if m.len() > max_keys => {
                self.add(field, format!("must have at most {max_keys} keys"));
                Value::Null
            }
            Some(v @ Value::Object(_)) => v.clone(),
            Some(_) => {
                self.add(field, "must be a JSON object");
                Value::Null
            }
        }
    }
}

impl From<Problems> for Vec<FieldError> {
    fn from(p: Problems) -> Self {
        p.0
    }
}
