//! Email delivery through lettre: SMTP with a connection pool (plain,
//! STARTTLS or implicit TLS, as the URL says), or `.eml` files in a folder for
//! development without an SMTP catcher.
//!
//! `smtp://` relays (plain or STARTTLS) are reached over connections this
//! module pools itself, with `TCP_NODELAY`: lettre writes a message's body
//! and its closing dot in two writes with no answer between, and without it
//! the dot waits for the server's delayed ACK (about 40 ms on Linux) on
//! every message. lettre's own pool (used for `smtps://`, whose socket
//! this module cannot reach) opens a new connection whenever none is
//! parked and closes one handed back to a full pool, so there too no more
//! messages are in flight at once than connections are pooled: each finds
//! one to reuse instead of paying a connect, greeting, EHLO and TLS
//! handshake of its own.

use std::{sync::Arc, time::Duration};

use super::{Receipt, SendError};
use lettre::{
    AsyncFileTransport, AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor,
    address::Envelope,
    message::{Mailbox, MultiPart, header::ContentType},
    transport::smtp::{
        PoolConfig,
        authentication::{Credentials, DEFAULT_MECHANISMS},
        client::{AsyncSmtpConnection, Certificate, Tls, TlsParameters},
        extension::ClientId,
        response::Response,
    },
};
use secrecy::ExposeSecret;
use shared::{
    config::{EmailSettings, EmailTransport},
    domain::{EmailContent, NotificationId},
    providers::{FailureReason, ProviderCode, ProviderError, ProviderKind},
};

/// A pooled SMTP connection held for one message (see
/// [`EmailSender::reserve`]); handed back when dropped.
#[derive(Debug)]
pub struct Connection {
    _permit: tokio::sync::OwnedSemaphorePermit,
}

impl Connection {
    async fn of(permits: &Arc<tokio::sync::Semaphore>) -> Self {
        let _permit = permits
            .clone()
            .acquire_owned()
            .await
            .expect("the permits are never closed");
        Self { _permit }
    }
}

/// A connection parked this long or less is used without a look (a dead
/// one fails its message, which is retried like any transient failure).
const TRUST_IDLE: Duration = Duration::from_secs(2);

/// A connection parked longer than [`TRUST_IDLE`] is first asked `NOOP`;
/// one parked longer than this is closed (relays drop idle sessions).
const MAX_IDLE: Duration = Duration::from_secs(60);

/// Pooled SMTP connections to one `smtp://` relay, with `TCP_NODELAY`.
/// At most as many are open as there are permits; each message holds one
/// permit while it goes.
pub struct SmtpPool {
    host: String,
    port: u16,
    /// STARTTLS, and whether the relay must offer it.
    starttls: Option<(TlsParameters, bool)>,
    credentials: Option<Credentials>,
    hello: ClientId,
    timeout: Duration,
    permits: Arc<tokio::sync::Semaphore>,
    idle: std::sync::Mutex<Vec<(AsyncSmtpConnection, std::time::Instant)>>,
}

impl std::fmt::Debug for SmtpPool {
    // Never the credentials.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmtpPool")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("starttls", &self.starttls.as_ref().map(|t| t.1))
            .finish_non_exhaustive()
    }
}

