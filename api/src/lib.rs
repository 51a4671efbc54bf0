//! The HTTP API.
//!
//! It only validates, writes Postgres and enqueues: every send is committed
//! before it is answered, then pushed to Redis for the workers. Routes:
//!
//! * `/api/v1/services/*`: machine callers with tenant API keys ([`auth`]):
//!   sends and their status, subscribers and their preferences.
//! * `/api/v1/admin/*`: organisation administrators, with the tenant's API
//!   key or a user's JWT holding the permission the operation declares
//!   ([`permissions`], checked when the caller is authenticated).
//! * `/api/v1/admin/organizations`, `/api/v1/admin/users`,
//!   `/api/v1/admin/audit`, `/api/v1/auth/login` and `/api/v1/invitations`:
//!   organisations (tenants) with their BAAs, platform users, invitations
//!   and the audit log; whose resource is whose is in [`access`].
//! * `/webhooks/*`: providers' delivery callbacks, each checked against the
//!   signing secret of the provider config its URL names.
//! * `/health/live`, `/health/ready`, `/metrics`.
//! * `/openapi.json` and Swagger UI at `/docs`.
//!
//! Every error is `application/problem+json` with the request id
//! ([`error`], [`middleware`]).
//!
//! The modules:
//!
//! * [`routes`]: one module per resource; [`services`]: the rules of the
//!   features whose handlers only parse and answer (routes call services,
//!   never each other); [`extract`]: what handlers read
//!   from a request before their own work (ids in the path, list cursors
//!   and page sizes), so every route answers malformed input the same way;
//!   [`spec`] amends the OpenAPI document where poem-openapi cannot
//!   describe the API.
//! * [`server`]: the HTTP server and its connection limits; [`middleware`]
//!   and [`input`]: checks every request gets at the edge; [`body`]: strict
//!   JSON bodies with full paths in errors; [`client`]: the client address
//!   behind trusted proxies; [`outage`]: Postgres outages answered at once.
//! * [`auth`], [`identity`], [`access`], [`permissions`], [`signin`]: who the
//!   caller is (API keys, JWTs), which organisation's rows they reach, what
//!   they may do, and sign-in throttling and sessions.
//! * [`accept`]: concurrent sends sharing one commit and one push;
//!   [`window`]: the queues' Redis backlog seen by the push after commit;
//!   [`limits`]: rate limits and send quotas.
//! * [`realtime`]: the in-app WebSocket; [`console`]: the operator console;
//!   [`fleet`]: what this instance tells the others.
//! * [`cli`]: the `api` command line (serve, migrate, tenants, keys);
//!   [`error`]: problem+json errors.

pub mod accept;
pub mod access;
pub mod auth;
pub mod body;
pub mod cli;
pub mod client;
pub mod console;
pub mod error;
pub mod extract;
pub mod fleet;
pub mod identity;
pub mod input;
pub mod limits;
pub mod middleware;
pub mod outage;
pub mod permissions;
pub mod realtime;
pub mod routes;
pub mod server;
pub mod services;
pub mod signin;
pub mod spec;
pub mod window;

use std::{future::Future, net::SocketAddr, sync::Arc, time::Duration};

use anyhow::Context;
use poem::{Endpoint, EndpointExt, Route, get, handler};
use poem_openapi::OpenApiService;
use shared::{
    config::{JobsConfig, Settings},
    jobs::Queues,
};
use sqlx::PgPool;

use crate::window::Window;

