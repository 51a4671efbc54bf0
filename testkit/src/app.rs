//! The platform in-process, for black-box tests over HTTP.
//!
//! [`spawn_app`] starts the api (on port 0), a worker and a scheduler with a
//! fresh database, their own Redis key prefix and their own SMTP server, all
//! configured from the real `jobs.toml` plus test overrides (short backoff,
//! fast dispatcher sweeps). Each service can be stopped and started again;
//! the worker can also run as a real child process, to be killed. The
//! requests tests send through it are in `requests`.

use std::{net::SocketAddr, time::Duration};

use secrecy::ExposeSecret;
use serde_json::{Value, json};
use shared::{config::Settings, domain::TenantId};
use sqlx::PgPool;
use tokio::{sync::oneshot, task::JoinHandle};

use crate::{db::TestDb, proxy::TcpProxy, smtp::SmtpServer};

mod requests;

/// A service running in this process.
#[derive(Debug)]
pub struct Service {
    stop: Option<oneshot::Sender<()>>,
    join: JoinHandle<anyhow::Result<()>>,
}

impl Service {
    fn spawn<F, Fut>(run: F) -> Self
    where
        F: FnOnce(std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>) -> Fut,
        Fut: std::future::Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel::<()>();
        let shutdown = Box::pin(async move {
            let _ = rx.await;
        });
        Self {
            stop: Some(tx),
            join: tokio::spawn(run(shutdown)),
        }
    }

    /// Asks the service to stop and waits for it.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        self.join.await?
    }
}

mod idle_pace;

use idle_pace::idle_pace_follows_interval;

/// Test overrides on top of the real `jobs.toml`.
const DEFAULT_VARS: &[(&str, &str)] = &[
    ("API_ADDR", "127.0.0.1:0"),
    // 32 bytes of 0x2a: a test-only key for secrets sealed at rest.
    (
        "ENCRYPTION_KEYS",
        "test:KioqKioqKioqKioqKioqKioqKioqKioqKioqKioqKio=",
    ),
    ("ENCRYPTION_KEY_ID", "test"),
    ("DATABASE_MAX_CONNECTIONS", "10"),
    ("WORKER_POLL_INTERVAL_MS", "50"),
    ("SHUTDOWN_TIMEOUT_SECS", "10"),
    ("EMAIL_FROM", "Care Team <care@clinic.example.org>"),
    ("JOBS__DISPATCHER__INTERVAL_MS", "50"),
    ("JOBS__DISPATCHER__IDLE_INTERVAL_MS", "200"),
    // Alert rules are evaluated by the alert tests themselves, with their
    // own clock; elsewhere a default rule tripped by a test's failures
    // would add notices that test does not expect.
    ("ALERTS_EVALUATE_SECS", "0"),
    ("JOBS__DISPATCHER__REDISPATCH_AFTER_SECS", "10"),
    ("JOBS__QUEUES__EMAIL__TIMEOUT_SECS", "10"),
    ("JOBS__QUEUES__EMAIL__BACKOFF__INITIAL_MS", "100"),
    ("JOBS__QUEUES__EMAIL__BACKOFF__MAX_MS", "2000"),
    ("JOBS__QUEUES__EMAIL__BACKOFF__MULTIPLIER", "2.0"),
    ("JOBS__QUEUES__EMAIL__BACKOFF__JITTER", "0.0"),
    // Tests and benches fire requests far faster than any caller should;
    // the rate-limit tests set their own small limits.
    ("JOBS__RATE_LIMITS__SEND__PER_SEC", "1000000"),
    ("JOBS__RATE_LIMITS__SEND__BURST", "1000000"),
    ("JOBS__RATE_LIMITS__READ__PER_SEC", "1000000"),
    ("JOBS__RATE_LIMITS__READ__BURST", "1000000"),
    ("JOBS__RATE_LIMITS__WRITE__PER_SEC", "1000000"),
    ("JOBS__RATE_LIMITS__WRITE__BURST", "1000000"),
    ("JOBS__RATE_LIMITS__UPLOAD__PER_SEC", "1000000"),
    ("JOBS__RATE_LIMITS__UPLOAD__BURST", "1000000"),
    ("JOBS__RATE_LIMITS__AUTH__PER_SEC", "1000000"),
    ("JOBS__RATE_LIMITS__AUTH__BURST", "1000000"),
    ("JOBS__RATE_LIMITS__CALLBACK__PER_SEC", "1000000"),
    ("JOBS__RATE_LIMITS__CALLBACK__BURST", "1000000"),
];

