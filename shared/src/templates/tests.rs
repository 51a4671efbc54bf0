use serde_json::json;

use super::*;

fn base() -> Value {
    json!({
        "key": "appointment.reminder",
        "name": "Appointment reminder",
        "description": "Sent the day before",
        "category": "appointments",
        "critical": false,
        "default_locale": "en",
        "default_channels": ["email", "sms"],
        "locales": {
            "en": {
                "email": {
                    "subject": "See you {{day}}, {{name}}",
                    "html": "<p>Hi {{name}}</p>",
                    "text": "Hi {{name}}"
                },
                "sms": {"body": "Hi {{name}}, see you {{day}}."},
                "push": {"title": "Tomorrow", "body": "See you {{day}}", "data": {"kind": "reminder", "day": "{{day}}"}},
                "whatsapp": {"template_name": "appointment_reminder", "language": "en_US", "parameters": ["{{name}}", "{{day}}"]},
                "inapp": {"title": "See you {{day}}", "action_url": "/appointments/{{id}}", "data": {"id": "{{id}}"}}
            },
            "fr": {
                "email": {"subject": "À {{day}}, {{name}}", "text": "Bonjour {{name}}"},
                "sms": {"body": "Bonjour {{name}}"}
            },
            "fr-CA": {"sms": {"body": "Allô {{name}}"}}
        }
    })
}

fn parsed() -> Template {
    Template::parse(base()).unwrap()
}

fn with(path: &[&str], value: Value) -> Value {
    let mut t = base();
    let mut at = &mut t;
    for p in &path[..path.len() - 1] {
        at = &mut at[*p];
    }
    at[path[path.len() - 1]] = value;
    t
}

/// The single error a template is refused with.
fn refused(t: Value) -> FieldError {
    let errors = Template::parse(t).unwrap_err();
    assert_eq!(errors.len(), 1, "{errors:?}");
    errors.into_iter().next().unwrap()
}

fn data() -> Value {
    json!({"name": "Pat", "day": "Monday", "id": 42})
}

#[test]
fn a_valid_template_parses_and_serializes_to_the_same_json() {
    let t = parsed();
    assert_eq!(t.key(), "appointment.reminder");
    assert_eq!(t.default_channels(), &[Channel::Email, Channel::Sms]);
    assert_eq!(t.channels(), Channel::ALL.to_vec());
    let again = Template::parse(serde_json::to_value(&t).unwrap()).unwrap();
    assert_eq!(again, t);
    assert_eq!(serde_json::to_value(&t).unwrap(), base());
}

#[test]
fn syntax_errors_name_the_field() {
    let e = refused(with(
        &["locales", "fr", "email", "subject"],
        json!("Hi {{#if name}}"),
    ));
    assert_eq!(e.field, "locales.fr.email.subject");
    assert!(e.reason.starts_with("is not a valid template"), "{e}");
    let e = refused(with(
        &["locales", "en", "push", "data", "day"],
        json!("{{day"),
    ));
    assert_eq!(e.field, "locales.en.push.data.day");
    let e = refused(with(
        &["locales", "en", "whatsapp", "parameters"],
        json!(["ok", "{{/if}}"]),
    ));
    assert_eq!(e.field, "locales.en.whatsapp.parameters[1]");
}

#[test]
fn partials_inline_partials_and_decorators_are_refused() {
    for (source, needle) in [
        ("{{> footer}}", "partials"),
        ("{{#> layout}}body{{/layout}}", "partials"),
        ("{{#*inline \"x\"}}y{{/inline}}{{> x}}", "inline partials"),
        ("{{*decorator}}", "decorators"),
        ("{{#if name}}{{> footer}}{{/if}}", "partials"),
        ("{{#each items}}{{else}}{{> footer}}{{/each}}", "partials"),
    ] {
        let e = refused(with(&["locales", "en", "email", "text"], json!(source)));
        assert_eq!(e.field, "locales.en.email.text", "{source}");
        assert!(e.reason.contains(needle), "{source}: {e}");
    }
}

