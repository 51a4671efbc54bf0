//! Real-time delivery over WebSocket at `/api/v1/ws`.
//!
//! **Auth.** A JWT in the `Authorization` header, or, for browsers, a first
//! message `{"type":"auth","token":"…"}` within `WS_AUTH_TIMEOUT_SECS`.
//!
//! **Topics.** A connection starts on its user's topic (`user:<subject>`).
//! `{"type":"subscribe","topics":[…]}` / `unsubscribe` add and remove
//! topics: anyone may have `org`; whoever holds `notifications:read` (an
//! `ADMIN`, or a user given it by a set, a grant or a delegation) may also
//! have `batch:<id>` and `bulk:<id>`, checked when subscribing; nobody may
//! have another user's topic. Topics never cross
//! tenants: a connection only hears its own tenant's channel.
//!
//! **Catch-up.** User events carry the user's event number; reconnecting
//! with `?since=<id>` first replays every kept event after it (or sends
//! `resync_required` when some are no longer kept).
//!
//! **Across replicas.** Events come from the tenant's Redis channel, which
//! every instance's [`listen`] task follows, so a client hears changes made
//! through any instance or worker.
//!
//! **Revoked sessions.** A connection opened with a token of a sign-in
//! session (`sid`) is closed with code 4401 when that session is revoked
//! (sign-out, the user or an admin ending it, a reused refresh token), on
//! whichever instance it is open: revocations are announced on the Redis
//! channel `{prefix}:sessions:revoked` ([`crate::signin`]), which [`listen`]
//! follows too.
//!
//! **Heartbeat and backpressure.** The server pings every
//! `WS_HEARTBEAT_SECS` and closes a connection silent for
//! `WS_IDLE_TIMEOUT_SECS`. Each client has a queue of `WS_CLIENT_QUEUE`
//! events; a client that falls that far behind is closed (4008) and told to
//! reconnect with `since`.

use std::{
    collections::{HashMap, HashSet},
    sync::{
        Arc, Mutex, RwLock,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use futures::{SinkExt, StreamExt};
use poem::{
    IntoResponse, Request, handler,
    http::header,
    web::{
        Data, Query,
        websocket::{CloseCode, Message, WebSocket, WebSocketConfig},
    },
};
use serde::Deserialize;
use serde_json::{Value, json};
use shared::{
    config::RealtimeSettings,
    db::{events, subscribers},
    domain::TenantId,
    events::{Event, user_topic},
};
use tokio::sync::{Notify, mpsc};

use crate::{AppState, error::ApiError, identity::Identity};

/// Most events replayed on reconnect.
const CATCH_UP_LIMIT: i64 = 1_000;

struct Conn {
    session: Option<uuid::Uuid>,
    revoked: Arc<AtomicBool>,
    topics: Arc<Mutex<HashSet<String>>>,
    tx: mpsc::Sender<Arc<str>>,
    overflow: Arc<AtomicBool>,
    wake: Arc<Notify>,
}

/// Connections of this instance, by tenant.
#[derive(Default)]
pub struct Hub {
    next: AtomicU64,
    conns: RwLock<HashMap<TenantId, HashMap<u64, Conn>>>,
    sent: AtomicU64,
}

/// What a [`Hub`] holds now, for operators.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HubStats {
    /// Open connections.
    pub connections: u64,
    /// Topics followed, by kind (`user`, `org`, `batch`, `bulk`).
    pub subscriptions: std::collections::BTreeMap<String, u64>,
    /// Messages written to clients since the instance started.
    pub sent: u64,
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub").finish_non_exhaustive()
    }
}

/// A connection's place in the hub; leaving it unregisters.
struct Registration {
    hub: Arc<Hub>,
    tenant_id: TenantId,
    id: u64,
    topics: Arc<Mutex<HashSet<String>>>,
    rx: mpsc::Receiver<Arc<str>>,
    overflow: Arc<AtomicBool>,
    revoked: Arc<AtomicBool>,
    wake: Arc<Notify>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        if let Ok(mut conns) = self.hub.conns.write()
            && let Some(tenant) = conns.get_mut(&self.tenant_id)
        {
            tenant.remove(&self.id);
            if tenant.is_empty() {
                conns.remove(&self.tenant_id);
            }
        }
        metrics::gauge!("ws_connections").decrement(1.0);
    }
}

