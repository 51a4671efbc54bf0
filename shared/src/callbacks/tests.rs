use p256::{
    ecdsa::{SigningKey, signature::Signer},
    pkcs8::EncodePublicKey,
};
use serde_json::json;

use super::*;

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

#[test]
fn twilio_signatures_match_twilios_own_examples() {
    let url = "https://mycompany.com/myapp.php?foo=1&bar=2";
    let params = pairs(&[
        ("CallSid", "CA1234567890ABCDE"),
        ("Digits", "1234"),
        ("From", "+14158675309"),
        ("To", "+18005551212"),
        ("Caller", "+14158675309"),
    ]);
    assert_eq!(
        twilio_signature("12345", url, &params),
        "RSOYDt4T1cUTdK1PDd93/VVr8B8="
    );
    assert_eq!(
        verify_twilio("12345", url, &params, Some("RSOYDt4T1cUTdK1PDd93/VVr8B8=")),
        Ok(())
    );
    // Repeated names are sorted by value too.
    let repeated = pairs(&[
        ("Sid", "CA123"),
        ("SidAccount", "AC123"),
        ("Digits", "5678"),
        ("Digits", "1234"),
    ]);
    assert_eq!(
        twilio_signature("12345", url, &repeated),
        "IK+Dwps556ElfBT0I3Rgjkr1wJU="
    );
    assert_eq!(
        verify_twilio("54321", url, &params, Some("RSOYDt4T1cUTdK1PDd93/VVr8B8=")),
        Err(SignatureError::Mismatch)
    );
    let mut changed = params.clone();
    changed[1].1 = "9999".into();
    assert_eq!(
        verify_twilio("12345", url, &changed, Some("RSOYDt4T1cUTdK1PDd93/VVr8B8=")),
        Err(SignatureError::Mismatch)
    );
    assert_eq!(
        verify_twilio("12345", url, &params, Some("not base64!")),
        Err(SignatureError::Mismatch)
    );
    assert_eq!(
        verify_twilio("12345", url, &params, None),
        Err(SignatureError::Missing)
    );
}

#[test]
fn meta_signatures_are_hex_hmac_sha256_of_the_body() {
    // HMAC-SHA256("key", "The quick brown fox jumps over the lazy dog").
    let body = b"The quick brown fox jumps over the lazy dog";
    let good = "sha256=f7bc83f430538424b13298e6aa6fb143ef4d59a14946175997479dbc2d1a3cd8";
    assert_eq!(verify_meta("key", body, Some(good)), Ok(()));
    assert_eq!(
        verify_meta(
            "key",
            b"The quick brown fox jumps over the lazy cat",
            Some(good)
        ),
        Err(SignatureError::Mismatch)
    );
    assert_eq!(
        verify_meta("key", body, Some(&good.replace("sha256=", "sha1="))),
        Err(SignatureError::Mismatch)
    );
    assert_eq!(
        verify_meta("key", body, Some("sha256=zz")),
        Err(SignatureError::Mismatch)
    );
    assert_eq!(verify_meta("key", body, None), Err(SignatureError::Missing));
}

