//! One compiled transformation: its own QuickJS runtime and context, the user's `handler`,
//! and the meters that bound it.
//!
//! # One runtime per transformation
//! Every compiled transformation gets a QuickJS runtime of its own rather than a context in a
//! runtime shared by the worker thread's cache. A runtime costs about 30 KiB beside the
//! context's 70 KiB by QuickJS's count (170 KiB with its allocation arenas, as our allocator
//! counts; 0.2 ms to create both, in a release build), and buys:
//! - an exact memory limit: the runtime's allocator counts every byte it hands out, so the
//!   limit is one number (the fresh context's usage plus [`Limits::memory_bytes`]) set once,
//!   instead of "current usage plus the allowance", re-set before each run, with one tenant's
//!   garbage counted against the next tenant's run;
//! - isolation beyond the globals: atoms, shapes, the job queue and the garbage collector are
//!   per runtime too, so one tenant's run never collects or frees another's objects;
//! - a clean way out: after an interrupted or out-of-memory run the whole runtime is dropped
//!   (by the cache) and the code compiled again for the next run, so no half-updated global
//!   or leftover allocation outlives the failure.
//!
//! # Memory
//! [`MeteredAllocator`] wraps rquickjs's allocator over Rust's global allocator and refuses
//! any allocation past the limit, noting that it did; QuickJS turns the refusal into an
//! "out of memory" exception, and the note (not the exception's text, which code can fake or
//! QuickJS may fail to allocate) makes the run's error [`Error::MemoryLimit`].
//!
//! # Time
//! QuickJS polls the runtime's interrupt handler every few thousand bytecode operations (and
//! in regular-expression matching); ours returns true once the run's deadline has passed, and
//! QuickJS then throws an uncatchable exception that unwinds the code. The handler notes that
//! it fired, which makes the error [`Error::TimeLimit`].

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::ptr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use rquickjs::allocator::{Allocator, RustAllocator};
use rquickjs::context::{EvalOptions, intrinsic};
use rquickjs::function::Rest;
use rquickjs::{Coerced, Context, Ctx, Function, Object, Persistent, Runtime, Type, Value};
use serde_json::value::RawValue;

use super::json::{self, JsonWriter};
use super::{
    Body, DEFAULT_CANCEL_REASON, Error, Input, Limits, MAX_LOG_LINE_BYTES, MAX_LOG_LINES, Output,
};

/// The name the user's code has in error positions and stack traces: positions are reported
/// only for frames in this file.
const FILE_NAME: &str = "handler.js";

/// Longest exception message kept in an [`Error`], in bytes: it is shown in API responses.
const MAX_MESSAGE_BYTES: usize = 1024;

/// The built-ins a transformation sees, beside the base objects (Object, Function, Array,
/// the errors, Number, String, Boolean, Symbol, BigInt, Math, Reflect, Iterator, `eval`,
/// URI functions) that rquickjs always adds. `Eval` is needed to compile anything at all.
/// Left out: `Performance` (a high-resolution clock), `WeakRef` (with
/// `FinalizationRegistry`, callbacks at the collector's whim), `DOMException`.
type Intrinsics = (
    intrinsic::Date,
    intrinsic::Eval,
    intrinsic::RegExpCompiler,
    intrinsic::RegExp,
    intrinsic::Json,
    intrinsic::Proxy,
    intrinsic::MapSet,
    intrinsic::TypedArrays,
    intrinsic::Promise,
);

/// Refuses code over the size limit before anything is compiled.
pub(super) fn check_size(code: &str, limits: &Limits) -> Result<(), Error> {
    if code.len() > limits.code_bytes {
        return Err(Error::CodeTooLarge {
            size: code.len(),
            limit: limits.code_bytes,
        });
    }
    Ok(())
}

/// What the runtime's allocator and interrupt handler share with the code driving it. One
/// per runtime, only ever touched from the thread that owns the runtime.
#[derive(Debug)]
struct Meter {
    /// When the current phase (compiling, or one run) must end; `None` between phases.
    deadline: Cell<Option<Instant>>,
    /// The interrupt handler stopped the code in the current phase.
    timed_out: Cell<bool>,
    /// Bytes the runtime holds now.
    used: Cell<usize>,
    /// Bytes it may hold.
    limit: Cell<usize>,
    /// The allocator refused an allocation in the current phase.
    refused: Cell<bool>,
}

