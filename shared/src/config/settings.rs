//! The process settings read from the environment: where email goes, the
//! providers' addresses, tokens, real-time and webhook limits, HTTP limits
//! and trusted proxies.

use super::*;

/// How email leaves the platform.
#[derive(Debug, Clone)]
pub enum EmailTransport {
    /// SMTP through lettre. The URL follows lettre's form:
    /// `smtp://host:587?tls=required`, `smtps://user:pass@host:465`,
    /// or `smtp://localhost:1025` for plain text.
    Smtp {
        /// The server URL; it may hold credentials.
        url: SecretString,
        /// Most pooled connections per worker process.
        pool_max_size: u32,
        /// A PEM file of extra CA certificates to trust for the server's TLS
        /// certificate (a private relay's CA); the system roots otherwise.
        ca_file: Option<PathBuf>,
    },
    /// Messages are written as `.eml` files into this folder (development
    /// without an SMTP catcher).
    File {
        /// Where the files go.
        dir: PathBuf,
    },
}

/// Where each HTTP provider's API lives. Operators set these (tests point
/// them at local fakes); tenants never can.
#[derive(Debug, Clone)]
pub struct ProviderUrls {
    /// `TWILIO_BASE_URL`, default `https://api.twilio.com`.
    pub twilio: String,
    /// `SENDGRID_BASE_URL`, default `https://api.sendgrid.com`.
    pub sendgrid: String,
    /// `FCM_BASE_URL`, default `https://fcm.googleapis.com`.
    pub fcm: String,
    /// `GOOGLE_TOKEN_URL`, default `https://oauth2.googleapis.com/token`.
    pub google_token: String,
    /// `WHATSAPP_BASE_URL`, default `https://graph.facebook.com`.
    pub whatsapp: String,
    /// `WHATSAPP_API_VERSION`, default `v21.0`.
    pub whatsapp_version: String,
    /// `UPS_BASE_URL`, default `https://onlinetools.ups.com` (OAuth at
    /// `/security/v1/oauth/token`, tracking at `/api/track/v1/details/…`).
    pub ups: String,
    /// `PAGERDUTY_BASE_URL`, default `https://events.pagerduty.com` (alerts
    /// go to `/v2/enqueue`).
    pub pagerduty: String,
}

/// Email settings.
#[derive(Debug, Clone)]
pub struct EmailSettings {
    /// The transport.
    pub transport: EmailTransport,
    /// The `From` mailbox, e.g. `Notifications <no-reply@example.org>`.
    pub from: lettre::message::Mailbox,
}

/// How end users' and admins' bearer JWTs are verified.
#[derive(Debug, Clone)]
pub struct JwtSettings {
    /// Algorithms accepted (`JWT_ALGORITHMS`, default `HS256,RS256,ES256`);
    /// `none` is never accepted.
    pub algorithms: Vec<jsonwebtoken::Algorithm>,
    /// Required `iss` (`JWT_ISSUER`), when set.
    pub issuer: Option<String>,
    /// Required `aud` (`JWT_AUDIENCE`), when set.
    pub audience: Option<String>,
    /// The OIDC provider's JWKS URL for RS256/ES256 (`JWT_JWKS_URL`).
    pub jwks_url: Option<String>,
    /// Allowed clock skew in seconds (`JWT_LEEWAY_SECS`, default 30).
    pub leeway_secs: u64,
    /// Claim holding the subject (`JWT_SUBJECT_CLAIM`, default `sub`).
    pub subject_claim: String,
    /// Claim holding the tenant id (`JWT_TENANT_CLAIM`, default `tenant_id`).
    pub tenant_claim: String,
    /// Claim holding the roles (`JWT_ROLES_CLAIM`, default `roles`): an array
    /// of strings or one space-separated string.
    pub roles_claim: String,
}

/// The WebSocket endpoint's limits.
#[derive(Debug, Clone)]
pub struct RealtimeSettings {
    /// How often the server pings (`WS_HEARTBEAT_SECS`, default 25).
    pub heartbeat: Duration,
    /// A connection silent this long is closed (`WS_IDLE_TIMEOUT_SECS`, default 60).
    pub idle_timeout: Duration,
    /// How long a browser has to send its token (`WS_AUTH_TIMEOUT_SECS`, default 10).
    pub auth_timeout: Duration,
    /// Events queued for one client before it is dropped as too slow
    /// (`WS_CLIENT_QUEUE`, default 256).
    pub client_queue: usize,
}

