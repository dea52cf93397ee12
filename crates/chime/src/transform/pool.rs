//! The engine: a bounded pool of dedicated threads that run transformations.
//!
//! # Threads
//! A run is synchronous CPU work of up to [`Limits::time`]; on a Tokio worker it would stall
//! every task scheduled there, so runs go to OS threads of their own and the caller awaits a
//! oneshot reply. QuickJS runtimes are not `Send`: each worker creates, keeps and drops its
//! own.
//!
//! # Queue and fairness
//! Work waits in one queue per key; keys with waiting work and a free slot take turns in a
//! round-robin list that the workers serve. A key runs on at most
//! [`PoolOptions::key_concurrency`] workers at once (half of them by default), so a key whose
//! runs all take the full time limit slows only itself: other keys' runs go to the remaining
//! workers, and wait behind at most one run of each other key. The queues are bounded (per
//! key and in all): past the bound a run fails at once with [`Error::Busy`] rather than
//! waiting without limit, and one key's backlog cannot fill the shared bound.
//!
//! # Cache
//! Each worker keeps the sandboxes it compiled, by key, least recently used first out, within
//! [`PoolOptions::cache_entries`] and [`PoolOptions::cache_bytes`] (each sandbox weighs what
//! its runtime holds). A key is compiled once per worker that runs it; the code is compared
//! on every run, so new code under an old key is compiled rather than ignored. A run that hit
//! the time or memory limit drops its sandbox: the next run compiles afresh.

use std::any::Any;
use std::collections::{HashMap, VecDeque};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use tokio::sync::oneshot;

use super::sandbox::{self, Sandbox};
use super::{Error, Input, Limits, Output, TransformKey};

/// Stack of a worker thread: QuickJS stops JavaScript recursion at 1 MiB of stack, and the
/// parser, the JSON writer and Rust's frames need room beyond that.
const WORKER_STACK: usize = 4 << 20;

/// The pool's sizes. [`PoolOptions::new`] gives the defaults for a number of threads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolOptions {
    /// Worker threads.
    pub threads: usize,
    /// Runs of one key at once: `max(1, threads / 2)` by default.
    pub key_concurrency: usize,
    /// Runs waiting, of all keys together; more fail with [`Error::Busy`]. 4096 by default.
    pub queue: usize,
    /// Runs waiting for one key; more fail with [`Error::Busy`]. 256 by default.
    pub key_queue: usize,
    /// Compiled transformations kept per thread. 128 by default.
    pub cache_entries: usize,
    /// Memory their runtimes may hold per thread, in bytes (a fresh one holds about
    /// 170 KiB). 64 MiB by default.
    pub cache_bytes: usize,
}

impl PoolOptions {
    pub fn new(threads: usize) -> Self {
        let threads = threads.max(1);
        PoolOptions {
            threads,
            key_concurrency: (threads / 2).max(1),
            queue: 4096,
            key_queue: 256,
            cache_entries: 128,
            cache_bytes: 64 << 20,
        }
    }
}

/// Runs transformations on a pool of dedicated threads. Cheap to clone; the threads stop
/// when the last clone is dropped (finishing the runs they are in; waiting runs fail with
/// [`Error::Unavailable`]).
#[derive(Clone)]
pub struct Engine {
    handle: Arc<Handle>,
}

/// Closes the queue when the last [`Engine`] goes; the workers hold [`Shared`] only.
struct Handle {
    shared: Arc<Shared>,
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.shared.close();
    }
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("limits", &self.handle.shared.limits)
            .field("options", &self.handle.shared.options)
            .finish()
    }
}

impl Engine {
    /// `threads` workers (at least one) with the default [`PoolOptions`].
    pub fn new(threads: usize, limits: Limits) -> Engine {
        Engine::with_options(limits, PoolOptions::new(threads))
    }

