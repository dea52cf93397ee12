use std::collections::BTreeMap;
use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;

use serde_json::json;
use serde_json::value::RawValue;

use super::sandbox::{self, Sandbox};
use super::*;

fn input(data: serde_json::Value) -> Input {
    Input {
        event: "order.created".to_owned(),
        data: RawValue::from_string(data.to_string()).unwrap(),
        headers: BTreeMap::from([("x-shop".to_owned(), "berlin".to_owned())]),
        url: "https://example.com/hook".to_owned(),
    }
}

fn order() -> Input {
    // Raw text, for its key order (`json!` sorts keys).
    Input {
        data: RawValue::from_string(
            r#"{"order_id":1234,"amount":42.5,"items":[{"sku":"A-1","qty":2}]}"#.to_owned(),
        )
        .unwrap(),
        ..input(json!({}))
    }
}

/// The default limits but time: QuickJS built without optimization (as in `cargo test`) on
/// a busy machine must not hit the 50 ms limit in tests that are not about time.
fn relaxed() -> Limits {
    Limits {
        time: Duration::from_secs(2),
        ..Limits::default()
    }
}

/// Compiles and runs once, as a worker does for an uncached key.
fn run_with(code: &str, input: Input, limits: &Limits) -> Result<Output, Error> {
    sandbox::check_size(code, limits)?;
    Sandbox::compile(code, limits)?.run(input)
}

fn run(code: &str, input: Input) -> Result<Output, Error> {
    run_with(code, input, &relaxed())
}

fn json_body(output: &Output) -> serde_json::Value {
    match &output.body {
        Body::Json(raw) => serde_json::from_str(raw.get()).unwrap(),
        Body::Text(text) => panic!("a text body: {text}"),
    }
}

#[test]
fn the_example_from_the_docs() {
    let code = r#"
        function handler(webhook) {
          webhook.data = { text: `Order ${webhook.data.order_id}: ${webhook.data.amount} EUR` };
          return webhook;
        }
    "#;
    let out = run(code, order()).unwrap();
    assert_eq!(json_body(&out), json!({ "text": "Order 1234: 42.5 EUR" }));
    assert_eq!(out.event, "order.created");
    assert_eq!(out.url, "https://example.com/hook");
    assert_eq!(out.headers["x-shop"], "berlin");
    assert_eq!(out.cancel, None);
    assert!(out.logs.is_empty());
}

#[test]
fn renames_two_fields() {
    let code = r#"
        function handler(w) {
          const { order_id, amount, ...rest } = w.data;
          w.data = { id: order_id, total: amount, ...rest };
          return w;
        }
    "#;
    let out = run(code, order()).unwrap();
    assert_eq!(
        json_body(&out),
        json!({ "id": 1234, "total": 42.5, "items": [{ "sku": "A-1", "qty": 2 }] })
    );
    // Property order is kept, as JSON.stringify keeps it.
    let Body::Json(raw) = &out.body else { panic!() };
    assert_eq!(
        raw.get(),
        r#"{"id":1234,"total":42.5,"items":[{"sku":"A-1","qty":2}]}"#
    );
}

#[test]
fn a_text_body_wins_over_data() {
    let code = r#"
        function handler(w) {
          w.body = `order=${w.data.order_id}&amount=${w.data.amount}`;
          w.headers['content-type'] = 'application/x-www-form-urlencoded';
          return w;
        }
    "#;
    let out = run(code, order()).unwrap();
    match &out.body {
        Body::Text(text) => assert_eq!(text, "order=1234&amount=42.5"),
        Body::Json(raw) => panic!("JSON body {raw}"),
    }
    assert_eq!(
        out.headers["content-type"],
        "application/x-www-form-urlencoded"
    );
}

#[test]
fn renames_the_event() {
    let out = run(
        "function handler(w) { w.event = 'shop.' + w.event; return w; }",
        order(),
    )
    .unwrap();
    assert_eq!(out.event, "shop.order.created");
    assert_eq!(json_body(&out)["order_id"], 1234);
}