impl Meter {
    fn new() -> Self {
        Meter {
            deadline: Cell::new(None),
            timed_out: Cell::new(false),
            used: Cell::new(0),
            limit: Cell::new(usize::MAX),
            refused: Cell::new(false),
        }
    }

    fn start(&self, time: Duration) {
        self.timed_out.set(false);
        self.refused.set(false);
        self.deadline.set(Some(Instant::now() + time));
    }

    fn stop(&self) {
        self.deadline.set(None);
    }

    /// The interrupt handler: true (stop the code) once the deadline has passed. It keeps
    /// returning true until the phase ends, so code that catches something cannot go on.
    fn interrupt(&self) -> bool {
        match self.deadline.get() {
            Some(deadline) if Instant::now() >= deadline => {
                self.timed_out.set(true);
                true
            }
            _ => false,
        }
    }

    fn admit(&self, more: usize) -> bool {
        if self.used.get().saturating_add(more) > self.limit.get() {
            self.refused.set(true);
            return false;
        }
        true
    }

    fn add(&self, n: usize) {
        self.used.set(self.used.get() + n);
    }

    fn sub(&self, n: usize) {
        self.used.set(self.used.get().saturating_sub(n));
    }
}

/// Per-allocation bookkeeping not in the usable size: rquickjs's size header (and about what
/// any malloc keeps).
const ALLOCATION_OVERHEAD: usize = 16;

/// Rust's global allocator (through rquickjs's [`RustAllocator`], which keeps each block's
/// size in a header) with the runtime's byte count and limit.
struct MeteredAllocator(Rc<Meter>);

// SAFETY: every block comes from `RustAllocator` and goes back to it unchanged; this only
// counts, and refuses (returns null, which QuickJS handles as out of memory) before
// allocating.
unsafe impl Allocator for MeteredAllocator {
    fn alloc(&mut self, size: usize) -> *mut u8 {
        if !self.0.admit(size.saturating_add(ALLOCATION_OVERHEAD)) {
            return ptr::null_mut();
        }
        let block = RustAllocator.alloc(size);
        if !block.is_null() {
            // SAFETY: `block` was just allocated by `RustAllocator`.
            self.0
                .add(unsafe { RustAllocator::usable_size(block) } + ALLOCATION_OVERHEAD);
        }
        block
    }

    fn calloc(&mut self, count: usize, size: usize) -> *mut u8 {
        // `RustAllocator::calloc` panics on overflow, and a panic must not unwind into C.
        let Some(total) = count.checked_mul(size) else {
            return ptr::null_mut();
        };
        if total == 0 || !self.0.admit(total.saturating_add(ALLOCATION_OVERHEAD)) {
            return ptr::null_mut();
        }
        let block = RustAllocator.calloc(count, size);
        if !block.is_null() {
            // SAFETY: as in `alloc`.
            self.0
                .add(unsafe { RustAllocator::usable_size(block) } + ALLOCATION_OVERHEAD);
        }
        block
    }

    unsafe fn dealloc(&mut self, block: *mut u8) {
        // SAFETY: the caller passes a block of this allocator, i.e. of `RustAllocator`.
        unsafe {
            self.0
                .sub(RustAllocator::usable_size(block) + ALLOCATION_OVERHEAD);
            RustAllocator.dealloc(block)
        }
    }

    unsafe fn realloc(&mut self, block: *mut u8, new_size: usize) -> *mut u8 {
        if block.is_null() {
            return self.alloc(new_size);
        }
        // SAFETY: the caller passes a block of this allocator.
        let old = unsafe { RustAllocator::usable_size(block) };
        if new_size > old && !self.0.admit(new_size - old) {
            // The old block stays valid, as realloc's contract says.
            return ptr::null_mut();
        }
        // SAFETY: as above; on success the old block is gone and the new one is counted.
        unsafe {
            let moved = RustAllocator.realloc(block, new_size);
            if !moved.is_null() {
                self.0.sub(old);
                self.0.add(RustAllocator::usable_size(moved));
            }
            moved
        }
    }