/// What every handler shares.
#[derive(Debug, Clone)]
pub struct AppState {
    /// Postgres.
    pub pool: PgPool,
    /// The Redis queues.
    pub queues: Queues,
    /// Queue settings (attempts per channel).
    pub jobs: Arc<JobsConfig>,
    /// The queues' backlog window.
    pub window: Arc<Window>,
    /// Shares commits between concurrent sends.
    pub acceptor: accept::Acceptor,
    /// Bearer JWT verification.
    pub verifier: identity::Verifier,
    /// This instance's WebSocket clients.
    pub hub: Arc<realtime::Hub>,
    /// WebSocket limits.
    pub realtime: shared::config::RealtimeSettings,
    /// Seals secrets organisations store (provider credentials).
    pub keyring: Option<shared::crypto::Keyring>,
    /// Whether webhook endpoints may be `http` and on loopback or private
    /// addresses (`WEBHOOKS_ALLOW_LOOPBACK`, tests and development only).
    pub webhooks_allow_loopback: bool,
    /// The URL the API is reached at from outside, without a trailing `/`
    /// (`PUBLIC_BASE_URL`, else `http://` and the bound address): providers
    /// sign their callbacks with it.
    pub public_base_url: String,
    /// Largest accepted CSV upload in bytes.
    pub max_csv_bytes: u64,
    /// API keys that authenticated recently (`API_KEY_CACHE_SECS`).
    pub api_keys: Arc<auth::ApiKeyCache>,
    /// Compiled templates (`TEMPLATE_CACHE_SECS`).
    pub templates: Arc<shared::db::templates::TemplateCache>,
    /// Request rate limits and send quotas.
    pub limits: Arc<limits::Limiter>,
    /// Sign-in protection (its clock).
    pub signin: signin::SignIn,
    /// The clock permission checks read (whether a delegation is in its
    /// window); tests move it.
    pub permissions_clock: Arc<dyn signin::Clock>,
    /// Users' effective permissions, trusted for
    /// [`permissions::cache::PERMISSIONS_CACHE_SECS`].
    pub permission_cache: Arc<permissions::cache::PermissionCache>,
    /// This instance's name and WebSocket message rate ([`fleet`]).
    pub instance: Arc<fleet::Instance>,
    /// Finished work per queue and minute (in-app sends placed at once).
    pub throughput: shared::throughput::Throughput,
    /// API 5xx, counted per cause for error tracking.
    pub errors: shared::errors::ErrorTracker,
    /// The operators' queue overview, computed at most once a second.
    pub queue_overview: routes::ops::queues::OverviewCache,
}

#[handler]
fn metrics_endpoint() -> poem::Response {
    poem::Response::builder()
        .content_type("text/plain; version=0.0.4")
        .body(shared::telemetry::metrics_handle().render())
}

/// Declares [`Apis`], every documented endpoint group, and [`openapi`], the
/// API made of them: each group is a unit struct, so the value it serves is
/// written as its type is.
macro_rules! documented_apis {
    ($($groups:tt)*) => {
        /// Every documented endpoint group.
        pub type Apis = ($($groups)*);

        /// The documented API.
        pub fn openapi() -> OpenApiService<Apis, ()> {
            OpenApiService::new(($($groups)*), "Notification platform API", env!("CARGO_PKG_VERSION"))
                .description("Send notifications to patients and staff, and track their delivery.")
        }
    };
}

documented_apis!(
    routes::notifications::NotificationsApi,
    routes::batches::BatchesApi,
    routes::bulk::BulkApi,
    routes::subscribers::SubscribersApi,
    routes::users::UsersApi,
    routes::inbox::InboxApi,
    routes::providers::ProvidersApi,
    routes::templates::TemplatesApi,
    routes::webhooks::WebhooksApi,
    routes::callbacks::CallbacksApi,
    routes::health::HealthApi,
    routes::shipments::ShipmentsApi,
    // Organisations, users, sign-in, invitations and the audit log.
    (
        routes::organizations::OrganizationsApi,
        routes::admin_users::AdminUsersApi,
        routes::sessions::SessionsApi,
        routes::invitations::InvitationsApi,
        routes::audit::AuditApi,
        routes::security::SecurityApi,
        routes::limits::LimitsApi,
        (
            routes::permissions::PermissionsApi,
            routes::permissions::delegations::DelegationsApi,
        ),
    ),
    // Every operations endpoint group.
    (
        routes::ops::queues::OpsQueuesApi,
        routes::ops::failed::OpsFailedApi,
        routes::ops::search::OpsSearchApi,
        routes::ops::fleet::OpsFleetApi,
    ),
    // Topics, sends to a topic or the organisation, system broadcasts, and
    // workflows with their runs.
    (
        routes::topics::TopicsApi,
        routes::topics::TopicSendsApi,
        routes::broadcasts::BroadcastsApi,
        routes::workflows::WorkflowsApi,
        routes::workflows::WorkflowRunsApi,
    ),
    (
        // Alert rules and alerts, error tracking and lookups.
        (
            routes::alerts::AlertRulesApi,
            routes::alerts::AlertsApi,
            routes::errors::ErrorsApi,
            routes::lookups::LookupsApi,
        ),
        // Delivery reports and their schedules.
        (
            routes::reports::ReportsApi,
            routes::reports::schedules::ReportSchedulesApi,
            routes::reports::templates::ReportTemplatesApi,
        ),
    ),
);