#[test]
fn adds_and_removes_headers() {
    let code = r#"
        function handler(w) {
          w.headers['X-Order-Id'] = String(w.data.order_id);
          delete w.headers['x-shop'];
          return w;
        }
    "#;
    let out = run(code, order()).unwrap();
    assert_eq!(
        out.headers,
        BTreeMap::from([("X-Order-Id".to_owned(), "1234".to_owned())])
    );

    let bad = [
        (
            "w.headers['bad name'] = 'x'",
            "not a valid HTTP header name",
        ),
        (
            "w.headers['x-a'] = 'line\\nbreak'",
            "not a valid HTTP header value",
        ),
        ("w.headers['x-a'] = 5", "must be a string, not a number"),
        ("w.headers = 'x'", "headers must be an object"),
    ];
    for (statement, expected) in bad {
        let code = format!("function handler(w) {{ {statement}; return w; }}");
        match run(&code, order()) {
            Err(Error::BadResult(message)) => assert!(message.contains(expected), "{message}"),
            other => panic!("{statement}: {other:?}"),
        }
    }
}

#[test]
fn changes_the_url() {
    let out = run(
        "function handler(w) { w.url = w.url + '?shop=' + w.headers['x-shop']; return w; }",
        order(),
    )
    .unwrap();
    assert_eq!(out.url, "https://example.com/hook?shop=berlin");
}

#[test]
fn a_new_object_changes_only_its_fields() {
    let out = run(
        "function handler(w) { return { url: 'https://b.example' }; }",
        order(),
    )
    .unwrap();
    assert_eq!(out.url, "https://b.example");
    assert_eq!(out.event, "order.created");
    assert_eq!(json_body(&out)["order_id"], 1234);
    assert_eq!(out.headers["x-shop"], "berlin");
}