#[test]
fn only_the_built_in_helpers_may_be_called() {
    for source in [
        "{{log name}}",
        "{{lowercase name}}",
        "{{#custom}}x{{/custom}}",
        "{{#if (lookup this (concat \"a\" \"b\"))}}x{{/if}}",
    ] {
        let e = refused(with(&["locales", "en", "sms", "body"], json!(source)));
        assert!(e.reason.contains("not a helper"), "{source}: {e}");
    }
    let ok = with(
        &["locales", "en", "sms", "body"],
        json!(
            "{{#each items as |item|}}{{#if (eq item.kind \"lab\")}}{{len ../items}} {{lookup item \"name\"}}{{/if}}{{/each}}"
        ),
    );
    assert!(Template::parse(ok).is_ok());
}

#[test]
fn triple_stash_is_refused_in_email_html_only() {
    for source in [
        "<p>{{{name}}}</p>",
        "<p>{{& name}}</p>",
        "{{#if a}}{{{name}}}{{/if}}",
    ] {
        let e = refused(with(&["locales", "en", "email", "html"], json!(source)));
        assert_eq!(e.field, "locales.en.email.html");
        assert!(e.reason.contains("escaped"), "{e}");
    }
    let text = with(&["locales", "en", "email", "text"], json!("{{{name}}}"));
    assert!(Template::parse(text).is_ok());
}

#[test]
fn deep_nesting_is_refused() {
    let deep = format!("{}x{}", "{{#if a}}".repeat(20), "{{/if}}".repeat(20));
    let e = refused(with(&["locales", "en", "sms", "body"], json!(deep)));
    assert!(e.reason.contains("deep"), "{e}");
    let fine = format!("{}x{}", "{{#if a}}".repeat(10), "{{/if}}".repeat(10));
    assert!(Template::parse(with(&["locales", "en", "sms", "body"], json!(fine))).is_ok());
}

#[test]
fn limits_are_enforced() {
    let mut big = base();
    big["description"] = json!("x".repeat(MAX_TEMPLATE_BYTES));
    assert_eq!(refused(big).field, "template");
    let e = refused(with(
        &["locales", "en", "email", "html"],
        json!("x".repeat(MAX_FIELD_BYTES + 1)),
    ));
    assert_eq!(e.field, "locales.en.email.html");
    assert!(e.reason.contains("bytes"));
    let e = refused(with(
        &["locales", "en", "email", "subject"],
        json!("x".repeat(999)),
    ));
    assert_eq!(e.field, "locales.en.email.subject");
    let e = refused(with(
        &["locales", "en", "sms", "body"],
        json!("é".repeat(MAX_SMS_CHARS + 1)),
    ));
    assert_eq!(e.field, "locales.en.sms.body");
    assert!(
        Template::parse(with(
            &["locales", "en", "sms", "body"],
            json!("é".repeat(MAX_SMS_CHARS))
        ))
        .is_ok()
    );
    let e = refused(with(
        &["locales", "en", "email", "subject"],
        json!("Hi\r\nBcc: x@evil.example"),
    ));
    assert_eq!(e.field, "locales.en.email.subject");
    let mut many = base();
    for c in (b'a'..).take(MAX_LOCALES) {
        many["locales"][format!("a{}", c as char)] = json!({"sms": {"body": "hi"}});
    }
    assert_eq!(refused(many).field, "locales");
    let data: serde_json::Map<String, Value> = (0..=MAX_DATA_KEYS)
        .map(|i| (format!("k{i}"), json!("v")))
        .collect();
    let e = refused(with(
        &["locales", "en", "push", "data"],
        Value::Object(data),
    ));
    assert_eq!(e.field, "locales.en.push.data");
}

#[test]
fn every_bad_field_is_named_at_once() {
    let mut t = base();
    t["key"] = json!("Not A Slug");
    t["name"] = json!("");
    t["category"] = json!("bad category");
    t["locales"]["fr"]["email"]["subject"] = json!("{{#if}}");
    let fields: Vec<String> = Template::parse(t)
        .unwrap_err()
        .into_iter()
        .map(|e| e.field)
        .collect();
    assert_eq!(
        fields,
        ["key", "name", "category", "locales.fr.email.subject"]
    );
}

