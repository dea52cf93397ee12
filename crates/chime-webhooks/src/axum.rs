//! [`VerifiedWebhook`]: an axum extractor that verifies a Standard Webhooks request before the
//! handler runs (feature `axum`).
//!
//! The [`Verifier`] comes from the router state through [`FromRef`], so one state can hold it
//! next to everything else. A refused request never reaches the handler: it is answered with
//! `401 {"code":"invalid_signature","detail":"<why, in words>"}`, or `400
//! {"code":"invalid_json",…}` when a correctly signed body does not deserialize into `T`.
//!
//! ```
//! use axum::{Router, extract::FromRef, routing::post};
//! use chime_webhooks::{Secret, Verifier, axum::VerifiedWebhook};
//!
//! #[derive(Clone)]
//! struct AppState {
//!     verifier: Verifier,
//! }
//!
//! impl FromRef<AppState> for Verifier {
//!     fn from_ref(state: &AppState) -> Verifier {
//!         state.verifier.clone()
//!     }
//! }
//!
//! #[derive(serde::Deserialize)]
//! struct OrderCreated {
//!     order_id: u64,
//! }
//!
//! async fn receive(hook: VerifiedWebhook<OrderCreated>) -> String {
//!     format!("{} is order {}", hook.id, hook.payload.order_id)
//! }
//!
//! let secret = Secret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
//! let app: Router = Router::new()
//!     .route("/webhooks", post(receive))
//!     .with_state(AppState { verifier: Verifier::new(secret) });
//! ```

use axum::body::Bytes;
use axum::extract::{FromRef, FromRequest, Request};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;

use crate::error::VerifyError;
use crate::headers::Headers;
use crate::verify::Verifier;

/// A request whose signature and timestamp checked out, with its body deserialized.
///
/// It reads the body, so it must be the handler's last argument.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct VerifiedWebhook<T = serde_json::Value> {
    /// The `webhook-id`: the same on every retry, so it is the de-duplication key.
    pub id: String,
    /// The signed unix timestamp of this attempt.
    pub timestamp: i64,
    /// The body, deserialized after verification.
    pub payload: T,
    /// The body exactly as received and verified.
    pub body: Bytes,
}

/// Why [`VerifiedWebhook`] refused a request; answers as `{"code": …, "detail": …}`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WebhookRejection {
    /// 401 `invalid_signature`: the signature, its headers or the timestamp failed.
    #[error(transparent)]
    InvalidSignature(VerifyError),
    /// 400 `invalid_json`: correctly signed, but not the JSON the handler expects.
    #[error("the body is correctly signed but is not the JSON expected: {0}")]
    InvalidJson(String),
    /// The body could not be read (too large, connection dropped); answered with its status.
    #[error("the body could not be read: {detail}")]
    Body {
        /// The status axum chose for the failure.
        status: StatusCode,
        /// axum's explanation.
        detail: String,
    },
}

impl WebhookRejection {
    /// The HTTP status this rejection answers with.
    pub fn status(&self) -> StatusCode {
        match self {
            WebhookRejection::InvalidSignature(_) => StatusCode::UNAUTHORIZED,
            WebhookRejection::InvalidJson(_) => StatusCode::BAD_REQUEST,
            WebhookRejection::Body { status, .. } => *status,
        }
    }

    /// The stable `code` of the JSON answer.
    pub fn code(&self) -> &'static str {
        match self {
            WebhookRejection::InvalidSignature(_) => "invalid_signature",
            WebhookRejection::InvalidJson(_) => "invalid_json",
            WebhookRejection::Body { .. } => "invalid_body",
        }
    }
}

impl IntoResponse for WebhookRejection {
    fn into_response(self) -> Response {
        let detail = match &self {
            WebhookRejection::InvalidSignature(err) => err.to_string(),
            other => other.to_string(),
        };
        let body = serde_json::json!({ "code": self.code(), "detail": detail }).to_string();
        (
            self.status(),
            [(header::CONTENT_TYPE, "application/json")],
            body,
        )
            .into_response()
    }
}

impl<S, T> FromRequest<S> for VerifiedWebhook<T>
where
    S: Send + Sync,
    Verifier: FromRef<S>,
    T: DeserializeOwned,
{
    type Rejection = WebhookRejection;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let verifier = Verifier::from_ref(state);
        let headers = Headers::from(req.headers());
        let body =
            Bytes::from_request(req, state)
                .await
                .map_err(|rejection| WebhookRejection::Body {
                    status: rejection.status(),
                    detail: rejection.body_text(),
                })?;
        let message = verifier
            .verify(&headers, &body)
            .map_err(WebhookRejection::InvalidSignature)?;
        // Deserialized only after verification: unsigned input never reaches a parser for T.
        let payload = serde_json::from_slice(&body)
            .map_err(|err| WebhookRejection::InvalidJson(err.to_string()))?;
        Ok(Self {
            id: message.id,
            timestamp: message.timestamp,
            payload,
            body,
        })
    }
}
