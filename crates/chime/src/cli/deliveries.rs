//! `chime deliveries list|show|retry|skip|replay`: the delivery log, attempts, manual retry,
//! giving up a pending delivery, and re-delivering what a filter matches.

use std::process::ExitCode;

use super::client::{self, ApiArgs, CliError, Client, PageArgs, TenantArg};
use super::output::{Style, Table, print_json, truncate};
use crate::api::types::{
    AttemptOut, DeliveryListParams, DeliveryOut, ListOut, ReplayIn, ReplayOut,
};
use clap::{Args, Subcommand};

#[derive(Args)]
#[command(after_help = "Examples:\n  \
    chime deliveries list --tenant acme --failed\n  \
    chime deliveries show dlv_01j… --tenant acme\n  \
    chime deliveries retry dlv_01j… --tenant acme\n  \
    chime deliveries skip dlv_01j… --tenant acme\n  \
    chime deliveries replay --tenant acme --status failed --since 2024-11-27T00:00:00Z --dry-run")]
pub struct DeliveriesArgs {
    #[command(flatten)]
    api: ApiArgs,
    #[command(subcommand)]
    command: DeliveriesCommand,
}

#[derive(Subcommand)]
enum DeliveriesCommand {
    /// List deliveries, newest first; --failed lists the dead letters.
    #[command(
        after_help = "Example:\n  chime deliveries list --tenant acme --failed --endpoint ep_01j…"
    )]
    List {
        #[command(flatten)]
        tenant: TenantArg,
        /// Only deliveries whose retries are exhausted (same as --status failed).
        #[arg(long, conflicts_with = "status")]
        failed: bool,
        /// Only deliveries in this state.
        #[arg(long, value_parser = ["pending", "succeeded", "failed", "skipped"])]
        status: Option<String>,
        /// Only deliveries to this endpoint.
        #[arg(long)]
        endpoint: Option<String>,
        /// Only deliveries of this event (its id, evt_…).
        #[arg(long, value_name = "EVENT_ID")]
        event_id: Option<String>,
        /// Only deliveries of events with this name (e.g. order.created).
        #[arg(long, value_name = "NAME")]
        event: Option<String>,
        /// Only deliveries created at or after this time (RFC 3339).
        #[arg(long, value_name = "TIME")]
        since: Option<String>,
        /// Only deliveries created before this time (RFC 3339).
        #[arg(long, value_name = "TIME")]
        until: Option<String>,
        #[command(flatten)]
        page: PageArgs,
    },
    /// Show one delivery and its attempts.
    #[command(after_help = "Example:\n  chime deliveries show dlv_01j… --tenant acme")]
    Show {
        /// The delivery id (dlv_…).
        id: String,
        #[command(flatten)]
        tenant: TenantArg,
    },
    /// Try a delivery again now (a failed one gets a fresh set of retries).
    #[command(after_help = "Example:\n  chime deliveries retry dlv_01j… --tenant acme")]
    Retry {
        /// The delivery id (dlv_…).
        id: String,
        #[command(flatten)]
        tenant: TenantArg,
    },
    /// Give up a pending delivery without attempting it (it becomes `skipped`), e.g. the
    /// failing head that blocks an ordered endpoint.
    #[command(
        after_help = "Example:\n  chime deliveries skip dlv_01j… --tenant acme\n\n\
A skipped delivery can be sent again later with `chime deliveries replay --status skipped`."
    )]
    Skip {
        /// The delivery id (dlv_…).
        id: String,
        #[command(flatten)]
        tenant: TenantArg,
    },
    /// Re-deliver the deliveries a filter matches (by default the failed ones), keeping each
    /// one's webhook-id; --dry-run only counts them.
    #[command(after_help = "Examples:\n  \
        chime deliveries replay --tenant acme --dry-run\n  \
        chime deliveries replay --tenant acme --status failed,skipped --endpoint ep_01j…\n  \
        chime deliveries replay --tenant acme --status succeeded --event order.created \\\n    \
        --since 2024-11-27T00:00:00Z --until 2024-11-28T00:00:00Z\n\n\
