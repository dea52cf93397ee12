//! A tenant's events, newest first, as a timeline: for `_chime` this is the operational
//! timeline (endpoints failing, recovering, disabled).

use axum::extract::{Path, Query, State};
use axum::response::Response;
use maud::html;

use super::or_failed;
use crate::api::types::{EventOut, ListOut};
use crate::ui::UiState;
use crate::ui::call::seg;
use crate::ui::layout::{page, when};
use crate::ui::web::{Session, html};

#[derive(Debug, Clone, Default, serde::Deserialize, serde::Serialize)]
pub struct EventFilters {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    event: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    cursor: Option<String>,
}

pub async fn list(
    State(state): State<UiState>,
    s: Session,
    Path(tenant): Path<String>,
    Query(mut f): Query<EventFilters>,
) -> Response {
    f.event = f.event.filter(|e| !e.trim().is_empty());
    f.cursor = f.cursor.filter(|c| !c.is_empty());
    let r = async {
        let q = serde_urlencoded::to_string(&f).unwrap_or_default();
        let events: ListOut<EventOut> = s
            .api
            .get(&format!("/v1/tenants/{}/events?limit=50&{q}", seg(&tenant)))
            .await?;
        let here = format!("{}/t/{}/events", state.base(), seg(&tenant));
        let title = if tenant == crate::model::SYSTEM_TENANT {
            "Operational events".to_owned()
        } else {
            format!("Events of {tenant}")
        };
        Ok(html(page(
            &state,
            &s,
            &title,
            html! {
                form.filters method="get" action=(here) role="search" {
                    label for="e-name" { "Event name" }
                    input #e-name name="event" type="text" value=(f.event.as_deref().unwrap_or(""));
                    button type="submit" { "Filter" }
                }
                @if events.data.is_empty() { p.muted { "No events." } }
                ol.timeline {
                    @for e in &events.data {
                        li {
                            time datetime=(e.timestamp) { (when(&e.timestamp)) }
                            " " strong { code { (e.event) } } " "
                            a href={ (state.base()) "/t/" (seg(&tenant)) "/deliveries?event_id=" (seg(&e.id)) } { (e.id) }
                            @if let Some(src) = &e.source_id {
                                " " span.badge { "from source " (src) @if let Some(ct) = &e.content_type { " (" (ct) ")" } }
                            }
                            @if e.purged_at.is_none() { pre { (e.data.get()) } } @else { p.muted { "payload removed by retention" } }
                        }
                    }
                }
                @if let Some(c) = &events.next_cursor {
                    p { a href={ (here) "?" (serde_urlencoded::to_string(EventFilters { cursor: Some(c.clone()), ..f.clone() }).unwrap_or_default()) } { "Older events →" } }
                }
            },
        )))
    }
    .await;
    or_failed(&state, r)
}