#[test]
fn unknown_and_missing_fields_are_named() {
    let mut t = base();
    t["colour"] = json!("blue");
    let e = refused(t);
    assert_eq!(e.field, "colour");
    assert!(e.reason.contains("unknown field"), "{e}");
    let e = refused(with(&["locales", "fr", "email", "subjet"], json!("x")));
    assert_eq!(e.field, "locales.fr.email.subjet");
    let mut t = base();
    t.as_object_mut().unwrap().remove("name");
    assert_eq!(refused(t).field, "name");
    let e = refused(with(&["locales", "fr", "email"], json!({"text": "x"})));
    assert_eq!(e.field, "locales.fr.email.subject");
    let e = refused(with(&["default_channels"], json!(["email", "fax"])));
    assert_eq!(e.field, "default_channels[1]");
    assert_eq!(refused(json!([1, 2])).field, "template");
}

#[test]
fn locales_and_channels_must_fall_back_to_the_default_locale() {
    let e = refused(with(&["default_locale"], json!("de")));
    assert_eq!(e.field, "default_locale");
    let e = refused(with(&["locales", "fr", "email", "subject"], json!(null)));
    assert_eq!(e.field, "locales.fr.email.subject");
    let e = refused(with(&["locales", "en_GB"], json!({"sms": {"body": "x"}})));
    assert_eq!(e.field, "locales.en_GB");
    assert!(e.reason.contains("`en-GB`"), "{e}");
    let e = refused(with(&["locales", "english"], json!({"sms": {"body": "x"}})));
    assert_eq!(e.field, "locales.english");
    let e = refused(with(&["locales", "de"], json!({})));
    assert_eq!(e.field, "locales.de");
    let mut t = base();
    t["locales"]["en"].as_object_mut().unwrap().remove("sms");
    let fields: Vec<String> = Template::parse(t)
        .unwrap_err()
        .into_iter()
        .map(|e| e.field)
        .collect();
    assert_eq!(
        fields,
        ["default_channels[1]", "locales.fr.sms", "locales.fr-CA.sms"]
    );
    let e = refused(with(&["default_channels"], json!([])));
    assert_eq!(e.field, "default_channels");
    let e = refused(with(&["default_channels"], json!(["sms", "sms"])));
    assert_eq!(e.field, "default_channels[1]");
}

#[test]
fn locale_tags_are_read_in_canonical_form() {
    for (raw, tag) in [
        ("en", "en"),
        ("EN-us", "en-US"),
        ("pt_br", "pt-BR"),
        ("zh-hant-tw", "zh-Hant-TW"),
        ("es-419", "es-419"),
        ("fil", "fil"),
    ] {
        assert_eq!(canonical_locale(raw).as_deref(), Some(tag), "{raw}");
    }
    for bad in [
        "", "e", "english", "en-", "en-USA", "en-US-x", "1n", "en US",
    ] {
        assert_eq!(canonical_locale(bad), None, "{bad}");
    }
}

#[test]
fn whatsapp_takes_text_or_an_approved_template() {
    let path = ["locales", "en", "whatsapp"];
    assert!(Template::parse(with(&path, json!({"text": "Hi {{name}}"}))).is_ok());
    for (bad, field) in [
        (json!({}), "locales.en.whatsapp"),
        (
            json!({"text": "x", "template_name": "y", "language": "en"}),
            "locales.en.whatsapp",
        ),
        (
            json!({"template_name": "reminder"}),
            "locales.en.whatsapp.language",
        ),
        (
            json!({"template_name": "Reminder!", "language": "en"}),
            "locales.en.whatsapp.template_name",
        ),
        (
            json!({"template_name": "reminder", "language": "english"}),
            "locales.en.whatsapp.language",
        ),
        (
            json!({"text": "x", "parameters": ["a"]}),
            "locales.en.whatsapp.parameters",
        ),
    ] {
        assert_eq!(refused(with(&path, bad.clone())).field, field, "{bad}");
    }
}

#[test]
fn reserved_push_data_keys_are_refused() {
    let e = refused(with(
        &["locales", "en", "push", "data"],
        json!({"google.sent_time": "x"}),
    ));
    assert_eq!(e.field, "locales.en.push.data.google.sent_time");
    let e = refused(with(
        &["locales", "en", "inapp", "data"],
        json!({"has space": "x"}),
    ));
    assert_eq!(e.field, "locales.en.inapp.data");
}

