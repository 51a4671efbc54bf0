//! Services run as real child processes, for tests that kill them or read
//! their output.

use std::{process::ExitStatus, time::Duration};

use tokio::{io::AsyncReadExt, process::Child};

/// Starts the binary `bin` with `vars` and then `extra` set, logging JSON
/// lines at `level` (`RUST_LOG`), its stdout and stderr piped; it is killed
/// when dropped.
pub fn spawn_json_logging(
    bin: &str,
    vars: &[(String, String)],
    extra: &[(&str, String)],
    level: &str,
) -> Child {
    tokio::process::Command::new(bin)
        .envs(vars.iter().cloned())
        .envs(extra.iter().map(|(k, v)| (*k, v.clone())))
        .env("LOG_FORMAT", "json")
        .env("RUST_LOG", level)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("{bin} starts: {e}"))
}

/// Sends SIGTERM to `child`, waits up to `timeout` for it to exit, and
/// returns its exit status and everything it wrote (stdout, then stderr, when
/// they were piped).
pub async fn terminate(child: &mut Child, timeout: Duration) -> (ExitStatus, String) {
    let pid = child.id().expect("the child is running").to_string();
    let kill = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill runs");
    assert!(kill.success(), "SIGTERM delivered");
    let status = tokio::time::timeout(timeout, child.wait())
        .await
        .unwrap_or_else(|_| panic!("the process did not exit within {timeout:?} of SIGTERM"))
        .expect("wait for the child");
    let mut out = String::new();
    if let Some(mut stdout) = child.stdout.take() {
        stdout.read_to_string(&mut out).await.expect("read stdout");
    }
    if let Some(mut stderr) = child.stderr.take() {
        stderr.read_to_string(&mut out).await.expect("read stderr");
    }
    (status, out)
}
