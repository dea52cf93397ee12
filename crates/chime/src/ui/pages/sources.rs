//! A tenant's inbound sources: where each provider posts, how its requests are verified, and
//! what it refused lately (the reason in words, as the provider's request was answered).
//! Read-only: sources are made and changed through the API and `chime source`.

use axum::extract::{Path, State};
use axum::response::Response;
use maud::html;

use super::or_failed;
use crate::api::types::{ListOut, RejectionOut, SourceOut};
use crate::ui::UiState;
use crate::ui::call::seg;
use crate::ui::layout::{page, when};
use crate::ui::web::{Session, html};

pub async fn list(
    State(state): State<UiState>,
    s: Session,
    Path(tenant): Path<String>,
) -> Response {
    let r = async {
        let path = format!("/v1/tenants/{}/sources", seg(&tenant));
        let sources: ListOut<SourceOut> = s.api.get(&format!("{path}?limit=100")).await?;
        let mut rejected = Vec::with_capacity(sources.data.len());
        for src in &sources.data {
            let r: ListOut<RejectionOut> = s
                .api
                .get(&format!("{path}/{}/rejections", seg(&src.id)))
                .await?;
            rejected.push(r.data);
        }
        Ok(html(page(
            &state,
            &s,
            &format!("Sources of {tenant}"),
            html! {
                p.muted { "Providers post to a source's ingest URL; chime verifies, stores and delivers what they send to this tenant's endpoints. Make and change sources with the API or " code { "chime source" } "." }
                @if sources.data.is_empty() { p.muted { "No sources." } }
                @for (src, rejections) in sources.data.iter().zip(&rejected) {
                    section.card aria-labelledby={ "src-" (src.id) } {
                        h2 id={ "src-" (src.id) } { (src.name) " " span.muted { (src.id) } }
                        dl.facts {
                            dt { "Ingest URL" } dd.url { code { (src.ingest_url) } }
                            dt { "Verification" } dd { (src.scheme) " (" (src.secrets) " secret" @if src.secrets != 1 { "s" } ")" }
                            dt { "Event name" } dd { code { (src.event_name) } }
                            dt { "Dedupe key" } dd { @if let Some(k) = &src.dedupe_key { code { (k) } } @else { "none" } }
                            @if let Some(n) = src.rate_limit_per_s { dt { "Rate limit" } dd { (n) " per second" } }
                            @if let Some(n) = src.max_body_bytes { dt { "Largest body" } dd { (n) " bytes" } }
                            dt { "Created" } dd { (when(&src.created_at)) }
                        }
                        p { a href={ (state.base()) "/t/" (seg(&tenant)) "/events" } { "Events received" } }
                        @if rejections.is_empty() {
                            p.muted { "No request refused lately." }
                        } @else {
                            table {
                                caption { "Refused lately (newest first, this node)" }
                                thead { tr { th scope="col" { "When" } th scope="col" { "Code" } th scope="col" { "Why" } } }
                                tbody {
                                    @for r in rejections {
                                        tr { td { (when(&r.at)) } td { code { (r.code) } } td { (r.detail) } }
                                    }
                                }
                            }
                        }
                    }
                }
            },
        )))
    }
    .await;
    or_failed(&state, r)
}