#[test]
fn every_channel_renders_to_its_send_shape() {
    let t = parsed();
    let r = |c| render(&t, c, None, &data()).unwrap();
    let email = r(Channel::Email);
    assert_eq!(email.locale, "en");
    assert_eq!(
        email.content.to_stored(),
        json!({"subject": "See you Monday, Pat", "html": "<p>Hi Pat</p>", "text": "Hi Pat"})
    );
    assert_eq!(
        email.content,
        Content::Email(EmailContent {
            subject: Subject::parse("See you Monday, Pat").unwrap(),
            text: Some("Hi Pat".into()),
            html: Some("<p>Hi Pat</p>".into()),
        })
    );
    assert_eq!(
        r(Channel::Sms).content.to_stored(),
        json!({"body": "Hi Pat, see you Monday."})
    );
    assert_eq!(
        r(Channel::Push).content.to_stored(),
        json!({"title": "Tomorrow", "body": "See you Monday", "data": {"kind": "reminder", "day": "Monday"}})
    );
    assert_eq!(
        r(Channel::WhatsApp).content.to_stored(),
        json!({"template_name": "appointment_reminder", "language": "en_US", "parameters": ["Pat", "Monday"]})
    );
    assert_eq!(
        r(Channel::InApp).content.to_stored(),
        json!({"title": "See you Monday", "body": null, "action_url": "/appointments/42", "data": {"id": "42"}})
    );
}

#[test]
fn an_unknown_variable_is_an_error_naming_it_and_the_field() {
    let t = parsed();
    let e = render(&t, Channel::Email, None, &json!({"name": "Pat"})).unwrap_err();
    assert_eq!(e.field(), "locales.en.email.subject");
    assert!(
        matches!(&e, RenderError::MissingVariable { variable: Some(v), .. } if v == "day"),
        "{e:?}"
    );
    assert!(e.to_string().contains("`day`"), "{e}");
    let e = render(&t, Channel::Sms, Some("fr"), &json!({"nom": "Pat"})).unwrap_err();
    assert_eq!(e.field(), "locales.fr.sms.body");
    let nested = with(
        &["locales", "en", "sms", "body"],
        json!("{{#each items}}{{this.name}}{{/each}}{{patient.name}}"),
    );
    let t = Template::parse(nested).unwrap();
    let e = render(
        &t,
        Channel::Sms,
        None,
        &json!({"items": [{"name": "a"}], "patient": {}}),
    )
    .unwrap_err();
    assert!(e.reason().contains("`patient.name`"), "{e}");
    let e = render(&t, Channel::Sms, None, &json!({"patient": {"name": "x"}})).unwrap_err();
    assert!(e.reason().contains("`items`"), "{e}");
}

#[test]
fn optional_values_can_be_tested_with_if() {
    let t = Template::parse(with(
        &["locales", "en", "sms", "body"],
        json!("Hi{{#if name}} {{name}}{{/if}}."),
    ))
    .unwrap();
    let r = |d| {
        render(&t, Channel::Sms, None, &d)
            .unwrap()
            .content
            .to_stored()["body"]
            .clone()
    };
    assert_eq!(r(json!({})), "Hi.");
    assert_eq!(r(json!({"name": "Pat"})), "Hi Pat.");
}

#[test]
fn email_html_escapes_data_and_other_fields_do_not() {
    let t = parsed();
    let hostile = json!({"name": "<script>alert(1)</script>", "day": "\"Mon\" & 'Tue'", "id": 1});
    let email = render(&t, Channel::Email, None, &hostile)
        .unwrap()
        .content
        .to_stored();
    assert_eq!(
        email["html"],
        "<p>Hi &lt;script&gt;alert(1)&lt;/script&gt;</p>"
    );
    assert_eq!(email["text"], "Hi <script>alert(1)</script>");
    assert_eq!(
        email["subject"],
        "See you \"Mon\" & 'Tue', <script>alert(1)</script>"
    );
    let sms = render(&t, Channel::Sms, None, &hostile)
        .unwrap()
        .content
        .to_stored();
    assert_eq!(
        sms["body"],
        "Hi <script>alert(1)</script>, see you \"Mon\" & 'Tue'."
    );
}