/// Builds a [`TestApp`].
#[derive(Debug)]
pub struct TestAppBuilder {
    vars: Vec<(String, String)>,
    worker: bool,
    scheduler: bool,
    redis_proxy: bool,
    postgres_proxy: bool,
    smtp: Option<SmtpServer>,
    signin_clock: Option<std::sync::Arc<dyn api::signin::Clock>>,
    permissions_clock: Option<std::sync::Arc<dyn api::signin::Clock>>,
}

impl Default for TestAppBuilder {
    fn default() -> Self {
        Self {
            vars: Vec::new(),
            worker: true,
            scheduler: true,
            redis_proxy: false,
            postgres_proxy: false,
            smtp: None,
            signin_clock: None,
            permissions_clock: None,
        }
    }
}

impl TestAppBuilder {
    /// Sets an environment-style setting (also `JOBS__…` overrides).
    pub fn var(mut self, key: &str, value: impl ToString) -> Self {
        self.vars.push((key.to_owned(), value.to_string()));
        self
    }

    /// Points the platform at the fake HTTP providers.
    pub fn providers(mut self, fake: &crate::providers::FakeProviders) -> Self {
        for (k, v) in fake.vars() {
            self.vars.push((k.to_owned(), v));
        }
        self
    }

    /// Starts without the in-process worker.
    pub fn without_worker(mut self) -> Self {
        self.worker = false;
        self
    }

    /// Starts without the in-process scheduler.
    pub fn without_scheduler(mut self) -> Self {
        self.scheduler = false;
        self
    }

    /// Routes the platform's Redis traffic through a proxy the test can cut.
    pub fn redis_through_proxy(mut self) -> Self {
        self.redis_proxy = true;
        self
    }

    /// Routes the platform's Postgres traffic through a proxy the test can cut.
    pub fn postgres_through_proxy(mut self) -> Self {
        self.postgres_proxy = true;
        self
    }

    /// Uses this SMTP server instead of a fresh accepting one.
    pub fn smtp(mut self, smtp: SmtpServer) -> Self {
        self.smtp = Some(smtp);
        self
    }

    /// Makes the api's sign-in protection read the time from `clock`.
    pub fn signin_clock(mut self, clock: std::sync::Arc<dyn api::signin::Clock>) -> Self {
        self.signin_clock = Some(clock);
        self
    }

    /// Makes the api's permission checks (delegation windows) read the
    /// time from `clock`.
    pub fn permissions_clock(mut self, clock: std::sync::Arc<dyn api::signin::Clock>) -> Self {
        self.permissions_clock = Some(clock);
        self
    }

