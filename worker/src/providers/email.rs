//! Email delivery through lettre: SMTP with a connection pool (plain,
//! STARTTLS or implicit TLS, as the URL says), or `.eml` files in a folder for
//! development without an SMTP catcher.

use std::time::Duration;

use super::{Receipt, SendError};
use lettre::{
    AsyncFileTransport, AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor,
    message::{Mailbox, MultiPart, header::ContentType},
    transport::smtp::{
        PoolConfig,
        client::{Certificate, Tls, TlsParameters},
    },
};
use secrecy::ExposeSecret;
use shared::{
    config::{EmailSettings, EmailTransport},
    db::notifications::EmailContent,
    domain::NotificationId,
    providers::{FailureReason, ProviderCode, ProviderError, ProviderKind},
};

/// An email transport.
#[derive(Debug, Clone)]
pub enum EmailSender {
    /// SMTP.
    Smtp(AsyncSmtpTransport<Tokio1Executor>),
    /// Files in a folder.
    File(AsyncFileTransport<Tokio1Executor>),
}

impl EmailSender {
    /// Builds the transport the settings name; `timeout` bounds each SMTP
    /// command.
    pub fn new(settings: &EmailSettings, timeout: Duration) -> anyhow::Result<Self> {
        match &settings.transport {
            EmailTransport::Smtp {
                url,
                pool_max_size,
                ca_file,
            } => {
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
                            .idle_timeout(Duration::from_secs(60)),
                    )
                    .build();
                Ok(Self::Smtp(transport))
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
            Self::Smtp(_) => "smtp",
            Self::File(_) => "file",
        }
    }

    /// Sends `message`.
    pub async fn send(&self, message: Message, message_id: String) -> Result<Receipt, SendError> {
        match self {
            Self::Smtp(t) => match t.send(message).await {
                Ok(reply) => {
                    let text: Vec<&str> = reply.message().collect();
                    Ok(Receipt {
                        message_id,
                        response: format!("{} {}", reply.code(), text.join(" ")),
                        code: reply.code().to_string().parse().ok(),
                    })
                }
                Err(e) => Err(smtp_error(&e)),
            },
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
        .subject(content.subject.clone())
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
