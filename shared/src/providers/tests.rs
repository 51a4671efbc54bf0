use serde_json::json;

use super::*;

#[test]
fn twilio_configs_are_checked_field_by_field() {
    let ok = ProviderSpec::parse(
        ProviderKind::Twilio,
        &json!({"account_sid": format!("AC{}", "a".repeat(32)), "from": "+15005550006"}),
        &json!({"auth_token": "0123456789abcdef0123456789abcdef"}),
    )
    .unwrap();
    assert_eq!(ok.kind(), ProviderKind::Twilio);
    let names = |r: Result<ProviderSpec, Vec<FieldProblem>>| {
        r.unwrap_err()
            .into_iter()
            .map(|(n, _)| n)
            .collect::<Vec<_>>()
    };
    assert_eq!(
        names(ProviderSpec::parse(
            ProviderKind::Twilio,
            &json!({"account_sid": "AC1", "from": "555", "rate_per_sec": 0}),
            &json!({"auth_token": "has space"}),
        )),
        [
            "settings.rate_per_sec",
            "settings.account_sid",
            "settings.from",
            "credentials.auth_token"
        ]
    );
    assert_eq!(
        names(ProviderSpec::parse(
            ProviderKind::Twilio,
            &json!({"account_sid": format!("AC{}", "a".repeat(32)), "from": "+15005550006", "url": "http://169.254.169.254"}),
            &json!({"auth_token": "x"}),
        )),
        ["settings.url"],
        "unknown fields (a tenant-chosen address) are refused"
    );
}

#[test]
fn masks_never_show_more_than_four_characters() {
    let masked = mask(&json!({
        "api_key": "SG.abcdefghijklmnopqrstuvwxyz",
        "auth_token": "short",
        "private_key": "-----BEGIN PRIVATE KEY-----\nMIIE...\n-----END PRIVATE KEY-----\n",
    }));
    assert_eq!(
        masked,
        json!({"api_key": "••••wxyz", "auth_token": "••••", "private_key": "••••"})
    );
}

#[test]
fn callback_secrets_are_checked_and_masked() {
    use base64::Engine;
    use p256::pkcs8::EncodePublicKey;
    let signing = p256::ecdsa::SigningKey::from_slice(&[9u8; 32]).unwrap();
    let der = signing.verifying_key().to_public_key_der().unwrap();
    let key = base64::engine::general_purpose::STANDARD.encode(der.as_bytes());
    let sendgrid = |key: &str| {
        ProviderSpec::parse(
            ProviderKind::SendGrid,
            &json!({"from_email": "care@clinic.example.org", "webhook_public_key": key}),
            &json!({"api_key": "SG.abcdefghijklmnopqrstuvwxyz"}),
        )
    };
    let spec = sendgrid(&key).unwrap();
    assert_eq!(spec.settings()["webhook_public_key"], key.as_str());
    for bad in ["not a key", "bm90IGEga2V5", &"A".repeat(5000)] {
        let problems = sendgrid(bad).unwrap_err();
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].0, "settings.webhook_public_key");
    }

    let whatsapp = |token: &str| {
        ProviderSpec::parse(
            ProviderKind::WhatsApp,
            &json!({"phone_number_id": "1234567890"}),
            &json!({"access_token": "EAAtoken0123456789", "app_secret": "0123456789abcdef", "verify_token": token}),
        )
    };
    let spec = whatsapp("verify-0123456789").unwrap();
    assert_eq!(
        mask(&spec.credentials().unwrap())["verify_token"],
        "••••6789"
    );
    assert_eq!(
        whatsapp("has space").unwrap_err()[0].0,
        "credentials.verify_token"
    );
}

#[test]
fn ups_configs_need_client_credentials_and_are_masked() {
    let spec = ProviderSpec::parse(
        ProviderKind::Ups,
        &json!({}),
        &json!({"client_id": "client-0123456789", "client_secret": "secret-0123456789abcd"}),
    )
    .unwrap();
    assert_eq!(spec.kind().channel_name(), "tracking");
    assert_eq!(
        mask(&spec.credentials().unwrap())["client_secret"],
        "••••abcd"
    );
    let names = |c: Value| {
        ProviderSpec::parse(
            ProviderKind::Ups,
            &json!({"base_url": "http://169.254.169.254"}),
            &c,
        )
        .unwrap_err()
        .into_iter()
        .map(|(n, _)| n)
        .collect::<Vec<_>>()
    };
    assert_eq!(
        names(json!({"client_id": "client-0123456789", "client_secret": "secret-0123456789abcd"})),
        ["settings.base_url"],
        "a tenant cannot choose where UPS is"
    );
    assert_eq!(
        ProviderSpec::parse(
            ProviderKind::Ups,
            &json!({}),
            &json!({"client_id": "has space", "client_secret": ""})
        )
        .unwrap_err()
        .into_iter()
        .map(|(n, _)| n)
        .collect::<Vec<_>>(),
        ["credentials.client_id", "credentials.client_secret"]
    );
}

#[test]
fn provider_errors_show_only_the_platforms_words_and_short_codes() {
    let twilio = ProviderError::answered(
        ProviderKind::Twilio,
        FailureReason::RecipientInvalid,
        Some(400),
    )
    .with_code(ProviderCode::number(21211));
    assert_eq!(
        twilio.to_string(),
        "the provider rejected the recipient's address as invalid (twilio error 21211, HTTP 400)"
    );
    assert_eq!(
        ProviderCode::number(15005550006),
        None,
        "a number long enough to be a phone number is no code"
    );
    assert_eq!(ProviderCode::number(-1), None);
    assert_eq!(
        ProviderCode::number(9_999_999),
        Some(ProviderCode::Number(9_999_999))
    );
    assert_eq!(
        ProviderCode::named("pat@example.org", &["UNREGISTERED"]),
        None
    );
    let smtp = ProviderError::answered(ProviderKind::Smtp, FailureReason::MailRefused, Some(550))
        .with_code(ProviderCode::smtp_enhanced(
            "5.1.1 <pat@example.org>: Recipient address rejected",
        ));
    assert_eq!(
        smtp.to_string(),
        "the mail server refused the message (SMTP 550 5.1.1)"
    );
    for not_enhanced in [
        "<pat@example.org> 5.1.1",
        "5.1",
        "5.1.1.1",
        "15005550006",
        "",
    ] {
        assert_eq!(
            ProviderCode::smtp_enhanced(not_enhanced),
            None,
            "{not_enhanced}"
        );
    }
    assert_eq!(
        ProviderError::new(FailureReason::NoProvider(Channel::Sms)).to_string(),
        "no sms provider is configured for this organisation"
    );
}

#[test]
fn smtp_takes_no_credentials() {
    assert!(ProviderSpec::parse(ProviderKind::Smtp, &json!({}), &Value::Null).is_ok());
    assert!(
        ProviderSpec::parse(ProviderKind::Smtp, &json!({}), &json!({"password": "x"})).is_err()
    );
}