    unsafe fn usable_size(block: *mut u8) -> usize {
        // SAFETY: the caller passes a block of this allocator.
        unsafe { RustAllocator::usable_size(block) }
    }
}

/// The console lines of the current run.
#[derive(Debug, Default)]
struct Logs {
    lines: Vec<String>,
    dropped: usize,
}

impl Logs {
    fn is_full(&self) -> bool {
        self.lines.len() >= MAX_LOG_LINES
    }

    /// The run's lines, and a last one saying how many were dropped; empties the buffer.
    fn take(&mut self) -> Vec<String> {
        let mut lines = std::mem::take(&mut self.lines);
        if self.dropped > 0 {
            lines.push(format!(
                "… {} more console lines were dropped (at most {MAX_LOG_LINES} are kept)",
                self.dropped
            ));
            self.dropped = 0;
        }
        lines
    }
}

/// Which phase an exception came from: a `SyntaxError` while compiling is a compile error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Compile,
    Run,
}

/// A compiled transformation, ready to run again and again on the thread that compiled it.
/// Its globals persist from one run to the next.
pub(super) struct Sandbox {
    // Fields drop in order: the handler (a reference into the runtime) and the context go
    // before the runtime, whose teardown aborts the process if any object is still alive.
    handler: Persistent<Function<'static>>,
    context: Context,
    runtime: Runtime,
    meter: Rc<Meter>,
    logs: Rc<RefCell<Logs>>,
    limits: Limits,
}

impl Sandbox {
    /// Creates the runtime, compiles `code` and runs its top-level code (within the time and
    /// memory limits), and finds its `handler` function. Does not check the code's size.
    pub(super) fn compile(code: &str, limits: &Limits) -> Result<Sandbox, Error> {
        let meter = Rc::new(Meter::new());
        let runtime =
            Runtime::new_with_alloc(MeteredAllocator(meter.clone())).map_err(engine_error)?;
        let interrupt = meter.clone();
        runtime.set_interrupt_handler(Some(Box::new(move || interrupt.interrupt())));
        let context = Context::custom::<Intrinsics>(&runtime).map_err(engine_error)?;
        let logs = Rc::new(RefCell::new(Logs::default()));
        context
            .with(|ctx| install_console(&ctx, &logs, &meter))
            .map_err(engine_error)?;
        // The allowance starts here: what the code may add to a fresh context.
        meter
            .limit
            .set(meter.used.get().saturating_add(limits.memory_bytes));

        meter.start(limits.time);
        let handler = context.with(|ctx| {
            let fail = |e| failure(&ctx, &meter, limits, e, Phase::Compile);
            let mut options = EvalOptions::default();
            // A plain script, as in a browser: sloppy unless it says "use strict".
            options.strict = false;
            options.filename = Some(FILE_NAME.to_owned());
            ctx.eval_with_options::<Value, _>(code, options)
                .map_err(fail)?;
            drain_jobs(&ctx, &meter);
            if meter.timed_out.get() {
                return Err(Error::TimeLimit { limit: limits.time });
            }
            // `function handler` is a property of the global object, `const handler = …` is
            // not, but both are visible to a later script.
            let found: Value = ctx
                .eval("typeof handler === 'undefined' ? undefined : handler")
                .map_err(fail)?;
            match found.as_function() {
                Some(f) => Ok(Persistent::save(&ctx, f.clone())),
                None if found.is_undefined() => Err(Error::BadResult(
                    "the transformation defines no function named handler: \
                     write `function handler(webhook) { … return webhook; }`"
                        .to_owned(),
                )),
                None => Err(Error::BadResult(
                    "the transformation's handler is not a function".to_owned(),
                )),
            }
        });
        meter.stop();
        logs.borrow_mut().take();
        Ok(Sandbox {
            handler: handler?,
            context,
            runtime,
            meter,
            logs,
            limits: *limits,
        })
    }

    /// Bytes the runtime holds: the cache weighs entries by it.
    pub(super) fn memory(&self) -> usize {
        self.meter.used.get()
    }

