//! `chime endpoint add|list|show|disable|enable|rotate-secret`: a tenant's receiver URLs.

use std::process::ExitCode;

use clap::{Args, Subcommand};
use serde_json::{Value, json};

use super::client::{self, ApiArgs, CliError, Client, PageArgs, TenantArg, field};
use super::output::{Style, Table, print_json};

#[derive(Args)]
#[command(after_help = "Examples:\n  \
    chime endpoint add http://127.0.0.1:5000/webhook --tenant acme --events 'order.*'\n  \
    chime endpoint list --tenant acme\n  \
    chime endpoint show ep_01j… --tenant acme --secret\n  \
    chime endpoint rotate-secret ep_01j… --tenant acme --grace 24h")]
pub struct EndpointArgs {
    #[command(flatten)]
    api: ApiArgs,
    #[command(subcommand)]
    command: EndpointCommand,
}

#[derive(Subcommand)]
enum EndpointCommand {
    /// Register a receiver URL; prints its id and signing secret.
    #[command(after_help = "Example:\n  \
        chime endpoint add http://127.0.0.1:5000/webhook --tenant acme --events 'order.*,user.created'")]
    Add {
        /// The URL deliveries are POSTed to.
        #[arg(value_name = "URL")]
        target: String,
        #[command(flatten)]
        tenant: TenantArg,
        /// Event names or patterns to subscribe to (`*`, `order.*`, `user.created`);
        /// repeat the flag or separate with commas [default: *].
        #[arg(long, short = 'e', value_delimiter = ',')]
        events: Vec<String>,
        /// A note for people reading the endpoint list.
        #[arg(long)]
        description: Option<String>,
        /// Use this secret instead of a generated one: `whsec_…` (HMAC, v1) or `whsk_…`
        /// (Ed25519, v1a; receivers then verify with its whpk_ public key).
        #[arg(long)]
        secret: Option<String>,
        /// Create it disabled (nothing is delivered until `chime endpoint enable`).
        #[arg(long)]
        disabled: bool,
    },
    /// List a tenant's endpoints.
    #[command(after_help = "Example:\n  chime endpoint list --tenant acme")]
    List {
        #[command(flatten)]
        tenant: TenantArg,
        #[command(flatten)]
        page: PageArgs,
    },
    /// Show one endpoint (with --secret, also its signing secret).
    #[command(after_help = "Example:\n  chime endpoint show ep_01j… --tenant acme --secret")]
    Show {
        /// The endpoint id.
        id: String,
        #[command(flatten)]
        tenant: TenantArg,
        /// Also fetch and show the current signing secret.
        #[arg(long)]
        secret: bool,
    },
    /// Pause an endpoint: no new events fan out to it; its pending deliveries wait.
    #[command(after_help = "Example:\n  chime endpoint disable ep_01j… --tenant acme")]
    Disable {
        /// The endpoint id.
        id: String,
        #[command(flatten)]
        tenant: TenantArg,
    },
    /// Resume deliveries to a disabled endpoint.
    #[command(after_help = "Example:\n  chime endpoint enable ep_01j… --tenant acme")]
    Enable {
        /// The endpoint id.
        id: String,
        #[command(flatten)]
        tenant: TenantArg,
    },
    /// Replace the signing secret; the old one keeps signing beside it for a grace period.
    #[command(
        after_help = "Example:\n  chime endpoint rotate-secret ep_01j… --tenant acme --grace 1h"
    )]
    RotateSecret {
        /// The endpoint id.
        id: String,
        #[command(flatten)]
        tenant: TenantArg,
        /// How long the previous secret keeps signing too (`0s` stops it at once; at most 30
        /// days) [server default: 24h].
        #[arg(long, value_parser = humantime::parse_duration)]
        grace: Option<std::time::Duration>,
    },
}

pub fn main(args: EndpointArgs) -> ExitCode {
    client::run(async move {
        let api = Client::new(&args.api)?;
        run(&api, args.api.json, args.command).await
    })
}

