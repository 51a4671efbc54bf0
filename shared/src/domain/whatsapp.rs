//! The parts of a WhatsApp template message (an approved template named by
//! name and language, filled with body parameters), checked the way the
//! WhatsApp Cloud API expects them. Direct sends, templates, batches and CSV
//! jobs all use these.

use std::fmt;

use serde::Serialize;

use super::Invalid;

/// Most body parameters of one WhatsApp template message. The Cloud API
/// publishes no count of its own (a message must carry exactly as many as
/// its approved template has, and a body is at most 1,024 characters); this
/// bound is the one stored templates were saved under.
pub const MAX_WHATSAPP_PARAMETERS: usize = 50;

/// Longest body parameter, in characters: a template body's own limit.
pub const MAX_WHATSAPP_PARAMETER_CHARS: usize = 1_024;

/// Longest approved template name.
pub const MAX_WHATSAPP_TEMPLATE_NAME_LEN: usize = 512;

/// An approved template's language code as WhatsApp writes it: a 2 or 3
/// letter lower-case language, optionally `_` and a 2 letter upper-case
/// region (`en`, `en_US`, `pt_BR`, `fil`, `prs_AF`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct WhatsAppLanguage(String);

impl WhatsAppLanguage {
    /// Parses a code exactly: nothing is trimmed or re-cased, since WhatsApp
    /// matches the code to the template it approved.
    pub fn parse(raw: &str) -> Result<Self, Invalid> {
        let (lang, region) = match raw.split_once('_') {
            Some((lang, region)) => (lang, Some(region)),
            None => (raw, None),
        };
        let ok = (2..=3).contains(&lang.len())
            && lang.bytes().all(|b| b.is_ascii_lowercase())
            && region.is_none_or(|r| r.len() == 2 && r.bytes().all(|b| b.is_ascii_uppercase()));
        if ok {
            Ok(Self(raw.to_owned()))
        } else {
            Err(Invalid(
                "must be a WhatsApp language code such as `en` or `en_US`".into(),
            ))
        }
    }

    /// The code as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for WhatsAppLanguage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Checks an approved template's name: 1 to
/// [`MAX_WHATSAPP_TEMPLATE_NAME_LEN`] lower-case letters, digits or `_`.
pub fn whatsapp_template_name(raw: &str) -> Result<(), Invalid> {
    let ok = (1..=MAX_WHATSAPP_TEMPLATE_NAME_LEN).contains(&raw.len())
        && raw
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(Invalid(format!(
            "must be the approved template's name: 1 to {MAX_WHATSAPP_TEMPLATE_NAME_LEN} lower-case letters, digits or `_`"
        )))
    }
}

/// Checks how many body parameters a message has.
pub fn whatsapp_parameter_count(count: usize) -> Result<(), Invalid> {
    if count > MAX_WHATSAPP_PARAMETERS {
        Err(Invalid(format!(
            "must have at most {MAX_WHATSAPP_PARAMETERS} parameters"
        )))
    } else {
        Ok(())
    }
}

/// Checks one body parameter's value: not blank, at most
/// [`MAX_WHATSAPP_PARAMETER_CHARS`] characters, and on one line (WhatsApp
/// refuses parameters with line breaks or tabs).
pub fn whatsapp_parameter(value: &str) -> Result<(), Invalid> {
    if value.trim().is_empty() {
        Err(Invalid("must not be empty".into()))
    } else if value.chars().count() > MAX_WHATSAPP_PARAMETER_CHARS {
        Err(Invalid(format!(
            "must be at most {MAX_WHATSAPP_PARAMETER_CHARS} characters"
        )))
    } else if value.chars().any(char::is_control) {
        Err(Invalid(
            "must be one line: WhatsApp refuses line breaks and tabs in parameters".into(),
        ))
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn language_codes_are_whatsapps_own() {
        for ok in ["en", "en_US", "pt_BR", "fil", "prs_AF", "zh_TW"] {
            assert_eq!(WhatsAppLanguage::parse(ok).unwrap().as_str(), ok);
        }
        for bad in [
            "", "e", "english", "en_us", "EN", "en-US", "en_USA", "en_", "_US", "en_US_x", " en",
            "enu_", "é",
        ] {
            let e = WhatsAppLanguage::parse(bad).unwrap_err();
            assert!(e.0.contains("`en_US`"), "{bad:?}: {e}");
        }
    }

    #[test]
    fn template_names_are_lower_case_letters_digits_and_underscores() {
        assert!(whatsapp_template_name("appointment_reminder_2").is_ok());
        assert!(whatsapp_template_name(&"a".repeat(512)).is_ok());
        for bad in [
            String::new(),
            "Reminder".into(),
            "a-b".into(),
            "a b".into(),
            "a".repeat(513),
        ] {
            assert!(whatsapp_template_name(&bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn parameters_are_bounded_in_count_and_length() {
        assert!(whatsapp_parameter_count(MAX_WHATSAPP_PARAMETERS).is_ok());
        assert_eq!(
            whatsapp_parameter_count(MAX_WHATSAPP_PARAMETERS + 1)
                .unwrap_err()
                .0,
            "must have at most 50 parameters"
        );
        assert!(whatsapp_parameter("Pat").is_ok());
        assert!(whatsapp_parameter(&"é".repeat(1_024)).is_ok());
        for bad in [
            String::new(),
            " ".into(),
            "a\nb".into(),
            "a\tb".into(),
            "x".repeat(1_025),
        ] {
            assert!(whatsapp_parameter(&bad).is_err(), "{bad:?}");
        }
    }
}