    /// Runs the handler on `input`. After [`Error::TimeLimit`] or [`Error::MemoryLimit`] the
    /// sandbox should be dropped (its globals may be half-updated, its memory full); after
    /// other errors it is as good as before.
    pub(super) fn run(&self, input: Input) -> Result<Output, Error> {
        self.meter.start(self.limits.time);
        let result = self.context.with(|ctx| self.call(&ctx, input));
        self.meter.stop();
        let logs = self.logs.borrow_mut().take();
        // Reference counting frees most garbage at once; cycles wait for the collector,
        // which QuickJS runs when usage has grown by half since the last collection. Collect
        // now when more than half the allowance is in use, lest the next run hit the limit
        // on garbage.
        let half_full = self
            .meter
            .limit
            .get()
            .saturating_sub(self.limits.memory_bytes / 2);
        let discarded = matches!(
            result,
            Err(Error::TimeLimit { .. } | Error::MemoryLimit { .. })
        );
        if self.meter.used.get() > half_full && !discarded {
            self.runtime.run_gc();
        }
        let (event, body, headers, url, cancel) = result?;
        Ok(Output {
            event,
            body,
            headers,
            url,
            cancel,
            logs,
            took: Duration::ZERO,
        })
    }

    fn call<'js>(&self, ctx: &Ctx<'js>, input: Input) -> Result<Parts, Error> {
        let fail = |e| failure(ctx, &self.meter, &self.limits, e, Phase::Run);
        let handler = self.handler.clone().restore(ctx).map_err(fail)?;
        let webhook = Object::new(ctx.clone()).map_err(fail)?;
        webhook.set("event", input.event.as_str()).map_err(fail)?;
        // QuickJS's own JSON.parse: the data is never a serde_json::Value, and its memory
        // counts against the limit (measured against building the objects from Rust:
        // the same speed, with a Rust-side parse first).
        let data = ctx.json_parse(input.data.get()).map_err(fail)?;
        webhook.set("data", data).map_err(fail)?;
        let headers = Object::new(ctx.clone()).map_err(fail)?;
        for (name, value) in &input.headers {
            headers.set(name.as_str(), value.as_str()).map_err(fail)?;
        }
        webhook.set("headers", headers).map_err(fail)?;
        webhook.set("url", input.url.as_str()).map_err(fail)?;

        let mut result: Value = handler.call((webhook,)).map_err(fail)?;
        drain_jobs(ctx, &self.meter);
        if self.meter.timed_out.get() {
            return Err(Error::TimeLimit {
                limit: self.limits.time,
            });
        }
        if let Some(promise) = result.as_promise() {
            result = match promise.result::<Value>() {
                Some(settled) => settled.map_err(fail)?,
                None => {
                    return Err(Error::BadResult(
                        "the handler's promise never settled: there are no timers or I/O to \
                         wait for, so it can only await other promises"
                            .to_owned(),
                    ));
                }
            };
        }
        self.read_result(ctx, result, input).map_err(|e| match e {
            Failure::Js(e) => fail(e),
            Failure::Bad(e) => e,
        })
    }

    /// Turns the handler's result into the output's parts, checking each field's type.
    fn read_result<'js>(
        &self,
        ctx: &Ctx<'js>,
        result: Value<'js>,
        input: Input,
    ) -> Result<Parts, Failure> {
        let Some(object) = result.as_object().filter(|_| {
            !matches!(
                result.type_of(),
                Type::Array | Type::Function | Type::Constructor
            )
        }) else {
            return Err(bad(if result.is_undefined() {
                "the handler returned nothing: it must return the webhook (or an object with \
                 the fields to change)"
                    .to_owned()
            } else {
                format!(
                    "the handler returned {}, not an object: it must return the webhook",
                    kind(&result)
                )
            }));
        };

        let cancel: Value = object.get("cancel")?;
        match cancel.type_of() {
            Type::Undefined | Type::Null => {}
            Type::Bool if !cancel.as_bool().unwrap_or(false) => {}
            Type::Bool => {
                let reason: Value = object.get("cancel_reason")?;
                let reason = match reason.type_of() {
                    Type::Undefined | Type::Null => DEFAULT_CANCEL_REASON.to_owned(),
                    _ => truncate(field_string(&reason, "cancel_reason")?, MAX_MESSAGE_BYTES),
                };
                return Ok((
                    input.event,
                    Body::Json(input.data),
                    input.headers,
                    input.url,
                    Some(reason),
                ));
            }
            _ => {
                return Err(bad(format!(
                    "cancel must be true or false, not {}",
                    kind(&cancel)
                )));
            }
        }

        let limit = self.limits.output_bytes;
        let too_large = || Failure::Bad(Error::OutputTooLarge { limit_bytes: limit });
        let event = match object.get::<_, Value>("event")? {
            v if v.is_undefined() => input.event,
            v => field_string(&v, "event")?,
        };
        let url = match object.get::<_, Value>("url")? {
            v if v.is_undefined() => input.url,
            v => field_string(&v, "url")?,
        };
        let headers = match object.get::<_, Value>("headers")? {
            v if v.is_undefined() => input.headers,
            v => read_headers(&v)?,
        };
        let mut size = event.len() + url.len();
        size += headers
            .iter()
            .map(|(k, v)| k.len() + v.len())
            .sum::<usize>();
        if size > limit {
            return Err(too_large());
        }

        let body_value: Value = object.get("body")?;
        let body = match body_value.type_of() {
            Type::Undefined | Type::Null => {
                let data: Value = object.get("data")?;
                if data.is_undefined() {
                    Body::Json(input.data)
                } else {
                    let expired = || self.meter.interrupt();
                    let writer = JsonWriter::new(ctx, limit - size, &expired)?;
                    let text = match writer.write(data) {
                        Ok(Some(text)) => text,
                        Ok(None) => {
                            return Err(bad(
                                "data cannot be written as JSON (it is a function or a symbol)"
                                    .to_owned(),
                            ));
                        }
                        Err(json::Failure::TooLarge) => return Err(too_large()),
                        Err(json::Failure::Expired) => {
                            return Err(Failure::Bad(Error::TimeLimit {
                                limit: self.limits.time,
                            }));
                        }
                        Err(json::Failure::Bad(message)) => return Err(bad(message)),
                        Err(json::Failure::Js(e)) => return Err(Failure::Js(e)),
                    };
                    Body::Json(RawValue::from_string(text).map_err(|e| {
                        Failure::Bad(Error::Internal(format!("data written as bad JSON: {e}")))
                    })?)
                }
            }
            Type::String => {
                let text = field_string(&body_value, "body")?;
                if size + text.len() > limit {
                    return Err(too_large());
                }
                Body::Text(text)
            }
            _ => {
                return Err(bad(format!(
                    "body must be a string (set data instead to send JSON), not {}",
                    kind(&body_value)
                )));
            }
        };
        Ok((event, body, headers, url, None))
    }
}

