//! Wake-ups for idle queue workers, so a pushed job is fetched at once
//! instead of at the next poll.
//!
//! apalis-redis fetches when its worker polls: on the poll interval, on the
//! heartbeat, or right after a job ends (`ARCHITECTURE.md`, defect 3). Every
//! push through [`crate::jobs::Queues`] therefore also publishes on the
//! queue's wake channel (`{prefix}:{queue}:wake`), and each worker process
//! holds one Redis subscription to the channels of the queues it serves.
//! A message wakes that queue's fetch loop, which fetches right away.
//!
//! A wake-up is only a hint: one lost (the subscription reconnecting, Redis
//! away) leaves the job to the next poll, which can therefore be long
//! (`WORKER_POLL_INTERVAL_MS`) without costing idle CPU. After each
//! (re)subscription every queue is woken once, for what it may have missed.
//!
//! The scheduler's dispatcher is woken the same way ([`DispatcherWakes`],
//! channel `{prefix}:dispatcher:wake`) by writers that commit work only the
//! dispatcher feeds (a chunk's rows born undispatched, a queue resumed), so
//! its sweeps can slow down while nothing happens without delaying that
//! work.

use std::{
    collections::HashMap,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use apalis_core::backend::ext::poll_strategy::{PollSnapshot, PollStrategy};
use futures::{StreamExt, task::AtomicWaker};
use tokio::sync::watch;

use crate::jobs::QueueName;

/// The pub/sub channel announcing pushes onto the queue whose apalis
/// namespace is `namespace` (see [`crate::jobs::Queues::namespace`]).
pub fn channel(namespace: &str) -> String {
    format!("{namespace}:wake")
}

/// The pub/sub channel that wakes the dispatchers of the deployment whose
/// Redis keys start with `prefix`.
pub fn dispatcher_channel(prefix: &str) -> String {
    format!("{prefix}:dispatcher:wake")
}

/// Longest wait before subscribing again after the subscription failed.
const MAX_RETRY: Duration = Duration::from_secs(5);

/// How long connecting and subscribing may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// One queue's wake-ups: a counter and the fetch loop to wake.
#[derive(Debug, Default)]
struct Signal {
    count: AtomicU64,
    waker: AtomicWaker,
}

impl Signal {
    fn wake(&self) {
        self.count.fetch_add(1, Ordering::Release);
        self.waker.wake();
    }
}

/// This process's subscription to the wake channels of the queues it
/// serves. The subscription ends when the last clone is dropped.
#[derive(Debug, Clone)]
pub struct Wakes {
    signals: Arc<HashMap<QueueName, Arc<Signal>>>,
    _stop: Arc<watch::Sender<()>>,
}

impl Wakes {
    /// Subscribes, in the background, to the wake channels of `queues`
    /// (named with the key `prefix`); reconnects by itself when Redis goes
    /// away.
    pub fn subscribe(client: redis::Client, prefix: &str, queues: &[QueueName]) -> Self {
        let signals: HashMap<QueueName, Arc<Signal>> = queues
            .iter()
            .map(|q| (*q, Arc::new(Signal::default())))
            .collect();
        let by_channel: HashMap<String, Arc<Signal>> = signals
            .iter()
            .map(|(q, s)| (channel(&format!("{prefix}:{q}")), s.clone()))
            .collect();
        let (stop, stopped) = watch::channel(());
        tokio::spawn(listen(client, by_channel, stopped));
        Self {
            signals: Arc::new(signals),
            _stop: Arc::new(stop),
        }
    }

    /// The poll strategy that wakes `queue`'s fetch loop on a wake-up; it
    /// never fires for a queue this process did not subscribe to.
    pub fn strategy(&self, queue: QueueName) -> WakeStrategy {
        let signal = self.signals.get(&queue).cloned().unwrap_or_default();
        let seen = signal.count.load(Ordering::Acquire);
        WakeStrategy { signal, seen }
    }
}

/// This process's subscription to the dispatcher's wake channel (see
/// [`dispatcher_channel`]); ends when dropped.
#[derive(Debug)]
pub struct DispatcherWakes {
    signal: Arc<Signal>,
    seen: u64,
    _stop: watch::Sender<()>,
}

impl DispatcherWakes {
    /// Subscribes, in the background, to the dispatcher's wake channel of
    /// the deployment whose keys start with `prefix`; reconnects by itself
    /// when Redis goes away (and counts each (re)subscription as a wake-up).
    pub fn subscribe(client: redis::Client, prefix: &str) -> Self {
        let signal = Arc::new(Signal::default());
        let by_channel = HashMap::from([(dispatcher_channel(prefix), signal.clone())]);
        let (stop, stopped) = watch::channel(());
        tokio::spawn(listen(client, by_channel, stopped));
        Self {
            signal,
            seen: 0,
            _stop: stop,
        }
    }

    /// Resolves at the first wake-up not seen yet (at once if one came
    /// since the last call). Cancel-safe: dropping the future loses nothing.
    pub async fn woken(&mut self) {
        std::future::poll_fn(|cx| {
            // Register before reading the count, so a wake-up in between is
            // not lost.
            self.signal.waker.register(cx.waker());
            let count = self.signal.count.load(Ordering::Acquire);
            if count != self.seen {
                self.seen = count;
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
        .await
    }
}

/// Keeps the subscription up until `stopped` says the [`Wakes`] is gone.
async fn listen(
    client: redis::Client,
    by_channel: HashMap<String, Arc<Signal>>,
    mut stopped: watch::Receiver<()>,
) {
    let mut retry = Duration::from_millis(100);
    loop {
        let session = async {
            let subscribed = tokio::time::timeout(CONNECT_TIMEOUT, async {
                let mut pubsub = client.get_async_pubsub().await?;
                for name in by_channel.keys() {
                    pubsub.subscribe(name).await?;
                }
                Ok::<_, redis::RedisError>(pubsub)
            })
            .await;
            let pubsub = match subscribed {
                Ok(Ok(pubsub)) => pubsub,
                Ok(Err(error)) => {
                    tracing::warn!(%error, "cannot subscribe to queue wake-ups; polling only");
                    return false;
                }
                Err(_) => {
                    tracing::warn!("subscribing to queue wake-ups timed out; polling only");
                    return false;
                }
            };
            tracing::debug!(queues = by_channel.len(), "subscribed to queue wake-ups");
            // Whatever was pushed while unsubscribed is fetched now.
            for signal in by_channel.values() {
                signal.wake();
            }
            let mut messages = pubsub.into_on_message();
            while let Some(message) = messages.next().await {
                if let Some(signal) = by_channel.get(message.get_channel_name()) {
                    signal.wake();
                }
            }
            tracing::warn!("queue wake-up subscription lost; subscribing again");
            true
        };
        let worked = tokio::select! {
            _ = stopped.changed() => return,
            worked = session => worked,
        };
        retry = if worked {
            Duration::from_millis(100)
        } else {
            (retry * 2).min(MAX_RETRY)
        };
        tokio::select! {
            _ = stopped.changed() => return,
            () = tokio::time::sleep(retry) => {}
        }
    }
}

/// A poll strategy (for apalis's `poll_with_strategy`) that is ready once
/// per wake-up of its queue. Combine it with an interval, which catches
/// what a lost wake-up would leave behind.
#[derive(Debug)]
pub struct WakeStrategy {
    signal: Arc<Signal>,
    seen: u64,
}

impl PollStrategy for WakeStrategy {
    fn poll_drive(&mut self, cx: &mut Context<'_>, _: &PollSnapshot) -> Poll<Option<()>> {
        // Register before reading the count, so a wake-up in between is
        // not lost.
        self.signal.waker.register(cx.waker());
        let count = self.signal.count.load(Ordering::Acquire);
        if count != self.seen {
            self.seen = count;
            Poll::Ready(Some(()))
        } else {
            Poll::Pending
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use super::*;

    #[derive(Default)]
    struct CountWakes(AtomicUsize);

    impl std::task::Wake for CountWakes {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn a_wake_up_wakes_the_fetch_loop_and_is_ready_once() {
        let signal = Arc::new(Signal::default());
        let mut strategy = WakeStrategy {
            signal: signal.clone(),
            seen: 0,
        };
        let wakes = Arc::new(CountWakes::default());
        let waker = std::task::Waker::from(wakes.clone());
        let mut cx = Context::from_waker(&waker);
        let snapshot = PollSnapshot::default();
        assert!(strategy.poll_drive(&mut cx, &snapshot).is_pending());
        signal.wake();
        signal.wake();
        assert_eq!(
            wakes.0.load(Ordering::SeqCst),
            1,
            "the fetch loop was woken"
        );
        assert!(strategy.poll_drive(&mut cx, &snapshot).is_ready());
        assert!(
            strategy.poll_drive(&mut cx, &snapshot).is_pending(),
            "wake-ups before a fetch make one fetch"
        );
    }
}