impl SmtpPool {
    /// The pool for an `smtp://` URL, read the way lettre reads it: port 25,
    /// or 587 with `?tls=required` or `?tls=opportunistic`; credentials as
    /// the URL's user and password; the EHLO name as its path.
    fn new(
        url: &url::Url,
        ca_file: Option<&std::path::Path>,
        timeout: Duration,
        permits: Arc<tokio::sync::Semaphore>,
    ) -> anyhow::Result<Self> {
        let host = url
            .host_str()
            .ok_or_else(|| anyhow::anyhow!("SMTP_URL has no host"))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let mode = url
            .query_pairs()
            .find(|(k, _)| k == "tls")
            .map(|(_, v)| v.into_owned());
        let params = || -> anyhow::Result<TlsParameters> {
            match ca_file {
                Some(ca_file) => match tls_with_ca(url.as_str(), ca_file)? {
                    Tls::Required(p) | Tls::Opportunistic(p) | Tls::Wrapper(p) => Ok(p),
                    Tls::None => anyhow::bail!("SMTP_CA_FILE needs a TLS SMTP_URL"),
                },
                None => TlsParameters::new(host.clone())
                    .map_err(|e| anyhow::anyhow!("cannot set up TLS for SMTP: {e}")),
            }
        };
        let (starttls, default_port) = match mode.as_deref() {
            None => {
                if ca_file.is_some() {
                    anyhow::bail!(
                        "SMTP_CA_FILE needs a TLS SMTP_URL (smtps://, or smtp:// with ?tls=required or ?tls=opportunistic)"
                    );
                }
                (None, 25)
            }
            Some("required") => (Some((params()?, true)), 587),
            Some("opportunistic") => (Some((params()?, false)), 587),
            Some(other) => anyhow::bail!("SMTP_URL: unknown tls mode `{other}`"),
        };
        let decode = |s: &str| {
            let bytes = s.as_bytes();
            let mut out = Vec::with_capacity(bytes.len());
            let mut i = 0;
            while i < bytes.len() {
                let hex = bytes
                    .get(i + 1..i + 3)
                    .filter(|h| h.iter().all(u8::is_ascii_hexdigit))
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                match (bytes[i], hex) {
                    (b'%', Some(b)) => {
                        out.push(b);
                        i += 3;
                    }
                    (b, _) => {
                        out.push(b);
                        i += 1;
                    }
                }
            }
            String::from_utf8_lossy(&out).into_owned()
        };
        let credentials = url
            .password()
            .map(|password| Credentials::new(decode(url.username()), decode(password)));
        let hello = match url.path().trim_matches('/') {
            "" => ClientId::default(),
            name => ClientId::Domain(name.to_owned()),
        };
        Ok(Self {
            host,
            port: url.port().unwrap_or(default_port),
            starttls,
            credentials,
            hello,
            timeout,
            permits,
            idle: std::sync::Mutex::new(Vec::new()),
        })
    }

    async fn reserve(&self) -> Connection {
        Connection::of(&self.permits).await
    }

    /// Opens a connection: TCP with `TCP_NODELAY`, greeting and EHLO,
    /// STARTTLS as the URL asks, and AUTH when it has credentials.
    async fn connect(&self) -> Result<AsyncSmtpConnection, SendError> {
        let opening = async {
            let tcp = tokio::net::TcpStream::connect((self.host.as_str(), self.port))
                .await
                .map_err(|_| SendError::transient(FailureReason::CannotConnect))?;
            tcp.set_nodelay(true)
                .map_err(|_| SendError::transient(FailureReason::CannotConnect))?;
            let mut conn = AsyncSmtpConnection::connect_with_transport(Box::new(tcp), &self.hello)
                .await
                .map_err(|e| smtp_error(&e))?;
            if let Some((params, required)) = &self.starttls
                && (*required || conn.can_starttls())
            {
                conn.starttls(params.clone(), &self.hello)
                    .await
                    .map_err(|e| smtp_error(&e))?;
            }
            if let Some(credentials) = &self.credentials {
                conn.auth(DEFAULT_MECHANISMS, credentials)
                    .await
                    .map_err(|e| smtp_error(&e))?;
            }
            Ok(conn)
        };
        tokio::time::timeout(self.timeout, opening)
            .await
            .unwrap_or(Err(SendError::transient(FailureReason::NoAnswer)))
    }

    /// A parked connection fit for a message, or a new one.
    async fn take(&self) -> Result<AsyncSmtpConnection, SendError> {
        loop {
            let parked = self.idle.lock().expect("not poisoned").pop();
            let Some((mut conn, since)) = parked else {
                return self.connect().await;
            };
            let idle = since.elapsed();
            if idle <= TRUST_IDLE
                || (idle <= MAX_IDLE
                    && tokio::time::timeout(self.timeout, conn.test_connected())
                        .await
                        .unwrap_or(false))
            {
                return Ok(conn);
            }
            // Dropped without QUIT: it may be dead already.
        }
    }

    /// Sends one message over a pooled connection, holding `_reserved`.
    async fn send(
        &self,
        _reserved: Connection,
        envelope: &Envelope,
        body: &[u8],
    ) -> Result<Response, SendError> {
        let mut conn = self.take().await?;
        match tokio::time::timeout(self.timeout, conn.send(envelope, body)).await {
            Ok(Ok(reply)) => {
                self.park(conn);
                Ok(reply)
            }
            // lettre has closed it (after a refusal, with QUIT).
            Ok(Err(e)) => Err(smtp_error(&e)),
            // Dropped: its state is unknown.
            Err(_) => Err(SendError::transient(FailureReason::NoAnswer)),
        }
    }

    fn park(&self, conn: AsyncSmtpConnection) {
        if conn.has_broken() {
            return;
        }
        self.idle
            .lock()
            .expect("not poisoned")
            .push((conn, std::time::Instant::now()));
    }
}