/// The whole application as one endpoint.
pub fn app(state: AppState, edge: middleware::Edge) -> impl poem::Endpoint {
    let api = openapi();
    let docs = spec::docs_endpoint(&api);
    let spec = spec::endpoint(&api);
    let permission_cache = state.permission_cache.clone();
    Route::new()
        .nest("/", api)
        .nest("/docs", docs)
        .at("/openapi.json", spec)
        .at("/metrics", get(metrics_endpoint))
        .at("/api/v1/ws", get(realtime::endpoint))
        .nest("/console", console::endpoint())
        .data(state)
        // A change to permissions made through this replica applies to the
        // next request at once: the cache drops the organisation's entries
        // (every entry for a platform administrator's change).
        .around(move |ep, req| {
            let cache = permission_cache.clone();
            async move {
                let changes =
                    permissions::cache::affects_permissions(req.method(), req.uri().path());
                let resp = ep.call(req).await;
                if changes {
                    match shared::db::scope::current() {
                        Some(shared::db::scope::Scope::Tenant(t)) => cache.changed(Some(t)),
                        Some(shared::db::scope::Scope::Platform) => cache.changed(None),
                        _ => {}
                    }
                }
                resp
            }
        })
        // No organisation's rows until authentication walls the request to
        // its caller's organisation (`auth::wall_to`); the lookups that find
        // the caller say why they need platform scope.
        .around(|ep, req| shared::db::scope::request(async move { ep.call(req).await }))
        .around(move |ep, req| middleware::edge(ep, req, edge.clone()))
}

/// What the API's database work sees in a task without a scope (one
/// spawned from a request, a background task that did not say): no
/// organisation's rows. Requests start seeing none either
/// ([`shared::db::scope::request`]); every read across organisations names
/// its reason ([`shared::db::scope::platform`]).
pub const DB_FALLBACK: shared::db::scope::Fallback = shared::db::scope::Fallback::Nothing;

/// Why the API's queue-throughput counts are written in platform scope.
const THROUGHPUT: &str = shared::throughput::SCOPE_REASON;
/// Why the API's error counts are written in platform scope.
const ERROR_COUNTS: &str = shared::errors::SCOPE_REASON;

/// A bound, ready-to-run API server.
pub struct Application {
    listener: tokio::net::TcpListener,
    addr: SocketAddr,
    state: AppState,
    max_body: usize,
    http: shared::config::HttpLimits,
    postgres: outage::PostgresWatch,
    postgres_probe: tokio::task::JoinHandle<()>,
    redis_url: secrecy::SecretString,
}

