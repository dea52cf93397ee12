//! Property-based fuzzing of what callers control: JSON bodies, payload filters over random
//! JSON, JSON Schemas, event names and endpoint URLs. Each input is either accepted and
//! bounded, or refused with a reason; never a panic or an abort. The ingest body is fuzzed
//! through a real server, where a refusal must be a `{code, detail}` answer.
//!
//! CI runs a few thousand cases of each. Run longer with, for example,
//! `PROPTEST_CASES=200000 cargo test -p chime --test it --release fuzz::` (the cases count of each
//! property then becomes that number), and under a memory cap to turn an unbounded allocation
//! into a failure: `prlimit --as=2000000000 cargo test …`.

use chime::filter::{MAX_FANOUT, Verdicts};
use chime::json_rules::MAX_DEPTH;
use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;
use serde_json::{Value, json};

/// Cases per property, unless `PROPTEST_CASES` says otherwise.
///
/// Failures persist beside this file, in `fuzz.proptest-regressions`. Proptest's default
/// (`SourceParallel`) would use `tests/proptest-regressions/fuzz.txt` instead, because this
/// file's directory has a `main.rs`, and the seeds already kept would no longer be replayed.
fn cases(default: u32) -> ProptestConfig {
    crate::support::cap_this_process_memory();
    let n = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default);
    ProptestConfig {
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource(
            "proptest-regressions",
        ))),
        ..ProptestConfig::with_cases(n)
    }
}

/// Random JSON values, nested up to `depth`.
fn json_value(depth: u32) -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        (-1e300f64..1e300).prop_map(|n| json!(n)),
        "[a-z\u{e9}\u{1f600} ]{0,12}".prop_map(Value::String),
    ];
    leaf.prop_recursive(depth, 256, 8, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
            proptest::collection::btree_map("[a-d]{1,2}", inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Text that looks like JSON to a scanner: its punctuation, numbers, escapes, arbitrary runs.
fn json_ish() -> impl Strategy<Value = String> {
    proptest::collection::vec(
        prop_oneof![
            Just("[".to_owned()),
            Just("]".to_owned()),
            Just("{".to_owned()),
            Just("}".to_owned()),
            Just(",".to_owned()),
            Just(":".to_owned()),
            Just("\"".to_owned()),
            Just("\\".to_owned()),
            "\\\\u[0-9a-fA-F]{0,4}",
            "-?[0-9]{1,80}(\\.[0-9]{0,20})?([eE][+-]?[0-9]{1,5})?",
            "\"[a-z]{0,3}\"",
            ".{0,4}",
        ],
        0..200,
    )
    .prop_map(|parts| parts.concat())
}

fn depth_of(v: &Value) -> usize {
    match v {
        Value::Array(a) => 1 + a.iter().map(depth_of).max().unwrap_or(0),
        Value::Object(o) => 1 + o.values().map(depth_of).max().unwrap_or(0),
        _ => 0,
    }
}

fn nodes_of(v: &Value) -> usize {
    match v {
        Value::Array(a) => 1 + a.iter().map(nodes_of).sum::<usize>(),
        Value::Object(o) => 1 + o.values().map(nodes_of).sum::<usize>(),
        _ => 1,
    }
}

/// JSONPath filters built from the grammar's pieces, valid or not.
fn filter_text() -> impl Strategy<Value = String> {
    let segment = prop_oneof![
        Just(".*".to_owned()),
        Just("..*".to_owned()),
        "\\.[a-d]",
        "\\.\\.[a-d]",
        "\\[[0-3](,[0-3]){0,4}\\]",
        "\\[-?[0-3]?:-?[0-3]?(:-?[1-3])?\\]",
        Just("[?@.a]".to_owned()),
        Just("[?@..a]".to_owned()),
        Just("[?@.a > 1]".to_owned()),
        Just("[?@.* == 'x']".to_owned()),
        Just("[?length(@) > 2]".to_owned()),
        Just("[?count(@.*) > 1]".to_owned()),
        Just("[?match(@.a, '[a-z]+')]".to_owned()),
        Just("[?search(@, 'a')]".to_owned()),
        Just("[?@[?@.b]]".to_owned()),
        Just("['a','b']".to_owned()),
    ];
    proptest::collection::vec(segment, 0..8).prop_map(|s| format!("${}", s.concat()))
}

/// JSON Schemas from the applicators that multiply work, over a few named definitions.
fn schema() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(json!({"type": "string", "minLength": 2})),
        Just(json!({"type": "number", "maximum": 100})),
        Just(json!(true)),
        Just(json!({"pattern": "^(a+)+$"})),
        (0..4u8).prop_map(|d| json!({"$ref": format!("#/$defs/d{d}")})),
        Just(json!({"$ref": "#"})),
    ];
    let node = leaf.prop_recursive(5, 64, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 1..4).prop_map(|v| json!({"anyOf": v})),
            proptest::collection::vec(inner.clone(), 1..4).prop_map(|v| json!({"allOf": v})),
            proptest::collection::vec(inner.clone(), 1..4).prop_map(|v| json!({"oneOf": v})),
            inner.clone().prop_map(|v| json!({"items": v})),
            inner.clone().prop_map(|v| json!({"not": v})),
            (inner.clone(), inner.clone())
                .prop_map(|(a, b)| json!({"properties": {"a": a, "b": b}})),
        ]
    });
    (proptest::collection::vec(node.clone(), 4), node).prop_map(|(defs, root)| {
        let mut root = match root {
            Value::Object(m) => m,
            other => [("allOf".to_owned(), json!([other]))].into_iter().collect(),
        };
        let defs: serde_json::Map<String, Value> = defs
            .into_iter()
            .enumerate()
            .map(|(i, d)| (format!("d{i}"), d))
            .collect();
        root.insert("$defs".into(), Value::Object(defs));
        Value::Object(root)
    })
}