#[test]
fn a_line_break_injected_into_the_subject_is_refused() {
    let t = parsed();
    for day in ["Monday\r\nBcc: x@evil.example", "Monday\n", "Mon\u{0}"] {
        let e = render(
            &t,
            Channel::Email,
            None,
            &json!({"name": "Pat", "day": day}),
        )
        .unwrap_err();
        assert_eq!(e.field(), "locales.en.email.subject", "{day:?}");
        assert!(matches!(e, RenderError::Invalid { .. }), "{e:?}");
    }
    let e = render(&t, Channel::InApp, None, &json!({"day": "a\nb", "id": 1})).unwrap_err();
    assert_eq!(e.field(), "locales.en.inapp.title");
}

#[test]
fn locales_fall_back_from_the_tag_to_its_language_to_the_default() {
    let t = parsed();
    let used = |c, l: Option<&str>| render(&t, c, l, &data()).unwrap();
    assert_eq!(used(Channel::Sms, Some("fr-CA")).locale, "fr-CA");
    assert_eq!(
        used(Channel::Sms, Some("fr-ca")).content.to_stored()["body"],
        "Allô Pat"
    );
    assert_eq!(used(Channel::Email, Some("fr-CA")).locale, "fr");
    assert_eq!(used(Channel::Sms, Some("fr-BE")).locale, "fr");
    assert_eq!(used(Channel::Sms, Some("fr")).locale, "fr");
    assert_eq!(used(Channel::Push, Some("fr-CA")).locale, "en");
    assert_eq!(used(Channel::Sms, Some("de-DE")).locale, "en");
    assert_eq!(used(Channel::Sms, None).locale, "en");
    assert_eq!(
        render(&t, Channel::Sms, Some("not a locale"), &data()).unwrap_err(),
        RenderError::Locale
    );
}

#[test]
fn a_channel_without_content_is_an_error() {
    let t = Template::parse(json!({
        "key": "k", "name": "n", "default_locale": "en", "default_channels": ["sms"],
        "locales": {"en": {"sms": {"body": "hi"}}}
    }))
    .unwrap();
    assert_eq!(
        render(&t, Channel::Email, None, &json!({})).unwrap_err(),
        RenderError::NoContent(Channel::Email)
    );
}

#[test]
fn unsafe_action_urls_are_refused_once_rendered() {
    let t = parsed();
    // The template's path stays a path, and data cannot break out of it.
    let path = |id: &str| render(&t, Channel::InApp, None, &json!({"day": "Mon", "id": id}));
    assert_eq!(
        path("../javascript:alert(1)").unwrap().content.to_stored()["action_url"],
        "/appointments/../javascript:alert(1)"
    );
    for id in ["1 onclick=x", "1\nLocation: x"] {
        assert_eq!(
            path(id).unwrap_err().field(),
            "locales.en.inapp.action_url",
            "{id:?}"
        );
    }
    let t = Template::parse(with(
        &["locales", "en", "inapp", "action_url"],
        json!("{{url}}"),
    ))
    .unwrap();
    for url in ["javascript:alert(1)", "//evil.example", "data:text/html,x"] {
        let e = render(
            &t,
            Channel::InApp,
            None,
            &json!({"day": "Mon", "id": 1, "url": url}),
        )
        .unwrap_err();
        assert_eq!(e.field(), "locales.en.inapp.action_url", "{url}");
    }
    let ok = render(
        &t,
        Channel::InApp,
        None,
        &json!({"day": "Mon", "id": 1, "url": "https://clinic.example/a"}),
    )
    .unwrap();
    assert_eq!(
        ok.content.to_stored()["action_url"],
        "https://clinic.example/a"
    );
}

