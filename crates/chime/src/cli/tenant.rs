//! `chime tenant create|list|token`: tenants from the command line.

use std::process::ExitCode;

use super::client::{self, ApiArgs, CliError, Client, PageArgs, cell};
use super::output::{Style, Table, print_json};
use crate::api::types::{ListOut, TenantIn, TenantOut, TokenOut};
use clap::{Args, Subcommand};

#[derive(Args)]
#[command(
    after_help = "Examples:\n  chime tenant create acme --name \"Acme Inc.\"\n  chime tenant list\n  chime tenant token acme"
)]
pub struct TenantArgs {
    #[command(flatten)]
    api: ApiArgs,
    #[command(subcommand)]
    command: TenantCommand,
}

#[derive(Subcommand)]
enum TenantCommand {
    /// Create a tenant (needs the admin token).
    #[command(after_help = "Example:\n  chime tenant create acme --name \"Acme Inc.\"")]
    Create {
        /// The tenant id, e.g. your own customer id; generated (ten_…) if omitted.
        id: Option<String>,
        /// A display name.
        #[arg(long)]
        name: Option<String>,
    },
    /// List tenants (needs the admin token).
    #[command(after_help = "Example:\n  chime tenant list --limit 100")]
    List {
        #[command(flatten)]
        page: PageArgs,
    },
    /// Create an API token that can reach this tenant only (printed once).
    #[command(
        after_help = "Example:\n  CHIME_TOKEN=$(chime tenant token acme --json | jq -r .token)"
    )]
    Token {
        /// The tenant id.
        id: String,
    },
}

pub fn main(args: TenantArgs) -> ExitCode {
    client::run(async move {
        let api = Client::new(&args.api)?;
        let json = args.api.json;
        match args.command {
            TenantCommand::Create { id, name } => {
                let t = api
                    .post::<TenantOut>(&["v1", "tenants"], &TenantIn { id, name })
                    .await?;
                if json {
                    print_json(&t);
                } else {
                    println!("Created tenant {}", Style::stdout().bold(&t.id));
                }
            }
            TenantCommand::List { page } => {
                let list = api
                    .get::<ListOut<TenantOut>>(&["v1", "tenants"], &client::page_query(&page))
                    .await?;
                if json {
                    print_json(&list);
                } else {
                    print_tenants(&list)?;
                }
            }
            TenantCommand::Token { id } => {
                let t = api
                    .post_empty::<TokenOut>(&["v1", "tenants", &id, "tokens"])
                    .await?;
                if json {
                    print_json(&t);
                } else {
                    println!("{}", t.token);
                    eprintln!(
                        "{}",
                        Style::stderr().dim(&format!(
                            "a token for tenant {id} only; shown once, keep it safe"
                        ))
                    );
                }
            }
        }
        Ok(())
    })
}

fn print_tenants(list: &ListOut<TenantOut>) -> Result<(), CliError> {
    let mut table = Table::new(&["ID", "NAME", "CREATED"]);
    for t in &list.data {
        table.row(vec![
            t.id.clone(),
            cell(t.name.as_ref()),
            t.created_at.clone(),
        ]);
    }
    if table.is_empty() {
        println!("No tenants yet. Create one with: chime tenant create acme");
    } else {
        table.print(Style::stdout());
    }
    client::print_next_cursor(list);
    Ok(())
}
