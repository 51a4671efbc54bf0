use super::*;

const REAL: &str = include_str!("../../../jobs.toml");

fn parse(text: &str) -> anyhow::Result<JobsConfig> {
    JobsConfig::parse(text, Vec::new())
}

fn error_of(text: &str) -> String {
    format!("{:#}", parse(text).unwrap_err())
}

#[test]
fn the_real_jobs_file_parses() {
    let config = parse(REAL).expect("jobs.toml must parse");
    for q in QueueName::ALL {
        assert!(config.queues.contains_key(q.as_str()), "{q} is declared");
    }
    assert!(config.cron.iter().any(|c| c.job == CronJob::VacuumQueues));
}

#[test]
fn the_public_base_url_is_checked_and_optional() {
    let with = |v: Option<&str>| {
        let mut vars = vec![(
            "JOBS_FILE".to_owned(),
            concat!(env!("CARGO_MANIFEST_DIR"), "/../jobs.toml").to_owned(),
        )];
        if let Some(v) = v {
            vars.push(("PUBLIC_BASE_URL".to_owned(), v.to_owned()));
        }
        Settings::from_vars(vars)
    };
    assert_eq!(with(None).unwrap().public_base_url, None);
    assert_eq!(
        with(Some("https://notify.example.org/"))
            .unwrap()
            .public_base_url,
        Some("https://notify.example.org".to_owned())
    );
    for bad in ["notify.example.org", "ftp://x.org", "https://x.org/?a=1"] {
        let err = format!("{:#}", with(Some(bad)).unwrap_err());
        assert!(err.starts_with("PUBLIC_BASE_URL"), "{bad}: {err}");
    }
}

#[test]
fn rate_limits_are_read_overridden_and_checked() {
    let config = parse(REAL).unwrap();
    let limits = &config.rate_limits;
    assert_eq!(limits.send.burst, 400);
    assert!((limits.auth.per_sec - 2.0).abs() < f64::EPSILON);
    let overridden = JobsConfig::parse(
        REAL,
        vec![
            (
                "JOBS__RATE_LIMITS__SEND__PER_SEC".to_owned(),
                "5".to_owned(),
            ),
            ("JOBS__RATE_LIMITS__SEND__BURST".to_owned(), "7".to_owned()),
        ],
    )
    .unwrap();
    assert_eq!(
        overridden.rate_limits.send,
        ClassLimit {
            per_sec: 5.0,
            burst: 7
        }
    );
    for (var, value, named) in [
        ("JOBS__RATE_LIMITS__READ__PER_SEC", "0", "rate_limits.read"),
        (
            "JOBS__RATE_LIMITS__UPLOAD__BURST",
            "0",
            "rate_limits.upload",
        ),
        ("JOBS__RATE_LIMITS__AUTH__PER_SEC", "-1", "rate_limits.auth"),
        (
            "JOBS__RATE_LIMITS__REDIS_TIMEOUT_MS",
            "0",
            "rate_limits.redis_timeout_ms",
        ),
    ] {
        let err = format!(
            "{:#}",
            JobsConfig::parse(REAL, vec![(var.to_owned(), value.to_owned())]).unwrap_err()
        );
        assert!(err.contains(named), "{var}={value}: {err}");
    }
    let without = REAL.split("\n[rate_limits]").next().unwrap().to_owned();
    assert_eq!(
        parse(&without).unwrap().rate_limits.send,
        RateLimitsConfig::default().send,
        "the section is optional"
    );
}

#[test]
fn an_unknown_key_is_named() {
    let text = REAL.replace("concurrency = 32", "concurrency = 32\nconcurrancy = 3");
    let err = error_of(&text);
    assert!(
        err.contains("queues.email") && err.contains("concurrancy"),
        "{err}"
    );
}

#[test]
fn zero_concurrency_is_named() {
    let err = error_of(&REAL.replace("concurrency = 32", "concurrency = 0"));
    assert_eq!(err, "queues.email.concurrency: must be at least 1");
}