/// An email transport.
#[derive(Debug, Clone)]
pub enum EmailSender {
    /// SMTP (`smtp://`, plain or STARTTLS) over connections pooled here.
    Smtp(Arc<SmtpPool>),
    /// SMTP with implicit TLS (`smtps://`) through lettre's pool, with one
    /// permit per pooled connection.
    Smtps(
        AsyncSmtpTransport<Tokio1Executor>,
        Arc<tokio::sync::Semaphore>,
    ),
    /// Files in a folder.
    File(AsyncFileTransport<Tokio1Executor>),
}

impl EmailSender {
    /// Builds the transport the settings name; `timeout` bounds connecting
    /// and each message.
    pub fn new(settings: &EmailSettings, timeout: Duration) -> anyhow::Result<Self> {
        match &settings.transport {
            EmailTransport::Smtp {
                url,
                pool_max_size,
                ca_file,
            } => {
                let permits =
                    Arc::new(tokio::sync::Semaphore::new((*pool_max_size).max(1) as usize));
                let parsed = url::Url::parse(url.expose_secret())
                    .map_err(|e| anyhow::anyhow!("SMTP_URL is not a valid SMTP URL: {e}"))?;
                if parsed.scheme() == "smtp" {
                    let pool = SmtpPool::new(&parsed, ca_file.as_deref(), timeout, permits)?;
                    return Ok(Self::Smtp(Arc::new(pool)));
                }
                let mut builder =
                    AsyncSmtpTransport::<Tokio1Executor>::from_url(url.expose_secret())
                        .map_err(|e| anyhow::anyhow!("SMTP_URL is not a valid SMTP URL: {e}"))?;
                if let Some(ca_file) = ca_file {
                    builder = builder.tls(tls_with_ca(url.expose_secret(), ca_file)?);
                }
                let transport = builder
                    .timeout(Some(timeout))
                    .pool_config(
                        PoolConfig::new()
                            .max_size(*pool_max_size)
                            .idle_timeout(MAX_IDLE),
                    )
                    .build();
                Ok(Self::Smtps(transport, permits))
            }
            EmailTransport::File { dir } => {
                std::fs::create_dir_all(dir).map_err(|e| {
                    anyhow::anyhow!("cannot create the mail folder {}: {e}", dir.display())
                })?;
                Ok(Self::File(AsyncFileTransport::new(dir)))
            }
        }
    }

    /// The provider's name, as recorded with each attempt.
    pub fn provider(&self) -> &'static str {
        match self {
            Self::Smtp(_) | Self::Smtps(..) => "smtp",
            Self::File(_) => "file",
        }
    }

    /// Waits for a pooled SMTP connection to be free and holds it for the
    /// caller's next [`send`](Self::send) (so that a last look, e.g. whether
    /// the send is still wanted, can come after the wait, right before the
    /// message goes). `None` for the file transport.
    pub async fn reserve(&self) -> Option<Connection> {
        match self {
            Self::Smtp(pool) => Some(pool.reserve().await),
            Self::Smtps(_, permits) => Some(Connection::of(permits).await),
            Self::File(_) => None,
        }
    }

    /// Sends `message` over the `reserved` connection, or the next one free.
    pub async fn send(
        &self,
        reserved: Option<Connection>,
        message: Message,
        message_id: String,
    ) -> Result<Receipt, SendError> {
        let receipt = |reply: Response| {
            let text: Vec<&str> = reply.message().collect();
            Receipt {
                message_id: message_id.clone(),
                response: format!("{} {}", reply.code(), text.join(" ")),
                code: reply.code().to_string().parse().ok(),
            }
        };
        match self {
            Self::Smtp(pool) => {
                let reserved = match reserved {
                    Some(c) => c,
                    None => pool.reserve().await,
                };
                pool.send(reserved, message.envelope(), &message.formatted())
                    .await
                    .map(receipt)
            }
            Self::Smtps(t, permits) => {
                let _reserved = match reserved {
                    Some(c) => c,
                    None => Connection::of(permits).await,
                };
                t.send(message)
                    .await
                    .map(receipt)
                    .map_err(|e| smtp_error(&e))
            }
            Self::File(t) => match t.send(message).await {
                Ok(id) => Ok(Receipt {
                    message_id,
                    response: format!("written as {id}.eml"),
                    code: None,
                }),
                Err(error) => {
                    tracing::warn!(%error, "cannot write the message file");
                    Err(SendError::transient(FailureReason::MailFileFailed))
                }
            },
        }
    }
}