/// Event, body, headers, URL, cancel reason.
type Parts = (
    String,
    Body,
    BTreeMap<String, String>,
    String,
    Option<String>,
);

/// Why reading the result failed: an exception (thrown by a getter or `toJSON`, or the
/// limits) or a result of the wrong shape.
enum Failure {
    Js(rquickjs::Error),
    Bad(Error),
}

impl From<rquickjs::Error> for Failure {
    fn from(e: rquickjs::Error) -> Self {
        Failure::Js(e)
    }
}

fn bad(message: String) -> Failure {
    Failure::Bad(Error::BadResult(message))
}

/// A string field of the result, as Rust text.
fn field_string(value: &Value<'_>, field: &str) -> Result<String, Failure> {
    let Some(s) = value.as_string() else {
        return Err(bad(format!(
            "{field} must be a string, not {}",
            kind(value)
        )));
    };
    s.to_string().map_err(|e| match e {
        rquickjs::Error::Utf8(_) => bad(format!(
            "{field} is not valid Unicode text (it has a lone surrogate)"
        )),
        e => Failure::Js(e),
    })
}

fn read_headers(value: &Value<'_>) -> Result<BTreeMap<String, String>, Failure> {
    let Some(object) = value.as_object().filter(|_| {
        !matches!(
            value.type_of(),
            Type::Array | Type::Function | Type::Constructor
        )
    }) else {
        return Err(bad(format!(
            "headers must be an object of header names to string values, not {}",
            kind(value)
        )));
    };
    let mut headers = BTreeMap::new();
    for prop in object.props::<rquickjs::String, Value>() {
        let (name, v) = prop?;
        let name = field_string(&name.into_value(), "a header name")?;
        let text = field_string(&v, &format!("header {name:?}"))?;
        if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
            return Err(bad(format!("{name:?} is not a valid HTTP header name")));
        }
        if http::HeaderValue::from_str(&text).is_err() {
            return Err(bad(format!(
                "the value of header {name:?} is not a valid HTTP header value \
                 (no line breaks or other control characters)"
            )));
        }
        headers.insert(name, text);
    }
    Ok(headers)
}

