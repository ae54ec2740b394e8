//! The dedicated inference pool: a few OS threads that do nothing but run in-process
//! model sessions, fed by one bounded queue, answering through oneshot channels.
//!
//! Why not tokio's blocking pool: inference there shares threads (and the 512-thread cap)
//! with file I/O, DNS lookups and everything else that blocks, grows a new thread under
//! load instead of queueing, and gives no way to say "inference is saturated". Here:
//!
//! - `threads` workers (default: half the available cores, at least one, see
//!   [`InferencePool::default_threads`]), named `verdict-infer-N`; inference never runs on
//!   an async worker thread nor on tokio's blocking pool.
//! - One bounded queue of `capacity` jobs (default: 64 per available core). **Back-pressure is a
//!   refusal, not a wait**: when the queue is full, [`InferencePool::run`] returns
//!   [`PoolError::Full`] at once (the model layer reports it as `overloaded`, like the
//!   guard's concurrency limit), because a queue in front of saturated cores only adds
//!   latency that the caller's timeout will then spend.
//! - A job whose caller has gone away (timed out, request dropped) while it waited in the
//!   queue is skipped, not run.
//! - A panic inside a session is caught and reported as [`PoolError::Panicked`]; the worker
//!   lives on.
//! - The pool measures the session's own run time (model time) on the worker, so the hop
//!   to and from the pool counts as platform overhead, not as model time.
//!
//! Dropping the last handle to a pool closes its queue; the workers finish the jobs already
//! queued and exit.

use super::engine::{Output, Session};
use std::collections::VecDeque;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// Why the pool did not run a job.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PoolError {
    /// The queue is full: every worker is busy and `capacity` jobs wait.
    #[error("inference pool full: {threads} threads busy and {capacity} runs queued")]
    Full {
        /// Worker threads.
        threads: usize,
        /// Queue capacity.
        capacity: usize,
    },
    /// The session returned an error.
    #[error("{0}")]
    Run(String),
    /// The session panicked (the worker survives).
    #[error("inference panicked: {0}")]
    Panicked(String),
    /// The pool's workers are gone (cannot happen while a handle exists; kept for safety).
    #[error("inference pool stopped")]
    Stopped,
}

/// What a run returns: the outputs and the time the session itself took.
pub type RunResult = Result<(Vec<Output>, Duration), PoolError>;

struct Job {
    session: Arc<dyn Session>,
    rows: usize,
    data: Vec<f32>,
    reply: oneshot::Sender<RunResult>,
}

#[derive(Default)]
struct Queue {
    jobs: VecDeque<Job>,
    closed: bool,
    /// Workers parked on `ready`. A submit notifies only when one is: std's
    /// `Condvar::notify_one` makes a futex syscall even when nobody waits, and under load
    /// the workers are busy draining the queue anyway.
    idle: usize,
}

/// What the workers and the handles share. A mutex-guarded deque with one condition
/// variable: a submit wakes exactly one parked worker (a channel receiver behind a mutex
/// would wake two threads per job).
#[derive(Default)]
struct Shared {
    queue: Mutex<Queue>,
    ready: Condvar,
    /// Jobs accepted and not yet finished or skipped (queued + running).
    pending: AtomicUsize,
    /// Jobs skipped because their caller had gone.
    skipped: AtomicUsize,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        // Jobs run outside the lock, so a poisoned lock only means a panic in this module's
        // few lines of bookkeeping; the queue is still consistent.
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Closes the queue when the last pool handle goes.
struct Owner(Arc<Shared>);

impl Drop for Owner {
    fn drop(&mut self) {
        self.0.lock().closed = true;
        self.0.ready.notify_all();
    }
}

/// A fixed set of inference threads behind a bounded queue. Cheap to clone (clones share
/// the threads).
#[derive(Clone)]
pub struct InferencePool {
    owner: Arc<Owner>,
    threads: usize,
    capacity: usize,
}

impl std::fmt::Debug for InferencePool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InferencePool")
            .field("threads", &self.threads)
            .field("capacity", &self.capacity)
            .field("pending", &self.pending())
            .finish()
    }
}

/// Queue slots per available core in the default pool.
pub const DEFAULT_QUEUE_PER_CORE: usize = 64;

fn available_cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

