//! Services run as real child processes, for tests that kill them or read
//! their output.

use std::{
    path::{Path, PathBuf},
    process::ExitStatus,
    time::Duration,
};

use tokio::{io::AsyncReadExt, process::Child};

/// The workspace's binary `name` (`api`, `worker`, `scheduler`), as built
/// for the running test: Cargo puts binaries in `target/<profile>/` and test
/// binaries in `target/<profile>/deps/`. Cargo sets `CARGO_BIN_EXE_<name>`
/// only for a binary of the test's own package, and builds another
/// package's binaries only when asked, so the system tests look here.
///
/// # Panics
///
/// When the binary is missing, naming the command that builds it.
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    let dir = exe.parent().expect("the test binary's folder");
    let dir = match dir.file_name() {
        Some(deps) if deps == "deps" => dir.parent().expect("the profile's folder"),
        _ => dir,
    };
    let path = dir.join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    assert!(
        path.is_file(),
        "{} is missing: build the workspace's binaries with `cargo build --workspace --bins` \
         (`.ci/test` does; `cargo test` and `cargo nextest run` build them only for the \
         binary's own crate's tests)",
        path.display()
    );
    path
}

/// Starts the binary `bin` with `vars` and then `extra` set, logging JSON
/// lines at `level` (`RUST_LOG`), its stdout and stderr piped; it is killed
/// when dropped.
pub fn spawn_json_logging(
    bin: &Path,
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
        .unwrap_or_else(|e| panic!("{} starts: {e}", bin.display()))
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