impl std::fmt::Debug for Application {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Application")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl Application {
    /// Connects, applies migrations and binds `settings.api_addr` (port 0
    /// picks a free port).
    pub async fn build(settings: &Settings) -> anyhow::Result<Self> {
        shared::telemetry::metrics_handle();
        let (pool, queues) = shared::connect(settings, DB_FALLBACK).await?;
        shared::db::migrate(&pool)
            .await
            .context("while applying migrations")?;
        let window = Arc::new(Window::new(
            queues.clone(),
            settings.jobs.dispatcher.high_water_mark,
        ));
        let verifier = identity::Verifier::new(
            settings.jwt.clone(),
            settings.encryption.clone(),
            pool.clone(),
        );
        let listener = tokio::net::TcpListener::bind(settings.api_addr)
            .await
            .with_context(|| format!("while binding {}", settings.api_addr))?;
        let addr = listener.local_addr()?;
        let throughput = shared::throughput::Throughput::new();
        let acceptor = accept::Acceptor::start(
            pool.clone(),
            queues.clone(),
            window.clone(),
            settings.jobs.dispatcher.group_size,
            throughput.clone(),
        );
        let api_keys = Arc::new(auth::ApiKeyCache::new(
            settings.api_key_cache,
            auth::API_KEY_CACHE_CAPACITY,
        ));
        let limits = Arc::new(
            limits::Limiter::new(
                queues.connection(),
                queues.prefix(),
                settings.jobs.rate_limits.clone(),
                pool.clone(),
                api_keys.clone(),
                &settings.jwt.tenant_claim,
            )
            .with_webhook_attempts(
                settings
                    .jobs
                    .queue(shared::jobs::QueueName::Webhook)
                    .max_attempts,
            ),
        );
        let state = AppState {
            pool,
            queues,
            jobs: Arc::new(settings.jobs.clone()),
            window,
            acceptor,
            verifier,
            hub: Arc::default(),
            realtime: settings.realtime.clone(),
            keyring: settings.encryption.clone(),
            webhooks_allow_loopback: settings.webhooks.allow_loopback,
            public_base_url: settings
                .public_base_url
                .clone()
                .unwrap_or_else(|| format!("http://{addr}")),
            max_csv_bytes: settings.max_csv_bytes,
            api_keys,
            templates: Arc::new(shared::db::templates::TemplateCache::new(
                settings.template_cache,
            )),
            limits,
            signin: signin::SignIn::default(),
            permissions_clock: Arc::new(signin::SystemClock),
            permission_cache: Arc::default(),
            instance: Arc::default(),
            throughput,
            errors: shared::errors::ErrorTracker::new(),
            queue_overview: Default::default(),
        };
        let (postgres, postgres_probe) = outage::PostgresWatch::spawn(&settings.database_url)
            .context("while reading DATABASE_URL")?;
        Ok(Self {
            listener,
            addr,
            state,
            max_body: settings.max_body_bytes,
            http: settings.http.clone(),
            postgres,
            postgres_probe,
            redis_url: settings.redis_url.clone(),
        })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Makes sign-in protection read the time from `clock` (tests move it).
    pub fn set_signin_clock(&mut self, clock: Arc<dyn signin::Clock>) {
        self.state.signin.clock = clock;
    }

    /// Makes permission checks (delegation windows) read the time from
    /// `clock` (tests move it).
    pub fn set_permissions_clock(&mut self, clock: Arc<dyn signin::Clock>) {
        self.state.permissions_clock = clock;
    }

    /// Serves until `shutdown` resolves, then lets open requests finish for
    /// up to `grace`.
    pub async fn run_until(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
        grace: Duration,
    ) -> anyhow::Result<()> {
        tracing::info!(addr = %self.addr, "api listening");
        let pool = self.state.pool.clone();
        let throughput = self.state.throughput.clone();
        let flusher = throughput.spawn_flusher(pool.clone());
        let errors = self.state.errors.clone();
        let errors_flusher = errors.spawn_flusher(pool.clone());
        let listener = tokio::spawn(realtime::listen(
            secrecy::ExposeSecret::expose_secret(&self.redis_url).to_owned(),
            self.state.queues.prefix().to_owned(),
            self.state.hub.clone(),
        ));
        let fleet_state = self.state.clone();
        let reporter = tokio::spawn(fleet::run(
            self.state.clone(),
            secrecy::ExposeSecret::expose_secret(&self.redis_url).to_owned(),
        ));
        let edge = middleware::Edge {
            max_body: self.max_body,
            body_timeout: self.http.body_read_timeout,
            upload_stall_timeout: self.http.upload_stall_timeout,
            postgres: self.postgres,
            templates: Arc::new(middleware::RouteTemplates::from_spec(&openapi().spec())),
            limiter: Some(self.state.limits.clone()),
            refusals: Some(Arc::new(limits::refusals::RefusalEvents::new(
                self.state.pool.clone(),
                self.state.verifier.clone(),
                self.state.api_keys.clone(),
            ))),
            trusted_proxies: self.http.trusted_proxies.clone(),
            errors: errors.clone(),
        };
        let served = server::serve(
            self.listener,
            app(self.state, edge),
            self.http,
            shutdown,
            grace,
        )
        .await
        .context("while serving");
        self.postgres_probe.abort();
        listener.abort();
        reporter.abort();
        fleet::leave(&fleet_state).await;
        flusher.abort();
        errors_flusher.abort();
        // Background work of the API across organisations: platform scope.
        let flushed = shared::db::scope::platform(THROUGHPUT, throughput.flush(&pool)).await;
        if let Err(error) = flushed {
            tracing::warn!(%error, "cannot record the last second of queue throughput");
        }
        let flushed = shared::db::scope::platform(ERROR_COUNTS, errors.flush(&pool)).await;
        if let Err(error) = flushed {
            tracing::warn!(%error, "cannot record the last second of error counts");
        }
        served?;
        pool.close().await;
        tracing::info!("api stopped");
        Ok(())
    }
}

/// Builds and runs the API until `shutdown` resolves.
pub async fn run(
    settings: Settings,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let app = Application::build(&settings).await?;
    app.run_until(shutdown, settings.shutdown_timeout).await
}
