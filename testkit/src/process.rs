//! Services run as real child processes, for tests that kill them or read
//! their output.

use std::{process::ExitStatus, time::Duration};

use tokio::{io::AsyncReadExt, process::Child};

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
