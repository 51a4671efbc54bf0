//! A real SMTP server for tests, on a free port of 127.0.0.1.
//!
//! The protocol (greeting, EHLO, STARTTLS, MAIL, RCPT, DATA with
//! dot-unstuffing, RSET, QUIT) is handled by the `mailin` state machine; this module does the I/O
//! and records what arrived. Its [`Behaviour`] can be changed at any time:
//! accept, refuse every recipient with a given reply (451 or 550), or hold
//! the reply to the end of DATA (to catch a sender mid-send).

use std::{
    net::{IpAddr, SocketAddr},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use mailin::{Action, Handler, Response, SessionBuilder};
use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader},
    net::TcpListener,
    sync::Notify,
    task::JoinHandle,
};
use tokio_rustls::TlsAcceptor;

/// How the server answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Behaviour {
    /// Accept every message.
    Accept,
    /// Answer every RCPT with this code and text (e.g. 451 or 550).
    RejectRecipients(u16, String),
    /// Accept, but wait this long before answering the end of DATA.
    HoldData(Duration),
}

/// One message that arrived.
#[derive(Debug, Clone)]
pub struct Received {
    /// MAIL FROM.
    pub from: String,
    /// RCPT TO.
    pub to: Vec<String>,
    /// The message as sent (headers and body).
    pub raw: Vec<u8>,
    /// When the DATA ended.
    pub at: Instant,
    /// Whether it came over TLS (after STARTTLS).
    pub tls: bool,
}

impl Received {
    /// The parsed message.
    pub fn parsed(&self) -> mail_parser::Message<'_> {
        mail_parser::MessageParser::default()
            .parse(&self.raw)
            .expect("a parseable message")
    }

    /// A header's text value.
    pub fn header(&self, name: &str) -> Option<String> {
        self.parsed()
            .header(name)
            .and_then(|h| h.as_text())
            .map(str::to_owned)
    }

    /// The `Message-ID` (with angle brackets).
    pub fn message_id(&self) -> Option<String> {
        self.parsed().message_id().map(|id| format!("<{id}>"))
    }
}

#[derive(Debug)]
struct State {
    behaviour: Mutex<Behaviour>,
    received: Mutex<Vec<Received>>,
    /// Every RCPT seen, with when, whatever the answer.
    recipient_attempts: Mutex<Vec<(String, Instant)>>,
    /// Signalled when a client starts DATA.
    data_started: Notify,
    arrived: Notify,
}

/// The server; stops when dropped.
#[derive(Debug)]
pub struct SmtpServer {
    addr: SocketAddr,
    state: Arc<State>,
    accept: JoinHandle<()>,
    connections: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

struct Session {
    state: Arc<State>,
    from: String,
    to: Vec<String>,
    data: Vec<u8>,
    data_ended: Arc<AtomicBool>,
    secure: Arc<AtomicBool>,
}

impl Handler for Session {
    fn mail(&mut self, _ip: IpAddr, _domain: &str, from: &str) -> Response {
        self.from = from.to_owned();
        self.to.clear();
        self.data.clear();
        mailin::response::OK
    }

    fn rcpt(&mut self, to: &str) -> Response {
        self.state
            .recipient_attempts
            .lock()
            .unwrap()
            .push((to.to_owned(), Instant::now()));
        match &*self.state.behaviour.lock().unwrap() {
            Behaviour::RejectRecipients(code, text) => Response::custom(*code, text.clone()),
            _ => {
                self.to.push(to.to_owned());
                mailin::response::OK
            }
        }
    }

    fn data_start(
        &mut self,
        _domain: &str,
        _from: &str,
        _is8bit: bool,
        _to: &[String],
    ) -> Response {
        self.state.data_started.notify_waiters();
        mailin::response::OK
    }

    fn data(&mut self, buf: &[u8]) -> std::io::Result<()> {
        self.data.extend_from_slice(buf);
        Ok(())
    }

    fn data_end(&mut self) -> Response {
        // Like a real MTA, the message is committed before the reply is sent
        // (the reply may be held by the behaviour).
        self.state.received.lock().unwrap().push(Received {
            from: self.from.clone(),
            to: self.to.clone(),
            raw: std::mem::take(&mut self.data),
            at: Instant::now(),
            tls: self.secure.load(Ordering::SeqCst),
        });
        self.state.arrived.notify_waiters();
        self.data_ended.store(true, Ordering::SeqCst);
        mailin::response::OK
    }
}

impl SmtpServer {
    /// Starts a server that accepts everything.
    pub async fn start() -> Self {
        Self::start_with(Behaviour::Accept).await
    }

    /// Starts a server with `behaviour`.
    pub async fn start_with(behaviour: Behaviour) -> Self {
        Self::start_inner(behaviour, None).await
    }