/// Outgoing webhooks.
#[derive(Debug, Clone)]
pub struct WebhookSettings {
    /// `WEBHOOKS_ALLOW_LOOPBACK=true` lets endpoints be `http` and on
    /// loopback or private addresses: for tests and local development only.
    /// Off by default; cloud metadata addresses stay refused either way.
    pub allow_loopback: bool,
    /// An endpoint is disabled after this many deliveries in a row failed
    /// their last attempt (`WEBHOOKS_DISABLE_AFTER_FAILURES`, default 10).
    pub disable_after_failures: u32,
}

/// How long the API waits for a client, and how many connections one
/// address may hold.
#[derive(Debug, Clone)]
pub struct HttpLimits {
    /// A request's headers must arrive whole within this
    /// (`HTTP_HEADER_TIMEOUT_MS`, default 10 s); the connection is closed
    /// otherwise.
    pub header_read_timeout: Duration,
    /// A request's body must arrive whole within this
    /// (`HTTP_BODY_TIMEOUT_MS`, default 10 s); 408 otherwise.
    pub body_read_timeout: Duration,
    /// A CSV upload may pause at most this long between two reads
    /// (`HTTP_UPLOAD_STALL_TIMEOUT_MS`, default 30 s); 408 otherwise.
    pub upload_stall_timeout: Duration,
    /// Open connections one client address may hold
    /// (`HTTP_MAX_CONNECTIONS_PER_IP`, default 1024; `0` turns the cap off).
    /// Trusted proxies' connections are not capped. More are answered 429
    /// and closed.
    pub max_connections_per_ip: usize,
    /// A connection with no traffic for this long is closed
    /// (`HTTP_IDLE_TIMEOUT_SECS`, default 75).
    pub idle_timeout: Duration,
    /// Load balancers and proxies whose `X-Forwarded-For` is believed
    /// (`TRUSTED_PROXIES`, comma-separated CIDRs; none by default). Their
    /// connections are not held to the per-address cap.
    pub trusted_proxies: TrustedProxies,
}

/// The networks of the proxies in front of the API (`TRUSTED_PROXIES`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies(Vec<ipnet::IpNet>);

impl TrustedProxies {
    /// Parses a comma-separated list of CIDRs (`10.0.0.0/8, 2001:db8::/32`);
    /// a bare address is a single host (`/32` or `/128`). Empty: none.
    pub fn parse(list: &str) -> anyhow::Result<Self> {
        let mut nets = Vec::new();
        for item in list.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            let net = match item.parse::<ipnet::IpNet>() {
                Ok(net) => net.trunc(),
                Err(_) => match item.parse::<IpAddr>() {
                    Ok(ip) => ipnet::IpNet::from(ip.to_canonical()),
                    Err(_) => bail!(
                        "TRUSTED_PROXIES: `{item}` is not a CIDR (such as 10.0.0.0/8 or fd00::/8)"
                    ),
                },
            };
            nets.push(net);
        }
        Ok(Self(nets))
    }

    /// Whether no proxy is trusted.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether `ip` belongs to a trusted proxy (an IPv4-mapped IPv6 address
    /// counts as its IPv4 address).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.0.iter().any(|net| net.contains(&ip))
    }
}