#[test]
fn a_bad_cron_expression_is_named() {
    let err = error_of(&REAL.replace("\"0 */5 * * * *\"", "\"0 */5 * * *\""));
    assert!(err.starts_with("cron[0].schedule"), "{err}");
    assert!(err.contains("six are expected"), "{err}");
    let err = error_of(&REAL.replace("\"0 */5 * * * *\"", "\"0 */5 * * * fortnight\""));
    assert!(
        err.starts_with("cron[0].schedule") && err.contains("not a valid cron"),
        "{err}"
    );
}

#[test]
fn an_unknown_queue_or_job_is_named() {
    let err = error_of(&REAL.replace("[queues.maintenance]", "[queues.fax]"));
    assert_eq!(
        err,
        "queues.fax: unknown queue; the queues are email, sms, push, whatsapp, inapp, webhook, maintenance, batch_chunk, bulk_csv, bulk_chunk, invitation, baa_reminder, ups_poll"
    );
    let err = error_of(&REAL.replace("job = \"vacuum_queues\"", "job = \"vacuum_everything\""));
    assert!(
        err.starts_with("cron[0].job") && err.contains("vacuum_everything"),
        "{err}"
    );
}

#[test]
fn a_missing_queue_is_named() {
    let start = REAL.find("[queues.maintenance]").unwrap();
    let end = REAL.find("# The dispatcher").unwrap();
    let text = format!("{}{}", &REAL[..start], &REAL[end..]);
    let err = error_of(&text);
    assert_eq!(
        err,
        "queues.maintenance: missing; every queue must be declared"
    );
}

#[test]
fn environment_overrides_win() {
    let env = vec![
        (
            "JOBS__QUEUES__EMAIL__CONCURRENCY".to_owned(),
            "7".to_owned(),
        ),
        (
            "JOBS__DISPATCHER__HIGH_WATER_MARK".to_owned(),
            "123".to_owned(),
        ),
        ("UNRELATED".to_owned(), "x".to_owned()),
    ];
    let config = JobsConfig::parse(REAL, env).unwrap();
    assert_eq!(config.queue(QueueName::Email).concurrency, 7);
    assert_eq!(config.dispatcher.high_water_mark, 123);
}

#[test]
fn an_override_of_the_wrong_type_is_named() {
    let env = vec![(
        "JOBS__QUEUES__EMAIL__CONCURRENCY".to_owned(),
        "lots".to_owned(),
    )];
    let err = format!("{:#}", JobsConfig::parse(REAL, env).unwrap_err());
    assert!(err.starts_with("queues.email.concurrency"), "{err}");
}

#[test]
fn trusted_proxies_parse_cidrs_and_single_addresses() {
    let t = TrustedProxies::parse(" 10.0.0.0/8, 192.168.1.7 ,fd00::/8,,2001:db8::1").unwrap();
    assert!(t.contains("10.20.30.40".parse().unwrap()));
    assert!(t.contains("192.168.1.7".parse().unwrap()));
    assert!(!t.contains("192.168.1.8".parse().unwrap()));
    assert!(t.contains("fd12::5".parse().unwrap()));
    assert!(t.contains("2001:db8::1".parse().unwrap()));
    assert!(!t.contains("2001:db8::2".parse().unwrap()));
    assert!(!t.contains("11.0.0.1".parse().unwrap()));
    // An IPv4 peer seen on a dual-stack socket.
    assert!(t.contains("::ffff:10.1.2.3".parse().unwrap()));
    // Host bits are dropped: 172.16.5.1/12 is 172.16.0.0/12.
    let t = TrustedProxies::parse("172.16.5.1/12").unwrap();
    assert!(t.contains("172.31.255.255".parse().unwrap()));
    assert!(TrustedProxies::parse("").unwrap().is_empty());
    assert!(TrustedProxies::parse(" , ").unwrap().is_empty());
}

