//! Checks on everything a caller sends that apply to every route, made once
//! at the edge ([`crate::middleware`]) so no handler can forget them.
//!
//! Postgres `text` and `jsonb` cannot hold the NUL character, so a NUL that
//! reached a query would fail it with a 500. It never means anything in this
//! platform's data either, so a request carrying one anywhere — the path, a
//! query parameter, a JSON string or key at any depth, a form field — is
//! refused with a 400 that names where it was. Headers cannot carry one (the
//! HTTP parser refuses control characters), and the CSV upload, which is
//! streamed past the edge, checks its form fields and reports NULs in its
//! rows as row errors.

use serde_json::Value;

use crate::error::ApiError;

/// Why a value is refused.
pub const NUL_REASON: &str = "must not contain NUL characters (U+0000)";

/// Refuses a request whose path, query string or body carries a NUL.
/// `body` is the whole body when the edge has read it; `content_type` its
/// media type.
pub fn refuse_nul(
    path: &str,
    query: Option<&str>,
    content_type: Option<&str>,
    body: Option<&[u8]>,
) -> Result<(), ApiError> {
    if decodes_to_nul(path.as_bytes()) {
        return Err(ApiError::invalid("path", NUL_REASON));
    }
    if let Some(query) = query {
        check_form(query.as_bytes(), "query")?;
    }
    let (Some(body), Some(content_type)) = (body, content_type) else {
        return Ok(());
    };
    let media = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    if media == "application/json" || media.ends_with("+json") {
        check_json(body)
    } else if media == "application/x-www-form-urlencoded" {
        check_form(body, "body")
    } else {
        Ok(())
    }
}

/// Whether percent-decoding `raw` yields a NUL byte.
fn decodes_to_nul(raw: &[u8]) -> bool {
    raw.contains(&0)
        || raw
            .windows(3)
            .any(|w| w[0] == b'%' && w[1] == b'0' && w[2] == b'0')
}

/// A `key=value&…` string (a query or a form body): names the first
/// parameter that carries a NUL, as `{place}.{key}`.
fn check_form(raw: &[u8], place: &str) -> Result<(), ApiError> {
    if !decodes_to_nul(raw) {
        return Ok(());
    }
    for (key, value) in url::form_urlencoded::parse(raw) {
        if key.contains('\0') {
            return Err(ApiError::invalid(
                format!("{place} parameter name"),
                NUL_REASON,
            ));
        }
        if value.contains('\0') {
            return Err(ApiError::invalid(format!("{place}.{key}"), NUL_REASON));
        }
    }
    Ok(())
}

/// A JSON body: the only way to write a NUL in valid JSON is the escape
/// `\u0000`, so bodies without that sequence pass without being parsed
/// here. Otherwise the first string or key holding a NUL is named by its
/// path (`recipients[3].data.name`). A body that is not JSON at all is left
/// to the handler, which says so.
fn check_json(body: &[u8]) -> Result<(), ApiError> {
    if !contains(body, b"\\u0000") {
        return Ok(());
    }
    let Ok(value) = serde_json::from_slice::<Value>(body) else {
        return Ok(());
    };
    match nul_path(&value, String::new()) {
        Some(path) => Err(ApiError::invalid(path, NUL_REASON)),
        None => Ok(()),
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

fn nul_path(value: &Value, at: String) -> Option<String> {
    let name = |at: &str| {
        if at.is_empty() {
            "body".to_owned()
        } else {
            at.to_owned()
        }
    };
    match value {
        Value::String(s) if s.contains('\0') => Some(name(&at)),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .find_map(|(i, v)| nul_path(v, format!("{at}[{i}]"))),
        Value::Object(map) => map.iter().find_map(|(k, v)| {
            if k.contains('\0') {
                return Some(format!("{} (a key)", name(&at)));
            }
            let next = if at.is_empty() {
                k.clone()
            } else {
                format!("{at}.{k}")
            };
            nul_path(v, next)
        }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn named(r: Result<(), ApiError>) -> Option<String> {
        match r {
            Err(ApiError::Invalid(p)) => Some(p[0].name.clone()),
            Err(other) => panic!("unexpected {other:?}"),
            Ok(()) => None,
        }
    }

    #[test]
    fn a_nul_anywhere_in_a_json_body_is_named_by_its_path() {
        let body = br#"{"to":"a@b.co","metadata":{"k":"v\u0000"},"list":[1,{"x":"ok"}]}"#;
        let name = named(refuse_nul("/x", None, Some("application/json"), Some(body)));
        assert_eq!(name.as_deref(), Some("metadata.k"));
        let key = br#"{"metadata":{"a\u0000b":"v"}}"#;
        let name = named(refuse_nul(
            "/x",
            None,
            Some("application/json; charset=utf-8"),
            Some(key),
        ));
        assert_eq!(name.as_deref(), Some("metadata (a key)"));
        let nested = br#"{"subscribers":[{"id":"a"},{"data":{"n":["ok","\u0000"]}}]}"#;
        let name = named(refuse_nul(
            "/x",
            None,
            Some("application/json"),
            Some(nested),
        ));
        assert_eq!(name.as_deref(), Some("subscribers[1].data.n[1]"));
    }

    #[test]
    fn an_escaped_backslash_before_u0000_is_not_a_nul() {
        let body = br#"{"text":"a literal \\u0000 is fine"}"#;
        assert_eq!(
            named(refuse_nul("/x", None, Some("application/json"), Some(body))),
            None
        );
    }

    #[test]
    fn nul_in_the_path_query_or_form_is_refused() {
        assert_eq!(
            named(refuse_nul("/subscribers/a%00b", None, None, None)).as_deref(),
            Some("path")
        );
        assert_eq!(
            named(refuse_nul(
                "/invitations",
                Some("email=%00x&limit=5"),
                None,
                None
            ))
            .as_deref(),
            Some("query.email")
        );
        assert_eq!(
            named(refuse_nul(
                "/webhooks/twilio/x",
                None,
                Some("application/x-www-form-urlencoded"),
                Some(b"MessageSid=SM1&MessageStatus=deliv%00ered")
            ))
            .as_deref(),
            Some("body.MessageStatus")
        );
        assert_eq!(
            named(refuse_nul("/ok", Some("cursor=abc%20"), None, None)),
            None
        );
    }
}

/// The time a page cursor's microseconds name, if Postgres can store it
/// (years 1 to 9999): a forged cursor beyond that is refused by its route
/// as not one it issued, not failed by the database.
pub fn cursor_time(micros: i64) -> Option<chrono::DateTime<chrono::Utc>> {
    const FIRST: i64 = -62_135_596_800_000_000;
    const LAST: i64 = 253_402_300_799_999_999;
    (FIRST..=LAST)
        .contains(&micros)
        .then(|| chrono::DateTime::from_timestamp_micros(micros))
        .flatten()
}

#[cfg(test)]
mod cursor_tests {
    use super::cursor_time;

    #[test]
    fn cursor_times_postgres_cannot_store_are_refused() {
        assert!(cursor_time(0).is_some());
        assert!(cursor_time(253_402_300_799_999_999).is_some());
        assert!(cursor_time(-62_135_596_800_000_000).is_some());
        assert!(cursor_time(-1_126_614_129_690_507_669).is_none());
        assert!(cursor_time(253_402_300_800_000_000).is_none());
        assert!(cursor_time(i64::MIN).is_none());
    }
}
