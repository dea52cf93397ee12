//! The pages, one module per noun. Each handler takes the `Session` (or a checked `Post`)
//! and calls the API through `session.api`.

pub mod deliveries;
pub mod endpoints;
pub mod event_types;
pub mod events;
pub mod overview;
pub mod reference;
pub mod signin;
pub mod sources;
pub mod tenants;
pub mod transformation;

use axum::response::Response;

use super::UiState;
use super::call::Answer;
use super::web::failed;

/// The page, or the API's refusal as a page.
pub fn or_failed(state: &UiState, r: Answer<Response>) -> Response {
    r.unwrap_or_else(|f| failed(state, f))
}