One call replays at most 10,000 deliveries; when more match it says so: run it again.")]
    Replay {
        #[command(flatten)]
        tenant: TenantArg,
        /// Deliveries in these states: failed, skipped, succeeded; repeat the flag or
        /// separate with commas [default: failed].
        #[arg(long, value_delimiter = ',', value_parser = ["failed", "skipped", "succeeded"])]
        status: Vec<String>,
        /// Only deliveries to this endpoint.
        #[arg(long, value_name = "ID")]
        endpoint: Option<String>,
        /// Only deliveries of events with this name (e.g. order.created).
        #[arg(long, value_name = "NAME")]
        event: Option<String>,
        /// Only deliveries created at or after this RFC 3339 time (2024-11-27T09:00:00Z).
        #[arg(long, value_name = "TIME", value_parser = rfc3339)]
        since: Option<String>,
        /// Only deliveries created before this RFC 3339 time.
        #[arg(long, value_name = "TIME", value_parser = rfc3339)]
        until: Option<String>,
        /// Count what would be replayed; change nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

/// Checks an RFC 3339 time here, so a typo is a usage error rather than a server refusal.
fn rfc3339(text: &str) -> Result<String, String> {
    time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .map(|_| text.to_owned())
        .map_err(|e| format!("not an RFC 3339 time such as 2024-11-27T09:00:00Z: {e}"))
}

/// `1 delivery`, `12 deliveries`.
fn deliveries_count(n: u64) -> String {
    if n == 1 {
        "1 delivery".to_owned()
    } else {
        format!("{n} deliveries")
    }
}

pub fn main(args: DeliveriesArgs) -> ExitCode {
    client::run(async move {
        let api = Client::new(&args.api)?;
        run(&api, args.api.json, args.command).await
    })
}

async fn run(api: &Client, json: bool, command: DeliveriesCommand) -> Result<(), CliError> {
    let out = Style::stdout();
    match command {
        DeliveriesCommand::List {
            tenant,
            failed,
            status,
            endpoint,
            event_id,
            event,
            since,
            until,
            page,
        } => {
            let query = DeliveryListParams {
                limit: page.limit,
                cursor: page.cursor,
                status: if failed {
                    Some("failed".into())
                } else {
                    status
                },
                endpoint,
                event_id,
                event,
                since,
                until,
            };
            let list = api
                .get::<ListOut<DeliveryOut>>(
                    &["v1", "tenants", &tenant.tenant, "deliveries"],
                    &query,
                )
                .await?;
            if json {
                print_json(&list);
                return Ok(());
            }
            let rows = &list.data;
            if rows.is_empty() {
                println!(
                    "{}",
                    if failed {
                        "No failed deliveries."
                    } else {
                        "No deliveries."
                    }
                );
            } else {
                deliveries_table(rows).print_status(out);
            }
            client::print_next_cursor(&list);
        }
        DeliveriesCommand::Show { id, tenant } => {
            let path = ["v1", "tenants", &tenant.tenant, "deliveries", &id];
            let d = api.get::<DeliveryOut>(&path, &()).await?;
            let attempts = api
                .get::<ListOut<AttemptOut>>(
                    &[
                        "v1",
                        "tenants",
                        &tenant.tenant,
                        "deliveries",
                        &id,
                        "attempts",
                    ],
                    &[("limit", "250")],
                )
                .await?;
            if json {
                /// The delivery with its attempts, as `--json` shows it.
                #[derive(serde::Serialize)]
                struct Shown {
                    #[serde(flatten)]
                    delivery: DeliveryOut,
                    attempts: Vec<AttemptOut>,
                }
                print_json(&Shown {
                    delivery: d.value,
                    attempts: attempts.value.data,
                });
                return Ok(());
            }
            print_delivery(&d, &attempts.data, out);
        }
        DeliveriesCommand::Retry { id, tenant } => {
            let d = act(api, &tenant.tenant, &id, "retry").await?;
            if json {
                print_json(&d);
            } else {
                println!(
                    "Retrying {id} now (status {}, {} attempts so far).",
                    d.status.as_str(),
                    d.attempts
                );
            }
        }
        DeliveriesCommand::Skip { id, tenant } => {
            let d = act(api, &tenant.tenant, &id, "skip").await?;
            if json {
                print_json(&d);
            } else {
                println!(
                    "Skipped {id} ({} to {}, after {} attempts): it will not be delivered.",
                    d.event, d.endpoint_id, d.attempts
                );
                println!(
                    "{}",
                    out.dim(&format!(
                        "  send it later with: chime deliveries replay --status skipped \
                         --endpoint {} --tenant {}",
                        d.endpoint_id, tenant.tenant
                    ))
                );
            }
        }
        DeliveriesCommand::Replay {
            tenant,
            status,
            endpoint,
            event,
            since,
            until,
            dry_run,
        } => {
            let body = ReplayIn {
                status: (!status.is_empty()).then_some(status),
                endpoint_id: endpoint,
                event,
                since,
                until,
                dry_run,
            };
            let r = api
                .post::<ReplayOut>(&["v1", "tenants", &tenant.tenant, "replay"], &body)
                .await?;
            if json {
                print_json(&r);
                return Ok(());
            }
            let count = deliveries_count(r.count);
            if dry_run {
                println!("Would replay {count}.");
            } else if r.more {
                println!("Replayed {count} (more remain: run again).");
            } else {
                println!("Replayed {count}.");
            }
        }
    }
    Ok(())
}

/// `POST …/deliveries/{id}/{action}` (`retry`, `skip`), answered with the delivery.
async fn act(
    api: &Client,
    tenant: &str,
    id: &str,
    action: &str,
) -> Result<client::Reply<DeliveryOut>, CliError> {
    api.post_empty(&["v1", "tenants", tenant, "deliveries", id, action])
        .await
}

/// Deliveries as a table, the STATUS column coloured.
pub struct DeliveriesTable(Table);

impl DeliveriesTable {
    pub fn print_status(&self, out: Style) {
        print!(
            "{}",
            self.0.render(out, |_, col, cell| if col == 3 {
                paint_status(out, cell)
            } else {
                cell.to_owned()
            })
        );
    }
}

pub fn deliveries_table(rows: &[DeliveryOut]) -> DeliveriesTable {
    let mut table = Table::new(&[
        "ID",
        "EVENT",
        "ENDPOINT",
        "STATUS",
        "ATTEMPTS",
        "LAST",
        "NEXT/UPDATED",
    ]);
    for d in rows {
        let when = d
            .next_attempt_at
            .as_ref()
            .map(|t| format!("next {t}"))
            .unwrap_or_else(|| d.updated_at.clone());
        table.row(vec![
            d.id.clone(),
            d.event.clone(),
            d.endpoint_id.clone(),
            d.status.as_str().to_owned(),
            d.attempts.to_string(),
            result_cell(d.last_status_code, d.last_error_kind.as_deref()),
            when,
        ]);
    }
    DeliveriesTable(table)
}

/// An attempt's result: its HTTP status, else why it failed.
pub fn result_cell(status_code: Option<u16>, error_kind: Option<&str>) -> String {
    match (status_code, error_kind) {
        (Some(code), _) => code.to_string(),
        (None, Some(kind)) => kind.to_owned(),
        (None, None) => "-".to_owned(),
    }
}

fn paint_status(out: Style, cell: &str) -> String {
    match cell.trim() {
        "succeeded" => out.green(cell),
        "failed" => out.red(cell),
        _ => out.yellow(cell),
    }
}

fn print_delivery(d: &DeliveryOut, attempts: &[AttemptOut], out: Style) {
    println!("{} {} → {}", out.bold(&d.id), d.event, d.endpoint_id);
    println!("  event id: {}", d.event_id);
    println!("  status:   {}", paint_status(out, d.status.as_str()));
    if let Some(next) = &d.next_attempt_at {
        println!("  next try: {next}");
    }
    if attempts.is_empty() {
        println!("  no attempts yet");
        return;
    }
    println!();
    let mut table = Table::new(&["STARTED", "DURATION", "RESULT", "DETAIL"]);
    for a in attempts {
        let detail = a
            .error
            .as_deref()
            .or(a.response.as_deref())
            .map(|t| truncate(&t.replace(['\n', '\r'], " "), 60))
            .unwrap_or_default();
        table.row(vec![
            a.started_at.clone(),
            format!("{} ms", a.duration_ms),
            result_cell(a.status_code, a.error_kind.as_deref()),
            detail,
        ]);
    }
    let ok: Vec<bool> = attempts.iter().map(|a| a.succeeded).collect();
    // Colour each RESULT cell by whether that attempt succeeded.
    print!(
        "{}",
        table.render(out, |row, col, cell| {
            if col != 2 {
                cell.to_owned()
            } else if ok.get(row).copied().unwrap_or(false) {
                out.green(cell)
            } else {
                out.red(cell)
            }
        })
    );
}