    /// Starts everything.
    pub async fn spawn(self) -> TestApp {
        shared::telemetry::init_for_tests();
        let db = TestDb::new().await;
        let smtp = match self.smtp {
            Some(s) => s,
            None => SmtpServer::start().await,
        };
        let prefix = format!("t{}", &uuid::Uuid::new_v4().simple().to_string()[..16]);
        let redis_addr: SocketAddr = crate::redis_url()
            .trim_start_matches("redis://")
            .trim_end_matches('/')
            .parse()
            .expect("TEST_REDIS_URL is redis://host:port");
        let proxy = if self.redis_proxy {
            Some(TcpProxy::start(redis_addr).await)
        } else {
            None
        };
        let redis_url = match &proxy {
            Some(p) => format!("redis://{}", p.addr()),
            None => crate::redis_url(),
        };
        let pg_proxy = if self.postgres_proxy {
            let server = crate::postgres_server_url();
            let hostport = server
                .rsplit('@')
                .next()
                .unwrap_or("127.0.0.1:5432")
                .trim_end_matches('/');
            let addr: SocketAddr = hostport.parse().expect("TEST_DATABASE_URL has host:port");
            Some(TcpProxy::start(addr).await)
        } else {
            None
        };
        let database_url = match &pg_proxy {
            Some(p) => db.url.replacen(
                crate::postgres_server_url()
                    .rsplit('@')
                    .next()
                    .unwrap_or_default(),
                &p.addr().to_string(),
                1,
            ),
            None => db.url.clone(),
        };
        let mut vars: Vec<(String, String)> = DEFAULT_VARS
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        vars.extend([
            (
                "JOBS_FILE".to_owned(),
                crate::repo_root().join("jobs.toml").display().to_string(),
            ),
            ("DATABASE_URL".to_owned(), database_url),
            ("REDIS_URL".to_owned(), redis_url),
            ("REDIS_PREFIX".to_owned(), prefix.clone()),
            ("SMTP_URL".to_owned(), smtp.url()),
        ]);
        vars.extend(self.vars);
        idle_pace_follows_interval(&mut vars);
        let settings = Settings::from_vars(vars.clone()).expect("test settings are valid");
        let mut application = api::Application::build(&settings)
            .await
            .expect("the api starts");
        if let Some(clock) = self.signin_clock {
            application.set_signin_clock(clock);
        }
        if let Some(clock) = self.permissions_clock {
            application.set_permissions_clock(clock);
        }
        let addr = application.addr();
        let api_settings = settings.clone();
        let api = Service::spawn(move |shutdown| async move {
            application
                .run_until(shutdown, api_settings.shutdown_timeout)
                .await
        });
        let pool = shared::db::connect_url(
            &db.url,
            5,
            shared::db::scope::Fallback::Platform("test_assertions"),
        )
        .await
        .expect("test pool");
        let tenant = shared::db::tenants::create(&pool, "Test Clinic")
            .await
            .expect("tenant");
        let key = shared::db::api_keys::create(&pool, tenant.id, "test")
            .await
            .expect("key");
        let mut app = TestApp {
            base: format!("http://{addr}"),
            addr,
            // Idle connections are let go before the api's header-read
            // timeout (10 s) closes them, so a request after a wait never
            // races the server's close of the connection it reuses.
            client: reqwest::Client::builder()
                .pool_idle_timeout(std::time::Duration::from_secs(5))
                .build()
                .expect("an HTTP client"),
            pool,
            tenant_id: tenant.id,
            api_key: key.secret.expose_secret().to_owned(),
            redis_prefix: prefix,
            smtp,
            proxy,
            postgres_proxy: pg_proxy,
            settings,
            vars,
            api: Some(api),
            worker: None,
            scheduler: None,
            db,
        };
        if self.worker {
            app.start_worker();
        }
        if self.scheduler {
            app.start_scheduler();
        }
        app
    }
}

/// The platform under test.
#[derive(Debug)]
pub struct TestApp {
    /// The API's address.
    pub addr: SocketAddr,
    /// `http://addr`.
    pub base: String,
    /// An HTTP client.
    pub client: reqwest::Client,
    /// A pool on the test database, for assertions.
    pub pool: PgPool,
    /// The test tenant.
    pub tenant_id: TenantId,
    /// Its API key.
    pub api_key: String,
    /// The Redis key prefix of this test.
    pub redis_prefix: String,
    /// The SMTP server email goes to.
    pub smtp: SmtpServer,
    /// The Redis proxy, when asked for.
    pub proxy: Option<TcpProxy>,
    /// The Postgres proxy, when asked for.
    pub postgres_proxy: Option<TcpProxy>,
    /// The settings every service got.
    pub settings: Settings,
    /// The same settings as environment variables (for child processes).
    pub vars: Vec<(String, String)>,
    api: Option<Service>,
    worker: Option<Service>,
    scheduler: Option<Service>,
    db: TestDb,
}

/// Starts the platform with defaults.
pub async fn spawn_app() -> TestApp {
    TestApp::builder().spawn().await
}

impl TestApp {
    /// Starts the API alone: no worker, no scheduler.
    pub async fn spawn_api_only() -> TestApp {
        Self::builder()
            .without_worker()
            .without_scheduler()
            .spawn()
            .await
    }

    /// A builder for a customised app.
    pub fn builder() -> TestAppBuilder {
        TestAppBuilder::default()
    }

    /// Starts an in-process worker (if none runs).
    pub fn start_worker(&mut self) {
        if self.worker.is_none() {
            let settings = self.settings.clone();
            self.worker = Some(Service::spawn(move |shutdown| {
                worker::run(settings, shutdown)
            }));
        }
    }

    /// Stops the in-process worker gracefully.
    pub async fn stop_worker(&mut self) {
        if let Some(w) = self.worker.take() {
            w.stop().await.expect("the worker stops cleanly");
        }
    }

