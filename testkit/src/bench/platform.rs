//! The api and a worker as child processes of a bench, on a test app's
//! settings, the way they run in production.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use crate::TestApp;

/// The release api binary beside the bench's own.
pub fn api_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("the bench's path");
    let dir = exe.parent().and_then(|d| d.parent()).expect("target dir");
    let api = dir.join("api");
    assert!(
        api.exists(),
        "build the api first: cargo build --release -p api ({} is missing)",
        api.display()
    );
    api
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The running api and worker, and the api's address.
#[derive(Debug)]
pub struct Children {
    pub api: tokio::process::Child,
    pub worker: tokio::process::Child,
    pub base: String,
}

/// Starts the api and the worker (`worker_exe`) on the app's settings, the
/// api on a free port. Warnings and errors of each are kept beside the
/// bench binary (`target/release/bench-{tag}api.log`, `…worker.log`).
pub fn spawn(app: &TestApp, worker_exe: &Path, tag: &str) -> Children {
    let port = free_port();
    let vars: Vec<(String, String)> = app
        .vars
        .iter()
        .filter(|(k, _)| k != "API_ADDR")
        .cloned()
        .chain([("API_ADDR".to_owned(), format!("127.0.0.1:{port}"))])
        .collect();
    let child = |path: &Path, name: &str| {
        let log = api_binary().with_file_name(format!("bench-{tag}{name}.log"));
        let log = std::fs::File::create(&log).expect("the bench log can be written");
        tokio::process::Command::new(path)
            .envs(vars.iter().cloned())
            .env("RUST_LOG", "warn")
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .expect("the binary starts")
    };
    Children {
        api: child(&api_binary(), "api"),
        worker: child(worker_exe, "worker"),
        base: format!("http://127.0.0.1:{port}"),
    }
}

/// Waits until the api at `base` answers its liveness probe.
pub async fn wait_ready(client: &reqwest::Client, base: &str) {
    crate::eventually("the api to start", Duration::from_secs(30), || async {
        client
            .get(format!("{base}/health/live"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
            .then_some(())
    })
    .await
}