#[test]
fn cancels() {
    let code = r#"
        function handler(w) {
          if (w.data.amount < 100) {
            w.cancel = true;
            w.cancel_reason = 'small orders are not forwarded';
          }
          w.data = 'ignored when cancelled';
          return w;
        }
    "#;
    let out = run(code, order()).unwrap();
    assert_eq!(
        out.cancel.as_deref(),
        Some("small orders are not forwarded")
    );
    // The other fields are the webhook as it came in.
    assert_eq!(json_body(&out)["order_id"], 1234);

    let out = run("function handler(w) { return { cancel: true }; }", order()).unwrap();
    assert_eq!(out.cancel.as_deref(), Some(DEFAULT_CANCEL_REASON));
    let out = run(
        "function handler(w) { w.cancel = false; return w; }",
        order(),
    )
    .unwrap();
    assert_eq!(out.cancel, None);
    match run(
        "function handler(w) { w.cancel = 'yes'; return w; }",
        order(),
    ) {
        Err(Error::BadResult(m)) => assert!(m.contains("cancel must be true or false"), "{m}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn captures_console_output() {
    let code = r#"
        function handler(w) {
          console.log('order', w.data.order_id, w.data.items, null, undefined, 1.5);
          console.error(new TypeError('bad'));
          console.warn({ a: [1, 2] });
          const cyclic = {}; cyclic.self = cyclic;
          console.info(cyclic);
          return w;
        }
    "#;
    let out = run(code, order()).unwrap();
    assert_eq!(
        out.logs,
        vec![
            r#"order 1234 [{"sku":"A-1","qty":2}] null undefined 1.5"#,
            "[error] TypeError: bad",
            r#"[warn] {"a":[1,2]}"#,
            "[info] [an object that cannot be shown]",
        ]
    );
}

#[test]
fn console_output_is_bounded() {
    let code = r#"
        function handler(w) {
          console.log('x'.repeat(5000));
          for (let i = 0; i < 150; i++) console.log('line', i);
          return w;
        }
    "#;
    let out = run(code, order()).unwrap();
    assert_eq!(out.logs.len(), MAX_LOG_LINES + 1);
    assert!(out.logs[0].len() <= MAX_LOG_LINE_BYTES);
    assert!(out.logs[0].ends_with('…'));
    assert_eq!(out.logs[1], "line 0");
    assert_eq!(out.logs[MAX_LOG_LINES - 1], "line 98");
    assert_eq!(
        out.logs[MAX_LOG_LINES],
        "… 51 more console lines were dropped (at most 100 are kept)"
    );
}

#[test]
fn logs_do_not_leak_into_the_next_run() {
    let limits = relaxed();
    let code = "console.log('top level'); function handler(w) { console.log(w.data.n); return w; }";
    let sandbox = Sandbox::compile(code, &limits).unwrap();
    assert_eq!(
        sandbox.run(input(json!({ "n": 1 }))).unwrap().logs,
        vec!["1"]
    );
    assert_eq!(
        sandbox.run(input(json!({ "n": 2 }))).unwrap().logs,
        vec!["2"]
    );
}

#[test]
fn a_memory_bomb_hits_the_memory_limit() {
    let code = r#"
        function handler(w) {
          let a = [];
          while (true) a.push(new Array(1e6).fill(1));
        }
    "#;
    assert_eq!(
        run(code, order()).unwrap_err(),
        Error::MemoryLimit {
            limit_bytes: 16 << 20
        }
    );
    // Many small allocations, and a string doubling: the same.
    for body in [
        "let a = []; while (true) a.push({ n: a.length, s: 'x' + a.length });",
        "let a = []; while (true) a.push('x'.repeat(1e6));",
    ] {
        let code = format!("function handler(w) {{ {body} }}");
        assert!(
            matches!(run(&code, order()), Err(Error::MemoryLimit { .. })),
            "{body}"
        );
    }
}

#[test]
fn catching_the_memory_error_does_not_hide_it() {
    let code = r#"
        function handler(w) {
          try { let a = []; while (true) a.push(new Array(1e5).fill(1)); } catch (e) {}
          throw new Error('after');
        }
    "#;
    assert!(matches!(run(code, order()), Err(Error::MemoryLimit { .. })));
}

#[test]
fn an_infinite_loop_hits_the_time_limit() {
    assert_eq!(
        run_with(
            "function handler(w) { while (true) {} }",
            order(),
            &Limits::default()
        )
        .unwrap_err(),
        Error::TimeLimit {
            limit: Duration::from_millis(50)
        }
    );
    // Not even a catch stops the interruption.
    let code = "function handler(w) { for (;;) { try { while (true) {} } catch (e) {} } }";
    assert!(matches!(
        run_with(code, order(), &Limits::default()),
        Err(Error::TimeLimit { .. })
    ));
    // Nor a regular expression that backtracks for ages.
    let code = "function handler(w) { return /(a+)+b/.test('a'.repeat(40)); }";
    assert!(matches!(
        run_with(code, order(), &Limits::default()),
        Err(Error::TimeLimit { .. })
    ));
    // Nor promise jobs that requeue themselves forever.
    let code = "function handler(w) { const f = () => queueMicrotask(f); f(); return w; }";
    assert!(matches!(
        run_with(code, order(), &Limits::default()),
        Err(Error::TimeLimit { .. })
    ));
}

#[test]
fn a_huge_result_is_too_large() {
    for statement in [
        "w.data = 'x'.repeat(2e6)",
        "w.body = 'x'.repeat(2e6)",
        "w.data = Array.from({ length: 2e4 }, (_, i) => ({ i, pad: 'x'.repeat(60) }))",
    ] {
        let code = format!("function handler(w) {{ {statement}; return w; }}");
        assert_eq!(
            run(&code, order()).unwrap_err(),
            Error::OutputTooLarge {
                limit_bytes: 1 << 20
            },
            "{statement}"
        );
    }
}

#[test]
fn code_over_the_size_limit_is_refused() {
    let code = format!(
        "function handler(w) {{ return w; }}\n// {}",
        "x".repeat(64 << 10)
    );
    let err = check(&code, &relaxed()).unwrap_err();
    assert_eq!(
        err,
        Error::CodeTooLarge {
            size: code.len(),
            limit: 64 << 10
        }
    );
    assert_eq!(
        err.to_string(),
        format!(
            "the transformation's code is {} bytes, more than the limit of 64 KiB",
            code.len()
        )
    );
}

#[test]
fn a_syntax_error_has_its_line_and_column() {
    let code = "function handler(w) {\n  return w;\n}\nlet x = (;\n";
    let err = check(code, &relaxed()).unwrap_err();
    assert_eq!(
        err,
        Error::Compile {
            line: Some(4),
            column: Some(10),
            message: "SyntaxError: unexpected token in expression: ';'".to_owned()
        }
    );
    assert_eq!(
        err.to_string(),
        "the transformation does not compile at line 4, column 10: \
         SyntaxError: unexpected token in expression: ';'"
    );
}

#[test]
fn a_missing_handler_is_a_bad_result() {
    for code in ["function handle(w) { return w; }", "", "// nothing"] {
        match check(code, &relaxed()) {
            Err(Error::BadResult(m)) => assert!(m.contains("no function named handler"), "{m}"),
            other => panic!("{code}: {other:?}"),
        }
    }
    match check("var handler = 5;", &relaxed()) {
        Err(Error::BadResult(m)) => assert!(m.contains("not a function"), "{m}"),
        other => panic!("{other:?}"),
    }
    // Lexical declarations count, and arrow functions.
    check("const handler = (w) => w;", &relaxed()).unwrap();
    check("let handler = function (w) { return w; };", &relaxed()).unwrap();
}

#[test]
fn results_of_the_wrong_shape_are_bad_results() {
    let cases = [
        ("function handler(w) { }", "returned nothing"),
        (
            "function handler(w) { return 5; }",
            "returned a number, not an object",
        ),
        ("function handler(w) { return [w]; }", "returned an array"),
        ("function handler(w) { return null; }", "returned null"),
        (
            "function handler(w) { w.event = 5; return w; }",
            "event must be a string",
        ),
        (
            "function handler(w) { w.url = null; return w; }",
            "url must be a string, not null",
        ),
        (
            "function handler(w) { w.body = {}; return w; }",
            "body must be a string",
        ),
        (
            "function handler(w) { w.data = {}; w.data.me = w.data; return w; }",
            "cycle",
        ),
        (
            "function handler(w) { w.data = () => 1; return w; }",
            "cannot be written as JSON",
        ),
        (
            "function handler(w) { let d = []; for (let i = 0; i < 200; i++) d = [d]; w.data = d; return w; }",
            "more than 128 levels deep",
        ),
        (
            "async function handler(w) { await new Promise(() => {}); return w; }",
            "never settled",
        ),
    ];
    for (code, expected) in cases {
        match run(code, order()) {
            Err(Error::BadResult(m)) => assert!(m.contains(expected), "{code}: {m}"),
            other => panic!("{code}: {other:?}"),
        }
    }
}

#[test]
fn a_thrown_error_is_a_runtime_error_with_its_position() {
    let code = "function handler(w) {\n  if (!w.data.customer)\n    throw new Error('no customer');\n  return w;\n}";
    let err = run(code, order()).unwrap_err();
    assert_eq!(
        err,
        Error::Runtime {
            line: Some(3),
            column: Some(15),
            message: "Error: no customer".to_owned()
        }
    );
    assert_eq!(
        err.to_string(),
        "the transformation threw an exception at line 3, column 15: Error: no customer"
    );
    // A TypeError from the engine, and a thrown non-Error.
    let err = run(
        "function handler(w) { return w.data.customer.name; }",
        order(),
    )
    .unwrap_err();
    assert!(
        matches!(&err, Error::Runtime { line: Some(1), message, .. } if message.starts_with("TypeError")),
        "{err:?}"
    );
    let err = run("function handler(w) { throw 'plain'; }", order()).unwrap_err();
    assert_eq!(
        err,
        Error::Runtime {
            line: None,
            column: None,
            message: "uncaught a string: plain".to_owned()
        }
    );
    // Top-level code that throws fails the check.
    let err = check(
        "undefinedThing(); function handler(w) { return w; }",
        &relaxed(),
    );
    assert!(
        matches!(err, Err(Error::Runtime { line: Some(1), .. })),
        "{err:?}"
    );
}

#[test]
fn check_bounds_top_level_code() {
    let limits = Limits::default();
    let relaxed = relaxed();
    assert_eq!(
        check(
            "while (true) {}\nfunction handler(w) { return w; }",
            &limits
        )
        .unwrap_err(),
        Error::TimeLimit { limit: limits.time }
    );
    assert!(matches!(
        check(
            "let a = []; while (true) a.push('x'.repeat(1e6));",
            &relaxed
        ),
        Err(Error::MemoryLimit { .. })
    ));
    check("function handler(w) { return w; }", &relaxed).unwrap();
}

#[test]
fn the_sandbox_has_no_timers_modules_or_host_access() {
    let code = r#"
        function handler(w) {
          w.data = [typeof setTimeout, typeof setInterval, typeof require, typeof process,
                    typeof std, typeof os, typeof fetch, typeof performance, typeof WeakRef,
                    typeof globalThis.print];
          return w;
        }
    "#;
    let out = run(code, order()).unwrap();
    assert!(
        json_body(&out)
            .as_array()
            .unwrap()
            .iter()
            .all(|t| t == "undefined"),
        "{}",
        json_body(&out)
    );
    // A static import does not parse in a script; a dynamic one finds no modules.
    let err = check(
        "import * as std from 'std';\nfunction handler(w) { return w; }",
        &relaxed(),
    );
    assert!(
        matches!(err, Err(Error::Compile { line: Some(1), .. })),
        "{err:?}"
    );
    let code = r#"
        async function handler(w) {
          try { await import('std'); w.data = 'loaded'; }
          catch (e) { w.data = String(e); }
          return w;
        }
    "#;
    let out = run(code, order()).unwrap();
    assert_eq!(
        json_body(&out),
        json!("ReferenceError: could not load module 'std'")
    );
}

#[test]
fn async_handlers_are_awaited() {
    let code = r#"
        async function handler(w) {
          const total = await Promise.resolve(w.data.amount * 2);
          w.data = { total };
          return w;
        }
    "#;
    assert_eq!(
        json_body(&run(code, order()).unwrap()),
        json!({ "total": 85 })
    );
    let err = run(
        "async function handler(w) { throw new RangeError('no'); }",
        order(),
    );
    assert!(
        matches!(&err, Err(Error::Runtime { message, .. }) if message == "RangeError: no"),
        "{err:?}"
    );
}

#[test]
fn data_is_written_as_json_stringify_writes_it() {
    let code = r#"
        function handler(w) {
          class Point { constructor() { this.x = 1; this.y = 2; } }
          w.data = {
            date: new Date(Date.UTC(2026, 0, 2, 3, 4, 5)),
            map: new Map([[1, 2]]),
            point: new Point(),
            custom: { toJSON() { return 'custom'; } },
            boxed: new Number(7),
            nan: NaN, inf: -Infinity, neg_zero: -0, float: 0.1 + 0.2, big: 1e21, int: 2 ** 40,
            skipped: undefined, fn() {}, [Symbol('s')]: 1,
            holes: [1, , undefined, () => 1],
            nested: Object.assign(Object.create(null), { a: 1 }),
            text: 'quote " backslash \\ newline \n tab \t nul \0 é 😀',
            lone: 'a\uD800b',
            [2]: 'numeric keys first',
          };
          return w;
        }
    "#;
    let out = run(code, order()).unwrap();
    let Body::Json(raw) = &out.body else { panic!() };
    assert_eq!(
        raw.get(),
        concat!(
            r#"{"2":"numeric keys first","date":"2026-01-02T03:04:05.000Z","map":{},"#,
            r#""point":{"x":1,"y":2},"custom":"custom","boxed":7,"nan":null,"inf":null,"#,
            r#""neg_zero":0,"float":0.30000000000000004,"big":1e21,"int":1099511627776,"#,
            r#""holes":[1,null,null,null],"nested":{"a":1},"#,
            r#""text":"quote \" backslash \\ newline \n tab \t nul \u0000 é 😀","#,
            r#""lone":"a\ud800b"}"#
        )
    );
}

#[test]
fn outputs_can_be_stored() {
    let out = run(
        "function handler(w) { console.log('hi'); w.data.ok = true; return w; }",
        order(),
    )
    .unwrap();
    let stored = serde_json::to_string(&out).unwrap();
    let back: Output = serde_json::from_str(&stored).unwrap();
    assert_eq!(back.body.as_str(), out.body.as_str());
    assert_eq!(back.logs, vec!["hi"]);
    assert_eq!(back.headers, out.headers);

    let text = Output {
        body: Body::Text("plain".to_owned()),
        ..back
    };
    let stored = serde_json::to_string(&text).unwrap();
    assert!(stored.contains(r#""body":{"text":"plain"}"#), "{stored}");
    let back: Output = serde_json::from_str(&stored).unwrap();
    assert!(matches!(back.body, Body::Text(t) if t == "plain"));
}

const COUNTER: &str = r#"
    var runs = 0;
    function handler(w) {
      runs++;
      if (w.data.mode === 'loop') while (true) {}
      if (w.data.mode === 'oom') { const a = []; while (true) a.push(new Array(1e6).fill(runs)); }
      if (w.data.mode === 'throw') throw new Error('thrown on run ' + runs);
      w.data = { runs };
      return w;
    }
"#;

#[tokio::test]
async fn a_key_is_compiled_once_and_keys_are_isolated() {
    // One thread, so every run of a key meets the same cached sandbox.
    let engine = Engine::new(1, relaxed());
    let code: Arc<str> = COUNTER.into();
    let a = TransformKey::new("endpoint-a", 1);
    let b = TransformKey::new("endpoint-b", 1);
    let runs = |key: &TransformKey| {
        let (engine, key, code) = (engine.clone(), key.clone(), code.clone());
        async move {
            let out = engine.run(key, code, input(json!({}))).await.unwrap();
            json_body(&out)["runs"].as_u64().unwrap()
        }
    };
    assert_eq!(runs(&a).await, 1);
    assert_eq!(runs(&a).await, 2);
    assert_eq!(runs(&a).await, 3);
    // Same code, another key: a fresh global.
    assert_eq!(runs(&b).await, 1);
    assert_eq!(runs(&a).await, 4);
    // A new version is another key.
    assert_eq!(runs(&TransformKey::new("endpoint-a", 2)).await, 1);
}

#[tokio::test]
async fn keys_do_not_share_built_ins() {
    let engine = Engine::new(1, relaxed());
    let polluter: Arc<str> = r#"
        Object.prototype.polluted = 'yes';
        JSON.parse = () => ({ hijacked: true });
        function handler(w) { w.data = { polluted: ({}).polluted }; return w; }
    "#
    .into();
    let victim: Arc<str> = r#"
        function handler(w) {
          w.data = { polluted: ({}).polluted ?? 'no', parsed: JSON.parse('{"a":1}') };
          return w;
        }
    "#
    .into();
    let out = engine
        .run(TransformKey::new("a", 1), polluter, order())
        .await
        .unwrap();
    assert_eq!(json_body(&out), json!({ "polluted": "yes" }));
    let out = engine
        .run(TransformKey::new("b", 1), victim, order())
        .await
        .unwrap();
    assert_eq!(
        json_body(&out),
        json!({ "polluted": "no", "parsed": { "a": 1 } })
    );
}

#[test]
fn deep_recursion_is_a_runtime_error() {
    let err = run(
        "function handler(w) { const f = (n) => f(n + 1) + 1; return f(0); }",
        order(),
    )
    .unwrap_err();
    assert!(
        matches!(&err, Error::Runtime { message, .. } if message.contains("call stack")),
        "{err:?}"
    );
}

#[tokio::test]
async fn a_key_runs_again_after_its_limits_were_hit() {
    let limits = Limits {
        time: Duration::from_millis(200),
        ..Limits::default()
    };
    let engine = Engine::new(1, limits);
    let code: Arc<str> = COUNTER.into();
    let key = TransformKey::new("endpoint", 7);
    let run = |mode: &str| engine.run(key.clone(), code.clone(), input(json!({ "mode": mode })));

    assert_eq!(json_body(&run("ok").await.unwrap())["runs"], 1);
    // An exception keeps the sandbox (and its globals).
    assert!(matches!(
        run("throw").await,
        Err(Error::Runtime { message, .. }) if message == "Error: thrown on run 2"
    ));
    assert_eq!(json_body(&run("ok").await.unwrap())["runs"], 3);
    // The limits discard it: the next run compiles afresh.
    assert!(matches!(run("loop").await, Err(Error::TimeLimit { .. })));
    assert_eq!(json_body(&run("ok").await.unwrap())["runs"], 1);
    assert!(matches!(run("oom").await, Err(Error::MemoryLimit { .. })));
    assert_eq!(json_body(&run("ok").await.unwrap())["runs"], 1);
    assert_eq!(json_body(&run("ok").await.unwrap())["runs"], 2);
}

type Pending<'a> = Pin<Box<dyn Future<Output = Result<Output, Error>> + 'a>>;

/// Polls each future once: each submits its run (or fails at once). The ready results.
async fn poll_once(futures: &mut [Pending<'_>]) -> Vec<Result<Output, Error>> {
    poll_fn(|cx| {
        let mut ready = Vec::new();
        for f in futures.iter_mut() {
            if let Poll::Ready(result) = f.as_mut().poll(cx) {
                ready.push(result);
            }
        }
        Poll::Ready(ready)
    })
    .await
}

#[tokio::test]
async fn one_key_cannot_take_every_worker() {
    // Two workers: a key gets at most one of them at a time.
    let limits = Limits {
        time: Duration::from_millis(200),
        ..Limits::default()
    };
    let engine = Engine::new(2, limits);
    let spinning: Arc<str> = "function handler(w) { while (true) {} }".into();
    let quick: Arc<str> = "function handler(w) { w.data = { seen: w.data.n }; return w; }".into();
    let a = TransformKey::new("spinner", 1);
    let b = TransformKey::new("quick", 1);

    // Queue 20 runs of A, each of which takes the full 200 ms: 4 s of work for one worker.
    const A_RUNS: usize = 20;
    let mut a_runs: Vec<Pending<'_>> = (0..A_RUNS)
        .map(|_| Box::pin(engine.run(a.clone(), spinning.clone(), order())) as Pending<'_>)
        .collect();
    assert!(poll_once(&mut a_runs).await.is_empty(), "all queued");

    // B's runs, queued behind all of A's, complete on the other worker.
    for n in 0..20 {
        let out = engine
            .run(b.clone(), quick.clone(), input(json!({ "n": n })))
            .await;
        assert_eq!(json_body(&out.unwrap()), json!({ "seen": n }));
    }

    // Meanwhile A has used one worker at most: most of its runs are still waiting.
    let a_done = poll_once(&mut a_runs).await;
    assert!(
        a_done.len() < A_RUNS,
        "B's runs finished only after all of A's ({} of {A_RUNS})",
        a_done.len()
    );
    for result in a_done {
        assert!(matches!(result, Err(Error::TimeLimit { .. })), "{result:?}");
    }
    // Dropping A's futures withdraws the runs still waiting.
}

#[tokio::test]
async fn a_full_key_queue_is_busy_at_once() {
    let mut options = PoolOptions::new(1);
    options.key_queue = 1;
    let limits = Limits {
        time: Duration::from_millis(200),
        ..Limits::default()
    };
    let engine = Engine::with_options(limits, options);
    let spinning: Arc<str> = "function handler(w) { while (true) {} }".into();
    let key = TransformKey::new("spinner", 1);
    // The worker takes at most one while they are submitted; of the others one waits, the
    // rest find the key's queue full.
    let mut runs: Vec<Pending<'_>> = (0..3)
        .map(|_| Box::pin(engine.run(key.clone(), spinning.clone(), order())) as Pending<'_>)
        .collect();
    let ready = poll_once(&mut runs).await;
    assert!(!ready.is_empty());
    for result in ready {
        assert!(matches!(result, Err(Error::Busy)), "{result:?}");
    }
    // Another key is not affected.
    let other = engine
        .run(
            TransformKey::new("other", 1),
            "function handler(w) { return w; }".into(),
            order(),
        )
        .await;
    assert!(other.is_ok(), "{other:?}");
}

#[tokio::test]
async fn the_engine_checks_and_refuses_big_code_without_queueing() {
    let engine = Engine::new(1, relaxed());
    let key = TransformKey::new("endpoint", 1);
    engine
        .check(key.clone(), "function handler(w) { return w; }".into())
        .await
        .unwrap();
    assert!(matches!(
        engine
            .check(key.clone(), "function handler(w) {".into())
            .await,
        Err(Error::Compile { .. })
    ));
    let big: Arc<str> = "x".repeat(100_000).into();
    assert!(matches!(
        engine.run(key, big, order()).await,
        Err(Error::CodeTooLarge { size: 100_000, .. })
    ));
}

#[test]
fn error_messages_are_sentences() {
    let cases = [
        (
            Error::TimeLimit {
                limit: Duration::from_millis(50),
            },
            "the transformation ran longer than its time limit of 50 ms",
        ),
        (
            Error::MemoryLimit {
                limit_bytes: 16 << 20,
            },
            "the transformation used more memory than its limit of 16 MiB",
        ),
        (
            Error::OutputTooLarge {
                limit_bytes: 1 << 20,
            },
            "the transformation's result is larger than the limit of 1 MiB",
        ),
        (
            Error::Compile {
                line: None,
                column: None,
                message: "x".to_owned(),
            },
            "the transformation does not compile: x",
        ),
    ];
    for (err, text) in cases {
        assert_eq!(err.to_string(), text);
    }
}
