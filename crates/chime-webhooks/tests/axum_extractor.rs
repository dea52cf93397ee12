//! The `VerifiedWebhook` extractor, driven in-process with `tower::ServiceExt::oneshot`.

use axum::Router;
use axum::body::Body;
use axum::extract::FromRef;
use axum::http::{Request, StatusCode};
use axum::routing::post;
use chime_webhooks::axum::VerifiedWebhook;
use chime_webhooks::{Secret, Verifier, sign};
use http_body_util::BodyExt;
use tower::ServiceExt;

#[derive(Clone)]
struct AppState {
    verifier: Verifier,
}

impl FromRef<AppState> for Verifier {
    fn from_ref(state: &AppState) -> Verifier {
        state.verifier.clone()
    }
}

#[derive(serde::Deserialize)]
struct OrderCreated {
    event: String,
    data: Order,
}

#[derive(serde::Deserialize)]
struct Order {
    order_id: u64,
}

async fn receive(hook: VerifiedWebhook<OrderCreated>) -> String {
    format!(
        "{} {} {} {} {}",
        hook.id,
        hook.timestamp,
        hook.payload.event,
        hook.payload.data.order_id,
        hook.body.len()
    )
}

fn app(secret: &Secret) -> Router {
    Router::new()
        .route("/hook", post(receive))
        .with_state(AppState {
            verifier: Verifier::new(secret.clone()),
        })
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn request(id: &str, ts: i64, sig: &str, body: &'static [u8]) -> Request<Body> {
    Request::post("/hook")
        .header("content-type", "application/json")
        .header("webhook-id", id)
        .header("webhook-timestamp", ts.to_string())
        .header("webhook-signature", sig)
        .body(Body::from(body))
        .unwrap()
}

async fn send(app: Router, req: Request<Body>) -> (StatusCode, String) {
    let res = app.oneshot(req).await.unwrap();
    let status = res.status();
    let body = res.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8(body.to_vec()).unwrap())
}

async fn rejection(app: Router, req: Request<Body>) -> (StatusCode, serde_json::Value) {
    let (status, body) = send(app, req).await;
    (
        status,
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}")),
    )
}

const BODY: &[u8] = br#"{"event":"order_created","data":{"order_id":1234,"amount":50}}"#;

#[tokio::test]
async fn valid_request_reaches_the_handler() {
    let secret = Secret::generate();
    let ts = now();
    let sig = sign(&secret, "evt_1", ts, BODY);
    let (status, body) = send(app(&secret), request("evt_1", ts, &sig, BODY)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        body,
        format!("evt_1 {ts} order_created 1234 {}", BODY.len())
    );
}

#[tokio::test]
async fn verifier_as_the_whole_state_and_default_payload_type() {
    async fn raw(hook: VerifiedWebhook) -> String {
        hook.payload["data"]["amount"].to_string()
    }
    let secret = Secret::generate();
    let app = Router::new()
        .route("/hook", post(raw))
        .with_state(Verifier::new(secret.clone()));
    let ts = now();
    let (status, body) = send(
        app,
        request("evt_1", ts, &sign(&secret, "evt_1", ts, BODY), BODY),
    )
    .await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "50"));
}

#[tokio::test]
async fn wrong_secret_is_401_with_an_explanation() {
    let ts = now();
    let sig = sign(&Secret::generate(), "evt_1", ts, BODY);
    let (status, json) =
        rejection(app(&Secret::generate()), request("evt_1", ts, &sig, BODY)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(json["code"], "invalid_signature");
    assert!(
        json["detail"].as_str().unwrap().contains("wrong secret"),
        "{json}"
    );
}

#[tokio::test]
async fn stale_and_headerless_requests_are_401() {
    let secret = Secret::generate();
    let ts = now() - 1000;
    let sig = sign(&secret, "evt_1", ts, BODY);
    let (status, json) = rejection(app(&secret), request("evt_1", ts, &sig, BODY)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(
        json["detail"]
            .as_str()
            .unwrap()
            .contains("s in the past; tolerance is 300 s"),
        "{json}"
    );

    let bare = Request::post("/hook").body(Body::from(BODY)).unwrap();
    let (status, json) = rejection(app(&secret), bare).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        json["detail"],
        "the webhook-id header is missing (and there is no svix-id header)"
    );
}

#[tokio::test]
async fn reformatted_body_is_reported_as_modified() {
    let secret = Secret::generate();
    let ts = now();
    let sig = sign(&secret, "evt_1", ts, BODY);
    let pretty: &'static [u8] = b"{\n  \"event\": \"order_created\",\n  \"data\": {\n    \"order_id\": 1234,\n    \"amount\": 50\n  }\n}";
    let (status, json) = rejection(app(&secret), request("evt_1", ts, &sig, pretty)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(json["code"], "invalid_signature");
    assert!(
        json["detail"]
            .as_str()
            .unwrap()
            .starts_with("the body differs from what was signed"),
        "{json}"
    );
}

#[tokio::test]
async fn signed_but_unexpected_json_is_400() {
    let secret = Secret::generate();
    let ts = now();
    for body in [&b"not json"[..], br#"{"event":"order_created"}"#] {
        let body: &'static [u8] = body;
        let sig = sign(&secret, "evt_1", ts, body);
        let (status, json) = rejection(app(&secret), request("evt_1", ts, &sig, body)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(json["code"], "invalid_json");
        assert!(
            json["detail"]
                .as_str()
                .unwrap()
                .starts_with("the body is correctly signed"),
            "{json}"
        );
    }
}
