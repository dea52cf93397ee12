//! Every answer a test gets through `TestServer::call` is checked against chime's own
//! OpenAPI document: its status must be documented for that route and method, and its body
//! must match the documented schema. So the whole suite, not a few hand-picked examples,
//! keeps the document honest.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use serde_json::Value;

/// The document, as JSON.
fn document() -> &'static Value {
    static DOC: OnceLock<Value> = OnceLock::new();
    DOC.get_or_init(|| {
        serde_json::to_value(chime::api::openapi_document()).expect("the document is JSON")
    })
}

/// The documented route template (`/v1/tenants/{tenant}`) that `path` is an instance of:
/// the one with the most literal segments in common, as the router picks it.
pub fn template_of(path: &str) -> Option<&'static str> {
    let path = path.split('?').next().unwrap_or(path);
    let segments: Vec<&str> = path.split('/').collect();
    document()["paths"]
        .as_object()?
        .keys()
        .filter_map(|t| {
            let ts: Vec<&str> = t.split('/').collect();
            if ts.len() != segments.len() {
                return None;
            }
            let mut literal = 0;
            for (t, s) in ts.iter().zip(&segments) {
                if t.starts_with('{') {
                    if s.is_empty() {
                        return None;
                    }
                } else if t == s {
                    literal += 1;
                } else {
                    return None;
                }
            }
            Some((literal, t.as_str()))
        })
        .max_by_key(|(literal, _)| *literal)
        .map(|(_, t)| t)
}

type Key = (String, &'static str, u16);

/// What the document says of one answer's body.
#[derive(Clone)]
enum Body {
    /// JSON matching this schema.
    Json(std::sync::Arc<jsonschema::Validator>),
    /// Another media type (the Prometheus text of /metrics): only the status is checked.
    Other,
    /// No body.
    Empty,
}

/// Compiled response schemas, by (method, template, status).
fn validators() -> &'static Mutex<HashMap<Key, Body>> {
    static V: OnceLock<Mutex<HashMap<Key, Body>>> = OnceLock::new();
    V.get_or_init(Default::default)
}

/// A body for a panic message: its start only.
fn shown(body: &Value) -> String {
    let text = body.to_string();
    match text.char_indices().nth(400) {
        Some((i, _)) => format!("{}…", &text[..i]),
        None => text,
    }
}

/// Panics when an answer does not conform to the document. Routes the document does not
/// have (a 404 for an unknown path) and methods it does not list (a 405) are not checked.
pub fn check(method: &str, path: &str, status: u16, body: &Value) {
    let Some(template) = template_of(path) else {
        return;
    };
    let method = method.to_ascii_lowercase();
    let Some(op) = document()["paths"][template].get(&method) else {
        return;
    };
    let key = (method.clone(), template, status);
    let validator = {
        // A cache, so a panic of another test while it was held leaves it usable: one
        // test's failure must not fail every test after it (cargo test runs them in one
        // process).
        let mut cache = validators()
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(v) = cache.get(&key) {
            v.clone()
        } else {
            let Some(response) = op["responses"].get(status.to_string()) else {
                panic!(
                    "{} {path} answered {status}, which the OpenAPI document does not list for \
                     {} {template}: {}",
                    shown(body),
                    method.to_uppercase(),
                    method.to_uppercase()
                );
            };
            let content = response["content"].as_object();
            let v = match content.and_then(|c| c.get("application/json")) {
                None if content.is_some() => Body::Other,
                None => Body::Empty,
                Some(json) => json["schema"].as_object().map_or(Body::Empty, |schema| {
                    // The schema, with the document's components beside it so that its
                    // `#/components/schemas/…` references resolve.
                    let mut root = Value::Object(schema.clone());
                    root["components"] = document()["components"].clone();
                    Body::Json(std::sync::Arc::new(
                        jsonschema::validator_for(&root).expect("a documented schema compiles"),
                    ))
                }),
            };
            cache.insert(key, v.clone());
            v
        }
    };
    match validator {
        Body::Other => {}
        Body::Json(v) => {
            let errors: Vec<String> = v.iter_errors(body).map(|e| e.to_string()).collect();
            assert!(
                errors.is_empty(),
                "{} {path} answered {status} with a body that does not match the OpenAPI \
                 document ({template}): {errors:?}\nbody: {}",
                method.to_uppercase(),
                shown(body)
            );
        }
        Body::Empty => assert!(
            body.is_null(),
            "{} {path} answered {status} with a body, but the document says it has none: {}",
            method.to_uppercase(),
            shown(body)
        ),
    }
}

/// Every (method, template) the document lists.
pub fn operations() -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (template, item) in document()["paths"].as_object().expect("paths") {
        for method in ["get", "post", "put", "patch", "delete"] {
            if item.get(method).is_some() {
                out.push((method.to_owned(), template.clone()));
            }
        }
    }
    out
}

#[test]
fn templates_match_the_most_specific_route() {
    assert_eq!(
        template_of("/v1/tenants/acme/endpoints/ep_1/secret"),
        Some("/v1/tenants/{tenant}/endpoints/{endpoint}/secret")
    );
    assert_eq!(
        template_of("/v1/tenants/acme?x=1"),
        Some("/v1/tenants/{tenant}")
    );
    assert_eq!(template_of("/v1/nothing/here"), None);
}

#[test]
#[should_panic(expected = "does not match the OpenAPI document")]
fn a_body_of_the_wrong_shape_is_caught() {
    check(
        "GET",
        "/v1/tenants/acme",
        200,
        &serde_json::json!({ "id": 5 }),
    );
}

#[test]
#[should_panic(expected = "does not list")]
fn an_undocumented_status_is_caught() {
    check("GET", "/v1/tenants/acme", 418, &Value::Null);
}
