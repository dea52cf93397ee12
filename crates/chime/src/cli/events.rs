//! `chime events list|show`: published events and where they went.

use std::process::ExitCode;

use clap::{Args, Subcommand};
use serde::Deserialize;
use serde_json::Value;
use serde_json::value::RawValue;

use super::client::{self, ApiArgs, CliError, Client, PageArgs, TenantArg, field};
use super::deliveries::deliveries_table;
use super::output::{Style, Table, minify, pretty, print_json, truncate};

#[derive(Args)]
#[command(after_help = "Examples:\n  \
    chime events list --tenant acme --event order.created\n  \
    chime events show evt_01j… --tenant acme")]
pub struct EventsArgs {
    #[command(flatten)]
    api: ApiArgs,
    #[command(subcommand)]
    command: EventsCommand,
}

#[derive(Subcommand)]
enum EventsCommand {
    /// List a tenant's events, newest first.
    #[command(
        after_help = "Example:\n  chime events list --tenant acme --event order.created --limit 20"
    )]
    List {
        #[command(flatten)]
        tenant: TenantArg,
        /// Only events with this exact name.
        #[arg(long)]
        event: Option<String>,
        #[command(flatten)]
        page: PageArgs,
    },
    /// Show one event: its data and its deliveries.
    #[command(after_help = "Example:\n  chime events show evt_01j… --tenant acme")]
    Show {
        /// The event id (evt_…).
        id: String,
        #[command(flatten)]
        tenant: TenantArg,
    },
}

pub fn main(args: EventsArgs) -> ExitCode {
    client::run(async move {
        let api = Client::new(&args.api)?;
        let json = args.api.json;
        let out = Style::stdout();
        match args.command {
            EventsCommand::List {
                tenant,
                event,
                page,
            } => {
                let mut query = client::page_query(&page);
                if let Some(e) = event {
                    query.push(("event", e));
                }
                let list = api
                    .get(&["v1", "tenants", &tenant.tenant, "events"], &query)
                    .await?;
                if json {
                    print_json(&list);
                    return Ok(());
                }
                let data = raw_data_of_rows(list.text());
                let mut table = Table::new(&["ID", "EVENT", "TIMESTAMP", "DATA"]);
                for (i, e) in client::rows(&list)?.iter().enumerate() {
                    let text = data
                        .get(i)
                        .cloned()
                        .unwrap_or_else(|| e["data"].to_string());
                    table.row(vec![
                        field(e, "id"),
                        field(e, "event"),
                        field(e, "timestamp"),
                        truncate(&text, 60),
                    ]);
                }
                if table.is_empty() {
                    println!("No events. Publish one with: chime send EVENT 'JSON' --tenant T");
                } else {
                    table.print(out);
                }
                client::print_next_cursor(&list);
            }
            EventsCommand::Show { id, tenant } => {
                let e = api
                    .get(&["v1", "tenants", &tenant.tenant, "events", &id], &[])
                    .await?;
                if json {
                    print_json(&e);
                } else {
                    print_event(&e, &raw_data(e.text()), out)?;
                }
            }
        }
        Ok(())
    })
}

/// The `data` member of each listed event, as published (key order kept).
fn raw_data_of_rows(text: &str) -> Vec<String> {
    #[derive(Deserialize)]
    struct Row<'a> {
        #[serde(borrow)]
        data: &'a RawValue,
    }
    #[derive(Deserialize)]
    struct List<'a> {
        #[serde(borrow)]
        data: Vec<Row<'a>>,
    }
    serde_json::from_str::<List>(text)
        .map(|l| l.data.iter().map(|r| minify(r.data.get())).collect())
        .unwrap_or_default()
}

/// The `data` member of one event, as published.
fn raw_data(text: &str) -> String {
    #[derive(Deserialize)]
    struct One<'a> {
        #[serde(borrow)]
        data: &'a RawValue,
    }
    serde_json::from_str::<One>(text)
        .map(|o| o.data.get().to_owned())
        .unwrap_or_else(|_| "null".into())
}

fn print_event(e: &Value, data: &str, out: Style) -> Result<(), CliError> {
    println!("{} {}", out.bold(&field(e, "event")), field(e, "id"));
    println!("  timestamp:       {}", field(e, "timestamp"));
    if let Some(k) = e["idempotency_key"].as_str() {
        println!("  idempotency key: {k}");
    }
    println!("  data: {}", pretty(data).replace('\n', "\n  "));
    let deliveries = e["deliveries"].as_array().map(Vec::as_slice).unwrap_or(&[]);
    if deliveries.is_empty() {
        println!("  no deliveries: no enabled endpoint subscribed to it when it was published");
    } else {
        println!();
        deliveries_table(deliveries).print_status(out);
    }
    Ok(())
}