impl Hub {
    fn register(
        self: &Arc<Self>,
        tenant_id: TenantId,
        topic: String,
        queue: usize,
        session: Option<uuid::Uuid>,
    ) -> Registration {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::channel(queue);
        let topics = Arc::new(Mutex::new(HashSet::from([topic])));
        let overflow = Arc::new(AtomicBool::new(false));
        let wake = Arc::new(Notify::new());
        let revoked = Arc::new(AtomicBool::new(false));
        let conn = Conn {
            session,
            revoked: revoked.clone(),
            topics: topics.clone(),
            tx,
            overflow: overflow.clone(),
            wake: wake.clone(),
        };
        self.conns
            .write()
            .expect("hub lock")
            .entry(tenant_id)
            .or_default()
            .insert(id, conn);
        metrics::gauge!("ws_connections").increment(1.0);
        Registration {
            hub: self.clone(),
            tenant_id,
            id,
            topics,
            rx,
            overflow,
            revoked,
            wake,
        }
    }

    /// Connections, subscriptions by topic kind, and messages sent so far.
    pub fn stats(&self) -> HubStats {
        let mut stats = HubStats {
            sent: self.sent.load(Ordering::Relaxed),
            ..HubStats::default()
        };
        let conns = self.conns.read().expect("hub lock");
        for conn in conns.values().flat_map(|t| t.values()) {
            stats.connections += 1;
            for topic in conn.topics.lock().expect("topics lock").iter() {
                let kind = topic.split_once(':').map_or(topic.as_str(), |(k, _)| k);
                *stats.subscriptions.entry(kind.to_owned()).or_default() += 1;
            }
        }
        stats
    }

    /// Closes this instance's connections of `sessions` (revoked).
    pub fn close_sessions(&self, sessions: &[uuid::Uuid]) {
        let conns = self.conns.read().expect("hub lock");
        for conn in conns.values().flat_map(|t| t.values()) {
            if conn.session.is_some_and(|s| sessions.contains(&s))
                && !conn.revoked.swap(true, Ordering::SeqCst)
            {
                conn.wake.notify_one();
            }
        }
    }

    /// Hands an event to this instance's clients on its topic.
    pub fn dispatch(&self, event: &Event) {
        let text: Arc<str> = Arc::from(
            json!({"type": event.kind, "topic": event.topic, "id": event.id, "at": event.at, "data": event.data})
                .to_string(),
        );
        let conns = self.conns.read().expect("hub lock");
        let Some(tenant) = conns.get(&event.tenant_id) else {
            return;
        };
        for conn in tenant.values() {
            if !conn
                .topics
                .lock()
                .expect("topics lock")
                .contains(&event.topic)
            {
                continue;
            }
            if conn.tx.try_send(text.clone()).is_err()
                && !conn.overflow.swap(true, Ordering::SeqCst)
            {
                conn.wake.notify_one();
            }
        }
    }

    /// Tells every client that events may have been missed (after this
    /// instance lost its Redis subscription).
    pub fn resync_all(&self) {
        let text: Arc<str> = Arc::from(
            json!({"type": "resync_required", "reason": "events may have been missed"}).to_string(),
        );
        for tenant in self.conns.read().expect("hub lock").values() {
            for conn in tenant.values() {
                let _ = conn.tx.try_send(text.clone());
            }
        }
    }
}

