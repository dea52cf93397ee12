//! `chime events list|show`: published events and where they went.

use std::process::ExitCode;

use super::client::{self, ApiArgs, Client, PageArgs, TenantArg};
use super::deliveries::deliveries_table;
use super::output::{Style, Table, minify, pretty, print_json, truncate};
use crate::api::types::{EventListParams, EventOut, ListOut};
use clap::{Args, Subcommand};

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
                let query = EventListParams {
                    limit: page.limit,
                    cursor: page.cursor,
                    event,
                };
                let list = api
                    .get::<ListOut<EventOut>>(&["v1", "tenants", &tenant.tenant, "events"], &query)
                    .await?;
                if json {
                    print_json(&list);
                    return Ok(());
                }
                let mut table = Table::new(&["ID", "EVENT", "TIMESTAMP", "DATA"]);
                for e in &list.data {
                    table.row(vec![
                        e.id.clone(),
                        e.event.clone(),
                        e.timestamp.clone(),
                        truncate(&minify(e.data.get()), 60),
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
                    .get::<EventOut>(&["v1", "tenants", &tenant.tenant, "events", &id], &())
                    .await?;
                if json {
                    print_json(&e);
                } else {
                    print_event(&e, out);
                }
            }
        }
        Ok(())
    })
}

fn print_event(e: &EventOut, out: Style) {
    println!("{} {}", out.bold(&e.event), e.id);
    println!("  timestamp:       {}", e.timestamp);
    if let Some(k) = &e.idempotency_key {
        println!("  idempotency key: {k}");
    }
    println!("  data: {}", pretty(e.data.get()).replace('\n', "\n  "));
    let deliveries = e.deliveries.as_deref().unwrap_or(&[]);
    if deliveries.is_empty() {
        println!("  no deliveries: no enabled endpoint subscribed to it when it was published");
    } else {
        println!();
        deliveries_table(deliveries).print_status(out);
    }
}
