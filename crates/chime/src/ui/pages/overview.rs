//! The overview: deliveries per minute (last hour) and per hour (last day) by outcome,
//! publish → success latency, the backlog, failing and disabled endpoints, the dead letters.
//!
//! Read through the API like every page, from the newest deliveries of each tenant, up to
//! `SCAN` per tenant and question: on a busy server the numbers say "at least", and the
//! page says so.

use axum::extract::State;
use axum::response::{IntoResponse, Redirect, Response};
use maud::{Markup, html};

use super::or_failed;
use crate::api::types::{DeliveryOut, EndpointOut, ListOut, TenantOut};
use crate::store::DeliveryStatus;
use crate::ui::UiState;
use crate::ui::call::{Answer, Api, seg};
use crate::ui::chart::{Bar, quantile, stacked};
use crate::ui::layout::page;
use crate::ui::session::Area;
use crate::ui::web::{Session, html};

/// Most deliveries read per tenant and question.
const SCAN: usize = 2000;
/// Most tenants the overview reads.
const TENANTS: usize = 50;

fn millis(rfc3339: &str) -> i64 {
    time::OffsetDateTime::parse(rfc3339, &time::format_description::well_known::Rfc3339)
        .map(|t| (t.unix_timestamp_nanos() / 1_000_000) as i64)
        .unwrap_or(0)
}

fn slot(s: DeliveryStatus) -> usize {
    match s {
        DeliveryStatus::Succeeded => 0,
        DeliveryStatus::Pending => 1,
        DeliveryStatus::Failed => 2,
        DeliveryStatus::Skipped => 3,
    }
}

#[derive(Default)]
struct Stats {
    minutes: Vec<Bar>,
    hours: Vec<Bar>,
    latencies: Vec<i64>,
    due_now: usize,
    scheduled: usize,
    dead: usize,
    /// Some scan stopped at `SCAN`.
    capped: bool,
    troubled: Vec<EndpointOut>,
    tenants: usize,
}

/// Reads newest-first pages of `query` until `keep` says stop or `SCAN` rows were read.
async fn scan(
    api: &Api,
    tenant: &str,
    query: &str,
    mut keep: impl FnMut(&DeliveryOut) -> bool,
) -> Answer<bool> {
    let mut cursor: Option<String> = None;
    let mut read = 0;
    loop {
        let mut path = format!("/v1/tenants/{}/deliveries?limit=250{query}", seg(tenant));
        if let Some(c) = &cursor {
            path.push_str(&format!("&cursor={}", seg(c)));
        }
        let page: ListOut<DeliveryOut> = api.get(&path).await?;
        for d in &page.data {
            read += 1;
            if !keep(d) {
                return Ok(false);
            }
        }
        match page.next_cursor {
            Some(c) if read < SCAN => cursor = Some(c),
            Some(_) => return Ok(true),
            None => return Ok(false),
        }
    }
}

async fn gather(api: &Api, tenants: &[String]) -> Answer<Stats> {
    let now = crate::model::now_millis();
    let minute = 60_000;
    let hour = 3_600_000;
    let label = |t: i64| crate::ui::layout::when(&crate::model::format_time(t));
    let mut st = Stats {
        minutes: (0..60)
            .map(|i| Bar {
                label: label(now - (59 - i) * minute),
                ..Default::default()
            })
            .collect(),
        hours: (0..24)
            .map(|i| Bar {
                label: label(now - (23 - i) * hour),
                ..Default::default()
            })
            .collect(),
        tenants: tenants.len(),
        ..Default::default()
    };
    for t in tenants {
        let capped = scan(api, t, "", |d| {
            let at = millis(&d.created_at);
            let age = now - at;
            if age > 24 * hour {
                return false;
            }
            let s = slot(d.status);
            if age < 60 * minute {
                st.minutes[59 - (age / minute) as usize].counts[s] += 1;
            }
            st.hours[23 - (age / hour).min(23) as usize].counts[s] += 1;
            if d.status == DeliveryStatus::Succeeded {
                st.latencies.push(millis(&d.updated_at) - at);
            }
            true
        })
        .await?;
        st.capped |= capped;
        st.capped |= scan(api, t, "&status=pending", |d| {
            match d.next_attempt_at.as_deref().map(millis) {
                Some(at) if at > now => st.scheduled += 1,
                _ => st.due_now += 1,
            }
            true
        })
        .await?;
        st.capped |= scan(api, t, "&status=failed", |_| {
            st.dead += 1;
            true
        })
        .await?;
        let eps: ListOut<EndpointOut> = api
            .get(&format!("/v1/tenants/{}/endpoints?limit=250", seg(t)))
            .await?;
        st.troubled.extend(
            eps.data
                .into_iter()
                .filter(|e| !e.enabled || e.failing_since.is_some()),
        );
    }
    st.latencies.sort_unstable();
    Ok(st)
}

