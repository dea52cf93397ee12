//! `chime event-types list|show|create|update|delete`: the catalog of event names, with the
//! JSON Schemas that published `data` must satisfy. Reading needs any token; changing it, the
//! admin token.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Subcommand};
use serde_json::Value;

use super::client::{self, ApiArgs, CliError, Client, PageArgs};
use super::output::{Style, Table, pretty, print_json, truncate};
use crate::api::types::{EventTypeIn, EventTypeOut, EventTypePatch, ListOut};

#[derive(Args)]
#[command(after_help = "Examples:\n  \
    chime event-types create order.created --description 'An order was placed' --schema order.schema.json\n  \
    chime event-types list\n  \
    chime event-types show order.created\n  \
    chime event-types update order.created --clear-schema\n  \
    chime event-types delete order.created")]
pub struct EventTypesArgs {
    #[command(flatten)]
    api: ApiArgs,
    #[command(subcommand)]
    command: EventTypesCommand,
}

#[derive(Subcommand)]
enum EventTypesCommand {
    /// List the catalog.
    #[command(after_help = "Example:\n  chime event-types list --limit 100")]
    List {
        #[command(flatten)]
        page: PageArgs,
    },
    /// Show one event type and its schema.
    #[command(after_help = "Example:\n  chime event-types show order.created")]
    Show {
        /// The event name.
        name: String,
    },
    /// Add an event name to the catalog, optionally with a JSON Schema for its data
    /// (needs the admin token).
    #[command(after_help = "Examples:\n  \
        chime event-types create order.created --schema order.schema.json\n  \
        echo '{\"type\": \"object\", \"required\": [\"order_id\"]}' | chime event-types create order.paid --schema -\n\n\
Once it has a schema, publishing an event of this name whose data does not match it is \
refused (invalid_request, listing the failing paths).")]
    Create {
        /// The event name, e.g. order.created.
        name: String,
        /// What the event means, for people reading the catalog.
        #[arg(long)]
        description: Option<String>,
        /// A file holding the JSON Schema the event's data must match (`-` for stdin).
        #[arg(long, value_name = "FILE")]
        schema: Option<PathBuf>,
    },
    /// Change an event type's description or schema (needs the admin token).
    #[command(after_help = "Examples:\n  \
        chime event-types update order.created --schema order.schema.v2.json\n  \
        chime event-types update order.created --description 'An order was placed' --clear-schema")]
    Update {
        /// The event name.
        name: String,
        /// The new description.
        #[arg(long)]
        description: Option<String>,
        /// A file holding the new JSON Schema (`-` for stdin).
        #[arg(long, value_name = "FILE", conflicts_with = "clear_schema")]
        schema: Option<PathBuf>,
        /// Remove the schema: any data is accepted for this name again.
        #[arg(long)]
        clear_schema: bool,
    },
    /// Remove an event type from the catalog (needs the admin token).
    #[command(after_help = "Example:\n  chime event-types delete order.created")]
    Delete {
        /// The event name.
        name: String,
    },
}

pub fn main(args: EventTypesArgs) -> ExitCode {
    client::run(async move {
        let api = Client::new(&args.api)?;
        run(&api, args.api.json, args.command).await
    })
}

async fn run(api: &Client, json: bool, command: EventTypesCommand) -> Result<(), CliError> {
    let out = Style::stdout();
    match command {
        EventTypesCommand::List { page } => {
            let list = api
                .get::<ListOut<EventTypeOut>>(&["v1", "event-types"], &client::page_query(&page))
                .await?;
            if json {
                print_json(&list);
                return Ok(());
            }
            let mut table = Table::new(&["NAME", "SCHEMA", "DESCRIPTION", "UPDATED"]);
            for t in &list.data {
                table.row(vec![
                    t.name.clone(),
                    if t.schema.is_none() { "-" } else { "yes" }.to_owned(),
                    truncate(&t.description, 60),
                    t.updated_at.clone(),
                ]);
            }
            if table.is_empty() {
                println!(
                    "The catalog is empty. Add an event type with: chime event-types create NAME \
                     --schema FILE"
                );
            } else {
                table.print(out);
            }
            client::print_next_cursor(&list);
        }
        EventTypesCommand::Show { name } => {
            let t = api
                .get::<EventTypeOut>(&["v1", "event-types", &name], &())
                .await?;
            if json {
                print_json(&t);
            } else {
                print_event_type(&t, out);
            }
        }
        EventTypesCommand::Create {
            name,
            description,
            schema,
        } => {
            let body = EventTypeIn {
                name: name.clone(),
                description,
                schema: schema.as_deref().map(read_schema).transpose()?,
            };
            let t = api
                .post::<EventTypeOut>(&["v1", "event-types"], &body)
                .await?;
            if json {
                print_json(&t);
            } else if t.schema.is_none() {
                println!("Created event type {} (no schema).", out.bold(&name));
            } else {
                println!(
                    "Created event type {}: the data of {name} events must match its schema.",
                    out.bold(&name)
                );
            }
        }
        EventTypesCommand::Update {
            name,
            description,
            schema,
            clear_schema,
        } => {
            let body = EventTypePatch {
                description,
                schema: super::endpoint::set_or_clear(
                    schema.as_deref().map(read_schema).transpose()?,
                    clear_schema,
                ),
            };
            if body.description.is_none() && body.schema.is_none() {
                return Err(CliError::usage(
                    "nothing to change: give --description, --schema or --clear-schema",
                ));
            }
            let t = api
                .patch::<EventTypeOut>(&["v1", "event-types", &name], &body)
                .await?;
            if json {
                print_json(&t);
            } else {
                println!("Updated event type {}", out.bold(&name));
                print_event_type(&t, out);
            }
        }
        EventTypesCommand::Delete { name } => {
            api.delete(&["v1", "event-types", &name]).await?;
            if json {
                // The server answers 204 with no body; say what was deleted.
                print_json(&serde_json::json!({ "name": name, "deleted": true }));
            } else {
                println!("Deleted event type {name}.");
            }
        }
    }
    Ok(())
}

/// The JSON in a schema file (or stdin for `-`); the server checks it is a valid JSON Schema.
fn read_schema(path: &Path) -> Result<Value, CliError> {
    let (text, what) = if path.as_os_str() == "-" {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .map_err(|e| CliError::usage(format!("reading the schema from stdin: {e}")))?;
        (s, "the schema on stdin".to_owned())
    } else {
        let s = std::fs::read_to_string(path)
            .map_err(|e| CliError::usage(format!("cannot read {}: {e}", path.display())))?;
        (s, path.display().to_string())
    };
    serde_json::from_str(&text).map_err(|e| CliError::usage(format!("{what} is not JSON: {e}")))
}

fn print_event_type(t: &EventTypeOut, out: Style) {
    println!("{}", out.bold(&t.name));
    if !t.description.is_empty() {
        println!("  description: {}", t.description);
    }
    println!("  created:     {}", t.created_at);
    println!("  updated:     {}", t.updated_at);
    match &t.schema {
        None => println!("  schema:      none (any data is accepted)"),
        Some(schema) => println!(
            "  schema:      {}",
            pretty(&schema.to_string()).replace('\n', "\n  ")
        ),
    }
}
