use super::*;

#[test]
fn email_addresses_are_parsed_strictly() {
    assert_eq!(
        EmailAddress::parse(" Pat@Example.ORG ").unwrap().as_str(),
        "Pat@example.org"
    );
    for bad in [
        "",
        "no-at-sign",
        "a@b",
        "two@a.org,three@b.org",
        "Pat <pat@example.org>",
        "pat@exa mple.org",
        "pat@example.org\r\nBcc: x@evil.org",
        "@example.org",
    ] {
        assert!(
            EmailAddress::parse(bad).is_err(),
            "{bad:?} must be rejected"
        );
    }
    let long = format!("{}@example.org", "a".repeat(250));
    assert!(EmailAddress::parse(&long).is_err());
}

#[test]
fn subscriber_fields_are_parsed_strictly() {
    assert_eq!(
        ExternalId::parse("patient 42").unwrap().as_str(),
        "patient 42"
    );
    for bad in [String::new(), "  ".into(), "a\nb".into(), "x".repeat(256)] {
        assert!(ExternalId::parse(&bad).is_err(), "{bad:?} must be rejected");
    }
    assert!(ExternalId::parse(&"é".repeat(255)).is_ok());

    assert!(PushToken::parse(&"t".repeat(4096)).is_ok());
    assert!(PushToken::parse("fcm:APA91b-x_y").is_ok());
    for bad in [
        String::new(),
        "a b".into(),
        "a\tb".into(),
        "t".repeat(4097),
        "tökén".into(),
        "a\u{a0}b".into(),
    ] {
        assert!(PushToken::parse(&bad).is_err(), "{bad:?} must be rejected");
    }
    assert_eq!(
        format!("{:?}", PushToken::parse("secret").unwrap()),
        "PushToken(..)"
    );

    for (raw, tag) in [
        ("en", "en"),
        ("en-us", "en-US"),
        ("ES-419", "es-419"),
        ("zh-hant-tw", "zh-Hant-TW"),
    ] {
        assert_eq!(Locale::parse(raw).unwrap().as_str(), tag);
    }
    for bad in [
        "",
        "e",
        "en_US",
        "en-",
        "-en",
        "en--US",
        "en-US-toolongsubtag",
        "1a",
        "en US",
    ] {
        assert!(Locale::parse(bad).is_err(), "{bad:?} must be rejected");
    }

    assert!(PersonName::parse("Ada").is_ok());
    for bad in [
        String::new(),
        " ".into(),
        "A\u{7}da".into(),
        "a".repeat(201),
    ] {
        assert!(PersonName::parse(&bad).is_err(), "{bad:?} must be rejected");
    }

    assert_eq!(
        parse_time_zone("America/Chicago").unwrap().name(),
        "America/Chicago"
    );
    for bad in ["", "Mars/Olympus", "america/chicago", "+02:00"] {
        assert!(parse_time_zone(bad).is_err(), "{bad:?} must be rejected");
    }
}

#[test]
fn subjects_cannot_carry_headers() {
    assert!(Subject::parse("Your results are ready").is_ok());
    assert_eq!(
        Subject::parse("Hi\r\nBcc: x@evil.org").unwrap_err().0,
        "must not contain CR or LF"
    );
    assert!(Subject::parse("Hi\nthere").is_err());
    assert!(Subject::parse("   ").is_err());
    assert!(Subject::parse(&"x".repeat(999)).is_err());
}

#[test]
fn provider_reports_only_move_a_notification_forward() {
    use DeliveryReport as R;
    use NotificationStatus as S;
    let reports = [R::Delivered, R::Read, R::Bounced, R::Failed];
    let moves = |from: S| -> Vec<(R, Option<S>)> {
        reports.iter().map(|&r| (r, from.after_report(r))).collect()
    };
    assert_eq!(
        moves(S::Sent),
        [
            (R::Delivered, Some(S::Delivered)),
            (R::Read, Some(S::Read)),
            (R::Bounced, Some(S::Bounced)),
            (R::Failed, Some(S::Failed)),
        ]
    );
    assert_eq!(
        moves(S::Delivered),
        [
            (R::Delivered, None),
            (R::Read, Some(S::Read)),
            (R::Bounced, Some(S::Bounced)),
            (R::Failed, Some(S::Failed)),
        ],
        "a repeated delivered report changes nothing"
    );
    for from in [
        S::Queued,
        S::Deferred,
        S::Sending,
        S::Read,
        S::Failed,
        S::Bounced,
        S::Suppressed,
        S::Cancelled,
    ] {
        assert!(
            moves(from).iter().all(|(_, to)| to.is_none()),
            "nothing moves a {from:?} notification"
        );
    }
    // Whatever a report moves to is the status it names, and never back
    // to an earlier one.
    let rank = |s: S| S::ALL.iter().position(|x| *x == s).unwrap();
    for &from in S::ALL {
        for &r in &reports {
            if let Some(to) = from.after_report(r) {
                assert_eq!(to, r.status());
                assert!(rank(to) > rank(from), "{from:?} -> {to:?}");
            }
        }
    }
}

#[test]
fn every_status_has_a_distinct_name() {
    let names: std::collections::HashSet<_> =
        NotificationStatus::ALL.iter().map(|s| s.as_str()).collect();
    assert_eq!(names.len(), 10);
}