/// Runs the promise jobs queued by the code (`.then` callbacks, `async` continuations,
/// `queueMicrotask`), all of them, as an event loop would before going idle; within the
/// phase's deadline. QuickJS drops an exception thrown by a job (an unhandled rejection).
fn drain_jobs(ctx: &Ctx<'_>, meter: &Meter) {
    while !meter.interrupt() && ctx.execute_pending_job() {}
}

/// Setting up a runtime and context failed: only when the process is out of memory.
fn engine_error(e: rquickjs::Error) -> Error {
    Error::Internal(format!("cannot set up a JavaScript runtime: {e}"))
}

/// The [`Error`] for a failed rquickjs call: the limits first (what the meters noted), then
/// the pending exception.
fn failure(
    ctx: &Ctx<'_>,
    meter: &Meter,
    limits: &Limits,
    e: rquickjs::Error,
    phase: Phase,
) -> Error {
    // Take the exception in every case: left pending, it would be thrown again later.
    let exception = matches!(e, rquickjs::Error::Exception).then(|| ctx.catch());
    if meter.timed_out.get() {
        return Error::TimeLimit { limit: limits.time };
    }
    if meter.refused.get() || matches!(e, rquickjs::Error::Allocation) {
        return Error::MemoryLimit {
            limit_bytes: limits.memory_bytes,
        };
    }
    match exception {
        Some(value) => describe_exception(value, phase),
        None => Error::Internal(e.to_string()),
    }
}

fn describe_exception(value: Value<'_>, phase: Phase) -> Error {
    let Some(error) = value.as_exception() else {
        // `throw "text"`, `throw {…}`: not an Error, so no position.
        return Error::Runtime {
            line: None,
            column: None,
            message: truncate(
                format!("uncaught {}: {}", kind(&value), display(&value)),
                MAX_MESSAGE_BYTES,
            ),
        };
    };
    let name = error
        .get::<_, Coerced<String>>("name")
        .map(|n| n.0)
        .unwrap_or_else(|_| "Error".to_owned());
    let message = match error.message() {
        Some(m) if !m.is_empty() => format!("{name}: {m}"),
        _ => name.clone(),
    };
    let message = truncate(message, MAX_MESSAGE_BYTES);
    let (line, column) = error.stack().as_deref().map_or((None, None), position);
    if phase == Phase::Compile && name == "SyntaxError" {
        Error::Compile {
            line,
            column,
            message,
        }
    } else {
        Error::Runtime {
            line,
            column,
            message,
        }
    }
}

/// The line and column of the first stack frame in the user's code: QuickJS writes frames as
/// `    at handler (handler.js:3:11)`, or `    at handler.js:4:10` for a syntax error.
fn position(stack: &str) -> (Option<u32>, Option<u32>) {
    let marker = format!("{FILE_NAME}:");
    for frame in stack.lines() {
        if let Some(i) = frame.find(&marker) {
            let mut numbers = frame[i + marker.len()..]
                .split(|c: char| !c.is_ascii_digit())
                .map(|n| n.parse::<u32>().ok());
            let line = numbers.next().flatten();
            let column = numbers.next().flatten();
            return (line, column);
        }
    }
    (None, None)
}