async fn run(api: &Client, json: bool, command: EndpointCommand) -> Result<(), CliError> {
    let out = Style::stdout();
    match command {
        EndpointCommand::Add {
            target,
            tenant,
            events,
            description,
            secret,
            disabled,
        } => {
            let mut body = json!({ "url": target });
            if !events.is_empty() {
                body["events"] = json!(events);
            }
            if let Some(d) = description {
                body["description"] = json!(d);
            }
            if let Some(s) = secret {
                body["secret"] = json!(s);
            }
            if disabled {
                body["enabled"] = json!(false);
            }
            let e = api
                .post(&["v1", "tenants", &tenant.tenant, "endpoints"], Some(&body))
                .await?;
            if json {
                print_json(&e);
            } else {
                println!(
                    "Added endpoint {} → {}",
                    out.bold(&field(&e, "id")),
                    field(&e, "url")
                );
                println!("  events: {}", join(&e["events"]));
                println!("  secret: {}", field(&e, "secret"));
                println!(
                    "{}",
                    out.dim(&format!(
                        "  verify deliveries with: chime listen --secret {}",
                        field(&e, "secret")
                    ))
                );
            }
        }
        EndpointCommand::List { tenant, page } => {
            let list = api
                .get(
                    &["v1", "tenants", &tenant.tenant, "endpoints"],
                    &client::page_query(&page),
                )
                .await?;
            if json {
                print_json(&list);
                return Ok(());
            }
            let mut table = Table::new(&["ID", "URL", "EVENTS", "ENABLED", "DESCRIPTION"]);
            for e in client::rows(&list)? {
                table.row(vec![
                    field(e, "id"),
                    field(e, "url"),
                    join(&e["events"]),
                    yes_no(&e["enabled"]),
                    field(e, "description"),
                ]);
            }
            if table.is_empty() {
                println!(
                    "Tenant {} has no endpoints. Add one with: chime endpoint add URL --tenant {}",
                    tenant.tenant, tenant.tenant
                );
            } else {
                table.print(out);
            }
            client::print_next_cursor(&list);
        }
        EndpointCommand::Show { id, tenant, secret } => {
            let path = ["v1", "tenants", &tenant.tenant, "endpoints", &id];
            let mut e = api.get(&path, &[]).await?.value;
            if secret {
                let s = api
                    .get(
                        &["v1", "tenants", &tenant.tenant, "endpoints", &id, "secret"],
                        &[],
                    )
                    .await?;
                e["secret"] = s["secret"].clone();
            }
            if json {
                print_json(&e);
            } else {
                print_endpoint(&e, out);
            }
        }
        EndpointCommand::Disable { id, tenant } => {
            set_enabled(api, json, &tenant.tenant, &id, false).await?;
        }
        EndpointCommand::Enable { id, tenant } => {
            set_enabled(api, json, &tenant.tenant, &id, true).await?;
        }
        EndpointCommand::RotateSecret { id, tenant, grace } => {
            let body = grace.map(|g| json!({ "grace_period_seconds": g.as_secs() }));
            let r = api
                .post(
                    &[
                        "v1",
                        "tenants",
                        &tenant.tenant,
                        "endpoints",
                        &id,
                        "secret",
                        "rotate",
                    ],
                    body.as_ref(),
                )
                .await?;
            if json {
                print_json(&r);
            } else {
                println!("New secret: {}", out.bold(&field(&r, "secret")));
                match r["previous_secret_expires_at"].as_str() {
                    Some(t) => println!(
                        "The previous secret keeps signing too until {t}: update your \
                         receiver before then."
                    ),
                    None => println!("The previous secret no longer signs."),
                }
            }
        }
    }
    Ok(())
}

async fn set_enabled(
    api: &Client,
    json: bool,
    tenant: &str,
    id: &str,
    enabled: bool,
) -> Result<(), CliError> {
    let e = api
        .patch(
            &["v1", "tenants", tenant, "endpoints", id],
            &json!({ "enabled": enabled }),
        )
        .await?;
    if json {
        print_json(&e);
    } else if enabled {
        println!("Enabled endpoint {id}: its pending deliveries resume now.");
    } else {
        println!(
            "Disabled endpoint {id}: it gets no new events, and its pending deliveries wait \
             until it is enabled again."
        );
    }
    Ok(())
}

fn print_endpoint(e: &Value, out: Style) {
    let enabled = e["enabled"].as_bool().unwrap_or(false);
    println!("{}", out.bold(&field(e, "id")));
    println!("  url:         {}", field(e, "url"));
    println!("  events:      {}", join(&e["events"]));
    println!(
        "  enabled:     {}",
        if enabled {
            out.green("yes")
        } else {
            out.yellow("no (paused)")
        }
    );
    if !field(e, "description").is_empty() {
        println!("  description: {}", field(e, "description"));
    }
    println!("  created:     {}", field(e, "created_at"));
    println!("  updated:     {}", field(e, "updated_at"));
    if e["secret"].is_string() {
        println!("  secret:      {}", field(e, "secret"));
    }
}

fn join(list: &Value) -> String {
    list.as_array()
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default()
}

fn yes_no(v: &Value) -> String {
    if v.as_bool().unwrap_or(false) {
        "yes".into()
    } else {
        "no".into()
    }
}
