//! Properties of the parsers every caller reaches: none panics on any input
//! (NUL, long strings, any Unicode), and whatever one accepts keeps its
//! documented shape and parses again to itself.

use proptest::prelude::*;

use super::*;

/// Any text, biased towards what breaks parsers: NUL and other
/// control characters, whitespace, `@`, `+`, digits and long runs.
fn hostile() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[\\x00-\\x20+@.0-9a-z<>,\\[\\]\"\\\\]{0,40}",
        "\\+[0-9\\x00 ]{0,20}",
        "[a-z0-9.\\x00]{1,20}@[a-z0-9.\\x00-]{1,20}",
        (any::<char>(), 0..5000_usize).prop_map(|(c, n)| c.to_string().repeat(n)),
    ]
}

proptest! {
    #[test]
    fn emails_accepted_are_single_clean_addresses_that_parse_to_themselves(raw in hostile()) {
        if let Ok(e) = EmailAddress::parse(&raw) {
            let s = e.as_str();
            prop_assert!(s.len() <= EmailAddress::MAX_LEN);
            prop_assert!(!s.chars().any(|c| c.is_control() || c.is_whitespace()), "{s:?}");
            let (_, domain) = s.rsplit_once('@').expect("an @");
            prop_assert_eq!(domain, domain.to_ascii_lowercase());
            prop_assert_eq!(EmailAddress::parse(s), Ok(e.clone()));
        }
    }

    #[test]
    fn well_formed_emails_are_accepted(
        user in "[a-z0-9][a-z0-9._+-]{0,30}[a-z0-9]",
        host in "[a-z0-9]{1,20}",
        tld in "[a-z]{2,6}",
    ) {
        let raw = format!("{user}@{host}.{}", tld.to_ascii_uppercase());
        if !user.contains("..") {
            let e = EmailAddress::parse(&raw).unwrap();
            prop_assert_eq!(e.as_str(), format!("{user}@{host}.{tld}"));
        }
    }

    #[test]
    fn phones_accepted_are_e164(raw in hostile()) {
        if let Ok(p) = PhoneNumber::parse(&raw) {
            let digits = p.as_str().strip_prefix('+').expect("a leading +");
            prop_assert!((8..=15).contains(&digits.len()), "{p:?}");
            prop_assert!(digits.bytes().all(|b| b.is_ascii_digit()), "{p:?}");
            prop_assert!(!digits.starts_with('0'));
            prop_assert_eq!(PhoneNumber::parse(p.as_str()), Ok(p.clone()));
        }
    }

    #[test]
    fn every_e164_number_is_accepted(first in 1_u8..=9, rest in "[0-9]{7,14}", pad in " {0,3}") {
        let raw = format!("{pad}+{first}{rest}{pad}");
        let parsed = PhoneNumber::parse(&raw).unwrap();
        prop_assert_eq!(parsed.as_str(), raw.trim());
    }

    #[test]
    fn push_tokens_accepted_are_printable_ascii(raw in hostile()) {
        if let Ok(t) = PushToken::parse(&raw) {
            let s = t.as_str();
            prop_assert!(!s.is_empty() && s.chars().count() <= PushToken::MAX_LEN);
            prop_assert!(s.bytes().all(|b| b.is_ascii_graphic()), "{s:?}");
            prop_assert_eq!(s, raw.as_str(), "nothing is rewritten");
        }
    }

    #[test]
    fn external_ids_accepted_are_not_blank_and_have_no_control_characters(raw in hostile()) {
        if let Ok(id) = ExternalId::parse(&raw) {
            let s = id.as_str();
            prop_assert!(!s.trim().is_empty());
            prop_assert!(s.chars().count() <= ExternalId::MAX_CHARS);
            prop_assert!(!s.contains('\0') && !s.chars().any(char::is_control), "{s:?}");
            prop_assert_eq!(s, raw.as_str(), "nothing is rewritten");
        }
    }

    #[test]
    fn ids_parse_only_from_uuids_and_print_back(raw in hostile(), id in any::<u128>()) {
        let _ = raw.parse::<NotificationId>();
        let id = NotificationId(Uuid::from_u128(id));
        prop_assert_eq!(id.to_string().parse::<NotificationId>().unwrap(), id);
    }
}