/// What an SMTP failure is recorded as. A server's reply text often names
/// the refused address (`550 5.1.1 <pat@example.org>: Recipient address
/// rejected`), so only its reply code and enhanced status code are kept.
fn smtp_error(e: &lettre::transport::smtp::Error) -> SendError {
    use std::error::Error as _;
    let status: Option<u16> = e.status().and_then(|c| c.to_string().parse().ok());
    let reply = e.source().map(|s| s.to_string()).unwrap_or_default();
    let answered = |reason| {
        ProviderError::answered(ProviderKind::Smtp, reason, status)
            .with_code(ProviderCode::smtp_enhanced(&reply))
    };
    if e.is_permanent() {
        return SendError::permanent(answered(FailureReason::MailRefused));
    }
    if e.is_transient() {
        return SendError::transient(answered(FailureReason::MailDeferred));
    }
    // Read (never kept) to tell a certificate or handshake failure apart.
    let mut chain = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        chain.push_str(&s.to_string());
        source = s.source();
    }
    let chain = chain.to_lowercase();
    let reason = if e.is_tls() || chain.contains("certificate") || chain.contains("tls") {
        FailureReason::Tls
    } else if e.is_timeout() {
        FailureReason::NoAnswer
    } else if e.is_response() || e.is_client() {
        FailureReason::MailProtocol
    } else {
        FailureReason::CannotConnect
    };
    SendError::transient(reason)
}

/// The TLS mode `url` asks for, trusting the CA certificates in `ca_file`
/// besides the system roots.
fn tls_with_ca(url: &str, ca_file: &std::path::Path) -> anyhow::Result<Tls> {
    let parsed = url::Url::parse(url).map_err(|e| anyhow::anyhow!("SMTP_URL: {e}"))?;
    let host = parsed
        .host_str()
        .ok_or_else(|| anyhow::anyhow!("SMTP_URL has no host"))?
        .to_owned();
    let pem = std::fs::read(ca_file)
        .map_err(|e| anyhow::anyhow!("SMTP_CA_FILE {}: {e}", ca_file.display()))?;
    let cert = Certificate::from_pem(&pem).map_err(|e| {
        anyhow::anyhow!(
            "SMTP_CA_FILE {} is not a PEM certificate: {e}",
            ca_file.display()
        )
    })?;
    let params = TlsParameters::builder(host)
        .add_root_certificate(cert)
        .build_rustls()
        .map_err(|e| anyhow::anyhow!("cannot set up TLS for SMTP: {e}"))?;
    let mode = parsed
        .query_pairs()
        .find(|(k, _)| k == "tls")
        .map(|(_, v)| v.into_owned());
    match (parsed.scheme(), mode.as_deref()) {
        ("smtps", _) => Ok(Tls::Wrapper(params)),
        ("smtp", Some("required")) => Ok(Tls::Required(params)),
        ("smtp", Some("opportunistic")) => Ok(Tls::Opportunistic(params)),
        _ => anyhow::bail!(
            "SMTP_CA_FILE needs a TLS SMTP_URL (smtps://, or smtp:// with ?tls=required or ?tls=opportunistic)"
        ),
    }
}

/// Builds the message for one notification. Its `Message-ID` is derived from
/// the notification id, so a repeated send can be recognised downstream.
pub fn build_message(
    from: &Mailbox,
    id: NotificationId,
    to: &str,
    content: &EmailContent,
) -> Result<(Message, String), SendError> {
    let to: Mailbox = to
        .parse()
        .map_err(|_| SendError::permanent(FailureReason::RecipientMalformed))?;
    let domain = from.email.domain().to_owned();
    let message_id = format!("<{id}@{domain}>");
    let builder = Message::builder()
        .from(from.clone())
        .to(to)
        .subject(content.subject.as_str())
        .message_id(Some(message_id.clone()));
    let message = match (&content.text, &content.html) {
        (Some(text), Some(html)) => builder.multipart(MultiPart::alternative_plain_html(
            text.clone(),
            html.clone(),
        )),
        (Some(text), None) => builder.header(ContentType::TEXT_PLAIN).body(text.clone()),
        (None, Some(html)) => builder.header(ContentType::TEXT_HTML).body(html.clone()),
        (None, None) => return Err(SendError::permanent(FailureReason::NoBody)),
    }
    .map_err(|_| SendError::permanent(FailureReason::MessageUnbuildable))?;
    Ok((message, message_id))
}
