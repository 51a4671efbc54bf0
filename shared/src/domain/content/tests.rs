//! Golden JSON: each channel's content exactly as notification rows store
//! it, read and written back.

use serde_json::{Value, json};

use super::*;

/// Reads `stored` on `channel` and checks it is written back unchanged.
fn round_trip(channel: Channel, stored: Value) -> Content {
    let content = Content::from_stored(channel, &stored).expect("readable");
    assert_eq!(content.channel(), channel);
    assert_eq!(content.to_stored(), stored, "{channel:?}");
    content
}

#[test]
fn email_content_round_trips_with_its_absent_parts_omitted() {
    let both = round_trip(
        Channel::Email,
        json!({"subject": "Your results are ready", "text": "Hello Pat", "html": "<p>Hello Pat</p>"}),
    );
    assert_eq!(
        both,
        Content::Email(EmailContent {
            subject: Subject::parse("Your results are ready").unwrap(),
            text: Some("Hello Pat".into()),
            html: Some("<p>Hello Pat</p>".into()),
        })
    );
    let Content::Email(text) = round_trip(Channel::Email, json!({"subject": "Hi", "text": "x"}))
    else {
        panic!("email")
    };
    assert_eq!(text.html, None);
    let Content::Email(html) =
        round_trip(Channel::Email, json!({"subject": "Hi", "html": "<b>x</b>"}))
    else {
        panic!("email")
    };
    assert_eq!(html.text, None);
}

#[test]
fn sms_content_is_its_body() {
    assert_eq!(
        round_trip(Channel::Sms, json!({"body": "Your code is 1234"})),
        Content::Sms(SmsContent {
            body: "Your code is 1234".into()
        })
    );
}

#[test]
fn push_content_round_trips_and_reads_a_null_body_as_absent() {
    assert_eq!(
        round_trip(
            Channel::Push,
            json!({"title": "Results ready", "body": "Open the app", "data": {"kind": "result", "id": "42"}}),
        ),
        Content::Push(PushContent {
            title: "Results ready".into(),
            body: Some("Open the app".into()),
            data: [("id", "42"), ("kind", "result")]
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
        })
    );
    // As template renders store it: no body, empty data.
    round_trip(Channel::Push, json!({"title": "Results ready", "data": {}}));
    // As direct sends stored it: a null body.
    let direct = json!({"title": "Results ready", "body": null, "data": {}});
    let read = Content::from_stored(Channel::Push, &direct).unwrap();
    assert_eq!(
        read,
        Content::Push(PushContent {
            title: "Results ready".into(),
            body: None,
            data: BTreeMap::new(),
        })
    );
    assert_eq!(
        read.to_stored(),
        json!({"title": "Results ready", "data": {}})
    );
    // Without data, or with null data.
    for stored in [json!({"title": "t"}), json!({"title": "t", "data": null})] {
        let Content::Push(p) = Content::from_stored(Channel::Push, &stored).unwrap() else {
            panic!("push")
        };
        assert!(p.data.is_empty());
    }
}

#[test]
fn whatsapp_content_is_text_or_an_approved_template() {
    assert_eq!(
        round_trip(Channel::WhatsApp, json!({"text": "See you at 3 PM"})),
        Content::WhatsApp(WhatsAppContent::Text {
            text: "See you at 3 PM".into()
        })
    );
    assert_eq!(
        round_trip(
            Channel::WhatsApp,
            json!({"template_name": "appointment_reminder", "language": "en_US", "parameters": ["Pat", "3 PM"]}),
        ),
        Content::WhatsApp(WhatsAppContent::Template {
            template_name: "appointment_reminder".into(),
            language: "en_US".into(),
            parameters: vec!["Pat".into(), "3 PM".into()],
        })
    );
    round_trip(
        Channel::WhatsApp,
        json!({"template_name": "hello_world", "language": "en", "parameters": []}),
    );
    let Content::WhatsApp(WhatsAppContent::Template { parameters, .. }) = Content::from_stored(
        Channel::WhatsApp,
        &json!({"template_name": "hello_world", "language": "en"}),
    )
    .unwrap() else {
        panic!("template")
    };
    assert!(parameters.is_empty());
}

#[test]
fn inapp_content_stores_its_absent_fields_as_null() {
    assert_eq!(
        round_trip(
            Channel::InApp,
            json!({"title": "New result", "body": "Your lab result is in", "action_url": "/results/7", "data": {"id": 7, "tags": ["lab"]}}),
        ),
        Content::InApp(InAppContent {
            title: "New result".into(),
            body: Some("Your lab result is in".into()),
            action_url: Some("/results/7".into()),
            data: json!({"id": 7, "tags": ["lab"]})
                .as_object()
                .unwrap()
                .clone(),
        })
    );
    round_trip(
        Channel::InApp,
        json!({"title": "New result", "body": null, "action_url": null, "data": {}}),
    );
}

#[test]
fn content_of_another_channel_or_redacted_content_is_unreadable() {
    for (channel, stored) in [
        (Channel::Email, json!({"body": "sms text"})),
        (Channel::Email, json!({"subject": 7, "text": "x"})),
        (Channel::Sms, json!({"subject": "Hi", "text": "x"})),
        (Channel::Push, json!({"title": "t", "data": {"n": 1}})),
        (Channel::Push, json!({"body": "no title"})),
        (Channel::WhatsApp, json!({"template_name": "x"})),
        (Channel::InApp, json!({"body": "no title"})),
        // Content erased after retention.
        (Channel::Email, json!({})),
        (Channel::Sms, json!({})),
        (Channel::Push, json!({})),
        (Channel::WhatsApp, json!({})),
        (Channel::InApp, json!({})),
        (Channel::Sms, Value::Null),
    ] {
        let e = Content::from_stored(channel, &stored).unwrap_err();
        assert_eq!(e, UnreadableContent(channel), "{channel:?} {stored}");
    }
    let e = Content::from_stored(Channel::Sms, &json!({"text": "secret 1234"})).unwrap_err();
    assert_eq!(e.to_string(), "the stored content is not sms content");
}

#[test]
fn push_data_takes_string_values_only() {
    let ok = json!({"kind": "result"});
    assert_eq!(
        PushContent::data_from(ok.as_object().unwrap()).unwrap(),
        BTreeMap::from([("kind".to_owned(), "result".to_owned())])
    );
    let bad = json!({"kind": "result", "n": 1});
    assert_eq!(
        PushContent::data_from(bad.as_object().unwrap())
            .unwrap_err()
            .0,
        "push data values must be strings"
    );
}
