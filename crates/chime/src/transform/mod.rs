//! Webhook transformations: a small JavaScript function a tenant writes to reshape a webhook
//! before it is delivered, run in a sandboxed QuickJS engine.
//!
//! ```js
//! function handler(webhook) {
//!   // webhook: { event, data, headers, url }; change what you like and return it
//!   webhook.data = { text: `Order ${webhook.data.order_id}: ${webhook.data.amount} EUR` };
//!   return webhook;
//! }
//! ```
//!
//! # What the handler may return
//! An object (or a promise of one: `async function handler` works, though nothing but other
//! promises can be awaited). Each field it leaves out (or sets to `undefined`) keeps the
//! webhook's value, so `return { data: … }` changes only the data.
//! - `data`: any JSON value, the new event data ([`Body::Json`]).
//! - `body`: a string, sent as it is ([`Body::Text`]), for receivers that do not take JSON;
//!   it wins over `data`.
//! - `event`, `url`: strings.
//! - `headers`: an object of header names to string values; it replaces the webhook's headers
//!   (so deleting one from `webhook.headers` removes it).
//! - `cancel: true` skips the delivery; `cancel_reason` (a string) says why, and is what
//!   [`Output::cancel`] holds. The other fields are not read then: the output carries the
//!   webhook as it came in.
//!
//! `console.log` (and `.info`, `.warn`, `.error`, `.debug`) lines are captured into
//! [`Output::logs`]: at most [`MAX_LOG_LINES`] lines of at most [`MAX_LOG_LINE_BYTES`] each.
//!
//! # The sandbox
//! The code sees the ECMAScript built-ins (JSON, Math, Date, RegExp, Map and Set, typed
//! arrays, Promise, Proxy) and `console`, nothing else: no timers (`setTimeout`), no
//! `require`, no modules (`import` is a syntax error, `import()` rejects), no file, network or
//! process access, no `performance` clock, no `WeakRef`/`FinalizationRegistry` (whose
//! callbacks would run at the garbage collector's whim). Each run is bounded by [`Limits`]:
//! code size (before compiling), memory (the allocator refuses past the limit), time
//! (QuickJS's interrupt handler checks a deadline, so `while (true) {}` ends) and the size of
//! the result.
//!
//! # Running
//! [`check`] compiles a transformation when it is saved. [`Engine`] runs them on a pool of
//! dedicated threads, never on the async runtime's, compiling each [`TransformKey`] once per
//! thread and keeping it: see `pool.rs` for the queue, its fairness and the cache, and
//! `sandbox.rs` for the QuickJS side.

mod json;
mod pool;
mod sandbox;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

pub use pool::{Engine, PoolOptions};

/// Console lines kept per run; later lines are counted, and the count is the last line.
pub const MAX_LOG_LINES: usize = 100;
/// Longest console line kept, in bytes; longer ones are cut (at a character boundary) and end
/// with `…`.
pub const MAX_LOG_LINE_BYTES: usize = 2048;
/// What [`Output::cancel`] holds when the handler cancels without a `cancel_reason`.
pub const DEFAULT_CANCEL_REASON: &str = "cancelled by the transformation";

/// The bounds of one transformation. The defaults suit a function that reshapes a webhook of
/// some kilobytes; the memory limit must leave room for the event data parsed into
/// JavaScript objects (a few times its JSON size).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// Memory the code may hold, beyond what a fresh runtime holds (about 170 KiB): its compiled
    /// functions, its globals, and everything a run allocates, the parsed webhook included.
    /// 16 MiB by default.
    pub memory_bytes: usize,
    /// Wall-clock time of one run (and, separately, of compiling and running the top-level
    /// code). 50 ms by default.
    pub time: Duration,
    /// Longest source accepted, in bytes. 64 KiB by default.
    pub code_bytes: usize,
    /// Largest result, in bytes: the body the code set (its `data` as JSON text, or its
    /// `body`) plus the event name, URL and headers. Data left as it came in is not counted:
    /// the code did not make it, and it was accepted when published. 1 MiB by default.
    pub output_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            memory_bytes: 16 << 20,
            time: Duration::from_millis(50),
            code_bytes: 64 << 10,
            output_bytes: 1 << 20,
        }
    }
}

/// Which transformation a run is for: compiled code is cached under it, and runs of one key
/// are limited so that it cannot take every worker (see [`PoolOptions::key_concurrency`]).
/// Give each saved version of an endpoint's code its own key: a key never shares a JavaScript
/// runtime with another, and its globals live as long as it stays cached.
///
/// The cache compares the code too, so a key reused for different code is compiled afresh
/// rather than running stale code; but it is then compiled on every change back and forth.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct TransformKey {
    /// Whose code: the endpoint's id.
    pub owner: String,
    /// Which version of the owner's code; bump it whenever the code changes.
    pub version: u64,
}

impl TransformKey {
    pub fn new(owner: impl Into<String>, version: u64) -> Self {
        TransformKey {
            owner: owner.into(),
            version,
        }
    }
}

impl fmt::Display for TransformKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.owner, self.version)
    }
}

