//! Small helpers the benchmarks share: settings from the environment, the
//! machine's size, the one CSV the bulk benches use, the machine-readable
//! figure lines `.ci/bench` collects, and Postgres's own CPU time.

use std::collections::HashMap;

use sqlx::{Connection, PgConnection};

mod insert;
mod platform;
pub use insert::{STATEMENT_ROWS, insert_limit};
pub use platform::{Children, api_binary, spawn, wait_ready};

/// A whole-number setting from the environment, or `default`.
pub fn env_num(key: &str, default: usize) -> usize {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The machine's size, for the report: cores and memory.
pub fn machine() -> String {
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let mem_kib: u64 = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .next()
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0);
    format!(
        "{cores} cores, {:.0} GiB RAM",
        mem_kib as f64 / 1024.0 / 1024.0
    )
}

/// The machine's load average (1, 5, 15 minutes), or `unknown`.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".to_owned())
}

/// Prints the Postgres settings that decide a bench's numbers, and a
/// warning when autovacuum is off (tables filled from empty then never get
/// statistics, and the plans go bad at a million rows); `advice` ends that
/// warning's sentence.
pub async fn print_postgres_settings(pool: &sqlx::PgPool, advice: &str) {
    let settings: Vec<(String, String)> = sqlx::query_as(
        "select name, setting from pg_settings
         where name in ('autovacuum', 'autovacuum_naptime', 'shared_buffers', 'max_wal_size',
                        'synchronous_commit', 'fsync', 'wal_level', 'checkpoint_timeout',
                        'max_connections')
         order by name",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    let line: Vec<String> = settings.iter().map(|(k, v)| format!("{k}={v}")).collect();
    println!("postgres: {}", line.join(" "));
    if settings
        .iter()
        .any(|(k, v)| k == "autovacuum" && v == "off")
    {
        println!("WARNING: autovacuum is off; production runs with it on{advice}");
    }
}

/// Inserts `n` subscribers of `tenant`, `member-1` to `member-n`, with one
/// set-based statement.
pub async fn seed_members(pool: &sqlx::PgPool, tenant: shared::domain::TenantId, n: usize) {
    sqlx::query(
        "insert into subscribers (id, tenant_id, external_id)
         select gen_random_uuid(), $1, 'member-' || i from generate_series(1, $2) as i",
    )
    .bind(tenant)
    .bind(n as i64)
    .execute(pool)
    .await
    .expect("the subscribers");
}

/// Runs a benchmark's async body on a multi-threaded runtime.
pub fn run<F: std::future::Future<Output = ()>>(body: F) {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a runtime")
        .block_on(body)
}

/// The header of the bulk benches' CSV.
pub const CSV_HEADER: &str = "Patient ID,Name,Clinic\n";

/// Row `i` of the bulk benches' CSV (a quoted clinic with a comma in it),
/// newline included.
pub fn csv_row(i: usize) -> String {
    format!(
        "csv-patient-{i},Name {i},\"Northside Family Practice, suite {}\"\n",
        i % 97
    )
}

/// The bulk benches' CSV of `rows` rows, header included: what the batches
/// bench uploads and what the limits bench copies into Postgres.
pub fn csv(rows: usize) -> Vec<u8> {
    let mut body = Vec::with_capacity(rows * 64 + CSV_HEADER.len());
    body.extend_from_slice(CSV_HEADER.as_bytes());
    for i in 0..rows {
        body.extend_from_slice(csv_row(i).as_bytes());
    }
    body
}

/// Prints one machine-readable line of figures,
/// `BENCH_FIGURE {"key":value,...}`, which `.ci/bench` collects. A value
/// that is not finite is written as `null`.
pub fn figure(pairs: &[(&str, f64)]) {
    let map: serde_json::Map<String, serde_json::Value> = pairs
        .iter()
        .map(|(k, v)| {
            let v = (v * 1_000.0).round() / 1_000.0;
            ((*k).to_owned(), serde_json::Value::from(v))
        })
        .collect();
    println!("BENCH_FIGURE {}", serde_json::Value::Object(map));
}

/// Peak resident set of a process (`VmHWM`), in MiB.
pub fn peak_rss_mib(pid: u32) -> f64 {
    status_kib(pid, "VmHWM:") / 1024.0
}

/// Current resident set of a process (`VmRSS`), in MiB.
pub fn rss_mib(pid: u32) -> f64 {
    status_kib(pid, "VmRSS:") / 1024.0
}

fn status_kib(pid: u32, field: &str) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<f64>().ok())
        })
        .unwrap_or(0.0)
}

/// `(parent pid, utime + stime in clock ticks)` of a process.
fn proc_stat(pid: u32) -> Option<(u32, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may hold spaces.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state(3) ppid(4) … utime(14) stime(15).
    let ppid = fields.get(1)?.parse().ok()?;
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((ppid, utime + stime))
}

/// Clock ticks per second in `/proc/<pid>/stat` (`USER_HZ`, 100 on Linux).
const TICKS_PER_SEC: f64 = 100.0;