/// "a number", "an array", …: a value's kind, for messages.
fn kind(value: &Value<'_>) -> &'static str {
    match value.type_of() {
        Type::Undefined | Type::Uninitialized => "undefined",
        Type::Null => "null",
        Type::Bool => "a boolean",
        Type::Int | Type::Float => "a number",
        Type::String => "a string",
        Type::Symbol => "a symbol",
        Type::BigInt => "a bigint",
        Type::Array => "an array",
        Type::Function | Type::Constructor => "a function",
        Type::Promise => "a promise",
        Type::Exception => "an error",
        _ => "an object",
    }
}

/// A thrown value that is not an Error, as text: strings as they are, others as JSON or, if
/// that fails, their kind.
fn display(value: &Value<'_>) -> String {
    if let Some(s) = value.as_string() {
        return s.to_string().unwrap_or_else(|_| "a string".to_owned());
    }
    match value.ctx().json_stringify(value.clone()) {
        Ok(Some(text)) => text.to_string().unwrap_or_default(),
        _ => {
            value.ctx().catch();
            kind(value).to_owned()
        }
    }
}

/// Cuts `text` to at most `max` bytes, at a character boundary, ending it with `…` if cut.
fn truncate(mut text: String, max: usize) -> String {
    if text.len() > max {
        let mut end = max - '…'.len_utf8();
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push('…');
    }
    text
}

/// Installs `console` with `log`, `info`, `warn`, `error` and `debug` writing to `logs`.
/// The functions are Rust closures: the code can replace `console` but reaches nothing else
/// through it.
fn install_console(
    ctx: &Ctx<'_>,
    logs: &Rc<RefCell<Logs>>,
    meter: &Rc<Meter>,
) -> rquickjs::Result<()> {
    let console = Object::new(ctx.clone())?;
    for (name, prefix) in [
        ("log", ""),
        ("info", "[info] "),
        ("warn", "[warn] "),
        ("error", "[error] "),
        ("debug", "[debug] "),
    ] {
        let logs = logs.clone();
        let meter = meter.clone();
        let f = Function::new(
            ctx.clone(),
            move |args: Rest<Value<'_>>| -> rquickjs::Result<()> {
                if logs.borrow().is_full() {
                    logs.borrow_mut().dropped += 1;
                    return Ok(());
                }
                // Formatting may run the code's toJSON or toString, which may log in turn:
                // no borrow of `logs` is held meanwhile.
                let line = format_line(&meter, prefix, &args.0)?;
                let mut logs = logs.borrow_mut();
                if logs.is_full() {
                    logs.dropped += 1;
                } else {
                    logs.lines.push(line);
                }
                Ok(())
            },
        )?;
        f.set_name(name)?;
        console.set(name, f)?;
    }
    ctx.globals().set("console", console)
}

/// One console line: the arguments separated by spaces, strings as they are, other values
/// as JSON (or their string form where JSON has none), cut at [`MAX_LOG_LINE_BYTES`].
fn format_line(meter: &Meter, prefix: &str, args: &[Value<'_>]) -> rquickjs::Result<String> {
    let mut line = String::from(prefix);
    for (i, arg) in args.iter().enumerate() {
        let ctx = arg.ctx();
        if line.len() > MAX_LOG_LINE_BYTES {
            break;
        }
        if i > 0 {
            line.push(' ');
        }
        let text = match arg.type_of() {
            Type::String => arg.get::<String>(),
            Type::Undefined => Ok("undefined".to_owned()),
            Type::Symbol => Ok("Symbol()".to_owned()),
            Type::Function | Type::Constructor => Ok("[function]".to_owned()),
            Type::Object | Type::Array | Type::Proxy => {
                ctx.json_stringify(arg.clone()).and_then(|json| match json {
                    Some(s) => s.to_string(),
                    None => Ok("undefined".to_owned()),
                })
            }
            // Numbers as JavaScript writes them, errors as `TypeError: message`.
            _ => arg.get::<Coerced<String>>().map(|c| c.0),
        };
        match text {
            Ok(text) => line.push_str(&text),
            Err(e) => {
                // The time limit's exception must go on unwinding the code; anything else
                // (a cyclic object, a throwing toJSON, text that is not Unicode) is not the
                // logging code's fault.
                if meter.timed_out.get() {
                    return Err(e);
                }
                if matches!(e, rquickjs::Error::Exception) {
                    ctx.catch();
                }
                line.push_str(&format!("[{} that cannot be shown]", kind(arg)));
            }
        }
    }
    Ok(truncate(line, MAX_LOG_LINE_BYTES))
}