#[test]
fn loops_and_output_are_bounded() {
    let nested = Template::parse(with(
        &["locales", "en", "sms", "body"],
        json!("{{#each a}}{{#each ../a}}{{/each}}{{/each}}"),
    ))
    .unwrap();
    let a: Vec<u32> = (0..200).collect();
    let e = render(&nested, Channel::Sms, None, &json!({"a": a})).unwrap_err();
    assert!(e.reason().contains("loops more than"), "{e}");
    let small: Vec<u32> = (0..50).collect();
    let e = render(&nested, Channel::Sms, None, &json!({"a": small})).unwrap_err();
    assert_eq!(e.reason(), "renders empty", "2,550 iterations are allowed");

    let wide = Template::parse(with(
        &["locales", "en", "email", "text"],
        json!("{{#each a}}{{../big}}{{/each}}"),
    ))
    .unwrap();
    let big = "x".repeat(1024);
    let a: Vec<u32> = (0..300).collect();
    let e = render(
        &wide,
        Channel::Email,
        None,
        &json!({"name": "Pat", "day": "Mon", "a": a, "big": big}),
    )
    .unwrap_err();
    assert_eq!(e.field(), "locales.en.email.text");
    assert!(e.reason().contains("bytes"), "{e}");
}

#[test]
fn a_prepared_template_renders_what_render_does_for_every_channel_and_locale() {
    let mut t = base();
    t["locales"]["es"] = json!({"sms": {"body": "Hola {{name}}"}});
    let t = Template::parse(t).unwrap();
    let prepared = Prepared::new(t.clone());
    for data in [
        data(),
        json!({"name": "Ann", "day": "Friday", "id": "7"}),
        json!({}),
    ] {
        for &channel in Channel::ALL {
            for locale in [
                None,
                Some("es"),
                Some("es-MX"),
                Some("fr"),
                Some("not a tag!"),
            ] {
                assert_eq!(
                    prepared.render(channel, locale, &data),
                    render(&t, channel, locale, &data),
                    "{channel:?} {locale:?} {data}"
                );
            }
        }
    }
}

#[test]
fn each_render_of_a_prepared_template_has_its_own_budgets() {
    let nested = Template::parse(with(
        &["locales", "en", "sms", "body"],
        json!("{{#each a}}{{#each ../a}}x{{/each}}{{/each}}"),
    ))
    .unwrap();
    let prepared = Prepared::new(nested);
    let small: Vec<u32> = (0..90).collect();
    let big: Vec<u32> = (0..200).collect();
    // 90 × 91 iterations fit one budget; three renders in a row would not.
    for _ in 0..3 {
        let r = prepared.render(Channel::Sms, None, &json!({"a": small}));
        assert!(r.is_err_and(|e| e.reason().contains("1600 characters")));
    }
    let e = prepared
        .render(Channel::Sms, None, &json!({"a": big}))
        .unwrap_err();
    assert!(e.reason().contains("loops more than"), "{e}");
    let ok = prepared.render(Channel::Sms, None, &json!({"a": [1, 2]}));
    assert_eq!(ok.unwrap().content.to_stored(), json!({"body": "xxxx"}));
}

#[test]
fn the_output_of_all_fields_together_is_bounded() {
    let each = "{{#each a}}{{../big}}{{/each}}";
    let t = Template::parse(with(
        &["locales", "en", "push", "data"],
        json!({"a": each, "b": each, "c": each}),
    ))
    .unwrap();
    let a: Vec<u32> = (0..200).collect();
    let data = json!({"day": "Mon", "a": a, "big": "x".repeat(1024)});
    let e = render(&t, Channel::Push, None, &data).unwrap_err();
    assert_eq!(e.field(), "locales.en.push.data.c");
    assert!(e.reason().contains("in all"), "{e}");
    let two = Template::parse(with(
        &["locales", "en", "push", "data"],
        json!({"a": each, "b": each}),
    ))
    .unwrap();
    let ok = render(&two, Channel::Push, None, &data).unwrap();
    assert_eq!(
        ok.content.to_stored()["data"]["b"].as_str().unwrap().len(),
        200 * 1024
    );
}

#[test]
fn a_stored_template_cannot_reach_partials_even_unvalidated() {
    let mut t = parsed();
    t.locales.get_mut("en").unwrap().sms = Some(SmsTemplate {
        body: "{{> locales.en.email.subject}}".into(),
    });
    let e = render(&t, Channel::Sms, None, &data()).unwrap_err();
    assert_eq!(e.field(), "locales.en.sms.body");
    assert!(e.reason().contains("partials"), "{e}");
}