fn panel(base: &str, st: &Stats) -> Markup {
    let ms = |q| {
        quantile(&st.latencies, q)
            .map(|v| format!("{v} ms"))
            .unwrap_or_else(|| "–".into())
    };
    let at_least = if st.capped { "≥ " } else { "" };
    html! {
        div.cards {
            div.card { h2 { "Backlog due now" } p.big { (at_least) (st.due_now) } }
            div.card { h2 { "Scheduled for retry" } p.big { (at_least) (st.scheduled) } }
            div.card { h2 { "Dead letters" } p.big { (at_least) (st.dead) } }
            div.card {
                h2 { "Publish → success" }
                p { "p50 " strong { (ms(0.5)) } ", p90 " strong { (ms(0.9)) } ", p99 " strong { (ms(0.99)) } }
            }
        }
        (stacked("Deliveries per minute, last hour", &st.minutes))
        (stacked("Deliveries per hour, last day", &st.hours))
        h2 { "Endpoints failing or disabled" }
        @if st.troubled.is_empty() {
            p.muted { "None." }
        } @else {
            table {
                thead { tr { th scope="col" { "Endpoint" } th scope="col" { "Tenant" } th scope="col" { "Why" } } }
                tbody {
                    @for e in &st.troubled {
                        tr {
                            td { a href={ (base) "/t/" (seg(&e.tenant_id)) "/endpoints/" (seg(&e.id)) } { (e.id) } }
                            td { (e.tenant_id) }
                            td {
                                @if !e.enabled { "disabled: " (e.disabled_reason.as_deref().unwrap_or("by an operator")) }
                                @else if let Some(s) = &e.failing_since { "failing since " (crate::ui::layout::when(s)) }
                            }
                        }
                    }
                }
            }
        }
        @if st.capped {
            p.muted { "Counts marked ≥ stopped after the newest " (SCAN) " deliveries of a tenant." }
        }
    }
}

async fn tenants_of(s: &Session) -> Answer<Vec<String>> {
    match &s.claims.tenant {
        Some(t) => Ok(vec![t.clone()]),
        None => {
            let l: ListOut<TenantOut> = s.api.get(&format!("/v1/tenants?limit={TENANTS}")).await?;
            Ok(l.data.into_iter().map(|t| t.id).collect())
        }
    }
}

pub async fn home(State(state): State<UiState>, s: Session) -> Response {
    if state.area == Area::Portal {
        let t = s.claims.tenant.clone().unwrap_or_default();
        return Redirect::to(&format!("/portal/t/{}", seg(&t))).into_response();
    }
    let r = async {
        let tenants = tenants_of(&s).await?;
        let st = gather(&s.api, &tenants).await?;
        let base = state.base();
        Ok(html(page(
            &state,
            &s,
            "Overview",
            html! {
                p.muted { (st.tenants) " tenant(s). Updates live." }
                div #overview data-live={ (base) "/overview/live" } { (panel(base, &st)) }
            },
        )))
    }
    .await;
    or_failed(&state, r)
}

pub async fn live(State(state): State<UiState>, s: Session) -> Response {
    let base = state.base();
    super::deliveries::stream(&state, std::time::Duration::from_secs(5), move || {
        let s = s.clone();
        async move {
            let tenants = tenants_of(&s).await.ok()?;
            let st = gather(&s.api, &tenants).await.ok()?;
            Some(panel(base, &st).into_string())
        }
    })
}
