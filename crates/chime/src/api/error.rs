//! The API's one error type. Every failure answers `{"code", "detail"}` with a stable machine
//! `code`; the status follows from the code through one table (`status_of`). A 5xx never shows
//! internal text: the cause is logged and the client sees a generic detail.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use crate::store::StoreError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    MalformedJson,
    /// Not valid HTTP: answered for hyper by `http_server`.
    MalformedRequest,
    RequestTimeout,
    UriTooLong,
    HeadersTooLarge,
    Unauthorized,
    Forbidden,
    NotFound,
    MethodNotAllowed,
    Conflict,
    PayloadTooLarge,
    InvalidRequest,
    RefusedTarget,
    /// An inbound request's signature (or credentials) did not verify.
    InvalidSignature,
    /// An inbound source's rate was exceeded.
    RateLimited,
    /// An inbound source's transformation failed on the request (a limit, an exception).
    TransformationFailed,
    Internal,
    Unavailable,
}

impl Code {
    pub fn as_str(self) -> &'static str {
        match self {
            Code::MalformedJson => "malformed_json",
            Code::MalformedRequest => "malformed_request",
            Code::RequestTimeout => "request_timeout",
            Code::UriTooLong => "uri_too_long",
            Code::HeadersTooLarge => "headers_too_large",
            Code::Unauthorized => "unauthorized",
            Code::Forbidden => "forbidden",
            Code::NotFound => "not_found",
            Code::MethodNotAllowed => "method_not_allowed",
            Code::Conflict => "conflict",
            Code::PayloadTooLarge => "payload_too_large",
            Code::InvalidRequest => "invalid_request",
            Code::RefusedTarget => "refused_target",
            Code::InvalidSignature => "invalid_signature",
            Code::RateLimited => "rate_limited",
            Code::TransformationFailed => "transformation_failed",
            Code::Internal => "internal",
            Code::Unavailable => "unavailable",
        }
    }

    pub fn status(self) -> StatusCode {
        match self {
            Code::MalformedJson | Code::MalformedRequest => StatusCode::BAD_REQUEST,
            Code::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            Code::UriTooLong => StatusCode::URI_TOO_LONG,
            Code::HeadersTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            Code::Unauthorized | Code::InvalidSignature => StatusCode::UNAUTHORIZED,
            Code::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            Code::Forbidden => StatusCode::FORBIDDEN,
            Code::NotFound => StatusCode::NOT_FOUND,
            Code::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Code::Conflict => StatusCode::CONFLICT,
            Code::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Code::InvalidRequest | Code::RefusedTarget | Code::TransformationFailed => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            Code::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

#[derive(Debug)]
pub struct ApiError {
    pub code: Code,
    pub detail: String,
}

impl ApiError {
    pub fn new(code: Code, detail: impl Into<String>) -> Self {
        Self {
            code,
            detail: detail.into(),
        }
    }

    pub fn invalid(detail: impl Into<String>) -> Self {
        Self::new(Code::InvalidRequest, detail)
    }

    pub fn not_found(what: &str) -> Self {
        Self::new(Code::NotFound, format!("{what} not found"))
    }

    /// A store error as the API answers it, a missing row being `what` not found:
    /// `.map_err(ApiError::or_not_found("delivery"))`.
    pub fn or_not_found(what: &'static str) -> impl Fn(StoreError) -> ApiError {
        move |e| match e {
            StoreError::NotFound => ApiError::not_found(what),
            other => other.into(),
        }
    }

    /// The same error with its detail prefixed (which field it is about).
    pub fn prefixed(self, prefix: &str) -> Self {
        Self {
            detail: format!("{prefix}{}", self.detail),
            ..self
        }
    }

    pub fn forbidden() -> Self {
        Self::new(Code::Forbidden, "this token may not access that resource")
    }
}

impl From<crate::model::Invalid> for ApiError {
    fn from(e: crate::model::Invalid) -> Self {
        Self::invalid(e.0)
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound => Self::new(Code::NotFound, "not found"),
            StoreError::Conflict(detail) => Self::new(Code::Conflict, detail),
            StoreError::Unavailable(cause) => {
                tracing::warn!(error = %cause, "storage unavailable while serving a request");
                Self::new(
                    Code::Unavailable,
                    "the database is unavailable; retry the request later",
                )
            }
            StoreError::Full(cause) => {
                tracing::error!(error = %cause, "the database is out of space");
                Self::new(
                    Code::Unavailable,
                    "the database has no space left, so nothing was stored; retry once an operator has freed space",
                )
            }
            StoreError::Backend(cause) => {
                tracing::error!(error = %cause, "storage failure while serving a request");
                Self::new(Code::Internal, "internal error")
            }
            // `filter::KnownFilters::publish` answers this itself; reaching here is a bug.
            StoreError::FiltersNeeded(_) => {
                tracing::error!("a publish bypassed filter evaluation");
                Self::new(Code::Internal, "internal error")
            }
        }
    }
}

impl ApiError {
    /// The `{code, detail}` body as text, for answers written below axum (`http_server`).
    pub fn body_text(&self) -> String {
        serde_json::to_string(&self.body()).expect("two strings serialise")
    }

    fn body(&self) -> super::types::ErrorOut {
        let detail = if self.code == Code::Internal {
            "internal error"
        } else {
            &self.detail
        };
        super::types::ErrorOut {
            code: self.code.as_str().to_owned(),
            detail: detail.to_owned(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.code.status(), Json(self.body())).into_response();
        if self.code == Code::RequestTimeout {
            // The rest of a late body may still arrive; the connection cannot be reused.
            response.headers_mut().insert(
                axum::http::header::CONNECTION,
                axum::http::HeaderValue::from_static("close"),
            );
        }
        response
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
