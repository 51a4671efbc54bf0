//! What rendering a stored template costs per recipient, the work every
//! templated send, batch chunk and CSV row does once per channel.
//!
//! A template compiled once ([`Prepared`], as the caches and the chunk
//! expansions hold it) is rendered `BENCH_RENDERS` times (default 200,000)
//! for the in-app and the email channel with a different recipient's data
//! each time, on one thread. Beside it, in the same run, the floor the
//! engine is judged against: the same strings built by hand with `format!`
//! and the same JSON, which is what a render could cost at best.
//!
//! Prints renders/s and p50/p99 of one render, and a `BENCH_FIGURE` line.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use shared::{
    domain::Channel,
    templates::{Prepared, Template},
};

fn template() -> Template {
    Template::parse(json!({
        "key": "results.ready",
        "name": "Results ready",
        "category": "results",
        "critical": false,
        "default_locale": "en",
        "default_channels": ["inapp", "email"],
        "locales": {
            "en": {
                "email": {
                    "subject": "Your results are ready, {{name}}",
                    "html": "<p>Hello {{name}},</p><p>Your results from {{clinic}} are ready.</p>",
                    "text": "Hello {{name}}, your results from {{clinic}} are ready."
                },
                "inapp": {
                    "title": "Results ready for {{name}}",
                    "body": "Your results from {{clinic}} are ready.",
                    "action_url": "/results/{{id}}",
                    "data": {"id": "{{id}}"}
                }
            }
        }
    }))
    .expect("the bench's template parses")
}

fn data(i: usize) -> Value {
    json!({
        "name": format!("Patient {i}"),
        "clinic": format!("Northside Family Practice, suite {}", i % 97),
        "id": format!("r-{i}"),
    })
}

/// Runs `f` for each of `n` recipients; answers (per second, p50, p99).
fn measure(n: usize, mut f: impl FnMut(usize)) -> (f64, Duration, Duration) {
    let mut each = Vec::with_capacity(n);
    let started = Instant::now();
    for i in 0..n {
        let t = Instant::now();
        f(i);
        each.push(t.elapsed());
    }
    let total = started.elapsed();
    each.sort_unstable();
    let at = |q: f64| each[((n as f64 * q) as usize).min(n - 1)];
    (n as f64 / total.as_secs_f64(), at(0.50), at(0.99))
}

fn main() {
    let n: usize = std::env::var("BENCH_RENDERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200_000);
    let prepared = Prepared::new(template());
    let inputs: Vec<Value> = (0..n).map(data).collect();
    println!("render benchmark: {n} renders per stage, one thread");
    let mut figures = serde_json::Map::new();
    for channel in [Channel::InApp, Channel::Email] {
        let (rate, p50, p99) = measure(n, |i| {
            let rendered = prepared
                .render(channel, None, &inputs[i])
                .expect("the bench's data renders");
            std::hint::black_box(rendered);
        });
        println!(
            "{:<7} render:       {rate:>10.0}/s  p50 {:>6.2} µs  p99 {:>6.2} µs",
            channel.as_str(),
            p50.as_secs_f64() * 1e6,
            p99.as_secs_f64() * 1e6
        );
        figures.insert(format!("render_{}_per_s", channel.as_str()), rate.into());
        figures.insert(
            format!("render_{}_p99_us", channel.as_str()),
            (p99.as_secs_f64() * 1e6).into(),
        );
    }
    // The floor: the same in-app content built by hand.
    let (rate, p50, p99) = measure(n, |i| {
        let d = &inputs[i];
        let s = |k: &str| d[k].as_str().unwrap_or_default();
        let content = json!({
            "title": format!("Results ready for {}", s("name")),
            "body": format!("Your results from {} are ready.", s("clinic")),
            "action_url": format!("/results/{}", s("id")),
            "data": {"id": s("id")},
        });
        std::hint::black_box(content);
    });
    println!(
        "limit: inapp by hand:  {rate:>10.0}/s  p50 {:>6.2} µs  p99 {:>6.2} µs",
        p50.as_secs_f64() * 1e6,
        p99.as_secs_f64() * 1e6
    );
    figures.insert("render_by_hand_limit_per_s".into(), rate.into());
    println!("BENCH_FIGURE {}", Value::Object(figures));
}