    pub fn with_options(limits: Limits, options: PoolOptions) -> Engine {
        let options = PoolOptions {
            threads: options.threads.max(1),
            key_concurrency: options.key_concurrency.max(1),
            key_queue: options.key_queue.max(1),
            ..options
        };
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue::default()),
            wake: Condvar::new(),
            limits,
            options,
        });
        let mut started = 0;
        for i in 0..shared.options.threads {
            let worker = shared.clone();
            match std::thread::Builder::new()
                .name(format!("chime-js-{i}"))
                .stack_size(WORKER_STACK)
                .spawn(move || work(worker))
            {
                Ok(_) => started += 1,
                Err(e) => tracing::error!("cannot start a transformation thread: {e}"),
            }
        }
        if started == 0 {
            // Nothing would ever take the work: refuse it at once instead.
            shared.close();
        }
        Engine {
            handle: Arc::new(Handle { shared }),
        }
    }

    pub fn limits(&self) -> &Limits {
        &self.handle.shared.limits
    }

    /// Runs the transformation `code`, known as `key`, on `input`. Compiles it first unless
    /// the worker that takes the run has it cached. Dropping the future before a worker takes
    /// the run withdraws it.
    pub async fn run(
        &self,
        key: TransformKey,
        code: Arc<str>,
        input: Input,
    ) -> Result<Output, Error> {
        let shared = &self.handle.shared;
        sandbox::check_size(&code, &shared.limits)?;
        let (reply, result) = oneshot::channel();
        shared.submit(key, Work::Run { code, input, reply })?;
        result.await.map_err(|_| Error::Unavailable)?
    }

    /// [`super::check`] on the pool's threads, queued under `key` like a run (so one owner's
    /// saves wait their turn), and never cached.
    pub async fn check(&self, key: TransformKey, code: Arc<str>) -> Result<(), Error> {
        let shared = &self.handle.shared;
        sandbox::check_size(&code, &shared.limits)?;
        let (reply, result) = oneshot::channel();
        shared.submit(key, Work::Check { code, reply })?;
        result.await.map_err(|_| Error::Unavailable)?
    }
}

enum Work {
    Run {
        code: Arc<str>,
        input: Input,
        reply: oneshot::Sender<Result<Output, Error>>,
    },
    Check {
        code: Arc<str>,
        reply: oneshot::Sender<Result<(), Error>>,
    },
}

impl Work {
    /// The caller stopped waiting: no point running it.
    fn abandoned(&self) -> bool {
        match self {
            Work::Run { reply, .. } => reply.is_closed(),
            Work::Check { reply, .. } => reply.is_closed(),
        }
    }
}

struct Shared {
    queue: Mutex<Queue>,
    /// Signalled when a key becomes ready, and on close.
    wake: Condvar,
    limits: Limits,
    options: PoolOptions,
}

#[derive(Default)]
struct Queue {
    keys: HashMap<TransformKey, KeyState>,
    /// Keys with waiting work and a free slot, in turn order; each at most once.
    ready: VecDeque<TransformKey>,
    /// Work waiting, of all keys.
    waiting: usize,
    closed: bool,
}

/// A key with work waiting or running; removed when it has neither.
#[derive(Default)]
struct KeyState {
    waiting: VecDeque<Work>,
    running: usize,
    /// In `Queue::ready`.
    ready: bool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        // The queue's state is updated in whole steps under the lock, none of which panics
        // midway: a poisoned lock still guards a consistent queue.
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn submit(&self, key: TransformKey, work: Work) -> Result<(), Error> {
        let mut queue = self.lock();
        let Queue {
            keys,
            ready,
            waiting,
            closed,
        } = &mut *queue;
        if *closed {
            return Err(Error::Unavailable);
        }
        if *waiting >= self.options.queue {
            return Err(Error::Busy);
        }
        if keys
            .get(&key)
            .is_some_and(|k| k.waiting.len() >= self.options.key_queue)
        {
            return Err(Error::Busy);
        }
        let state = keys.entry(key.clone()).or_default();
        state.waiting.push_back(work);
        *waiting += 1;
        if !state.ready && state.running < self.options.key_concurrency {
            state.ready = true;
            ready.push_back(key);
            self.wake.notify_one();
        }
        Ok(())
    }