/// What Postgres spent during a stage: CPU time of the server's processes
/// and WAL written.
#[derive(Debug, Clone, Copy)]
pub struct PgCost {
    /// CPU time (user + system) of the postmaster, its background processes
    /// and the backends connected to the bench's database, in microseconds.
    pub cpu_us: f64,
    /// CPU time of backends connected to other databases over the same
    /// span (other people's work on a shared server), in microseconds.
    pub others_cpu_us: f64,
    /// WAL bytes written by the whole server.
    pub wal_bytes: f64,
}

impl PgCost {
    /// Prints what Postgres spent per in-app notification, `n` of them,
    /// and what other databases' backends used meanwhile.
    pub fn print_per_inapp(&self, n: usize) {
        println!(
            "postgres per in-app notification: {:.0} µs of CPU ({:.1} s in all), {:.0} bytes of WAL; \
             other databases' backends used {:.1} s of CPU meanwhile",
            self.cpu_us / n as f64,
            self.cpu_us / 1e6,
            self.wal_bytes / n as f64,
            self.others_cpu_us / 1e6
        );
    }
}

/// Samples the CPU time of every Postgres process every 200 ms (a backend
/// that exits between two samples loses at most that much) and reads the
/// WAL position at the start and the end.
///
/// Needs the server on this machine, seen from the same process namespace
/// (not inside a container): `start` answers `None` otherwise.
#[derive(Debug)]
pub struct PgCpu {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<(f64, f64)>,
    conn: PgConnection,
    wal_start: String,
}

impl PgCpu {
    /// Starts sampling; `database` is the bench's database.
    pub async fn start(database: &str) -> Option<Self> {
        let url = format!("{}/postgres", crate::postgres_server_url());
        let mut conn = PgConnection::connect(&url).await.ok()?;
        let backend: i32 = sqlx::query_scalar("select pg_backend_pid()")
            .fetch_one(&mut conn)
            .await
            .ok()?;
        let (postmaster, _) = proc_stat(backend as u32)?;
        let comm = std::fs::read_to_string(format!("/proc/{postmaster}/comm")).ok()?;
        if !comm.trim().starts_with("postgres") {
            return None;
        }
        let wal_start: String = sqlx::query_scalar("select pg_current_wal_lsn()::text")
            .fetch_one(&mut conn)
            .await
            .ok()?;
        let mut sampler = PgConnection::connect(&url).await.ok()?;
        let database = database.to_owned();
        let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            // pid → (ticks at first sight, ticks at last sight, ours?)
            let mut seen: HashMap<u32, (u64, u64, bool)> = HashMap::new();
            let mut first = true;
            let mut done = false;
            loop {
                let ours: HashMap<u32, bool> = sqlx::query_as::<_, (i32, Option<String>)>(
                    "select pid, datname::text from pg_stat_activity",
                )
                .fetch_all(&mut sampler)
                .await
                .unwrap_or_default()
                .into_iter()
                .map(|(pid, db)| (pid as u32, db.is_none_or(|d| d == database)))
                .collect();
                let mut pids = vec![postmaster];
                if let Ok(dir) = std::fs::read_dir("/proc") {
                    pids.extend(
                        dir.flatten()
                            .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok()),
                    );
                }
                for pid in pids {
                    let Some((ppid, ticks)) = proc_stat(pid) else {
                        continue;
                    };
                    if pid != postmaster && ppid != postmaster {
                        continue;
                    }
                    // Processes outside pg_stat_activity (the postmaster,
                    // the logger, …) serve everyone, as do the background
                    // ones without a database: they count.
                    let mine = ours.get(&pid).copied().unwrap_or(true);
                    let entry =
                        seen.entry(pid)
                            .or_insert((if first { ticks } else { 0 }, ticks, mine));
                    entry.1 = ticks;
                    entry.2 = mine;
                }
                first = false;
                if done {
                    break;
                }
                tokio::select! {
                    _ = &mut stopped => done = true,
                    _ = tokio::time::sleep(std::time::Duration::from_millis(200)) => {}
                }
            }
            let (mut mine, mut others) = (0u64, 0u64);
            for (start, end, is_mine) in seen.into_values() {
                let d = end.saturating_sub(start);
                if is_mine {
                    mine += d;
                } else {
                    others += d;
                }
            }
            let us = |t: u64| t as f64 / TICKS_PER_SEC * 1e6;
            (us(mine), us(others))
        });
        Some(Self {
            stop,
            task,
            conn,
            wal_start,
        })
    }

    /// Takes a last sample and answers what the span cost.
    pub async fn finish(mut self) -> PgCost {
        let _ = self.stop.send(());
        let (cpu_us, others_cpu_us) = self.task.await.unwrap_or((f64::NAN, f64::NAN));
        let wal_bytes: f64 =
            sqlx::query_scalar("select pg_wal_lsn_diff(pg_current_wal_lsn(), $1::pg_lsn)::float8")
                .bind(&self.wal_start)
                .fetch_one(&mut self.conn)
                .await
                .unwrap_or(f64::NAN);
        PgCost {
            cpu_us,
            others_cpu_us,
            wal_bytes,
        }
    }
}
