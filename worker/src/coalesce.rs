//! The same statement of many concurrent jobs, asked as one.
//!
//! Under load a worker runs dozens of delivery jobs at once, most of them
//! groups of one (the job a single send pushes). Each asks Postgres the same
//! few things: its tenant's providers and webhook subscriptions, its claim,
//! the claim check right before the provider is called, its outcome. A
//! statement costs far more (round trip, planning, commit) than a row in it,
//! so a [`Coalesce`] takes every question that arrives while earlier ones
//! run and asks them together, one statement per key (a tenant, say). An
//! idle worker's question goes at once, alone; and every answer is read
//! after its question was asked, so none is older than it would have been
//! alone.

use std::{future::Future, hash::Hash, sync::Arc};

use tokio::sync::{Semaphore, mpsc, oneshot};

/// Where one question's answer goes.
type Answer<O> = oneshot::Sender<Result<O, Arc<sqlx::Error>>>;

/// One question: its key, its input and where its answer goes.
type Question<K, I, O> = (K, I, Answer<O>);

/// Asks the questions of many callers together (see the module's
/// documentation). The statements stop once every clone is dropped.
#[derive(Debug)]
pub struct Coalesce<K, I, O> {
    asks: mpsc::UnboundedSender<Question<K, I, O>>,
}