impl InferencePool {
    /// Starts `threads` workers (at least 1) behind a queue of `capacity` jobs (at least 1).
    pub fn new(threads: usize, capacity: usize) -> Self {
        let threads = threads.max(1);
        let capacity = capacity.max(1);
        let shared = Arc::new(Shared::default());
        for n in 0..threads {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name(format!("verdict-infer-{n}"))
                .spawn(move || worker(&shared))
                // Failing to start a thread at start-up is an exhausted machine; nothing
                // sensible can continue.
                .unwrap_or_else(|e| panic!("cannot start an inference thread: {e}"));
        }
        Self {
            owner: Arc::new(Owner(shared)),
            threads,
            capacity,
        }
    }

    /// The default number of inference threads: half the available cores, at least one.
    ///
    /// Not one per core: the async workers (one per core) also need the cores for HTTP,
    /// assignment and event encoding, and on a machine whose every core also runs an
    /// inference thread, each prediction pays context switches between them. Measured on
    /// 2 cores with the demo models (docs/BENCHMARKS.md, "HTTP service"): one inference
    /// thread serves ~17 % more predictions per second than two, at lower p99.
    pub fn default_threads() -> usize {
        (available_cores() / 2).max(1)
    }

    /// A pool of `threads` workers (`None`: [`InferencePool::default_threads`]) behind a
    /// queue of [`DEFAULT_QUEUE_PER_CORE`] slots per available core.
    pub fn with_threads(threads: Option<usize>) -> Self {
        let threads = threads.unwrap_or_else(Self::default_threads);
        Self::new(
            threads,
            available_cores().max(threads) * DEFAULT_QUEUE_PER_CORE,
        )
    }

    /// The process-wide pool every in-process model uses unless given another, with the
    /// default size ([`InferencePool::with_threads`]`(None)`).
    pub fn global() -> &'static InferencePool {
        static POOL: OnceLock<InferencePool> = OnceLock::new();
        POOL.get_or_init(|| InferencePool::with_threads(None))
    }

    fn shared(&self) -> &Shared {
        &self.owner.0
    }

    /// Worker threads.
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Queue capacity.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Jobs accepted and not finished yet (queued or running).
    pub fn pending(&self) -> usize {
        self.shared().pending.load(Ordering::SeqCst)
    }

    /// Jobs skipped because their caller went away before a worker took them.
    pub fn skipped(&self) -> usize {
        self.shared().skipped.load(Ordering::SeqCst)
    }

    /// Queues a run of `rows` rows on `session` and returns where its answer will arrive.
    /// Refuses at once with [`PoolError::Full`] when `capacity` jobs already wait. Dropping
    /// the receiver before a worker takes the job makes the worker skip it.
    pub fn submit(
        &self,
        session: Arc<dyn Session>,
        rows: usize,
        data: Vec<f32>,
    ) -> Result<oneshot::Receiver<RunResult>, PoolError> {
        let shared = self.shared();
        let (reply, answer) = oneshot::channel();
        {
            let mut q = shared.lock();
            if q.closed {
                return Err(PoolError::Stopped);
            }
            if q.jobs.len() >= self.capacity {
                return Err(PoolError::Full {
                    threads: self.threads,
                    capacity: self.capacity,
                });
            }
            q.jobs.push_back(Job {
                session,
                rows,
                data,
                reply,
            });
            // Under the lock, so a worker can never finish the job before it is counted.
            shared.pending.fetch_add(1, Ordering::SeqCst);
            // Read under the lock: a worker that finds the queue empty increments `idle`
            // before it releases the lock to wait, so this job cannot be missed.
            if q.idle == 0 {
                return Ok(answer);
            }
        }
        shared.ready.notify_one();
        Ok(answer)
    }

    /// Runs `rows` rows on `session` on a pool thread ([`InferencePool::submit`], then
    /// waits for the answer). Dropping the future before a worker takes the job makes the
    /// worker skip it.
    pub async fn run(&self, session: Arc<dyn Session>, rows: usize, data: Vec<f32>) -> RunResult {
        self.submit(session, rows, data)?
            .await
            .unwrap_or(Err(PoolError::Stopped))
    }
}

