//! The pages' way to data and actions: the API router, called in-process as the session's
//! principal (`api::Delegated`). The request takes the API's own path (validation, tenant
//! checks, store calls, dispatcher hand-over), so the dashboard and the portal can do
//! nothing the API would refuse, and no rule is written twice.

use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use serde::de::DeserializeOwned;
use tower::ServiceExt;

use crate::api::types::ErrorOut;
use crate::api::{Delegated, Principal};

/// An answer of the API that was not a success, as a page shows it.
#[derive(Debug, Clone)]
pub struct Failed {
    pub status: StatusCode,
    pub detail: String,
}

impl Failed {
    /// A page or form action that does not exist (an edited URL).
    pub fn no_such_action() -> Self {
        Self::new(StatusCode::NOT_FOUND, "there is no such action")
    }

    pub fn new(status: StatusCode, detail: impl Into<String>) -> Self {
        Self {
            status,
            detail: detail.into(),
        }
    }
}

pub type Answer<T> = Result<T, Failed>;

/// One path segment, percent-encoded: an id typed into a URL cannot step into another route.
pub fn seg(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The API as one principal sees it.
#[derive(Clone)]
pub struct Api {
    router: Router,
    principal: Principal,
}

impl Api {
    pub fn new(router: Router, principal: Principal) -> Self {
        Self { router, principal }
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Answer<(StatusCode, axum::body::Bytes)> {
        let mut req = Request::builder().method(method).uri(path);
        let body = match body {
            Some(v) => {
                req = req.header("content-type", "application/json");
                Body::from(serde_json::to_vec(&v).expect("JSON serializes"))
            }
            None => Body::empty(),
        };
        let mut req = req
            .body(body)
            .map_err(|e| Failed::new(StatusCode::BAD_REQUEST, format!("bad request: {e}")))?;
        req.extensions_mut()
            .insert(Delegated(self.principal.clone()));
        let res = self
            .router
            .clone()
            .oneshot(req)
            .await
            .unwrap_or_else(|never| match never {});
        let status = res.status();
        let bytes = axum::body::to_bytes(res.into_body(), usize::MAX)
            .await
            .map_err(|e| Failed::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
        if status.is_success() {
            return Ok((status, bytes));
        }
        let detail = serde_json::from_slice::<ErrorOut>(&bytes)
            .map(|e| e.detail)
            .unwrap_or_else(|_| status.to_string());
        Err(Failed::new(status, detail))
    }

    fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Answer<T> {
        serde_json::from_slice(bytes).map_err(|e| {
            Failed::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("unexpected answer from the API: {e}"),
            )
        })
    }

    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Answer<T> {
        let (_, b) = self.send(Method::GET, path, None).await?;
        Self::parse(&b)
    }

    pub async fn post<T: DeserializeOwned>(
        &self,
        path: &str,
        body: serde_json::Value,
    ) -> Answer<T> {
        let (_, b) = self.send(Method::POST, path, Some(body)).await?;
        Self::parse(&b)
    }

    pub async fn patch<T: DeserializeOwned>(
        &self,
        path: &str,
        body: serde_json::Value,
    ) -> Answer<T> {
        let (_, b) = self.send(Method::PATCH, path, Some(body)).await?;
        Self::parse(&b)
    }

    pub async fn delete(&self, path: &str) -> Answer<()> {
        self.send(Method::DELETE, path, None).await.map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn segments_cannot_leave_their_place() {
        assert_eq!(super::seg("acme"), "acme");
        assert_eq!(super::seg("../b"), "..%2Fb");
        assert_eq!(super::seg("a?x=1#f"), "a%3Fx%3D1%23f");
    }
}