impl<K, I, O> Coalesce<K, I, O>
where
    K: Eq + Hash + Clone + Send + 'static,
    I: Send + 'static,
    O: Send + 'static,
{
    /// Answers questions with `run`, which gets a key and the inputs of up
    /// to `at_most` questions of that key and returns one output per input,
    /// in their order. At most `in_flight` runs go at once; questions that
    /// arrive meanwhile wait for the next one. Must be called within a
    /// Tokio runtime.
    pub fn new<F, Fut>(at_most: usize, in_flight: usize, run: F) -> Self
    where
        F: Fn(K, Vec<I>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Vec<O>, sqlx::Error>> + Send + 'static,
    {
        Self::with_unheard(at_most, in_flight, run, |_, _| {})
    }

    /// As [`Coalesce::new`], and hands each answer whose caller was gone
    /// by the time its run ended (its future dropped) to `unheard`, with
    /// its key: for a statement whose effect must not be left ownerless
    /// (a claim nobody will act on).
    pub fn with_unheard<F, Fut, U>(at_most: usize, in_flight: usize, run: F, unheard: U) -> Self
    where
        F: Fn(K, Vec<I>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Vec<O>, sqlx::Error>> + Send + 'static,
        U: Fn(K, O) + Send + Sync + 'static,
    {
        let (asks, asked) = mpsc::unbounded_channel();
        tokio::spawn(drive(
            asked,
            at_most.max(1),
            in_flight.max(1),
            Arc::new(run),
            Arc::new(unheard),
        ));
        Self { asks }
    }

    /// Asks one question and waits for its answer. A run that fails
    /// answers each of its questions with the same error.
    pub async fn ask(&self, key: K, input: I) -> Result<O, Arc<sqlx::Error>> {
        let (answer, answered) = oneshot::channel();
        if self.asks.send((key, input, answer)).is_err() {
            return Err(Arc::new(sqlx::Error::WorkerCrashed));
        }
        answered
            .await
            .unwrap_or_else(|_| Err(Arc::new(sqlx::Error::WorkerCrashed)))
    }
}

/// Takes what is waiting once a run may start, groups it by key and starts
/// a run per group.
async fn drive<K, I, O, F, Fut, U>(
    mut asked: mpsc::UnboundedReceiver<Question<K, I, O>>,
    at_most: usize,
    in_flight: usize,
    run: Arc<F>,
    unheard: Arc<U>,
) where
    K: Eq + Hash + Clone + Send + 'static,
    I: Send + 'static,
    O: Send + 'static,
    F: Fn(K, Vec<I>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Vec<O>, sqlx::Error>> + Send + 'static,
    U: Fn(K, O) + Send + Sync + 'static,
{
    let slots = Arc::new(Semaphore::new(in_flight));
    let mut waiting = Vec::new();
    loop {
        // A free slot first: while every run is busy, questions pile up
        // for the next one.
        let slot = slots
            .clone()
            .acquire_owned()
            .await
            .expect("the slots are never closed");
        if asked.recv_many(&mut waiting, at_most * in_flight).await == 0 {
            return;
        }
        let mut groups: Vec<(K, Vec<I>, Vec<Answer<O>>)> = Vec::new();
        for (key, input, answer) in waiting.drain(..) {
            match groups
                .iter_mut()
                .find(|(k, inputs, _)| *k == key && inputs.len() < at_most)
            {
                Some((_, inputs, answers)) => {
                    inputs.push(input);
                    answers.push(answer);
                }
                None => groups.push((key, vec![input], vec![answer])),
            }
        }
        let mut slot = Some(slot);
        for (key, inputs, answers) in groups {
            let slot = match slot.take() {
                Some(s) => s,
                None => slots
                    .clone()
                    .acquire_owned()
                    .await
                    .expect("the slots are never closed"),
            };
            let (run, unheard) = (run.clone(), unheard.clone());
            tokio::spawn(async move {
                let asked = answers.len();
                match run(key.clone(), inputs).await {
                    Ok(outputs) => {
                        debug_assert_eq!(outputs.len(), asked, "one output per input");
                        for (answer, output) in answers.into_iter().zip(outputs) {
                            // A caller that is gone cannot act on its answer.
                            if let Err(Ok(output)) = answer.send(Ok(output)) {
                                unheard(key.clone(), output);
                            }
                        }
                    }
                    Err(error) => {
                        let error = Arc::new(error);
                        for answer in answers {
                            let _ = answer.send(Err(error.clone()));
                        }
                    }
                }
                drop(slot);
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    /// A run's key and inputs.
    type Run = (u8, Vec<u32>);

    #[tokio::test]
    async fn questions_waiting_while_a_run_goes_are_answered_together_by_key() {
        let runs: Arc<Mutex<Vec<Run>>> = Arc::default();
        let (release, released) = tokio::sync::watch::channel(false);
        let seen = runs.clone();
        let coalesce = Arc::new(Coalesce::new(8, 1, move |key: u8, inputs: Vec<u32>| {
            seen.lock().unwrap().push((key, inputs.clone()));
            let mut released = released.clone();
            async move {
                released
                    .wait_for(|r| *r)
                    .await
                    .expect("the test holds the sender");
                Ok(inputs.into_iter().map(|i| i * 10).collect())
            }
        }));
        // The first question starts a run at once, alone.
        let first = tokio::spawn({
            let c = coalesce.clone();
            async move { c.ask(1, 1).await }
        });
        tokio::time::timeout(std::time::Duration::from_secs(5), async {
            while runs.lock().unwrap().is_empty() {
                tokio::task::yield_now().await;
            }
        })
        .await
        .expect("the first run starts");
        // These arrive while it runs (its only slot busy): each is in the
        // channel once first polled, before the run is let go.
        let later = futures::future::join_all(
            [(1u8, 2u32), (2, 3), (1, 4)].map(|(k, i)| coalesce.ask(k, i)),
        );
        let (answers, sent) = tokio::join!(later, async { release.send(true) });
        sent.unwrap();
        assert_eq!(first.await.unwrap().unwrap(), 10);
        let answers: Vec<u32> = answers.into_iter().map(Result::unwrap).collect();
        assert_eq!(answers, vec![20, 30, 40]);
        let runs = runs.lock().unwrap().clone();
        assert_eq!(runs[0], (1, vec![1]));
        assert!(
            runs[1..].contains(&(1, vec![2, 4])) && runs[1..].contains(&(2, vec![3])),
            "one run per key for what waited: {runs:?}"
        );
    }

    #[tokio::test]
    async fn an_answer_whose_caller_is_gone_goes_to_unheard() {
        let (release, released) = tokio::sync::watch::channel(false);
        let (started, has_started) = oneshot::channel::<()>();
        let started = Mutex::new(Some(started));
        let (tell, told) = mpsc::unbounded_channel();
        let coalesce = Coalesce::with_unheard(
            8,
            1,
            move |_: u8, inputs: Vec<u32>| {
                if let Some(s) = started.lock().unwrap().take() {
                    let _ = s.send(());
                }
                let mut released = released.clone();
                async move {
                    released
                        .wait_for(|r| *r)
                        .await
                        .expect("the test holds the sender");
                    Ok(inputs.into_iter().map(|i| i * 10).collect())
                }
            },
            move |key, output| tell.send((key, output)).unwrap(),
        );
        // The caller is dropped once its run has started.
        tokio::select! {
            _ = coalesce.ask(7, 4) => unreachable!("the run waits for the release"),
            _ = has_started => {}
        }
        release.send(true).unwrap();
        let mut told = told;
        assert_eq!(told.recv().await, Some((7, 40)));
        // A caller that waits for its answer gets it, and `unheard` nothing.
        assert_eq!(coalesce.ask(7, 5).await.unwrap(), 50);
        assert!(told.try_recv().is_err());
    }

    #[tokio::test]
    async fn a_failed_run_answers_each_of_its_questions_with_the_error() {
        let coalesce: Coalesce<u8, u32, u32> =
            Coalesce::new(8, 2, |_, _| async { Err(sqlx::Error::PoolTimedOut) });
        let error = coalesce.ask(1, 1).await.unwrap_err();
        assert!(matches!(*error, sqlx::Error::PoolTimedOut));
    }
}