/// The webhook handed to the handler as `{ event, data, headers, url }`.
#[derive(Debug, Clone)]
pub struct Input {
    pub event: String,
    /// The event data as JSON text: it is parsed by QuickJS's `JSON.parse` inside the sandbox
    /// (where its memory counts against the limit), never into a `serde_json::Value` first.
    /// It is also what [`Body::Json`] holds when the handler leaves `data` alone.
    pub data: Box<RawValue>,
    pub headers: BTreeMap<String, String>,
    pub url: String,
}

/// What a transformation made of the webhook.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Output {
    pub event: String,
    pub body: Body,
    /// The headers to send: the webhook's, unless the handler changed them. Names and values
    /// are valid HTTP header names and values; names keep the handler's spelling.
    pub headers: BTreeMap<String, String>,
    /// Where to send it; a string the handler set, not yet checked as a URL or against the
    /// delivery policy.
    pub url: String,
    /// Set when the handler cancelled the delivery: why (its `cancel_reason`, or
    /// [`DEFAULT_CANCEL_REASON`]). The other fields are then the webhook as it came in.
    pub cancel: Option<String>,
    /// The handler's console output, at most [`MAX_LOG_LINES`] lines (plus one saying how
    /// many more were dropped).
    pub logs: Vec<String>,
    /// Time on the worker thread: the run, plus compiling when the key was not cached. Not
    /// the time waiting in the queue.
    pub took: Duration,
}

/// The body to deliver.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Body {
    /// The webhook's `data` as the handler left it, as JSON text: the body a transformed
    /// delivery sends, as it is (`dispatch::transformed` says why there is no envelope).
    Json(Box<RawValue>),
    /// A string the handler set as `body`: sent as it is, not wrapped.
    Text(String),
}

impl Body {
    /// The body's bytes for a length check or a log line: JSON text or the text.
    pub fn as_str(&self) -> &str {
        match self {
            Body::Json(raw) => raw.get(),
            Body::Text(text) => text,
        }
    }
}

/// Why a transformation did not produce an [`Output`]. The messages are sentences for people:
/// they go into delivery attempt details and API error responses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The code does not parse (or its top-level code threw a `SyntaxError`).
    #[error("the transformation does not compile{}: {message}", at(*.line, *.column))]
    Compile {
        line: Option<u32>,
        column: Option<u32>,
        message: String,
    },
    /// The code threw an exception: its name and message, and where it was thrown when that
    /// was in the transformation's code.
    #[error("the transformation threw an exception{}: {message}", at(*.line, *.column))]
    Runtime {
        line: Option<u32>,
        column: Option<u32>,
        message: String,
    },
    #[error("the transformation ran longer than its time limit of {} ms", limit.as_millis())]
    TimeLimit { limit: Duration },
    #[error("the transformation used more memory than its limit of {}", Bytes(*.limit_bytes))]
    MemoryLimit { limit_bytes: usize },
    #[error("the transformation's result is larger than the limit of {}", Bytes(*.limit_bytes))]
    OutputTooLarge { limit_bytes: usize },
    #[error(
        "the transformation's code is {}, more than the limit of {}",
        Bytes(*.size),
        Bytes(*.limit)
    )]
    CodeTooLarge { size: usize, limit: usize },
    /// The code ran but does not fit the contract: no `handler` function, or a result that is
    /// not an object, or a field of the wrong type. The message says which.
    #[error("{0}")]
    BadResult(String),
    /// Too many runs are waiting (for the key, or in all); try again later.
    #[error("too many transformations are waiting to run; try again later")]
    Busy,
    /// The engine has shut down.
    #[error("the transformation engine is shut down")]
    Unavailable,
    /// A bug in the engine (a panic on its thread); the run's state was discarded.
    #[error("the transformation engine failed: {0}")]
    Internal(String),
}

impl Error {
    /// Whether the error says something about the transformation's code or result, as opposed
    /// to the engine being busy, shut down or broken (worth retrying later).
    pub fn is_transformation_fault(&self) -> bool {
        !matches!(self, Error::Busy | Error::Unavailable | Error::Internal(_))
    }
}

/// ` at line L, column C` (or less, or nothing), for error messages.
fn at(line: Option<u32>, column: Option<u32>) -> String {
    match (line, column) {
        (Some(l), Some(c)) => format!(" at line {l}, column {c}"),
        (Some(l), None) => format!(" at line {l}"),
        _ => String::new(),
    }
}

/// A byte count for people: `16 MiB`, `64 KiB`, `1500 bytes`.
struct Bytes(usize);

impl fmt::Display for Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0;
        if n >= 1 << 20 && n.is_multiple_of(1 << 20) {
            write!(f, "{} MiB", n >> 20)
        } else if n >= 1 << 10 && n.is_multiple_of(1 << 10) {
            write!(f, "{} KiB", n >> 10)
        } else {
            write!(f, "{n} bytes")
        }
    }
}

/// Compiles `code` when it is saved, with its top-level code run (bounded by `limits` like a
/// run), and checks that it defines a function named `handler`. Nothing is kept.
///
/// This blocks the calling thread for up to `limits.time` plus about a millisecond of setting
/// up: from async code use [`Engine::check`], which runs it on the engine's threads.
pub fn check(code: &str, limits: &Limits) -> Result<(), Error> {
    sandbox::check_size(code, limits)?;
    sandbox::Sandbox::compile(code, limits).map(drop)
}