#[test]
fn a_bad_trusted_proxy_is_named() {
    for bad in [
        "10.0.0.0/33",
        "10.0.0/8",
        "proxy.internal",
        "10.0.0.0/8;fd00::/8",
        "fd00::/129",
        "10.0.0.1:80",
    ] {
        let err = format!("{:#}", TrustedProxies::parse(bad).unwrap_err());
        assert!(err.starts_with("TRUSTED_PROXIES: `"), "{bad}: {err}");
    }
    let vars = [
        (
            "JOBS_FILE".to_owned(),
            format!("{}/../jobs.toml", env!("CARGO_MANIFEST_DIR")),
        ),
        (
            "TRUSTED_PROXIES".to_owned(),
            "10.0.0.0/8, nonsense".to_owned(),
        ),
    ];
    let err = format!("{:#}", Settings::from_vars(vars).unwrap_err());
    assert!(
        err.contains("TRUSTED_PROXIES") && err.contains("nonsense"),
        "{err}"
    );
    let vars = [
        (
            "JOBS_FILE".to_owned(),
            format!("{}/../jobs.toml", env!("CARGO_MANIFEST_DIR")),
        ),
        ("TRUSTED_PROXIES".to_owned(), "10.0.0.0/8".to_owned()),
    ];
    let settings = Settings::from_vars(vars).unwrap();
    assert!(
        settings
            .http
            .trusted_proxies
            .contains("10.9.9.9".parse().unwrap())
    );
    let vars = [(
        "JOBS_FILE".to_owned(),
        format!("{}/../jobs.toml", env!("CARGO_MANIFEST_DIR")),
    )];
    assert!(
        Settings::from_vars(vars)
            .unwrap()
            .http
            .trusted_proxies
            .is_empty()
    );
}

#[test]
fn security_events_retention_defaults_to_400_days() {
    assert_eq!(parse(REAL).unwrap().retention.security_events_days, 400);
    let without = REAL.replace("security_events_days = 400\n", "");
    assert_ne!(without, REAL);
    assert_eq!(parse(&without).unwrap().retention.security_events_days, 400);
    let custom = REAL.replace("security_events_days = 400", "security_events_days = 30");
    assert_eq!(parse(&custom).unwrap().retention.security_events_days, 30);
}

#[test]
fn backoff_grows_and_is_capped() {
    let b = Backoff {
        initial_ms: 100,
        max_ms: 1_000,
        multiplier: 2.0,
        jitter: 0.0,
    };
    let d: Vec<u128> = (1..=6).map(|n| b.delay(n).as_millis()).collect();
    assert_eq!(d, vec![100, 200, 400, 800, 1_000, 1_000]);
    let j = Backoff { jitter: 0.5, ..b };
    for _ in 0..100 {
        let ms = j.delay(2).as_millis();
        assert!((100..=300).contains(&ms), "{ms}");
    }
}

#[test]
fn empty_sweeps_slow_the_dispatcher_down_and_work_speeds_it_up() {
    let d = parse(REAL).unwrap().dispatcher;
    let busy = d.interval();
    assert_eq!(busy, Duration::from_millis(250));
    assert_eq!(d.idle_interval(), Duration::from_millis(1_000));
    let mut pause = busy;
    let mut pauses = Vec::new();
    for _ in 0..4 {
        pause = d.next_pause(pause, false);
        pauses.push(pause.as_millis());
    }
    assert_eq!(pauses, [500, 1_000, 1_000, 1_000]);
    assert_eq!(d.next_pause(pause, true), busy, "a sweep that found work");
}

#[test]
fn the_idle_interval_is_optional_and_checked() {
    let without = REAL.replace("idle_interval_ms = 1_000\n", "");
    assert_eq!(parse(&without).unwrap().dispatcher.idle_interval_ms, 1_000);
    let err = error_of(&REAL.replace("idle_interval_ms = 1_000", "idle_interval_ms = 100"));
    assert_eq!(
        err,
        "dispatcher.idle_interval_ms: must be between dispatcher.interval_ms (250) and 60000"
    );
}