proptest! {
    #![proptest_config(cases(3_000))]

    /// The JSON rule never panics, and what it accepts is within its limits.
    #[test]
    fn json_rules_bound_whatever_they_accept(text in json_ish()) {
        if chime::json_rules::check(&text).is_ok()
            && let Ok(v) = serde_json::from_str::<Value>(&text)
        {
            prop_assert!(depth_of(&v) <= MAX_DEPTH);
            if let Value::Number(n) = &v {
                prop_assert!(n.as_f64().is_some_and(f64::is_finite));
            }
        }
    }

    /// Well-formed documents within the depth limit are accepted as they are.
    #[test]
    fn json_rules_accept_ordinary_documents(v in json_value(6)) {
        let text = serde_json::to_string(&v).unwrap();
        prop_assert_eq!(chime::json_rules::check(&text), Ok(()));
    }

    /// A filter either is refused when saved or, over any document, selects at most the
    /// document's nodes times the fan-out the limits allow.
    #[test]
    fn filters_are_refused_or_bounded(filter in filter_text(), data in json_value(5)) {
        let Ok(path) = chime::filter::compile(&filter) else { return Ok(()) };
        let doc = Value::Array(vec![json!({"event": "x", "data": data})]);
        let selected = path.query(&doc).len();
        prop_assert!(
            selected <= nodes_of(&doc) * MAX_FANOUT as usize,
            "{filter} selected {selected} of {} nodes", nodes_of(&doc)
        );
        let mut verdicts = Verdicts::default();
        verdicts.evaluate([filter.as_str()], serde_json::to_string(&doc[0]).unwrap().as_bytes());
        prop_assert_eq!(verdicts.get(&filter), Some(selected > 0));
    }

    /// Any filter text, even garbage, compiles or is refused: never a panic.
    #[test]
    fn any_filter_text_is_safe_to_compile(text in ".{0,80}") {
        let _ = chime::filter::compile(&text);
    }

    /// A schema is refused when saved or validates random data without a panic.
    #[test]
    fn schemas_are_refused_or_validate(schema in schema(), data in json_value(4)) {
        if let Ok(compiled) = chime::catalog::compile(&schema) {
            prop_assert!(compiled.per_value <= chime::schema_cost::MAX_APPLICATIONS);
            let _ = compiled.validator.is_valid(&data);
            let _ = compiled.validator.iter_errors(&data).take(10).count();
        }
    }

    /// Event names: accepted only as documented, refused with a reason otherwise.
    #[test]
    fn event_names_are_checked(name in ".{0,140}") {
        match chime::model::parse_event_name(&name) {
            Ok(n) => {
                prop_assert!(!n.is_empty() && n.len() <= 128);
                prop_assert!(n.bytes().all(|b| b.is_ascii_alphanumeric() || b"_.-:/".contains(&b)));
            }
            Err(e) => prop_assert!(!e.0.is_empty()),
        }
    }

    /// Endpoint URLs in every address form: an accepted URL is absolute http(s) with a host
    /// and a valid port, and an IP literal in it is classified by the same policy that
    /// guards connections.
    #[test]
    fn endpoint_urls_are_checked(
        scheme in prop_oneof![Just("http"), Just("https"), Just("ftp"), Just("")],
        host in prop_oneof![
            "[a-z0-9.-]{0,20}",
            any::<std::net::Ipv4Addr>().prop_map(|ip| ip.to_string()),
            any::<std::net::Ipv6Addr>().prop_map(|ip| format!("[{ip}]")),
            any::<std::net::Ipv4Addr>().prop_map(|ip| format!("[::ffff:{ip}]")),
            any::<std::net::Ipv4Addr>().prop_map(|ip| format!("[64:ff9b::{ip}]")),
            "\\[[0-9a-f:]{0,20}(%25[a-z0-9]{0,4})?\\]",
            ".{0,12}",
        ],
        port in prop_oneof![Just(String::new()), "-?[0-9]{1,6}".prop_map(|p| format!(":{p}"))],
        path in "(/[a-z%0-9]{0,8}){0,3}",
    ) {
        let url = format!("{scheme}://{host}{port}{path}");
        let policy = chime::net_policy::TargetPolicy::new(vec![]);
        if let Ok(uri) = chime::model::parse_endpoint_url(&url) {
            prop_assert!(matches!(uri.scheme_str(), Some("http" | "https")));
            let host = uri.host().unwrap_or_default();
            prop_assert!(!host.is_empty());
            // Any port the authority names is one chime can deliver to.
            let authority = uri.authority().map(|a| a.as_str()).unwrap_or_default();
            if authority[host.len()..].starts_with(':') {
                prop_assert!(uri.port_u16().is_some_and(|p| p > 0), "{url}");
            }
            // A bracketed host is an address, never a name nor a zone-scoped literal.
            if host.starts_with('[') {
                prop_assert!(chime::model::ip_literal(&uri).is_some(), "{url}");
            }
            // The save-time and attempt-time check is one function: a closed address is
            // refused, an open one or a name passes.
            match chime::model::ip_literal(&uri) {
                Some(ip) => prop_assert_eq!(policy.check_host(host).is_ok(), policy.permits(ip)),
                None => prop_assert!(policy.check_host(host).is_ok(), "{url}"),
            }
        }
    }
}

