//! Small rules more than one endpoint applies: one-line text, resource
//! keys, categories, in-app links, `Idempotency-Key` headers and CSV cells
//! written for spreadsheets. Each is written here once.

use super::Invalid;

/// A non-blank text of at most `max_chars` characters, on one line (no line
/// breaks or other control characters).
pub fn one_line_ok(s: &str, max_chars: usize) -> bool {
    !s.trim().is_empty() && s.chars().count() <= max_chars && !s.chars().any(char::is_control)
}

/// A resource key (templates, topics, workflows): 1 to 100 lower-case
/// letters, digits, `.`, `_` or `-`, starting with a letter or digit.
pub fn key_ok(key: &str) -> bool {
    let b = key.as_bytes();
    (1..=100).contains(&b.len())
        && (b[0].is_ascii_lowercase() || b[0].is_ascii_digit())
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || b"._-".contains(c))
}

/// A notification's category: 1 to 100 letters, digits, `.`, `_` or `-`.
pub fn category_ok(c: &str) -> bool {
    (1..=100).contains(&c.len())
        && c.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// Why a category is refused.
pub const CATEGORY_REASON: &str = "must be 1 to 100 letters, digits, `.`, `_` or `-`";

/// Longest in-app `action_url`.
pub const MAX_ACTION_URL_LEN: usize = 2048;

/// Why an `action_url` is refused.
pub const ACTION_URL_REASON: &str =
    "must be an http(s) URL or a path starting with `/`, at most 2048 characters";

/// Whether an in-app `action_url` is a link the app may follow: an
/// `http(s)://` URL or a path on the app's own origin (not `//host`), at
/// most [`MAX_ACTION_URL_LEN`] bytes, without spaces or control characters.
pub fn action_url_ok(url: &str) -> bool {
    if url.len() > MAX_ACTION_URL_LEN || url.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return false;
    }
    if url.starts_with('/') && !url.starts_with("//") {
        return true;
    }
    let lower = url.to_ascii_lowercase();
    (lower.starts_with("https://") || lower.starts_with("http://")) && url.len() > "https://".len()
}

/// Longest `Idempotency-Key`.
pub const MAX_IDEMPOTENCY_KEY_LEN: usize = 255;

/// Checks an `Idempotency-Key` header value: 1 to
/// [`MAX_IDEMPOTENCY_KEY_LEN`] printable ASCII characters without spaces.
/// The reason is static so it can be answered as a header problem.
pub fn idempotency_key_ok(key: &str) -> Result<(), &'static str> {
    if key.is_empty() || key.len() > MAX_IDEMPOTENCY_KEY_LEN {
        Err("must be 1 to 255 characters")
    } else if !key.bytes().all(|b| b.is_ascii_graphic()) {
        Err("must be printable ASCII without spaces")
    } else {
        Ok(())
    }
}

/// Checks a workflow run's `cancellation_key`: 1 to 255 bytes without
/// control characters.
pub fn cancellation_key(key: &str) -> Result<(), Invalid> {
    if key.is_empty() || key.len() > 255 || key.chars().any(char::is_control) {
        Err(Invalid(
            "must be 1 to 255 characters without control characters".into(),
        ))
    } else {
        Ok(())
    }
}

/// When [`csv_cell`] puts a cell in quotes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CsvQuoting {
    /// Every cell.
    Always,
    /// Only a cell holding `,`, `"`, CR or LF.
    Needed,
}

/// One CSV cell for a file a person may open in a spreadsheet: a leading
/// `=`, `+`, `-`, `@`, tab or carriage return gets a `'` so the cell shows
/// as text instead of running as a formula; then CSV quoting.
pub fn csv_cell(value: &str, quoting: CsvQuoting) -> String {
    let guarded = match value.chars().next() {
        Some('=' | '+' | '-' | '@' | '\t' | '\r') => format!("'{value}"),
        _ => value.to_owned(),
    };
    if quoting == CsvQuoting::Always || guarded.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", guarded.replace('"', "\"\""))
    } else {
        guarded
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_texts_are_non_blank_bounded_and_single_line() {
        assert!(one_line_ok("Ward 3", 6));
        assert!(one_line_ok("ééé", 3));
        for bad in ["", "  ", "a\nb", "a\tb", "1234567"] {
            assert!(!one_line_ok(bad, 6), "{bad:?}");
        }
    }

    #[test]
    fn keys_and_categories() {
        assert!(key_ok("appointment.reminder-2_b"));
        assert!(key_ok(&"k".repeat(100)));
        for bad in ["", ".a", "A", "a b", &"k".repeat(101)] {
            assert!(!key_ok(bad), "{bad:?}");
        }
        assert!(category_ok("Billing.Reminders_2-b"));
        for bad in ["", "a b", "é", &"c".repeat(101)] {
            assert!(!category_ok(bad), "{bad:?}");
        }
    }

    #[test]
    fn action_urls_are_http_links_or_own_paths() {
        for ok in ["/inbox/1", "https://example.org/x", "HTTP://example.org"] {
            assert!(action_url_ok(ok), "{ok}");
        }
        let long = format!("/{}", "a".repeat(2048));
        for bad in [
            "//evil.org",
            "javascript:alert(1)",
            "https://",
            "/a b",
            "/a\nb",
            "ftp://x.org",
            long.as_str(),
        ] {
            assert!(!action_url_ok(bad), "{bad}");
        }
    }

    #[test]
    fn idempotency_keys_are_short_printable_ascii() {
        assert!(idempotency_key_ok("first-try").is_ok());
        assert!(idempotency_key_ok(&"k".repeat(255)).is_ok());
        assert_eq!(idempotency_key_ok(""), Err("must be 1 to 255 characters"));
        assert_eq!(
            idempotency_key_ok(&"k".repeat(256)),
            Err("must be 1 to 255 characters")
        );
        for bad in ["a b", "a\0b", "é"] {
            assert_eq!(
                idempotency_key_ok(bad),
                Err("must be printable ASCII without spaces"),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn cancellation_keys_are_short_single_lines() {
        assert!(cancellation_key("alert-8812").is_ok());
        assert!(cancellation_key(&"k".repeat(255)).is_ok());
        for bad in [String::new(), "a\nb".into(), "k".repeat(256)] {
            assert!(cancellation_key(&bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn csv_cells_neutralise_formulas_and_quote() {
        use CsvQuoting::{Always, Needed};
        assert_eq!(
            csv_cell("=HYPERLINK(\"x\")", Needed),
            "\"'=HYPERLINK(\"\"x\"\")\""
        );
        assert_eq!(csv_cell("+1", Needed), "'+1");
        assert_eq!(csv_cell("-2", Needed), "'-2");
        assert_eq!(csv_cell("@SUM(A1)", Needed), "'@SUM(A1)");
        assert_eq!(csv_cell("\tx", Needed), "'\tx");
        assert_eq!(csv_cell("\rx", Needed), "\"'\rx\"");
        assert_eq!(csv_cell("plain", Needed), "plain");
        assert_eq!(csv_cell("a,b", Needed), "\"a,b\"");
        assert_eq!(csv_cell("plain", Always), "\"plain\"");
        assert_eq!(csv_cell("+1", Always), "\"'+1\"");
        assert_eq!(
            csv_cell("=HYPERLINK(\"x\")", Always),
            "\"'=HYPERLINK(\"\"x\"\")\""
        );
    }
}
