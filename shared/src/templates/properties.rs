//! Properties of compiling and rendering with hostile input: hostile
//! Handlebars, deep nesting and huge loops are refused or rendered within
//! the limits, never a panic or a hang, and nothing rendered carries a NUL
//! (which Postgres cannot store).

use proptest::prelude::*;
use serde_json::json;

use super::*;

/// Template text assembled from the constructs that break renderers.
fn hostile_source() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        Just("{{".to_owned()),
        Just("}}".to_owned()),
        Just("{{name}}".to_owned()),
        Just("{{{name}}}".to_owned()),
        Just("{{&name}}".to_owned()),
        Just("{{#each xs}}".to_owned()),
        Just("{{/each}}".to_owned()),
        Just("{{#if a}}".to_owned()),
        Just("{{else}}".to_owned()),
        Just("{{/if}}".to_owned()),
        Just("{{#with o}}".to_owned()),
        Just("{{/with}}".to_owned()),
        Just("{{> p}}".to_owned()),
        Just("{{#> p}}x{{/p}}".to_owned()),
        Just("{{#*inline \"p\"}}x{{/inline}}".to_owned()),
        Just("{{log a}}".to_owned()),
        Just("{{lookup xs 0}}".to_owned()),
        Just("{{../name}}".to_owned()),
        Just("{{@root.name}}".to_owned()),
        Just("{{@index}}".to_owned()),
        Just("{{this}}".to_owned()),
        Just("{{o.p.q}}".to_owned()),
        Just("{{xs.[0]}}".to_owned()),
        Just("{{(eq a (not (len xs)))}}".to_owned()),
        Just("{{!-- c --}}".to_owned()),
        Just("{{~name~}}".to_owned()),
        Just("\\{{name}}".to_owned()),
        Just("{{{{raw}}}}{{x}}{{{{/raw}}}}".to_owned()),
        Just("\0".to_owned()),
        Just("\n".to_owned()),
        "[ -~]{0,8}",
        any::<String>(),
    ];
    proptest::collection::vec(piece, 0..30).prop_map(|p| p.concat())
}

/// Data with every shape a variable can meet, NUL and long strings
/// included, nested a few levels.
fn hostile_data() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(|f| json!(f)),
        any::<String>().prop_map(Value::from),
        Just(Value::from("a\0b")),
        (0..3000_usize).prop_map(|n| Value::from("x".repeat(n))),
    ];
    let value = leaf.prop_recursive(6, 64, 8, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..8).prop_map(Value::from),
            proptest::collection::btree_map("[a-z]{1,3}", inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    });
    (value.clone(), value.clone(), value.clone(), value).prop_map(|(name, a, xs, o)| {
        json!({"name": name, "a": a, "xs": xs, "o": o, "id": 7, "day": "Monday"})
    })
}

/// A template with `source` in every string of every channel.
fn template_with(source: &str) -> Value {
    json!({
        "key": "hostile",
        "name": "Hostile",
        "description": source,
        "default_locale": "en",
        "default_channels": ["email"],
        "locales": {"en": {
            "email": {"subject": source, "html": source, "text": source},
            "sms": {"body": source},
            "push": {"title": source, "body": source, "data": {"k": source}},
            "whatsapp": {"text": source},
            "inapp": {"title": source, "body": source, "action_url": format!("/x/{source}"), "data": {"k": source}}
        }}
    })
}

fn strings(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::String(s) => out.push(s.clone()),
        Value::Array(a) => a.iter().for_each(|v| strings(v, out)),
        Value::Object(o) => o.values().for_each(|v| strings(v, out)),
        _ => {}
    }
}

/// Renders `template` on every channel, directly and prepared, and
/// checks what comes out.
fn check_renders(template: &Template, data: &Value) -> Result<(), TestCaseError> {
    let prepared = Prepared::new(template.clone());
    for &channel in Channel::ALL {
        let direct = render(template, channel, Some("en-GB"), data);
        prop_assert_eq!(&prepared.render(channel, Some("en-GB"), data), &direct);
        if let Ok(r) = direct {
            let mut out = Vec::new();
            strings(&r.content.to_stored(), &mut out);
            let total: usize = out.iter().map(String::len).sum();
            prop_assert!(total <= MAX_RENDER_BYTES + 1024, "{total} bytes");
            for s in out {
                prop_assert!(s.len() <= MAX_OUTPUT_BYTES);
                prop_assert!(!s.contains('\0'), "{channel:?} rendered a NUL");
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn hostile_templates_are_refused_or_render_within_the_limits(
        source in hostile_source(),
        data in hostile_data(),
    ) {
        match Template::parse(template_with(&source)) {
            Ok(template) => {
                // What is accepted can be stored: Postgres takes no NUL.
                let stored = serde_json::to_string(&template).unwrap();
                prop_assert!(!stored.contains("\\u0000"), "{stored}");
                check_renders(&template, &data)?;
            }
            Err(errors) => prop_assert!(!errors.is_empty()),
        }
    }

    #[test]
    fn hostile_data_renders_within_the_limits_or_is_refused(data in hostile_data()) {
        let source = "{{name}} {{a}} {{#each xs}}{{this}}{{#each ../xs}}{{@index}}{{/each}}{{/each}} {{#with o}}{{this}}{{/with}} {{lookup xs 0}}";
        let template = Template::parse(template_with(source)).unwrap();
        check_renders(&template, &data)?;
    }

    #[test]
    fn deep_nesting_is_refused_not_a_crash(depth in 0_usize..1_000, kind in 0_usize..3) {
        let (open, close) = [
            ("{{#if a}}", "{{/if}}"),
            ("{{#each xs}}", "{{/each}}"),
            ("{{#with o}}", "{{/with}}"),
        ][kind];
        let source = format!("{}x{}", open.repeat(depth), close.repeat(depth));
        let parsed = Template::parse(template_with(&source));
        if depth > MAX_NESTING + 1 {
            prop_assert!(parsed.is_err());
        }
        let sub = format!("{}a{}", "{{(not ".repeat(depth.min(2_000)), ")}}".repeat(depth.min(2_000)));
        let _ = Template::parse(template_with(&sub));
    }

    #[test]
    fn huge_loops_stop_at_the_iteration_budget(n in 0_usize..400, levels in 1_usize..5) {
        let mut source = "x".to_owned();
        for _ in 0..levels {
            source = format!("{{{{#each @root.xs}}}}{source}{{{{/each}}}}");
        }
        let template = Template::parse(template_with(&source)).unwrap();
        let data = json!({"xs": vec![1; n]});
        let r = render(&template, Channel::Sms, None, &data);
        let iterations = (1..=levels as u32).map(|l| n.pow(l)).sum::<usize>();
        if iterations > MAX_ITERATIONS {
            prop_assert!(r.is_err());
        } else if let Ok(r) = r {
            prop_assert_eq!(r.content.to_stored()["body"].as_str().unwrap().len(), n.pow(levels as u32));
        }
    }
}