/// A real server (tenant `acme`) that properties POST to from synchronous proptest code.
struct LiveServer {
    rt: tokio::runtime::Runtime,
    server: Option<crate::support::TestServer>,
    client: reqwest::Client,
    _dir: tempfile::TempDir,
}

impl LiveServer {
    fn start() -> Self {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let server = rt.block_on(async {
            let server =
                crate::support::TestServer::start(dir.path(), crate::support::Opts::default())
                    .await;
            server.create_tenant("acme").await;
            server
        });
        Self {
            rt,
            server: Some(server),
            client: reqwest::Client::new(),
            _dir: dir,
        }
    }

    /// POSTs `body` (as it is, JSON) with the admin token: the status and the JSON answer.
    fn post(&self, path: &str, body: String) -> (u16, Value) {
        let url = self.server.as_ref().unwrap().url(path);
        self.rt.block_on(async {
            let resp = self
                .client
                .post(url)
                .bearer_auth(crate::support::ADMIN)
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .unwrap();
            let status = resp.status().as_u16();
            (status, resp.json::<Value>().await.unwrap_or(Value::Null))
        })
    }
}

impl Drop for LiveServer {
    fn drop(&mut self) {
        if let Some(server) = self.server.take() {
            self.rt.block_on(server.stop());
        }
    }
}

