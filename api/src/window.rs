//! The API's view of each queue's Redis backlog, so the push after commit
//! respects the dispatcher's high-water mark. The backlog is read from Redis
//! at most every [`REFRESH`] and counted up locally in between; when the
//! window is full (or Redis does not answer, which is remembered for the same
//! [`REFRESH`]) the API leaves the row to the dispatcher, which pushes it as
//! room frees up.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use shared::jobs::{QueueName, Queues};

/// How stale the cached backlog may be.
const REFRESH: Duration = Duration::from_millis(100);

/// Cached backlogs.
#[derive(Debug)]
pub struct Window {
    queues: Queues,
    high_water_mark: usize,
    seen: Mutex<HashMap<QueueName, (Instant, usize)>>,
}

impl Window {
    /// A window over `queues` bounded by `high_water_mark`.
    pub fn new(queues: Queues, high_water_mark: usize) -> Self {
        Self {
            queues,
            high_water_mark,
            seen: Mutex::new(HashMap::new()),
        }
    }

    /// Reserves room for one job on `queue`; false when the window is full
    /// or the backlog cannot be read.
    pub async fn reserve(&self, queue: QueueName) -> bool {
        {
            let mut seen = self.seen.lock().expect("window lock");
            if let Some((at, backlog)) = seen.get_mut(&queue)
                && at.elapsed() < REFRESH
            {
                if *backlog >= self.high_water_mark {
                    return false;
                }
                *backlog += 1;
                return true;
            }
        }
        let backlog = self.queues.backlog(queue).await;
        let mut seen = self.seen.lock().expect("window lock");
        match backlog {
            Ok(backlog) => {
                seen.insert(queue, (Instant::now(), backlog + 1));
                backlog < self.high_water_mark
            }
            Err(_) => {
                // Redis is away: treat the window as full for a while, so
                // requests do not each wait for Redis to time out.
                seen.insert(queue, (Instant::now(), self.high_water_mark));
                false
            }
        }
    }
}
