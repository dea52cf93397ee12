//! `chime tenant create|list|update|token`: tenants from the command line.

use std::process::ExitCode;

use super::client::{self, ApiArgs, CliError, Client, PageArgs, cell};
use super::output::{Style, Table, print_json};
use crate::api::types::{ListOut, TenantIn, TenantOut, TenantPatch, TokenOut};
use crate::model::Branding;
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
    /// Rename a tenant or set how the customer portal presents its product (admin token).
    #[command(
        after_help = "Examples:\n  chime tenant update acme --brand-name \"Acme Hooks\" --brand-accent '#0a7d38'\n  chime tenant update acme --clear-branding"
    )]
    Update {
        /// The tenant id.
        id: String,
        /// A new display name.
        #[arg(long)]
        name: Option<String>,
        /// The product name the portal shows for this tenant.
        #[arg(long)]
        brand_name: Option<String>,
        /// An https:// URL of the logo the portal shows.
        #[arg(long)]
        brand_logo_url: Option<String>,
        /// The portal's accent colour, #rgb or #rrggbb.
        #[arg(long)]
        brand_accent: Option<String>,
        /// Go back to the server's branding.
        #[arg(long, conflicts_with_all = ["brand_name", "brand_logo_url", "brand_accent"])]
        clear_branding: bool,
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
            TenantCommand::Update {
                id,
                name,
                brand_name,
                brand_logo_url,
                brand_accent,
                clear_branding,
            } => {
                let given = Branding {
                    name: brand_name,
                    logo_url: brand_logo_url,
                    accent: brand_accent,
                };
                let branding = if clear_branding {
                    Some(None)
                } else if given.is_empty() {
                    None
                } else {
                    // The parts not given keep their current values.
                    let now = api
                        .get::<TenantOut>(&["v1", "tenants", &id], &())
                        .await?
                        .value
                        .branding
                        .unwrap_or_default();
                    Some(Some(Branding {
                        name: given.name.or(now.name),
                        logo_url: given.logo_url.or(now.logo_url),
                        accent: given.accent.or(now.accent),
                    }))
                };
                let patch = TenantPatch {
                    name: name.map(Some),
                    branding,
                };
                let t = api
                    .patch::<TenantOut>(&["v1", "tenants", &id], &patch)
                    .await?;
                if json {
                    print_json(&t);
                } else {
                    println!("Updated tenant {}", Style::stdout().bold(&t.id));
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