    /// Starts an in-process scheduler (if none runs).
    pub fn start_scheduler(&mut self) {
        if self.scheduler.is_none() {
            let settings = self.settings.clone();
            self.scheduler = Some(Service::spawn(move |shutdown| {
                scheduler::run(settings, shutdown)
            }));
        }
    }

    /// Stops the in-process scheduler.
    pub async fn stop_scheduler(&mut self) {
        if let Some(s) = self.scheduler.take() {
            s.stop().await.expect("the scheduler stops cleanly");
        }
    }

    /// Waits until no job waits in `queue`'s Redis backlog.
    pub async fn wait_queue_empty(&self, queue: shared::jobs::QueueName, timeout: Duration) {
        let queues = shared::jobs::Queues::new(&self.settings.redis_url, &self.redis_prefix)
            .expect("queues");
        crate::eventually(&format!("the {queue} queue to empty"), timeout, || async {
            (queues.backlog(queue).await.ok() == Some(0)).then_some(())
        })
        .await
    }

    /// Waits until nothing of this deployment is left to do now: no job
    /// waits in any queue's Redis backlog, no worker holds one in flight
    /// (apalis-redis's per-worker `inflight` sets), and Postgres holds no
    /// notification or webhook delivery that is being sent or is due.
    /// Work scheduled for later (a retry's backoff, quiet hours) is not
    /// waited for. Seen on two looks in a row, so a job that pushed a
    /// follow-up between the looks is waited for too.
    ///
    /// This is how a test shows that something did *not* happen: once the
    /// platform has settled, whatever it was going to do has been done.
    pub async fn wait_settled(&self, timeout: Duration) {
        self.wait_quiet("the platform to settle", timeout, true)
            .await
    }

    /// Waits until no job waits in any queue's Redis backlog and no worker
    /// holds one in flight, on two looks in a row; unlike
    /// [`TestApp::wait_settled`], work Postgres holds that no dispatcher
    /// will push (none runs) is not waited for.
    pub async fn wait_queues_idle(&self, timeout: Duration) {
        self.wait_quiet("the queues to be idle", timeout, false)
            .await
    }

    async fn wait_quiet(&self, what: &str, timeout: Duration, with_postgres: bool) {
        let quiet = std::sync::atomic::AtomicUsize::new(0);
        let ordering = std::sync::atomic::Ordering::Relaxed;
        crate::eventually(what, timeout, || async {
            let mut busy = self.jobs_in_redis().await;
            if with_postgres && busy == 0 {
                busy += self.work_due_in_postgres().await;
            }
            if busy == 0 {
                quiet.fetch_add(1, ordering);
            } else {
                quiet.store(0, ordering);
            }
            (quiet.load(ordering) >= 2).then_some(())
        })
        .await
    }

    /// Jobs waiting or in flight in every queue's Redis keys.
    async fn jobs_in_redis(&self) -> usize {
        let queues = shared::jobs::Queues::new(&self.settings.redis_url, &self.redis_prefix)
            .expect("queues");
        let mut redis = queues.connection();
        let mut waiting = 0;
        for &queue in shared::jobs::QueueName::ALL {
            waiting += queues.backlog(queue).await.expect("redis answers");
            let pattern = format!("{}:inflight:*", queues.namespace(queue));
            let sets: Vec<String> = redis::cmd("KEYS")
                .arg(&pattern)
                .query_async(&mut redis)
                .await
                .expect("redis answers");
            for set in sets {
                let n: usize = redis::cmd("SCARD")
                    .arg(&set)
                    .query_async(&mut redis)
                    .await
                    .expect("redis answers");
                waiting += n;
            }
        }
        waiting
    }

