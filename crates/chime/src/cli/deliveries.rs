//! `chime deliveries list|show|retry`: the delivery log, attempts, and manual retry.

use std::process::ExitCode;

use clap::{Args, Subcommand};
use serde_json::Value;

use super::client::{self, ApiArgs, CliError, Client, PageArgs, TenantArg, field};
use super::output::{Style, Table, print_json, truncate};

#[derive(Args)]
#[command(after_help = "Examples:\n  \
    chime deliveries list --tenant acme --failed\n  \
    chime deliveries show del_01j… --tenant acme\n  \
    chime deliveries retry del_01j… --tenant acme")]
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
        /// Only deliveries of this event id.
        #[arg(long)]
        event: Option<String>,
        #[command(flatten)]
        page: PageArgs,
    },
    /// Show one delivery and its attempts.
    #[command(after_help = "Example:\n  chime deliveries show del_01j… --tenant acme")]
    Show {
        /// The delivery id (del_…).
        id: String,
        #[command(flatten)]
        tenant: TenantArg,
    },
    /// Try a delivery again now (a failed one gets a fresh set of retries).
    #[command(after_help = "Example:\n  chime deliveries retry del_01j… --tenant acme")]
    Retry {
        /// The delivery id (del_…).
        id: String,
        #[command(flatten)]
        tenant: TenantArg,
    },
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
            event,
            page,
        } => {
            let mut query = client::page_query(&page);
            if failed {
                query.push(("status", "failed".into()));
            } else if let Some(s) = status {
                query.push(("status", s));
            }
            if let Some(e) = endpoint {
                query.push(("endpoint", e));
            }
            if let Some(e) = event {
                query.push(("event", e));
            }
            let list = api
                .get(&["v1", "tenants", &tenant.tenant, "deliveries"], &query)
                .await?;
            if json {
                print_json(&list);
                return Ok(());
            }
            let rows = client::rows(&list)?;
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
            let d = api.get(&path, &[]).await?;
            let attempts = api
                .get(
                    &[
                        "v1",
                        "tenants",
                        &tenant.tenant,
                        "deliveries",
                        &id,
                        "attempts",
                    ],
                    &[("limit", "250".into())],
                )
                .await?;
            if json {
                let mut d = d.value;
                d["attempts"] = attempts["data"].clone();
                print_json(&d);
                return Ok(());
            }
            print_delivery(&d, client::rows(&attempts)?, out);
        }
        DeliveriesCommand::Retry { id, tenant } => {
            let d = api
                .post(
                    &["v1", "tenants", &tenant.tenant, "deliveries", &id, "retry"],
                    None,
                )
                .await?;
            if json {
                print_json(&d);
            } else {
                println!(
                    "Retrying {id} now (status {}, {} attempts so far).",
                    field(&d, "status"),
                    field(&d, "attempts")
                );
            }
        }
    }
    Ok(())
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

pub fn deliveries_table(rows: &[Value]) -> DeliveriesTable {
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
        let last = match (
            d["last_status_code"].as_u64(),
            d["last_error_kind"].as_str(),
        ) {
            (Some(code), _) => code.to_string(),
            (None, Some(kind)) => kind.to_owned(),
            (None, None) => "-".to_owned(),
        };
        let when = d["next_attempt_at"]
            .as_str()
            .map(|t| format!("next {t}"))
            .unwrap_or_else(|| field(d, "updated_at"));
        table.row(vec![
            field(d, "id"),
            field(d, "event"),
            field(d, "endpoint_id"),
            field(d, "status"),
            field(d, "attempts"),
            last,
            when,
        ]);
    }
    DeliveriesTable(table)
}

fn paint_status(out: Style, cell: &str) -> String {
    match cell.trim() {
        "succeeded" => out.green(cell),
        "failed" => out.red(cell),
        _ => out.yellow(cell),
    }
}

fn print_delivery(d: &Value, attempts: &[Value], out: Style) {
    println!(
        "{} {} → {}",
        out.bold(&field(d, "id")),
        field(d, "event"),
        field(d, "endpoint_id")
    );
    println!("  event id: {}", field(d, "event_id"));
    println!("  status:   {}", paint_status(out, &field(d, "status")));
    if let Some(next) = d["next_attempt_at"].as_str() {
        println!("  next try: {next}");
    }
    if attempts.is_empty() {
        println!("  no attempts yet");
        return;
    }
    println!();
    let mut table = Table::new(&["STARTED", "DURATION", "RESULT", "DETAIL"]);
    for a in attempts {
        let result = match (a["status_code"].as_u64(), a["error_kind"].as_str()) {
            (Some(code), _) => code.to_string(),
            (None, Some(kind)) => kind.to_owned(),
            (None, None) => "-".into(),
        };
        let detail = a["error"]
            .as_str()
            .or(a["response"].as_str())
            .map(|t| truncate(&t.replace(['\n', '\r'], " "), 60))
            .unwrap_or_default();
        table.row(vec![
            field(a, "started_at"),
            format!("{} ms", field(a, "duration_ms")),
            result,
            detail,
        ]);
    }
    let ok: Vec<bool> = attempts
        .iter()
        .map(|a| a["succeeded"].as_bool().unwrap_or(false))
        .collect();
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