#[test]
fn sendgrid_signatures_cover_the_timestamp_and_body_and_expire() {
    let signing = SigningKey::from_slice(&[7u8; 32]).unwrap();
    let der = signing.verifying_key().to_public_key_der().unwrap();
    let shown = B64.encode(der.as_bytes());
    let key = sendgrid_public_key(&shown).unwrap();
    let pem = format!(
        "-----BEGIN PUBLIC KEY-----\n{}\n{}\n-----END PUBLIC KEY-----\n",
        &shown[..64],
        &shown[64..]
    );
    assert_eq!(sendgrid_public_key(&pem).unwrap(), key);
    assert!(sendgrid_public_key("bm90IGEga2V5").is_err());
    assert!(sendgrid_public_key("%%%").is_err());

    let now = Utc::now();
    let ts = now.timestamp().to_string();
    let body = br#"[{"event":"delivered"}]"#;
    let sign = |ts: &str, body: &[u8]| {
        let mut m = ts.as_bytes().to_vec();
        m.extend_from_slice(body);
        let sig: Signature = signing.sign(&m);
        B64.encode(sig.to_der().as_bytes())
    };
    let sig = sign(&ts, body);
    assert_eq!(
        verify_sendgrid(&key, Some(&sig), Some(&ts), body, now),
        Ok(())
    );
    assert_eq!(
        verify_sendgrid(&key, Some(&sig), Some(&ts), br#"[{"event":"open"}]"#, now),
        Err(SignatureError::Mismatch)
    );
    let other_ts = (now.timestamp() + 1).to_string();
    assert_eq!(
        verify_sendgrid(&key, Some(&sig), Some(&other_ts), body, now),
        Err(SignatureError::Mismatch)
    );
    let old = (now.timestamp() - SENDGRID_MAX_AGE_SECS - 1).to_string();
    assert_eq!(
        verify_sendgrid(&key, Some(&sign(&old, body)), Some(&old), body, now),
        Err(SignatureError::Stale)
    );
    assert_eq!(
        verify_sendgrid(&key, None, Some(&ts), body, now),
        Err(SignatureError::Missing)
    );
    assert_eq!(
        verify_sendgrid(&key, Some("AAAA"), Some(&ts), body, now),
        Err(SignatureError::Mismatch)
    );
}

#[test]
fn sendgrid_events_keep_outcomes_within_the_tenant() {
    let tenant = Uuid::now_v7();
    let n = Uuid::now_v7();
    let body = json!([
        {"event": "processed", "sg_event_id": "p1", "sg_message_id": "abc.filter1"},
        {"event": "delivered", "sg_event_id": "e1", "sg_message_id": "abc.filter0001.16648.5515E0B88.0", "timestamp": 1700000000, "email": "pat@example.org"},
        {"event": "open", "sg_event_id": "e2", "notification_id": n.to_string(), "tenant_id": tenant.to_string()},
        {"event": "bounce", "sg_event_id": "e3", "sg_message_id": "abc", "status": "5.1.1", "reason": "550 <pat@example.org> unknown"},
        {"event": "delivered", "sg_event_id": "e4", "notification_id": n.to_string(), "tenant_id": Uuid::now_v7().to_string()},
        {"event": "deferred", "sg_event_id": "e5", "sg_message_id": "abc"},
    ]);
    let events = sendgrid_events(body.to_string().as_bytes(), tenant).unwrap();
    assert_eq!(events.len(), 3, "{events:?}");
    assert_eq!(events[0].target, Target::MessageId("abc".into()));
    assert_eq!(events[0].report, DeliveryReport::Delivered);
    assert_eq!(
        events[0].occurred_at,
        DateTime::from_timestamp(1_700_000_000, 0)
    );
    assert_eq!(events[1].target, Target::Notification(n));
    assert_eq!(events[1].report, DeliveryReport::Read);
    assert_eq!(events[2].report, DeliveryReport::Bounced);
    assert_eq!(events[2].error_code.as_deref(), Some("5.1.1"));
    let text = format!("{events:?}");
    assert!(!text.contains("pat@example.org"), "{text}");
    assert_ne!(events[0].key, events[1].key);

    assert!(sendgrid_events(b"{}", tenant).is_err());
    assert!(sendgrid_events(b"[1]", tenant).is_err());
    assert!(sendgrid_events(b"[{\"sg_event_id\":\"x\"}]", tenant).is_err());
    assert!(sendgrid_events(b"not json", tenant).is_err());
    assert_eq!(sendgrid_events(b"[]", tenant), Ok(vec![]));
}

#[test]
fn twilio_events_need_a_sid_and_a_status() {
    let ev = twilio_event(&pairs(&[
        ("MessageSid", "SM0123"),
        ("MessageStatus", "undelivered"),
        ("ErrorCode", "30003"),
        ("To", "+15005550006"),
    ]))
    .unwrap()
    .unwrap();
    assert_eq!(ev.report, DeliveryReport::Failed);
    assert_eq!(
        ev.error.as_deref(),
        Some("Twilio reported the message undelivered (error 30003)")
    );
    assert!(!format!("{ev:?}").contains("+15005550006"));
    assert_eq!(
        twilio_event(&pairs(&[
            ("MessageSid", "SM0123"),
            ("MessageStatus", "sent")
        ])),
        Ok(None)
    );
    assert!(twilio_event(&pairs(&[("MessageStatus", "delivered")])).is_err());
    assert!(twilio_event(&pairs(&[("MessageSid", "SM 1"), ("MessageStatus", "read")])).is_err());
}

#[test]
fn whatsapp_callbacks_yield_statuses_and_inbound_times() {
    let body = json!({"object": "whatsapp_business_account", "entry": [{"id": "1", "changes": [
        {"field": "messages", "value": {"metadata": {"phone_number_id": "111"},
            "statuses": [
                {"id": "wamid.A", "status": "sent", "timestamp": "1700000000"},
                {"id": "wamid.A", "status": "read", "timestamp": "1700000100"},
                {"id": "wamid.B", "status": "failed", "timestamp": "1700000100", "errors": [{"code": 131047, "title": "Re-engagement message"}]}
            ],
            "messages": [{"from": "15551234567", "id": "wamid.in", "timestamp": "1700000200", "type": "text", "text": {"body": "hello"}}]
        }},
        {"field": "messages", "value": {"metadata": {"phone_number_id": "222"},
            "statuses": [{"id": "wamid.C", "status": "delivered", "timestamp": "1700000000"}]}}
    ]}]});
    let cb = whatsapp_callback(body.to_string().as_bytes(), "111").unwrap();
    assert_eq!(cb.statuses.len(), 2);
    assert_eq!(cb.statuses[0].report, DeliveryReport::Read);
    assert_eq!(cb.statuses[1].error_code.as_deref(), Some("131047"));
    assert_eq!(
        cb.inbound,
        [(
            "+15551234567".to_owned(),
            DateTime::from_timestamp(1_700_000_200, 0).unwrap()
        )]
    );
    assert!(!format!("{cb:?}").contains("hello"));
    assert!(whatsapp_callback(b"[]", "111").is_err());
    assert!(whatsapp_callback(br#"{"entry": 1}"#, "111").is_err());
    assert!(
        whatsapp_callback(
            br#"{"entry": [{"changes": [{"value": {"metadata": {"phone_number_id": "111"}, "statuses": [{"status": "read"}]}}]}]}"#,
            "111"
        )
        .is_err()
    );
}

#[test]
fn secrets_are_compared_whole() {
    assert!(secrets_match("verify-me", "verify-me"));
    assert!(!secrets_match("verify-me", "verify-m"));
    assert!(!secrets_match("", "x"));
}