/// Settings of all three services, from the environment plus `jobs.toml`.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Postgres URL (`DATABASE_URL`).
    pub database_url: SecretString,
    /// Most Postgres connections per process (`DATABASE_MAX_CONNECTIONS`).
    pub database_max_connections: u32,
    /// Redis URL (`REDIS_URL`).
    pub redis_url: SecretString,
    /// Prefix of every Redis key (`REDIS_PREFIX`), so several deployments can
    /// share one Redis.
    pub redis_prefix: String,
    /// Queues, dispatcher and cron.
    pub jobs: JobsConfig,
    /// The API's listen address (`API_ADDR`).
    pub api_addr: SocketAddr,
    /// Largest accepted request body in bytes (`MAX_BODY_BYTES`).
    pub max_body_bytes: usize,
    /// Largest accepted CSV upload in bytes (`MAX_CSV_BYTES`, default 1 GiB);
    /// it is streamed, never held in memory.
    pub max_csv_bytes: u64,
    /// Timeouts and caps that keep slow or hostile clients from holding the
    /// API's connections.
    pub http: HttpLimits,
    /// The URL the API is reached at from outside (`PUBLIC_BASE_URL`, no
    /// trailing `/`), which providers sign their callbacks with (Twilio signs
    /// the full URL it calls). `None` when unset: then `http://` and the
    /// address the API is bound to (`API_ADDR`).
    pub public_base_url: Option<String>,
    /// Where a worker or scheduler serves `/metrics` (`METRICS_ADDR`); none
    /// when unset. The API serves it on its own port.
    pub metrics_addr: Option<SocketAddr>,
    /// Email delivery.
    pub email: EmailSettings,
    /// Queues this worker replica serves (`WORKER_QUEUES`, comma separated);
    /// all when unset.
    pub worker_queues: Vec<QueueName>,
    /// How long a stopping process waits for in-flight work (`SHUTDOWN_TIMEOUT_SECS`).
    pub shutdown_timeout: Duration,
    /// How often an idle worker looks for new jobs it was not woken for
    /// (`WORKER_POLL_INTERVAL_MS`, default 1000): a push wakes the workers of
    /// its queue at once, so this only bounds the pickup of a job whose
    /// wake-up was lost.
    pub worker_poll_interval: Duration,
    /// How often a queue worker reports to Redis that it is alive
    /// (`WORKER_HEARTBEAT_SECS`, default 5); after three missed reports its
    /// peers take back its in-flight jobs.
    pub worker_heartbeat: Duration,
    /// How long an authenticated API key is trusted without asking Postgres
    /// again (`API_KEY_CACHE_SECS`, default 5; 0 turns the cache off): a key
    /// revoked, or a tenant suspended, elsewhere stops working within this.
    pub api_key_cache: Duration,
    /// How long a compiled template is used without reading it again
    /// (`TEMPLATE_CACHE_SECS`, default 5; 0 turns the cache off): an edit
    /// made through another API instance shows within this, one made through
    /// this instance at once.
    pub template_cache: Duration,
    /// Keys that seal secrets at rest (`ENCRYPTION_KEYS`, `ENCRYPTION_KEY_ID`);
    /// none when unset, and then nothing that needs them can be stored.
    pub encryption: Option<crate::crypto::Keyring>,
    /// Bearer JWT verification.
    pub jwt: JwtSettings,
    /// The WebSocket endpoint.
    pub realtime: RealtimeSettings,
    /// HTTP providers' base URLs.
    pub provider_urls: ProviderUrls,
    /// Outgoing webhooks.
    pub webhooks: WebhookSettings,
    /// How often the scheduler evaluates alert rules
    /// (`ALERTS_EVALUATE_SECS`, default 5; 0 turns evaluation off).
    pub alerts_interval: Option<Duration>,
    /// How often the scheduler folds delivery rollups and batch and CSV
    /// job counts and sends due scheduled reports (`REPORTS_TICK_SECS`,
    /// default 1; 0 turns all three off).
    pub reports_interval: Option<Duration>,
}

impl Settings {
    /// Reads the process environment and the jobs file (`JOBS_FILE`, default
    /// `jobs.toml`).
    pub fn from_env() -> anyhow::Result<Self> {
        Self::from_vars(std::env::vars())
    }