/// Custom endpoint headers through a real server: saved as given (lower-cased) only when the
/// name is a short token and the value visible ASCII; refused with `{code, detail}` otherwise.
#[test]
fn custom_headers_are_saved_only_when_valid() {
    let live = LiveServer::start();
    let name = prop_oneof!["[A-Za-z0-9-]{1,20}", ".{0,20}", "[a-z]{120,140}"];
    let value = prop_oneof!["[ -~]{0,30}", ".{0,30}", "[ -~\\t]{1000,1030}"];
    let headers = proptest::collection::btree_map(name, value, 0..4);
    let mut runner = proptest::test_runner::TestRunner::new(cases(300));
    runner
        .run(&headers, |headers| {
            let body = json!({"url": "https://example.com/hook", "headers": headers});
            let (status, answer) = live.post("/v1/tenants/acme/endpoints", body.to_string());
            let valid = headers.iter().all(|(n, v)| {
                let lower = n.to_ascii_lowercase();
                (1..=128).contains(&n.len())
                    && n.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
                    && !chime::model::reserved_header(&lower)
                    && v.len() <= 1024
                    && v.bytes().all(|b| matches!(b, b' '..=b'~' | b'\t'))
            }) && {
                // Two spellings of one name are one header: refused as ambiguous.
                let names: std::collections::BTreeSet<_> =
                    headers.keys().map(|n| n.to_ascii_lowercase()).collect();
                names.len() == headers.len()
            };
            if status == 201 {
                prop_assert!(valid, "{body}");
                for (n, v) in &headers {
                    prop_assert_eq!(&answer["headers"][n.to_ascii_lowercase()], &json!(v));
                }
            } else {
                prop_assert_eq!(status, 422, "{}", answer);
                prop_assert!(answer["code"].is_string() && answer["detail"].is_string());
                prop_assert!(!valid, "{body} refused: {answer}");
            }
            Ok(())
        })
        .unwrap();
}

/// Ingest bodies through a real server: every answer is 202 or a `{code, detail}` refusal, and
/// the server keeps answering.
#[test]
fn ingest_bodies_are_accepted_or_refused_with_code_and_detail() {
    let live = LiveServer::start();
    let body = prop_oneof![
        json_ish(),
        json_value(5).prop_map(|d| json!({"event": "x", "data": d}).to_string()),
        (json_ish(), "[a-z_.]{0,10}")
            .prop_map(|(d, name)| format!(r#"{{"event":"{name}","data":{d}}}"#)),
    ];
    let mut runner = proptest::test_runner::TestRunner::new(cases(500));
    runner
        .run(&body, |body| {
            let (status, answer) = live.post("/v1/tenants/acme/events", body.clone());
            if status == 202 {
                prop_assert!(answer["id"].is_string(), "{answer}");
            } else {
                prop_assert!(
                    matches!(status, 400 | 413 | 422),
                    "{status} for {body:.200}"
                );
                prop_assert!(
                    answer["code"].is_string() && answer["detail"].is_string(),
                    "{answer}"
                );
            }
            Ok(())
        })
        .unwrap();
}
