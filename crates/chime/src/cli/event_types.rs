//! `chime event-types list|show|create|update|delete`: the catalog of event names, with the
//! JSON Schemas that published `data` must satisfy. Reading needs any token; changing it, the
//! admin token.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Subcommand};
use serde_json::{Value, json};

use super::client::{self, ApiArgs, CliError, Client, PageArgs, field};
use super::output::{Style, Table, pretty, print_json, truncate};

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
                .get(&["v1", "event-types"], &client::page_query(&page))
                .await?;
            if json {
                print_json(&list);
                return Ok(());
            }
            let mut table = Table::new(&["NAME", "SCHEMA", "DESCRIPTION", "UPDATED"]);
            for t in client::rows(&list)? {
                table.row(vec![
                    field(t, "name"),
                    if t["schema"].is_null() { "-" } else { "yes" }.to_owned(),
                    truncate(&field(t, "description"), 60),
                    field(t, "updated_at"),
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
            let t = api.get(&["v1", "event-types", &name], &[]).await?;
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
            let mut body = json!({ "name": name });
            if let Some(d) = description {
                body["description"] = json!(d);
            }
            if let Some(path) = schema {
                body["schema"] = read_schema(&path)?;
            }
            let t = api.post(&["v1", "event-types"], Some(&body)).await?;
            if json {
                print_json(&t);
            } else if t["schema"].is_null() {
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
            let mut body = json!({});
            if let Some(d) = description {
                body["description"] = json!(d);
            }
            if let Some(path) = schema {
                body["schema"] = read_schema(&path)?;
            }
            if clear_schema {
                // `null` removes the schema; an absent member leaves it as it is.
                body["schema"] = Value::Null;
            }
            if body.as_object().is_some_and(|b| b.is_empty()) {
                return Err(CliError::usage(
                    "nothing to change: give --description, --schema or --clear-schema",
                ));
            }
            let t = api.patch(&["v1", "event-types", &name], &body).await?;
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
                print_json(&json!({ "name": name, "deleted": true }));
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

fn print_event_type(t: &Value, out: Style) {
    println!("{}", out.bold(&field(t, "name")));
    if !field(t, "description").is_empty() {
        println!("  description: {}", field(t, "description"));
    }
    println!("  created:     {}", field(t, "created_at"));
    println!("  updated:     {}", field(t, "updated_at"));
    if t["schema"].is_null() {
        println!("  schema:      none (any data is accepted)");
    } else {
        println!(
            "  schema:      {}",
            pretty(&t["schema"].to_string()).replace('\n', "\n  ")
        );
    }
}