    /// Reads settings from the given variables, so tests can build them
    /// without touching the process environment.
    pub fn from_vars(vars: impl IntoIterator<Item = (String, String)>) -> anyhow::Result<Self> {
        let vars: BTreeMap<String, String> = vars.into_iter().collect();
        let get = |k: &str| vars.get(k).map(String::as_str).filter(|v| !v.is_empty());
        let jobs_file = PathBuf::from(get("JOBS_FILE").unwrap_or("jobs.toml"));
        let jobs = JobsConfig::load(&jobs_file, vars.clone())?;
        let parse = |k: &str, default: &str| -> anyhow::Result<String> {
            Ok(get(k).unwrap_or(default).to_owned())
        };
        let num = |k: &str, default: u64| -> anyhow::Result<u64> {
            match get(k) {
                None => Ok(default),
                Some(v) => v
                    .parse()
                    .with_context(|| format!("{k}: `{v}` is not a whole number")),
            }
        };
        let database_url = parse("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/notify")?;
        let redis_url = parse("REDIS_URL", "redis://127.0.0.1:6379")?;
        let api_addr = parse("API_ADDR", "127.0.0.1:8080")?;
        let api_addr = api_addr
            .parse()
            .with_context(|| format!("API_ADDR: `{api_addr}` is not host:port"))?;
        let metrics_addr = get("METRICS_ADDR")
            .map(|v| {
                v.parse()
                    .with_context(|| format!("METRICS_ADDR: `{v}` is not host:port"))
            })
            .transpose()?;
        let transport = match get("SMTP_URL") {
            Some(url) => EmailTransport::Smtp {
                url: SecretString::from(url.to_owned()),
                pool_max_size: num("SMTP_POOL_MAX_SIZE", 16)? as u32,
                ca_file: get("SMTP_CA_FILE").map(PathBuf::from),
            },
            None => EmailTransport::File {
                dir: PathBuf::from(get("MAIL_DIR").unwrap_or("var/mail")),
            },
        };
        let from = get("EMAIL_FROM").unwrap_or("Notifications <no-reply@localhost>");
        let from = from
            .parse()
            .with_context(|| format!("EMAIL_FROM: `{from}` is not a mailbox"))?;
        let worker_queues = match get("WORKER_QUEUES") {
            None => QueueName::ALL.to_vec(),
            Some(list) => list
                .split(',')
                .map(|q| {
                    q.trim()
                        .parse::<QueueName>()
                        .map_err(|e| anyhow::anyhow!("WORKER_QUEUES: {e}"))
                })
                .collect::<anyhow::Result<_>>()?,
        };
        let encryption = match (get("ENCRYPTION_KEYS"), get("ENCRYPTION_KEY_ID")) {
            (None, None) => None,
            (Some(keys), Some(active)) => Some(crate::crypto::Keyring::parse(keys, active)?),
            _ => bail!("ENCRYPTION_KEYS and ENCRYPTION_KEY_ID go together"),
        };
        let algorithms = get("JWT_ALGORITHMS")
            .unwrap_or("HS256,RS256,ES256")
            .split(',')
            .map(|a| {
                let a = a.trim();
                a.parse::<jsonwebtoken::Algorithm>()
                    .map_err(|_| anyhow::anyhow!("JWT_ALGORITHMS: `{a}` is not a JWT algorithm"))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let jwt = JwtSettings {
            algorithms,
            issuer: get("JWT_ISSUER").map(str::to_owned),
            audience: get("JWT_AUDIENCE").map(str::to_owned),
            jwks_url: get("JWT_JWKS_URL").map(str::to_owned),
            leeway_secs: num("JWT_LEEWAY_SECS", 30)?,
            subject_claim: parse("JWT_SUBJECT_CLAIM", "sub")?,
            tenant_claim: parse("JWT_TENANT_CLAIM", "tenant_id")?,
            roles_claim: parse("JWT_ROLES_CLAIM", "roles")?,
        };
        let base_url = |k: &str, default: &str| -> anyhow::Result<String> {
            let v = get(k).unwrap_or(default).trim_end_matches('/').to_owned();
            let parsed = url::Url::parse(&v).with_context(|| format!("{k}: `{v}` is not a URL"))?;
            if !matches!(parsed.scheme(), "http" | "https") {
                bail!("{k}: must be an http(s) URL");
            }
            Ok(v)
        };
        let provider_urls = ProviderUrls {
            twilio: base_url("TWILIO_BASE_URL", "https://api.twilio.com")?,
            sendgrid: base_url("SENDGRID_BASE_URL", "https://api.sendgrid.com")?,
            fcm: base_url("FCM_BASE_URL", "https://fcm.googleapis.com")?,
            google_token: base_url("GOOGLE_TOKEN_URL", "https://oauth2.googleapis.com/token")?,
            whatsapp: base_url("WHATSAPP_BASE_URL", "https://graph.facebook.com")?,
            whatsapp_version: parse("WHATSAPP_API_VERSION", "v21.0")?,
            ups: base_url("UPS_BASE_URL", "https://onlinetools.ups.com")?,
            pagerduty: base_url("PAGERDUTY_BASE_URL", "https://events.pagerduty.com")?,
        };
        let allow_loopback = match get("WEBHOOKS_ALLOW_LOOPBACK") {
            None | Some("false") => false,
            Some("true") => true,
            Some(v) => bail!("WEBHOOKS_ALLOW_LOOPBACK: `{v}` is neither `true` nor `false`"),
        };
        let webhooks = WebhookSettings {
            allow_loopback,
            disable_after_failures: num("WEBHOOKS_DISABLE_AFTER_FAILURES", 10)?.clamp(1, 1_000)
                as u32,
        };
        let public_base_url = match get("PUBLIC_BASE_URL") {
            None => None,
            Some(v) => {
                let v = base_url("PUBLIC_BASE_URL", v)?;
                let parsed = url::Url::parse(&v)?;
                if parsed.query().is_some() || parsed.fragment().is_some() {
                    bail!("PUBLIC_BASE_URL: must not have a query or fragment");
                }
                Some(v)
            }
        };
        let redis_prefix = parse("REDIS_PREFIX", "notify")?;
        if redis_prefix.contains(['{', '}', ' ']) {
            bail!("REDIS_PREFIX: must not contain braces or spaces");
        }
        Ok(Self {
            database_url: SecretString::from(database_url),
            database_max_connections: num("DATABASE_MAX_CONNECTIONS", 20)? as u32,
            redis_url: SecretString::from(redis_url),
            redis_prefix,
            jobs,
            api_addr,
            max_body_bytes: num("MAX_BODY_BYTES", 256 * 1024)? as usize,
            max_csv_bytes: num("MAX_CSV_BYTES", 1024 * 1024 * 1024)?,
            http: HttpLimits {
                header_read_timeout: Duration::from_millis(
                    num("HTTP_HEADER_TIMEOUT_MS", 10_000)?.max(1),
                ),
                body_read_timeout: Duration::from_millis(
                    num("HTTP_BODY_TIMEOUT_MS", 10_000)?.max(1),
                ),
                upload_stall_timeout: Duration::from_millis(
                    num("HTTP_UPLOAD_STALL_TIMEOUT_MS", 30_000)?.max(1),
                ),
                max_connections_per_ip: match num("HTTP_MAX_CONNECTIONS_PER_IP", 1024)? {
                    0 => usize::MAX,
                    n => n as usize,
                },
                idle_timeout: Duration::from_secs(num("HTTP_IDLE_TIMEOUT_SECS", 75)?.max(1)),
                trusted_proxies: TrustedProxies::parse(get("TRUSTED_PROXIES").unwrap_or(""))?,
            },
            public_base_url,
            metrics_addr,
            email: EmailSettings { transport, from },
            worker_queues,
            shutdown_timeout: Duration::from_secs(num("SHUTDOWN_TIMEOUT_SECS", 30)?),
            worker_poll_interval: Duration::from_millis(
                num("WORKER_POLL_INTERVAL_MS", 1000)?.max(1),
            ),
            worker_heartbeat: Duration::from_secs(num("WORKER_HEARTBEAT_SECS", 5)?.max(1)),
            api_key_cache: Duration::from_secs(num("API_KEY_CACHE_SECS", 5)?),
            template_cache: Duration::from_secs(num("TEMPLATE_CACHE_SECS", 5)?),
            encryption,
            jwt,
            realtime: RealtimeSettings {
                heartbeat: Duration::from_secs(num("WS_HEARTBEAT_SECS", 25)?.max(1)),
                idle_timeout: Duration::from_secs(num("WS_IDLE_TIMEOUT_SECS", 60)?.max(1)),
                auth_timeout: Duration::from_secs(num("WS_AUTH_TIMEOUT_SECS", 10)?.max(1)),
                client_queue: num("WS_CLIENT_QUEUE", 256)?.max(1) as usize,
            },
            provider_urls,
            webhooks,
            alerts_interval: match num("ALERTS_EVALUATE_SECS", 5)? {
                0 => None,
                n => Some(Duration::from_secs(n.min(3600))),
            },
            reports_interval: match num("REPORTS_TICK_SECS", 1)? {
                0 => None,
                n => Some(Duration::from_secs(n.min(3600))),
            },
        })
    }
}
