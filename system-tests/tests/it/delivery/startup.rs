//! A bad jobs file stops a service at startup with a message naming the key.

use std::process::Command;

#[test]
fn a_bad_jobs_file_stops_the_worker_and_names_the_key() {
    let real = std::fs::read_to_string(testkit::repo_root().join("jobs.toml")).unwrap();
    for (bad, key) in [
        (
            real.replace("concurrency = 32", "concurrency = 0"),
            "queues.email.concurrency",
        ),
        (
            real.replace("timeout_secs = 30", "timeout_secs = 30\ntimeout_sec = 3"),
            "timeout_sec",
        ),
        (
            real.replace("\"0 */5 * * * *\"", "\"every five minutes\""),
            "cron[0].schedule",
        ),
    ] {
        let path = std::env::temp_dir().join(format!("jobs-{}.toml", uuid::Uuid::new_v4()));
        std::fs::write(&path, bad).unwrap();
        let out = Command::new(testkit::process::binary("worker"))
            .env("JOBS_FILE", &path)
            .env("DATABASE_URL", "postgres://127.0.0.1:1/never")
            .output()
            .unwrap();
        std::fs::remove_file(&path).unwrap();
        assert!(!out.status.success());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(key), "expected `{key}` in: {stderr}");
    }
}