    /// The next work for a worker, waiting for some; `None` once closed.
    fn next(&self) -> Option<(TransformKey, Work)> {
        let mut queue = self.lock();
        loop {
            if queue.closed {
                return None;
            }
            let Queue {
                keys,
                ready,
                waiting,
                ..
            } = &mut *queue;
            if let Some(key) = ready.pop_front() {
                let state = keys.get_mut(&key).expect("a ready key has a state");
                let work = state
                    .waiting
                    .pop_front()
                    .expect("a ready key has work waiting");
                *waiting -= 1;
                state.running += 1;
                state.ready =
                    !state.waiting.is_empty() && state.running < self.options.key_concurrency;
                if state.ready {
                    // Back of the line: every other ready key goes first.
                    ready.push_back(key.clone());
                    self.wake.notify_one();
                }
                return Some((key, work));
            }
            queue = self
                .wake
                .wait(queue)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }

    /// A worker is done with a run of `key`: its slot is free for the key's next run.
    fn finish(&self, key: &TransformKey) {
        let mut queue = self.lock();
        let Queue { keys, ready, .. } = &mut *queue;
        let Some(state) = keys.get_mut(key) else {
            return;
        };
        state.running -= 1;
        if !state.waiting.is_empty() {
            if !state.ready {
                state.ready = true;
                ready.push_back(key.clone());
                self.wake.notify_one();
            }
        } else if state.running == 0 {
            keys.remove(key);
        }
    }

    /// Stops the workers after their current runs; waiting work is dropped, so its callers
    /// get [`Error::Unavailable`].
    fn close(&self) {
        let dropped = {
            let mut queue = self.lock();
            queue.closed = true;
            queue.ready.clear();
            queue.waiting = 0;
            std::mem::take(&mut queue.keys)
        };
        self.wake.notify_all();
        drop(dropped);
    }
}

/// A worker thread: takes work until the engine closes.
fn work(shared: Arc<Shared>) {
    let mut cache = Cache::new(&shared.options);
    while let Some((key, work)) = shared.next() {
        if work.abandoned() {
            shared.finish(&key);
            continue;
        }
        match work {
            Work::Run { code, input, reply } => {
                let started = Instant::now();
                let result = catch_unwind(AssertUnwindSafe(|| {
                    cache.run(&key, &code, input, &shared.limits)
                }))
                .unwrap_or_else(|panic| {
                    cache.abandon(&key);
                    Err(Error::Internal(panic_message(&*panic)))
                })
                .map(|output| Output {
                    took: started.elapsed(),
                    ..output
                });
                // The slot is free before the caller hears back.
                shared.finish(&key);
                let _ = reply.send(result);
            }
            Work::Check { code, reply } => {
                let result = catch_unwind(AssertUnwindSafe(|| super::check(&code, &shared.limits)))
                    .unwrap_or_else(|panic| Err(Error::Internal(panic_message(&*panic))));
                shared.finish(&key);
                let _ = reply.send(result);
            }
        }
    }
}

fn panic_message(panic: &(dyn Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic".to_owned())
}

/// A worker's compiled transformations.
struct Cache {
    entries: HashMap<TransformKey, Entry>,
    /// Counts runs: an entry's `last_run` orders evictions.
    clock: u64,
    max_entries: usize,
    max_bytes: usize,
}

struct Entry {
    code: Arc<str>,
    sandbox: Sandbox,
    last_run: u64,
}

impl Cache {
    fn new(options: &PoolOptions) -> Self {
        Cache {
            entries: HashMap::new(),
            clock: 0,
            max_entries: options.cache_entries.max(1),
            max_bytes: options.cache_bytes,
        }
    }

    fn run(
        &mut self,
        key: &TransformKey,
        code: &Arc<str>,
        input: Input,
        limits: &Limits,
    ) -> Result<Output, Error> {
        self.clock += 1;
        let cached = self
            .entries
            .get(key)
            .is_some_and(|e| Arc::ptr_eq(&e.code, code) || e.code == *code);
        if !cached {
            // Nothing cached, or other code under the same key: (re)compile.
            self.entries.remove(key);
            let sandbox = Sandbox::compile(code, limits)?;
            self.entries.insert(
                key.clone(),
                Entry {
                    code: code.clone(),
                    sandbox,
                    last_run: 0,
                },
            );
        }
        let entry = self.entries.get_mut(key).expect("cached above");
        entry.last_run = self.clock;
        let result = entry.sandbox.run(input);
        if matches!(
            result,
            Err(Error::TimeLimit { .. } | Error::MemoryLimit { .. })
        ) {
            // Its globals may be half-updated and its memory full: start afresh next time.
            self.entries.remove(key);
        } else {
            self.evict(key);
        }
        result
    }

    /// Drops the least recently run entries until the cache is within its bounds, `keep`
    /// (the one just run) last.
    fn evict(&mut self, keep: &TransformKey) {
        loop {
            let bytes: usize = self.entries.values().map(|e| e.sandbox.memory()).sum();
            if self.entries.len() <= self.max_entries && bytes <= self.max_bytes {
                return;
            }
            let victim = self
                .entries
                .iter()
                .filter(|(k, _)| *k != keep)
                .min_by_key(|(_, e)| e.last_run)
                .map(|(k, _)| k.clone());
            match victim {
                Some(k) => self.entries.remove(&k),
                // `keep` alone is over the budget: it is not kept either.
                None => self.entries.remove(keep),
            };
        }
    }

    /// Forgets `key`'s entry after a panic during its run, without dropping it: QuickJS
    /// aborts the process when a runtime is freed with objects still referenced, which an
    /// interrupted Rust caller may have left. Leaking it is the lesser harm.
    fn abandon(&mut self, key: &TransformKey) {
        if let Some(entry) = self.entries.remove(key) {
            std::mem::forget(entry);
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input() -> Input {
        Input {
            event: "e".to_owned(),
            data: serde_json::value::RawValue::from_string("{}".to_owned()).unwrap(),
            headers: Default::default(),
            url: "https://example.com".to_owned(),
        }
    }

    #[test]
    fn cache_keeps_at_most_its_entries_least_recently_run_out() {
        let mut options = PoolOptions::new(1);
        options.cache_entries = 2;
        let mut cache = Cache::new(&options);
        let limits = Limits::default();
        let code: Arc<str> = "var n = 0; function handler(w) { n++; w.data = n; return w; }".into();
        let run = |cache: &mut Cache, key: &TransformKey| {
            let out = cache.run(key, &code, input(), &limits).unwrap();
            out.body.as_str().to_owned()
        };
        let (a, b, c) = (
            TransformKey::new("a", 1),
            TransformKey::new("b", 1),
            TransformKey::new("c", 1),
        );
        assert_eq!(run(&mut cache, &a), "1");
        assert_eq!(run(&mut cache, &b), "1");
        assert_eq!(run(&mut cache, &a), "2");
        // c pushes out b, the least recently run.
        assert_eq!(run(&mut cache, &c), "1");
        assert_eq!(cache.len(), 2);
        assert_eq!(run(&mut cache, &a), "3");
        assert_eq!(run(&mut cache, &b), "1", "b was compiled afresh");
    }

    #[test]
    fn cache_compiles_new_code_under_an_old_key() {
        let mut cache = Cache::new(&PoolOptions::new(1));
        let limits = Limits::default();
        let key = TransformKey::new("a", 1);
        let one: Arc<str> = "function handler(w) { w.data = 1; return w; }".into();
        let two: Arc<str> = "function handler(w) { w.data = 2; return w; }".into();
        let out = cache.run(&key, &one, input(), &limits).unwrap();
        assert_eq!(out.body.as_str(), "1");
        let out = cache.run(&key, &two, input(), &limits).unwrap();
        assert_eq!(out.body.as_str(), "2");
    }

    #[test]
    fn cache_bytes_bound_evicts() {
        let mut options = PoolOptions::new(1);
        // Room for one fresh runtime (about 170 KiB) but not two.
        options.cache_bytes = 250 << 10;
        let mut cache = Cache::new(&options);
        let limits = Limits::default();
        let code: Arc<str> = "function handler(w) { return w; }".into();
        cache
            .run(&TransformKey::new("a", 1), &code, input(), &limits)
            .unwrap();
        cache
            .run(&TransformKey::new("b", 1), &code, input(), &limits)
            .unwrap();
        assert_eq!(cache.len(), 1);
        assert!(cache.entries.contains_key(&TransformKey::new("b", 1)));
    }
}
