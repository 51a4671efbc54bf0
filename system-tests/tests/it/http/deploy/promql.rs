//! PromQL as far as the deployment test needs it: which metrics (and
//! labels) an expression reads, and whether a `/metrics` page carries them.

use std::collections::{BTreeMap, BTreeSet};

/// The metric selectors of a PromQL expression: each metric name with its
/// label matchers (label → value). Functions, aggregation clauses
/// (`by (…)`, `on (…)`), ranges and numbers are skipped.
pub fn selectors(expr: &str) -> Vec<(String, BTreeMap<String, String>)> {
    const KEYWORDS: &[&str] = &[
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
        "bool",
        "and",
        "or",
        "unless",
        "offset",
    ];
    let chars: Vec<char> = expr.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    let skip_ws = |i: &mut usize| {
        while *i < chars.len() && chars[*i].is_whitespace() {
            *i += 1;
        }
    };
    let ident = |i: &mut usize| {
        let start = *i;
        while *i < chars.len() && (chars[*i].is_alphanumeric() || "_:".contains(chars[*i])) {
            *i += 1;
        }
        chars[start..*i].iter().collect::<String>()
    };
    let string = |i: &mut usize| {
        let quote = chars[*i];
        *i += 1;
        let start = *i;
        while chars[*i] != quote {
            *i += 1;
        }
        *i += 1;
        chars[start..*i - 1].iter().collect::<String>()
    };
    while i < chars.len() {
        let c = chars[i];
        if c == '"' || c == '\'' {
            string(&mut i);
        } else if c == '[' {
            while chars[i] != ']' {
                i += 1;
            }
            i += 1;
        } else if c.is_ascii_digit() {
            while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '.') {
                i += 1;
            }
        } else if c.is_alphabetic() || c == '_' {
            let word = ident(&mut i);
            let mut j = i;
            skip_ws(&mut j);
            let mut k = j;
            let clause = matches!(ident(&mut k).as_str(), "by" | "without");
            if KEYWORDS.contains(&word.as_str()) {
                if j < chars.len() && chars[j] == '(' && word != "bool" {
                    while chars[j] != ')' {
                        j += 1;
                    }
                    i = j + 1;
                }
            } else if (j < chars.len() && chars[j] == '(') || clause {
                // A function or an aggregation (`sum (…)`, `sum by (…) (…)`).
            } else {
                let mut matchers = BTreeMap::new();
                if j < chars.len() && chars[j] == '{' {
                    j += 1;
                    loop {
                        skip_ws(&mut j);
                        if chars[j] == '}' {
                            break;
                        }
                        let label = ident(&mut j);
                        skip_ws(&mut j);
                        while "=!~".contains(chars[j]) {
                            j += 1;
                        }
                        skip_ws(&mut j);
                        matchers.insert(label, string(&mut j));
                        skip_ws(&mut j);
                        if chars[j] == ',' {
                            j += 1;
                        }
                    }
                    i = j + 1;
                }
                out.push((word, matchers));
            }
        } else {
            i += 1;
        }
    }
    out
}

#[test]
fn promql_selectors_are_read_with_their_labels() {
    let found = selectors(
        r#"histogram_quantile(0.99, sum by (channel, le) (rate(x_bucket{route!~"ws|a.b", outcome="failed"}[$__rate_interval]))) > 0.5
           unless on (queue) (max by (queue) (queue_paused) == 1) / absent(y)"#,
    );
    let names: Vec<&str> = found.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["x_bucket", "queue_paused", "y"]);
    assert_eq!(found[0].1["route"], "ws|a.b");
    assert_eq!(found[0].1["outcome"], "failed");
}

/// The metrics page's samples: name → the label names seen on it.
fn samples(page: &str) -> BTreeMap<String, BTreeSet<String>> {
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for line in page
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let end = line.find(['{', ' ']).unwrap_or(line.len());
        let labels = out.entry(line[..end].to_owned()).or_default();
        if line[end..].starts_with('{') {
            let body = &line[end + 1..line.find('}').unwrap_or(line.len())];
            for pair in body.split("\",") {
                if let Some((k, _)) = pair.split_once('=') {
                    labels.insert(k.trim().to_owned());
                }
            }
        }
    }
    out
}

/// What of `queries` the page lacks: a metric no sample carries, or a label
/// a selector matches on that no sample of the metric has.
pub fn missing(page: &str, queries: &[(String, String)]) -> BTreeSet<String> {
    let have = samples(page);
    let mut gaps = BTreeSet::new();
    for (_, q) in queries {
        for (metric, matchers) in selectors(q) {
            match have.get(&metric) {
                None => {
                    gaps.insert(metric);
                }
                Some(labels) => {
                    for label in matchers.keys().filter(|l| !labels.contains(*l)) {
                        gaps.insert(format!("{metric}{{{label}}}"));
                    }
                }
            }
        }
    }
    gaps
}