fn worker(shared: &Shared) {
    loop {
        let job = {
            let mut q = shared.lock();
            loop {
                if let Some(job) = q.jobs.pop_front() {
                    break job;
                }
                if q.closed {
                    return;
                }
                q.idle += 1;
                q = shared.ready.wait(q).unwrap_or_else(|e| e.into_inner());
                q.idle -= 1;
            }
        };
        if job.reply.is_closed() {
            shared.skipped.fetch_add(1, Ordering::SeqCst);
            shared.pending.fetch_sub(1, Ordering::SeqCst);
            continue;
        }
        let Job {
            session,
            rows,
            data,
            reply,
        } = job;
        let start = Instant::now();
        let result = match catch_unwind(AssertUnwindSafe(|| session.run(rows, data))) {
            Ok(Ok(outputs)) => Ok((outputs, start.elapsed())),
            Ok(Err(e)) => Err(PoolError::Run(e)),
            Err(panic) => Err(PoolError::Panicked(
                panic
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_owned())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "non-string panic".into()),
            )),
        };
        shared.pending.fetch_sub(1, Ordering::SeqCst);
        // The caller may have gone meanwhile; nothing to do then.
        let _ = reply.send(result);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::onnx::engine::OutputData;
    use std::sync::mpsc;

    /// A session that reports its thread, waits for a go signal when gated, and panics on
    /// `rows == 0`.
    #[derive(Debug)]
    struct Probe {
        gate: Option<Mutex<mpsc::Receiver<()>>>,
        threads: Mutex<Vec<String>>,
        runs: AtomicUsize,
    }

    impl Probe {
        fn new(gate: Option<mpsc::Receiver<()>>) -> Arc<Self> {
            Arc::new(Self {
                gate: gate.map(Mutex::new),
                threads: Mutex::new(Vec::new()),
                runs: AtomicUsize::new(0),
            })
        }
    }

    impl Session for Probe {
        fn width(&self) -> usize {
            1
        }
        fn output_names(&self) -> &[String] {
            &[]
        }
        fn run(&self, rows: usize, data: Vec<f32>) -> Result<Vec<Output>, String> {
            self.runs.fetch_add(1, Ordering::SeqCst);
            let name = std::thread::current().name().unwrap_or("").to_owned();
            self.threads.lock().unwrap().push(name);
            if let Some(gate) = &self.gate {
                gate.lock().unwrap().recv().unwrap();
            }
            assert!(rows != 0, "zero rows");
            if data.first() == Some(&-1.0) {
                return Err("bad row".into());
            }
            Ok(vec![Output {
                name: "y".into(),
                shape: vec![rows],
                data: OutputData::Float(data),
            }])
        }
    }

    /// Workers park when the queue runs dry and a submit wakes one only if one is parked:
    /// bursts from many threads, with pauses that let the workers park, must never leave a
    /// job queued with every worker asleep.
    #[test]
    fn no_job_is_stranded_when_workers_park_between_bursts() {
        for threads in [1, 2] {
            let pool = InferencePool::new(threads, 10_000);
            let probe = Probe::new(None);
            let session: Arc<dyn Session> = probe.clone();
            std::thread::scope(|s| {
                for t in 0..4u64 {
                    let (pool, session) = (pool.clone(), session.clone());
                    s.spawn(move || {
                        for round in 0..200u64 {
                            let answers: Vec<_> = (0..1 + (round + t) % 3)
                                .map(|_| pool.submit(session.clone(), 1, vec![0.0]).unwrap())
                                .collect();
                            for a in answers {
                                let deadline = Instant::now() + Duration::from_secs(10);
                                let mut a = a;
                                loop {
                                    match a.try_recv() {
                                        Ok(r) => {
                                            assert!(r.is_ok());
                                            break;
                                        }
                                        Err(oneshot::error::TryRecvError::Empty) => {
                                            assert!(
                                                Instant::now() < deadline,
                                                "a job was stranded"
                                            );
                                            std::thread::yield_now();
                                        }
                                        Err(e) => panic!("{e}"),
                                    }
                                }
                            }
                            if round % 7 == 0 {
                                std::thread::sleep(Duration::from_micros(200));
                            }
                        }
                    });
                }
            });
            assert_eq!(pool.pending(), 0);
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn runs_on_pool_threads_and_measures_model_time() {
        let pool = InferencePool::new(2, 4);
        let probe = Probe::new(None);
        for i in 0..8 {
            let (out, took) = pool.run(probe.clone(), 1, vec![i as f32]).await.unwrap();
            assert_eq!(out[0].data, OutputData::Float(vec![i as f32]));
            assert!(took < Duration::from_secs(1));
        }
        let threads = probe.threads.lock().unwrap().clone();
        assert_eq!(threads.len(), 8);
        assert!(
            threads.iter().all(|t| t.starts_with("verdict-infer-")),
            "{threads:?}"
        );
        assert_eq!(pool.pending(), 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_full_queue_refuses_at_once_and_drains_afterwards() {
        let (go, gate) = mpsc::channel();
        let pool = InferencePool::new(1, 2);
        let probe = Probe::new(Some(gate));
        // One running (held at the gate) and two queued fill the pool.
        let first = pool.submit(probe.clone(), 1, vec![0.0]).unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while probe.runs.load(Ordering::SeqCst) < 1 {
            assert!(Instant::now() < deadline, "the worker never took the job");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let mut held = vec![first];
        for i in 1..3 {
            held.push(pool.submit(probe.clone(), 1, vec![i as f32]).unwrap());
        }
        assert_eq!(pool.pending(), 3);
        let start = Instant::now();
        let refused = pool.run(probe.clone(), 1, vec![9.0]).await.unwrap_err();
        assert!(start.elapsed() < Duration::from_secs(1), "must not wait");
        assert_eq!(
            refused,
            PoolError::Full {
                threads: 1,
                capacity: 2
            }
        );
        assert!(refused.to_string().contains("pool full"), "{refused}");
        // Release the three; all of them finish, in order, and the pool takes work again.
        for _ in 0..3 {
            go.send(()).unwrap();
        }
        for (i, h) in held.into_iter().enumerate() {
            let (out, _) = h.await.unwrap().unwrap();
            assert_eq!(out[0].data, OutputData::Float(vec![i as f32]));
        }
        go.send(()).unwrap();
        assert!(pool.run(probe.clone(), 1, vec![4.0]).await.is_ok());
        assert_eq!(pool.pending(), 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_job_whose_caller_left_is_skipped() {
        let (go, gate) = mpsc::channel();
        let pool = InferencePool::new(1, 4);
        let probe = Probe::new(Some(gate));
        let (p, s) = (pool.clone(), probe.clone());
        let first = tokio::spawn(async move { p.run(s, 1, vec![1.0]).await });
        while probe.runs.load(Ordering::SeqCst) < 1 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        // Queued behind the held job, then abandoned (as a guard timeout would).
        let abandoned = tokio::time::timeout(
            Duration::from_millis(20),
            pool.run(probe.clone(), 1, vec![2.0]),
        )
        .await;
        assert!(abandoned.is_err(), "should have timed out while queued");
        go.send(()).unwrap();
        assert!(first.await.unwrap().is_ok());
        go.send(()).unwrap();
        assert!(pool.run(probe.clone(), 1, vec![3.0]).await.is_ok());
        assert_eq!(
            probe.runs.load(Ordering::SeqCst),
            2,
            "the abandoned job ran"
        );
        assert_eq!(pool.skipped(), 1);
        assert_eq!(pool.pending(), 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn errors_and_panics_are_reported_and_the_worker_survives() {
        let pool = InferencePool::new(1, 1);
        let probe = Probe::new(None);
        assert_eq!(
            pool.run(probe.clone(), 1, vec![-1.0]).await.unwrap_err(),
            PoolError::Run("bad row".into())
        );
        let e = pool.run(probe.clone(), 0, vec![]).await.unwrap_err();
        assert!(
            matches!(&e, PoolError::Panicked(m) if m.contains("zero rows")),
            "{e:?}"
        );
        // The only worker is still there.
        assert!(pool.run(probe.clone(), 1, vec![1.0]).await.is_ok());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn dropping_the_last_handle_stops_the_workers_after_the_queue() {
        let pool = InferencePool::new(2, 4);
        let probe = Probe::new(None);
        let answer = pool.submit(probe.clone(), 1, vec![1.0]).unwrap();
        let shared = Arc::downgrade(&pool.owner.0);
        let clone = pool.clone();
        drop(pool);
        assert!(
            clone.run(probe.clone(), 1, vec![2.0]).await.is_ok(),
            "a clone keeps it"
        );
        drop(clone);
        // The queued job still runs; then every worker exits and lets go of the queue.
        assert!(answer.await.unwrap().is_ok());
        let deadline = Instant::now() + Duration::from_secs(5);
        while shared.upgrade().is_some() {
            assert!(Instant::now() < deadline, "workers did not exit");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
}