/// Follows every tenant's event channel and dispatches to `hub`, reconnecting
/// after failures. Runs until aborted.
pub async fn listen(redis_url: String, prefix: String, hub: Arc<Hub>) {
    let pattern = shared::events::channel_pattern(&prefix);
    let revocations = crate::signin::revocation_channel(&prefix);
    let mut connected_before = false;
    loop {
        let subscribed = async {
            let client = redis::Client::open(redis_url.as_str())?;
            let mut pubsub = client.get_async_pubsub().await?;
            pubsub.psubscribe(&pattern).await?;
            pubsub.subscribe(&revocations).await?;
            Ok::<_, redis::RedisError>(pubsub)
        }
        .await;
        match subscribed {
            Ok(mut pubsub) => {
                if connected_before {
                    hub.resync_all();
                }
                connected_before = true;
                let mut messages = pubsub.on_message();
                while let Some(msg) = messages.next().await {
                    let Ok(payload) = msg.get_payload::<String>() else {
                        continue;
                    };
                    if msg.get_channel_name() == revocations {
                        match serde_json::from_str::<Vec<uuid::Uuid>>(&payload) {
                            Ok(sessions) => hub.close_sessions(&sessions),
                            Err(error) => {
                                tracing::warn!(%error, "an unreadable session revocation")
                            }
                        }
                        continue;
                    }
                    match serde_json::from_str::<Event>(&payload) {
                        Ok(event) => hub.dispatch(&event),
                        Err(error) => {
                            tracing::warn!(%error, "an unreadable event on the events channel")
                        }
                    }
                }
                tracing::warn!("lost the events subscription; reconnecting");
            }
            Err(error) => tracing::warn!(%error, "cannot subscribe to events; retrying"),
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Query parameters of the WebSocket endpoint.
#[derive(Debug, Deserialize)]
pub struct WsParams {
    /// The last event number the client saw.
    pub since: Option<i64>,
}

/// `GET /api/v1/ws`.
#[handler]
pub async fn endpoint(
    req: &Request,
    ws: WebSocket,
    state: Data<&AppState>,
    Query(params): Query<WsParams>,
) -> poem::Result<impl IntoResponse> {
    let state = state.0.clone();
    // A token in the header is checked before the upgrade.
    let identity = match req.headers().get(header::AUTHORIZATION) {
        None => None,
        Some(value) => {
            let token = value
                .to_str()
                .ok()
                .and_then(|v| v.strip_prefix("Bearer "))
                .unwrap_or_default();
            match state.verifier.verify(token).await {
                Ok(id) => Some(id),
                Err(reason) => {
                    tracing::info!(%reason, "websocket token refused");
                    return Err(ApiError::Unauthorized.into());
                }
            }
        }
    };
    let settings = state.realtime.clone();
    // Clients only send small control messages; small buffers keep a held
    // connection cheap and cap what a client can make the server read.
    let config = WebSocketConfig::default()
        .read_buffer_size(4 * 1024)
        .write_buffer_size(4 * 1024)
        .max_message_size(Some(16 * 1024))
        .max_frame_size(Some(16 * 1024));
    Ok(ws.config(config).on_upgrade(move |socket| async move {
        let (mut sink, mut stream) = socket.split();
        let identity = match identity {
            Some(id) => id,
            None => match first_message_auth(&state, &mut stream, settings.auth_timeout).await {
                Some(id) => id,
                None => {
                    let _ = sink
                        .send(Message::close_with(
                            CloseCode::from(4401),
                            "authentication required",
                        ))
                        .await;
                    return;
                }
            },
        };
        // The upgraded connection runs in a task of its own, outside the
        // request's scope: walled to the caller's organisation here.
        let tenant = identity.tenant_id;
        let served = serve(
            &state,
            &settings,
            identity,
            params.since,
            &mut sink,
            &mut stream,
        );
        if let Err(error) = shared::db::scope::tenant(tenant, served).await {
            tracing::debug!(%error, "websocket ended");
        }
    }))
}

async fn first_message_auth<S>(
    state: &AppState,
    stream: &mut S,
    deadline: Duration,
) -> Option<Identity>
where
    S: futures::Stream<Item = std::io::Result<Message>> + Unpin,
{
    let msg = tokio::time::timeout(deadline, stream.next())
        .await
        .ok()??
        .ok()?;
    let Message::Text(text) = msg else {
        return None;
    };
    let value: Value = serde_json::from_str(&text).ok()?;
    if value["type"] != "auth" {
        return None;
    }
    let token = value["token"].as_str()?;
    match state.verifier.verify(token).await {
        Ok(id) => Some(id),
        Err(reason) => {
            tracing::info!(%reason, "websocket token refused");
            None
        }
    }
}

/// Whether `who` may follow `topic`; `may_read` says whether it holds
/// `notifications:read`, which a batch's or CSV job's progress needs (as
/// reading the batch or job over HTTP does).
fn allowed(who: &Identity, topic: &str, may_read: bool) -> Result<(), &'static str> {
    let id_ok = |id: &str| {
        !id.is_empty()
            && id.len() <= 64
            && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    };
    match topic.split_once(':') {
        None if topic == "org" => Ok(()),
        Some(("user", subject)) if subject == who.subject => Ok(()),
        Some(("user", _)) => Err("forbidden"),
        Some(("batch" | "bulk", id)) if id_ok(id) => {
            if may_read {
                Ok(())
            } else {
                Err("forbidden")
            }
        }
        _ => Err("unknown_topic"),
    }
}

async fn serve<Si, St>(
    state: &AppState,
    settings: &RealtimeSettings,
    who: Identity,
    since: Option<i64>,
    sink: &mut Si,
    stream: &mut St,
) -> anyhow::Result<()>
where
    Si: futures::Sink<Message, Error = std::io::Error> + Unpin,
    St: futures::Stream<Item = std::io::Result<Message>> + Unpin,
{
    let own = user_topic(&who.subject);
    // Register before reading the catch-up, so nothing falls between the two;
    // user events are numbered, so repeats are skipped below.
    let mut reg = state.hub.register(
        who.tenant_id,
        own.clone(),
        settings.client_queue,
        who.session_id,
    );
    // A session revoked between the token check and the registration was
    // announced before this connection could hear it.
    if let (Some(sid), Ok(user)) = (
        who.session_id,
        who.subject.parse::<shared::domain::UserId>(),
    ) && !shared::db::sessions::is_live(&state.pool, sid, user).await?
    {
        return close_revoked(sink).await;
    }
    let subscriber = subscribers::find(&state.pool, who.tenant_id, &who.subject).await?;
    let last = match subscriber {
        Some(s) => events::last_seq(&state.pool, who.tenant_id, s).await?,
        None => 0,
    };
    send(
        sink,
        json!({"type": "ready", "subject": who.subject, "last_event_id": last}),
    )
    .await?;
    let mut high = 0;
    if let (Some(since), Some(s)) = (since, subscriber) {
        let replay = events::since(&state.pool, who.tenant_id, s, since, CATCH_UP_LIMIT).await?;
        let complete = replay.first().is_none_or(|e| e.seq == since + 1)
            && (replay.len() as i64) < CATCH_UP_LIMIT;
        if !complete {
            send(
                sink,
                json!({"type": "resync_required", "reason": "some events are no longer kept"}),
            )
            .await?;
        }
        for e in replay {
            high = e.seq;
            send(
                sink,
                json!({"type": e.kind, "topic": own, "id": e.seq, "at": e.created_at, "data": e.payload.0}),
            )
            .await?;
        }
    }
    // A client that does not take what is sent within the idle timeout is as
    // good as gone: its socket is full and its queue is filling.
    let write_limit = settings.idle_timeout;
    let mut heartbeat = tokio::time::interval(settings.heartbeat);
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_heard = Instant::now();
    loop {
        tokio::select! {
            biased;
            _ = reg.wake.notified() => {
                if reg.revoked.load(Ordering::SeqCst) {
                    return close_revoked(sink).await;
                }
                if reg.overflow.load(Ordering::SeqCst) {
                    return close_slow(sink).await;
                }
            }
            out = reg.rx.recv() => {
                let Some(text) = out else { return Ok(()) };
                if high > 0 && let Ok(v) = serde_json::from_str::<Value>(&text)
                    && v["topic"] == own.as_str() && v["id"].as_i64().is_some_and(|id| id <= high)
                {
                    continue;
                }
                if tokio::time::timeout(write_limit, sink.send(Message::Text(text.to_string()))).await.is_err() {
                    return close_slow(sink).await;
                }
                metrics::counter!("ws_events_sent_total").increment(1);
                reg.hub.sent.fetch_add(1, Ordering::Relaxed);
            }
            _ = heartbeat.tick() => {
                if last_heard.elapsed() > settings.idle_timeout {
                    let _ = sink.send(Message::close_with(CloseCode::Away, "no answer to pings")).await;
                    return Ok(());
                }
                sink.send(Message::Ping(Vec::new())).await?;
            }
            incoming = stream.next() => {
                let Some(Ok(msg)) = incoming else { return Ok(()) };
                last_heard = Instant::now();
                match msg {
                    Message::Text(text) => handle_client(state, &who, &reg, &text, sink).await?,
                    Message::Close(_) => return Ok(()),
                    _ => {}
                }
            }
        }
    }
}

/// Ends the connection of a revoked session.
async fn close_revoked<Si>(sink: &mut Si) -> anyhow::Result<()>
where
    Si: futures::Sink<Message, Error = std::io::Error> + Unpin,
{
    metrics::counter!("ws_revoked_sessions_closed_total").increment(1);
    let close = Message::close_with(CloseCode::from(4401), "session revoked; sign in again");
    let _ = tokio::time::timeout(Duration::from_secs(1), sink.send(close)).await;
    Ok(())
}

/// Drops a client that fell behind, telling it (if its socket still takes
/// anything) to reconnect with `since`.
async fn close_slow<Si>(sink: &mut Si) -> anyhow::Result<()>
where
    Si: futures::Sink<Message, Error = std::io::Error> + Unpin,
{
    metrics::counter!("ws_slow_clients_closed_total").increment(1);
    let close = Message::close_with(CloseCode::from(4008), "too slow; reconnect with since");
    let _ = tokio::time::timeout(Duration::from_secs(1), sink.send(close)).await;
    Ok(())
}

/// Whether `who` holds `notifications:read`: its effective permissions (its
/// set, grants and delegations in force), as an HTTP call would read them.
async fn may_read(state: &AppState, who: &Identity) -> bool {
    let user = who.subject.parse().ok();
    match crate::permissions::effective(state, who.tenant_id, user, &who.roles).await {
        Ok(held) => held.contains_key(&shared::permissions::Permission::NotificationsRead),
        Err(error) => {
            tracing::warn!(%error, "cannot read a websocket caller's permissions");
            false
        }
    }
}

async fn handle_client<Si>(
    state: &AppState,
    who: &Identity,
    reg: &Registration,
    text: &str,
    sink: &mut Si,
) -> anyhow::Result<()>
where
    Si: futures::Sink<Message, Error = std::io::Error> + Unpin,
{
    let Ok(msg) = serde_json::from_str::<Value>(text) else {
        return send(sink, json!({"type": "error", "code": "bad_message"})).await;
    };
    let topics: Vec<String> = msg["topics"]
        .as_array()
        .map(|t| {
            t.iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .take(50)
                .collect()
        })
        .unwrap_or_default();
    match msg["type"].as_str() {
        Some("subscribe") => {
            let mut granted = Vec::new();
            let wants_progress = topics
                .iter()
                .any(|t| t.starts_with("batch:") || t.starts_with("bulk:"));
            let may_read = wants_progress && may_read(state, who).await;
            for topic in topics {
                match allowed(who, &topic, may_read) {
                    Ok(()) => {
                        reg.topics
                            .lock()
                            .expect("topics lock")
                            .insert(topic.clone());
                        granted.push(topic);
                    }
                    Err(code) => {
                        send(sink, json!({"type": "error", "code": code, "topic": topic})).await?
                    }
                }
            }
            send(sink, json!({"type": "subscribed", "topics": granted})).await
        }
        Some("unsubscribe") => {
            {
                let mut set = reg.topics.lock().expect("topics lock");
                for topic in &topics {
                    set.remove(topic);
                }
            }
            send(sink, json!({"type": "unsubscribed", "topics": topics})).await
        }
        Some("ping") => send(sink, json!({"type": "pong"})).await,
        _ => send(sink, json!({"type": "error", "code": "bad_message"})).await,
    }
}

async fn send<Si>(sink: &mut Si, value: Value) -> anyhow::Result<()>
where
    Si: futures::Sink<Message, Error = std::io::Error> + Unpin,
{
    sink.send(Message::Text(value.to_string())).await?;
    Ok(())
}