    /// Starts a server that offers STARTTLS with a certificate for
    /// `localhost` signed by a fresh CA; returns the CA certificate (PEM) to
    /// trust.
    pub async fn start_with_starttls() -> (Self, String) {
        let ca_key = rcgen::KeyPair::generate().expect("ca key");
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("ca params");
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "Test SMTP CA");
        let ca = ca_params.self_signed(&ca_key).expect("ca certificate");
        let key = rcgen::KeyPair::generate().expect("server key");
        let params =
            rcgen::CertificateParams::new(vec!["localhost".to_owned()]).expect("server params");
        let issuer = rcgen::Issuer::new(ca_params, ca_key);
        let cert = params.signed_by(&key, &issuer).expect("server certificate");
        let config = tokio_rustls::rustls::ServerConfig::builder_with_provider(
            std::sync::Arc::new(tokio_rustls::rustls::crypto::ring::default_provider()),
        )
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            tokio_rustls::rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        )
        .expect("server TLS config");
        let server =
            Self::start_inner(Behaviour::Accept, Some(TlsAcceptor::from(Arc::new(config)))).await;
        (server, ca.pem())
    }

    async fn start_inner(behaviour: Behaviour, tls: Option<TlsAcceptor>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind smtp");
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(State {
            behaviour: Mutex::new(behaviour),
            received: Mutex::default(),
            recipient_attempts: Mutex::default(),
            data_started: Notify::new(),
            arrived: Notify::new(),
        });
        let connections: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let accept = {
            let (state, connections) = (state.clone(), connections.clone());
            tokio::spawn(async move {
                loop {
                    let Ok((stream, peer)) = listener.accept().await else {
                        continue;
                    };
                    let conn = tokio::spawn(serve(stream, peer, state.clone(), tls.clone()));
                    connections.lock().unwrap().push(conn);
                }
            })
        };
        Self {
            addr,
            state,
            accept,
            connections,
        }
    }

    /// `smtp://127.0.0.1:<port>`, for `SMTP_URL`.
    pub fn url(&self) -> String {
        format!("smtp://{}", self.addr)
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Changes how the server answers from now on.
    pub fn set_behaviour(&self, behaviour: Behaviour) {
        *self.state.behaviour.lock().unwrap() = behaviour;
    }

    /// Messages that arrived so far.
    pub fn received(&self) -> Vec<Received> {
        self.state.received.lock().unwrap().clone()
    }

    /// Every RCPT seen so far, accepted or not, with its time.
    pub fn recipient_attempts(&self) -> Vec<(String, Instant)> {
        self.state.recipient_attempts.lock().unwrap().clone()
    }

    /// Waits until at least `n` messages arrived, or panics after `timeout`.
    pub async fn wait_for(&self, n: usize, timeout: Duration) -> Vec<Received> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.state.arrived.notified();
            // Counted without a copy: a copy of every message on each
            // arrival would cost the process more than serving them.
            if self.state.received.lock().unwrap().len() >= n {
                return self.received();
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                panic!(
                    "timed out after {timeout:?}: {} of {n} messages arrived",
                    self.received().len()
                );
            }
        }
    }

    /// Waits until a client has started sending DATA.
    pub async fn wait_for_data_start(&self, timeout: Duration) {
        tokio::time::timeout(timeout, self.state.data_started.notified())
            .await
            .expect("a client started DATA");
    }

    /// Stops listening and drops every open connection.
    pub fn stop(&self) {
        self.accept.abort();
        for c in self.connections.lock().unwrap().drain(..) {
            c.abort();
        }
    }
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn serve(
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    state: Arc<State>,
    tls: Option<TlsAcceptor>,
) {
    let data_ended = Arc::new(AtomicBool::new(false));
    let secure = Arc::new(AtomicBool::new(false));
    let handler = Session {
        state: state.clone(),
        from: String::new(),
        to: Vec::new(),
        data: Vec::new(),
        data_ended: data_ended.clone(),
        secure: secure.clone(),
    };
    let mut builder = SessionBuilder::new("smtp.test.invalid");
    if tls.is_some() {
        builder.enable_start_tls();
    }
    let mut session = builder.build(peer.ip(), handler);
    let mut plain = BufReader::new(stream);
    if plain
        .write_all(&session.greeting().buffer().unwrap_or_default())
        .await
        .is_err()
    {
        return;
    }
    // Speak plain SMTP until the client asks for STARTTLS, then go on over TLS.
    let Some(plain) = converse(&mut plain, &mut session, &state, &data_ended)
        .await
        .then_some(plain)
    else {
        return;
    };
    let Some(acceptor) = tls else { return };
    let Ok(tls_stream) = acceptor.accept(plain.into_inner()).await else {
        return;
    };
    session.tls_active();
    secure.store(true, Ordering::SeqCst);
    let mut tls_stream = BufReader::new(tls_stream);
    converse(&mut tls_stream, &mut session, &state, &data_ended).await;
}

/// Answers commands until the connection ends (false) or the client asked to
/// start TLS (true).
async fn converse<S>(
    stream: &mut BufReader<S>,
    session: &mut mailin::Session<Session>,
    state: &State,
    data_ended: &AtomicBool,
) -> bool
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let mut line = Vec::with_capacity(1024);
    loop {
        line.clear();
        match stream.read_until(b'\n', &mut line).await {
            Ok(0) | Err(_) => return false,
            Ok(_) => {}
        }
        let response = session.process(&line);
        if data_ended.swap(false, Ordering::SeqCst) {
            let hold = match &*state.behaviour.lock().unwrap() {
                Behaviour::HoldData(d) => Some(*d),
                _ => None,
            };
            if let Some(d) = hold {
                tokio::time::sleep(d).await;
            }
        }
        let reply = response.buffer().unwrap_or_default();
        match response.action {
            Action::NoReply => {}
            Action::Close => {
                let _ = stream.write_all(&reply).await;
                return false;
            }
            Action::Reply => {
                if stream.write_all(&reply).await.is_err() {
                    return false;
                }
            }
            Action::UpgradeTls => {
                return stream.write_all(&reply).await.is_ok();
            }
        }
    }
}
