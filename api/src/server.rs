//! The HTTP server: hyper under the poem application, with the limits that
//! keep slow or hostile clients from holding its connections.
//!
//! * A request's headers must arrive whole within the header timeout, or
//!   the connection is closed (slow-loris clients trickle headers forever);
//!   the body timeout is the edge's ([`crate::middleware`]).
//! * A connection without traffic for the idle timeout is closed.
//! * One client address holds at most `max_connections_per_ip` open
//!   connections; another is answered `429` and closed at once.
//! * On shutdown, open connections finish their requests for up to the
//!   grace period and are then closed.

use std::{
    collections::HashMap,
    convert::Infallible,
    future::Future,
    net::IpAddr,
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll},
    time::Duration,
};

use hyper::body::Incoming;
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::conn::auto,
};
use poem::{Endpoint, EndpointExt, IntoEndpoint, Request, Response, web::RemoteAddr};
use shared::config::HttpLimits;
use tokio::{
    io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf},
    net::{TcpListener, TcpStream},
    sync::watch,
    task::JoinSet,
    time::Instant,
};

/// Open connections per client address.
#[derive(Debug, Default)]
struct PerIp {
    open: Mutex<HashMap<IpAddr, usize>>,
}

impl PerIp {
    /// Counts a new connection from `ip`, unless it already holds `max`.
    fn admit(self: &Arc<Self>, ip: IpAddr, max: usize) -> Option<Slot> {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let n = open.entry(ip).or_default();
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(Slot {
            ip,
            per_ip: self.clone(),
        })
    }
}

/// One counted connection; uncounted when dropped.
#[derive(Debug)]
struct Slot {
    ip: IpAddr,
    per_ip: Arc<PerIp>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self.per_ip.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = open.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

/// What a client over its connection cap is told before the close.
fn too_many_connections() -> Vec<u8> {
    const BODY: &str = r#"{"type":"/problems/too-many-connections","title":"Too Many Requests","status":429,"detail":"this address holds too many open connections; close some and retry"}"#;
    format!(
        "HTTP/1.1 429 Too Many Requests\r\ncontent-type: application/problem+json\r\nretry-after: 1\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{BODY}",
        BODY.len()
    )
    .into_bytes()
}

/// A socket that is closed once it has seen no traffic for a while.
struct IdleClosing {
    inner: TcpStream,
    idle: Duration,
    deadline: Pin<Box<tokio::time::Sleep>>,
}

impl IdleClosing {
    fn new(inner: TcpStream, idle: Duration) -> Self {
        Self {
            inner,
            idle,
            deadline: Box::pin(tokio::time::sleep(idle)),
        }
    }

    fn touch(&mut self) {
        self.deadline.as_mut().reset(Instant::now() + self.idle);
    }

    fn expired(&mut self, cx: &mut Context<'_>) -> bool {
        self.deadline.as_mut().poll(cx).is_ready()
    }
}

fn idle_error() -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::TimedOut, "the connection was idle")
}

impl AsyncRead for IdleClosing {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.inner).poll_read(cx, buf) {
            Poll::Ready(r) => {
                if buf.filled().len() > before {
                    self.touch();
                }
                Poll::Ready(r)
            }
            Poll::Pending if self.expired(cx) => Poll::Ready(Err(idle_error())),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl AsyncWrite for IdleClosing {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match Pin::new(&mut self.inner).poll_write(cx, buf) {
            Poll::Ready(r) => {
                self.touch();
                Poll::Ready(r)
            }
            Poll::Pending if self.expired(cx) => Poll::Ready(Err(idle_error())),
            Poll::Pending => Poll::Pending,
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Serves `ep` on `listener` until `shutdown` resolves, then lets open
/// connections finish for up to `grace`.
pub async fn serve<E>(
    listener: TcpListener,
    ep: E,
    limits: HttpLimits,
    shutdown: impl Future<Output = ()>,
    grace: Duration,
) -> std::io::Result<()>
where
    E: IntoEndpoint,
    E::Endpoint: 'static,
{
    let ep: Arc<dyn poem::endpoint::DynEndpoint<Output = Response>> = Arc::new(
        poem::endpoint::ToDynEndpoint(ep.into_endpoint().map_to_response()),
    );
    let local = listener.local_addr()?;
    let per_ip = Arc::<PerIp>::default();
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        let (socket, remote) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(error) => {
                    // Out of file descriptors and the like: pause, go on.
                    tracing::warn!(%error, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
        };
        // A trusted proxy carries many clients' connections: not capped.
        let cap = if limits.trusted_proxies.contains(remote.ip()) {
            usize::MAX
        } else {
            limits.max_connections_per_ip
        };
        let Some(slot) = per_ip.admit(remote.ip(), cap) else {
            metrics::counter!("http_connections_refused_total", "reason" => "per_ip_cap")
                .increment(1);
            tokio::spawn(async move {
                let mut socket = socket;
                let _ = tokio::time::timeout(Duration::from_secs(1), async {
                    let _ = socket.write_all(&too_many_connections()).await;
                    let _ = socket.shutdown().await;
                })
                .await;
            });
            continue;
        };
        let _ = socket.set_nodelay(true);
        let ep = ep.clone();
        let limits = limits.clone();
        let mut stop = stop_rx.clone();
        connections.spawn(async move {
            let _slot = slot;
            let io = TokioIo::new(IdleClosing::new(socket, limits.idle_timeout));
            let service = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
                let ep = ep.clone();
                async move {
                    let req: Request = (
                        req,
                        poem::web::LocalAddr(poem::Addr::SocketAddr(local)),
                        RemoteAddr(poem::Addr::SocketAddr(remote)),
                        poem::http::uri::Scheme::HTTP,
                    )
                        .into();
                    Ok::<_, Infallible>(hyper::Response::from(ep.get_response(req).await))
                }
            });
            let mut builder = auto::Builder::new(TokioExecutor::new());
            builder
                .http1()
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_read_timeout)
                .keep_alive(true);
            builder.http2().timer(TokioTimer::new());
            let conn = builder.serve_connection_with_upgrades(io, service);
            tokio::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => return,
                _ = stop.wait_for(|s| *s) => {}
            }
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        });
    }
    drop(listener);
    let _ = stop_tx.send(true);
    let drained = tokio::time::timeout(grace, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            open = connections.len(),
            "closing connections still open after the grace period"
        );
        connections.shutdown().await;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_refusal_announces_its_body_length_exactly() {
        let answer = too_many_connections();
        let text = std::str::from_utf8(&answer).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.contains(&format!("content-length: {}", body.len())));
        serde_json::from_str::<serde_json::Value>(body).unwrap();
    }

    #[test]
    fn an_address_holds_at_most_its_cap_and_gets_slots_back() {
        let per_ip = Arc::<PerIp>::default();
        let ip: IpAddr = "127.0.0.9".parse().unwrap();
        let a = per_ip.admit(ip, 2).unwrap();
        let _b = per_ip.admit(ip, 2).unwrap();
        assert!(per_ip.admit(ip, 2).is_none());
        assert!(per_ip.admit("127.0.0.10".parse().unwrap(), 2).is_some());
        drop(a);
        assert!(per_ip.admit(ip, 2).is_some());
    }
}