    /// Notifications and webhook deliveries being sent or due now.
    async fn work_due_in_postgres(&self) -> usize {
        let due: i64 = sqlx::query_scalar(
            "select (select count(*) from notifications
                      where status = 'sending' or (status = 'queued' and run_at <= now()))
                  + (select count(*) from webhook_deliveries
                      where status = 'sending' or (status = 'queued' and run_at <= now()))",
        )
        .fetch_one(&self.pool)
        .await
        .expect("postgres answers");
        due as usize
    }

    /// Sends a valid email to `to` and returns its notification id.
    pub async fn send_to(&self, to: &str) -> String {
        let resp = self
            .send_email(&json!({"to": to, "subject": "Your lab results are ready", "text": "Please log in to view them."}))
            .await;
        assert_eq!(resp.status(), 202, "send accepted");
        let body: Value = resp.json().await.unwrap();
        body["id"].as_str().unwrap().to_owned()
    }

    /// GETs a notification with `key`.
    pub async fn get_notification_with(&self, id: &str, key: &str) -> reqwest::Response {
        self.client
            .get(self.url(&format!("/api/v1/services/notifications/{id}")))
            .bearer_auth(key)
            .send()
            .await
            .expect("the api answers")
    }

    /// The notification's JSON view.
    pub async fn notification(&self, id: &str) -> Value {
        let resp = self.get_notification_with(id, &self.api_key).await;
        assert_eq!(resp.status(), 200);
        resp.json().await.unwrap()
    }

    /// Waits until the notification has `status`.
    pub async fn wait_for_status(&self, id: &str, status: &str, timeout: Duration) -> Value {
        crate::eventually(
            &format!("notification {id} to be {status}"),
            timeout,
            || async {
                let n = self.notification(id).await;
                (n["status"] == status).then_some(n)
            },
        )
        .await
    }

    /// Counts this test's notifications by status.
    pub async fn count_status(&self, status: &str) -> i64 {
        sqlx::query_scalar("select count(*) from notifications where status = $1")
            .bind(status)
            .fetch_one(&self.pool)
            .await
            .unwrap()
    }

    /// Gives `tenant` a fresh HS256 JWT secret, sealed like the CLI does, and
    /// returns it.
    pub async fn issue_jwt_secret(&self, tenant: TenantId) -> String {
        let secret = format!("test-secret-{}", uuid::Uuid::new_v4().simple());
        let keyring = self
            .settings
            .encryption
            .as_ref()
            .expect("test settings carry keys");
        let sealed = keyring.seal(secret.as_bytes(), &shared::db::jwt_secrets::aad(tenant));
        shared::db::jwt_secrets::put(&self.pool, tenant, &sealed)
            .await
            .expect("store the secret");
        secret
    }

    /// A connection as the database's owner, outside the app role and
    /// row-level security ([`TestDb::owner`]): for fixtures that change the
    /// schema (`app.pool` acts as `notify_app`, which may not).
    pub async fn owner(&self) -> sqlx::PgConnection {
        self.db.owner().await
    }

    /// Another tenant with its own key.
    pub async fn other_tenant(&self) -> (TenantId, String) {
        let t = shared::db::tenants::create(&self.pool, "Other Clinic")
            .await
            .unwrap();
        let k = shared::db::api_keys::create(&self.pool, t.id, "test")
            .await
            .unwrap();
        (t.id, k.secret.expose_secret().to_owned())
    }

    /// Adds a provider config through the admin API; returns its id.
    pub async fn add_provider(&self, body: &Value) -> String {
        let resp = self
            .client
            .post(self.url("/api/v1/admin/providers"))
            .bearer_auth(&self.api_key)
            .json(body)
            .send()
            .await
            .unwrap();
        let status = resp.status();
        let created: Value = resp.json().await.unwrap();
        assert_eq!(status, 201, "{created}");
        created["id"].as_str().unwrap().to_owned()
    }

    /// Adds a message template through the admin API; it must be created.
    /// Returns its id.
    pub async fn add_template(&self, body: &Value) -> String {
        let resp = self.post_with_key("/api/v1/admin/templates", body).await;
        let status = resp.status();
        let text = resp.text().await.unwrap();
        assert_eq!(status, 201, "{text}");
        let created: Value = serde_json::from_str(&text).unwrap();
        created["id"].as_str().unwrap().to_owned()
    }

    /// A Redis connection (no prefix applied).
    pub async fn redis(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(crate::redis_url())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .expect("redis")
    }

    /// Deletes every Redis key of this test, as a Redis restart without
    /// persistence (or a flush) would.
    pub async fn wipe_redis(&self) {
        let mut conn = self.redis().await;
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{}:*", self.redis_prefix))
            .query_async(&mut conn)
            .await
            .unwrap();
        if !keys.is_empty() {
            let _: () = redis::cmd("DEL")
                .arg(keys)
                .query_async(&mut conn)
                .await
                .unwrap();
        }
    }

    /// Stops every service and drops the database.
    pub async fn shutdown(mut self) {
        if let Some(a) = self.api.take() {
            let _ = a.stop().await;
        }
        self.stop_worker().await;
        self.stop_scheduler().await;
        self.pool.close().await;
        self.wipe_redis().await;
        self.db.drop_now().await;
    }
}
