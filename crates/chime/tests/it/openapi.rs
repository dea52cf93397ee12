//! The OpenAPI document against the real server: it is served without a token, and a walk
//! through every documented operation (answers checked by `support::openapi`, as every
//! `TestServer::call` is) leaves no operation unvisited, so a new route cannot go untested
//! against its documentation.

use std::collections::BTreeSet;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::openapi::{operations, template_of};
use crate::support::{Fixture, Opts, TestServer};

/// Calls through the server (so each answer is checked) and notes which operation it was.
struct Walk<'a> {
    server: &'a TestServer,
    visited: BTreeSet<(String, String)>,
}

impl Walk<'_> {
    async fn call(&mut self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let (s, b) = self.server.admin(method, path, body).await;
        let template = template_of(path).unwrap_or_else(|| panic!("{path} is not documented"));
        self.visited
            .insert((method.to_ascii_lowercase(), template.to_owned()));
        (s.as_u16(), b)
    }
}

async fn every_documented_operation_answers_as_documented() {
    let fx = Fixture::start(Opts::default(), "/h").await;
    let server = &fx.server;
    let mut w = Walk {
        server,
        visited: BTreeSet::new(),
    };
    let ep = fx.endpoint.clone();
    let t = "/v1/tenants/acme";

    assert_eq!(w.call("GET", "/healthz", None).await.0, 200);
    assert_eq!(w.call("GET", "/readyz", None).await.0, 200);
    let (s, doc) = w.call("GET", "/v1/openapi.json", None).await;
    assert_eq!(s, 200);
    assert_eq!(doc["openapi"], "3.1.0");

    let (s, metrics_token) = w.call("POST", "/v1/metrics-tokens", None).await;
    assert_eq!(s, 201);
    assert_eq!(metrics_token["scope"], "metrics");
    assert_eq!(w.call("GET", "/metrics", None).await.0, 200);

    assert_eq!(
        w.call("POST", "/v1/tenants", Some(json!({"id": "globex"})))
            .await
            .0,
        201
    );
    assert_eq!(
        w.call("POST", "/v1/tenants", Some(json!({"id": "globex"})))
            .await
            .0,
        409
    );
    assert_eq!(w.call("GET", "/v1/tenants?limit=1", None).await.0, 200);
    assert_eq!(w.call("GET", "/v1/tenants/globex", None).await.0, 200);
    assert_eq!(
        w.call(
            "POST",
            "/v1/tenants/globex/portal-sessions",
            Some(json!({"expires_in_s": 60, "read_only": true}))
        )
        .await
        .0,
        201
    );
    assert_eq!(
        w.call(
            "POST",
            "/v1/tenants/globex/portal-sessions",
            Some(json!({"expires_in_s": 0}))
        )
        .await
        .0,
        422
    );
    assert_eq!(w.call("POST", "/v1/dashboard-links", None).await.0, 201);
    assert_eq!(
        w.call("POST", "/v1/tenants/globex/tokens", None).await.0,
        201
    );

    let ev_type = json!({"name": "order.created", "schema": {"type": "object"}});
    assert_eq!(
        w.call("POST", "/v1/event-types", Some(ev_type.clone()))
            .await
            .0,
        201
    );
    assert_eq!(
        w.call("POST", "/v1/event-types", Some(ev_type)).await.0,
        409
    );
    assert_eq!(w.call("GET", "/v1/event-types", None).await.0, 200);
    assert_eq!(
        w.call("GET", "/v1/event-types/order.created", None).await.0,
        200
    );
    let patch = json!({"description": "An order", "schema": null});
    assert_eq!(
        w.call("PATCH", "/v1/event-types/order.created", Some(patch))
            .await
            .0,
        200
    );

    let (s, created) = w
        .call(
            "POST",
            &format!("{t}/endpoints"),
            Some(json!({"url": fx.rx.url("/b"), "signature": "ed25519", "ordered": true})),
        )
        .await;
    assert_eq!(s, 201);
    let ep2 = created["id"].as_str().unwrap().to_owned();
    assert_eq!(w.call("GET", &format!("{t}/endpoints"), None).await.0, 200);
    assert_eq!(
        w.call("GET", &format!("{t}/endpoints/{ep}"), None).await.0,
        200
    );
    assert_eq!(
        w.call("GET", &format!("{t}/endpoints/{ep}/secret"), None)
            .await
            .0,
        200
    );
    let rotate = json!({"grace_period_seconds": 60});
    assert_eq!(
        w.call(
            "POST",
            &format!("{t}/endpoints/{ep2}/secret/rotate"),
            Some(rotate)
        )
        .await
        .0,
        200
    );
    let patch = json!({"description": "second", "max_in_flight": null, "headers": {"X-A": "1"}});
    assert_eq!(
        w.call("PATCH", &format!("{t}/endpoints/{ep2}"), Some(patch))
            .await
            .0,
        200
    );

    let src = json!({"name": "hooks", "verify": {"scheme": "none"}});
    let (s, created) = w.call("POST", &format!("{t}/sources"), Some(src)).await;
    assert_eq!(s, 201, "{created}");
    let sid = created["id"].as_str().unwrap().to_owned();
    let key = created["ingest_url"]
        .as_str()
        .unwrap()
        .rsplit('/')
        .next()
        .unwrap()
        .to_owned();
    assert_eq!(w.call("GET", &format!("{t}/sources"), None).await.0, 200);
    assert_eq!(
        w.call("GET", &format!("{t}/sources/{sid}"), None).await.0,
        200
    );
    let patch = json!({"rate_limit_per_s": 100});
    assert_eq!(
        w.call("PATCH", &format!("{t}/sources/{sid}"), Some(patch))
            .await
            .0,
        200
    );
    let event = json!({"event": "x"});
    assert_eq!(
        w.call("POST", &format!("/in/{key}"), Some(event)).await.0,
        202
    );
    assert_eq!(
        w.call("GET", &format!("{t}/sources/{sid}/rejections"), None)
            .await
            .0,
        200
    );
    let sample = json!({"event": "charge.succeeded", "data": {"id": "evt_1"},
        "code": "function handler(w) { w.event = 'payment.in'; return w; }"});
    assert_eq!(
        w.call(
            "POST",
            &format!("{t}/sources/{sid}/transformation/test"),
            Some(sample)
        )
        .await
        .0,
        200
    );
    let (s, rotated) = w
        .call("POST", &format!("{t}/sources/{sid}/rotate-url"), None)
        .await;
    assert_eq!(s, 200, "{rotated}");
    assert_eq!(
        w.call("DELETE", &format!("{t}/sources/{sid}"), None)
            .await
            .0,
        204
    );

    let branding =
        json!({"name": "Globex", "branding": {"name": "Globex Hooks", "accent": "#123"}});
    assert_eq!(
        w.call("PATCH", "/v1/tenants/globex", Some(branding))
            .await
            .0,
        200
    );
    assert_eq!(
        w.call("POST", &format!("{t}/endpoints/{ep}/test"), None)
            .await
            .0,
        202
    );
    let sample = json!({"event": "order.created", "data": {"n": 1},
        "code": "function handler(w) { w.data = { n: w.data.n + 1 }; return w; }"});
    assert_eq!(
        w.call(
            "POST",
            &format!("{t}/endpoints/{ep}/transformation/test"),
            Some(sample)
        )
        .await
        .0,
        200
    );

    let (s, published) = w
        .call(
            "POST",
            &format!("{t}/events"),
            Some(json!({"event": "order.created", "data": {"n": 1}})),
        )
        .await;
    assert_eq!(s, 202);
    let event = published["id"].as_str().unwrap().to_owned();
    let delivery = published["deliveries"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    server.wait_status("acme", &delivery, "succeeded").await;
    assert_eq!(w.call("GET", &format!("{t}/events"), None).await.0, 200);
    assert_eq!(
        w.call("GET", &format!("{t}/events/{event}"), None).await.0,
        200
    );
    assert_eq!(
        w.call("GET", &format!("{t}/deliveries?status=succeeded"), None)
            .await
            .0,
        200
    );
    assert_eq!(
        w.call("GET", &format!("{t}/deliveries/{delivery}"), None)
            .await
            .0,
        200
    );
    assert_eq!(
        w.call("GET", &format!("{t}/deliveries/{delivery}/attempts"), None)
            .await
            .0,
        200
    );
    assert_eq!(
        w.call("POST", &format!("{t}/deliveries/{delivery}/retry"), None)
            .await
            .0,
        202
    );
    server.wait_status("acme", &delivery, "succeeded").await;
    assert_eq!(
        w.call("POST", &format!("{t}/deliveries/{delivery}/skip"), None)
            .await
            .0,
        409
    );
    let replay = json!({"status": ["succeeded"], "dry_run": true});
    assert_eq!(
        w.call("POST", &format!("{t}/replay"), Some(replay)).await.0,
        200
    );

    // Errors answered the same way for every route.
    assert_eq!(
        w.call("GET", &format!("{t}/deliveries/dlv_nope"), None)
            .await
            .0,
        404
    );
    assert_eq!(
        w.call("GET", &format!("{t}/deliveries?limit=0"), None)
            .await
            .0,
        422
    );
    assert_eq!(
        w.call(
            "POST",
            &format!("{t}/endpoints"),
            Some(json!({"url": "ftp://x"}))
        )
        .await
        .0,
        422
    );
    let (s, _) = server
        .call("GET", &format!("{t}/events"), Some("wrong"), None)
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);

    assert_eq!(
        w.call("DELETE", &format!("{t}/endpoints/{ep2}"), None)
            .await
            .0,
        204
    );
    assert_eq!(
        w.call("DELETE", "/v1/event-types/order.created", None)
            .await
            .0,
        204
    );
    assert_eq!(w.call("DELETE", "/v1/tenants/globex", None).await.0, 204);

    let missing: Vec<_> = operations()
        .into_iter()
        .filter(|op| !w.visited.contains(op))
        .collect();
    assert!(
        missing.is_empty(),
        "documented operations this walk never called: {missing:?}"
    );
    fx.stop().await;
}

/// The document is public (no token) and is the one the code generates.
async fn the_document_is_served_without_a_token() {
    let fx = Fixture::start(Opts::default(), "/h").await;
    let resp = reqwest::get(fx.server.url("/v1/openapi.json"))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["content-type"], "application/json");
    let served: Value = resp.json().await.unwrap();
    let generated = serde_json::to_value(chime::api::openapi_document()).unwrap();
    assert_eq!(served, generated);
    fx.stop().await;
}

crate::support::on_both_backends!(
    every_documented_operation_answers_as_documented,
    the_document_is_served_without_a_token,
);
