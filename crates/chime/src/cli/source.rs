//! `chime source create|list|show|delete|rotate-url|rejections`: a tenant's inbound sources
//! (the public URLs providers post to) from the command line.

use std::process::ExitCode;

use clap::{Args, Subcommand, ValueEnum};
use serde_json::{Map, Value, json};

use super::client::{self, ApiArgs, CliError, Client, PageArgs, TenantArg};
use super::output::{Style, Table, print_json};
use crate::api::types::{ListOut, RejectionOut, SourceIn, SourceOut, SourcePatch};

#[derive(Args)]
#[command(after_help = "Examples:\n  \
    chime source create stripe-prod --tenant acme --scheme stripe --secret whsec_…\n  \
    chime source create gh --tenant acme --scheme github --secret \"$GITHUB_WEBHOOK_SECRET\"\n  \
    chime source rejections src_01j… --tenant acme")]
pub struct SourceArgs {
    #[command(flatten)]
    api: ApiArgs,
    #[command(subcommand)]
    command: SourceCommand,
}

#[derive(Clone, Copy, ValueEnum)]
enum SchemeArg {
    Stripe,
    Github,
    Shopify,
    Standard,
    Hmac,
    Basic,
    None,
}

impl SchemeArg {
    fn name(self) -> &'static str {
        match self {
            Self::Stripe => "stripe",
            Self::Github => "github",
            Self::Shopify => "shopify",
            Self::Standard => "standard",
            Self::Hmac => "hmac",
            Self::Basic => "basic",
            Self::None => "none",
        }
    }
}

/// How a source's requests are checked, besides the scheme.
#[derive(Args)]
struct VerifyArgs {
    /// The provider's secret; repeat it to accept several during a rotation.
    #[arg(long, env = "CHIME_SOURCE_SECRET", hide_env_values = true)]
    secret: Vec<String>,
    /// hmac: the header holding the signature.
    #[arg(long)]
    hmac_header: Option<String>,
    /// hmac: sha1, sha256 or sha512 [default: sha256].
    #[arg(long, default_value = "sha256")]
    hmac_algorithm: String,
    /// hmac: hex or base64 [default: hex].
    #[arg(long, default_value = "hex")]
    hmac_encoding: String,
    /// hmac: text before the signature, e.g. sha256=.
    #[arg(long)]
    hmac_prefix: Option<String>,
    /// basic: the user name (the password is --secret).
    #[arg(long)]
    username: Option<String>,
}

#[derive(Args)]
struct CreateArgs {
    /// Lower-case letters, digits, '-' and '_'; unique in the tenant.
    name: String,
    #[command(flatten)]
    tenant: TenantArg,
    /// How requests are checked.
    #[arg(long, value_enum)]
    scheme: SchemeArg,
    #[command(flatten)]
    verify: VerifyArgs,
    /// Where the event name is: a JSON pointer (/type) or header:Name [default: the
    /// scheme's].
    #[arg(long, value_name = "LOCATOR")]
    event_name: Option<String>,
    /// Where the provider's delivery id is, for de-duplication [default: the scheme's].
    #[arg(long, value_name = "LOCATOR")]
    dedupe_key: Option<String>,
    /// Largest body accepted [default: the server's max_body_bytes].
    #[arg(long)]
    max_body_bytes: Option<u64>,
    /// Requests per second accepted; more get 429.
    #[arg(long)]
    rate_limit: Option<u32>,
    /// A JavaScript file defining `handler(webhook)`, run on each verified request before
    /// it is stored: what it returns in `data` becomes the event's body, `event` its name.
    #[arg(long, value_name = "JS_FILE")]
    transform: Option<std::path::PathBuf>,
}

#[derive(Args)]
#[command(
    after_help = "Example:\n  chime source update src_… --tenant acme --scheme stripe \\\n    --secret whsec_new --secret whsec_old      accept both during a rotation"
)]
struct UpdateArgs {
    /// The source id (src_…).
    id: String,
    #[command(flatten)]
    tenant: TenantArg,
    /// A new name.
    #[arg(long)]
    name: Option<String>,
    /// Replace how requests are checked (with --secret and the scheme's other flags).
    #[arg(long, value_enum)]
    scheme: Option<SchemeArg>,
    #[command(flatten)]
    verify: VerifyArgs,
    /// Where the event name is: a JSON pointer (/type) or header:Name.
    #[arg(long, value_name = "LOCATOR")]
    event_name: Option<String>,
    /// Where the provider's delivery id is.
    #[arg(long, value_name = "LOCATOR")]
    dedupe_key: Option<String>,
    /// Largest body accepted.
    #[arg(long)]
    max_body_bytes: Option<u64>,
    /// Requests per second accepted.
    #[arg(long, conflicts_with = "clear_rate_limit")]
    rate_limit: Option<u32>,
    /// Accept requests at any rate again.
    #[arg(long)]
    clear_rate_limit: bool,
    /// Replace the transformation with this JavaScript file.
    #[arg(long, value_name = "JS_FILE", conflicts_with = "clear_transform")]
    transform: Option<std::path::PathBuf>,
    /// Remove the transformation: events are stored as they came.
    #[arg(long)]
    clear_transform: bool,
}

#[derive(Subcommand)]
enum SourceCommand {
    /// Add a source; prints its ingest URL, the address to give the provider.
    Create(Box<CreateArgs>),
    /// Change a source's name, verification, locators or limits; the rest stays.
    Update(Box<UpdateArgs>),
    /// List a tenant's sources.
    List {
        #[command(flatten)]
        tenant: TenantArg,
        #[command(flatten)]
        page: PageArgs,
    },
    /// Show one source.
    Show {
        /// The source id (src_…).
        id: String,
        #[command(flatten)]
        tenant: TenantArg,
    },
    /// Delete a source: its URL stops answering; its events stay.
    Delete {
        id: String,
        #[command(flatten)]
        tenant: TenantArg,
    },
    /// Give a source a new ingest URL; the old one stops answering.
    RotateUrl {
        id: String,
        #[command(flatten)]
        tenant: TenantArg,
    },
    /// The requests a source refused lately (on the node that answers), newest first.
    Rejections {
        id: String,
        #[command(flatten)]
        tenant: TenantArg,
    },
}

pub fn main(args: SourceArgs) -> ExitCode {
    client::run(async move {
        let api = Client::new(&args.api)?;
        run(&api, args.api.json, args.command).await
    })
}

/// The `verify` object the flags describe; the server checks it like any other.
fn verify_of(scheme: SchemeArg, flags: VerifyArgs) -> Result<crate::model::SourceVerify, CliError> {
    let VerifyArgs {
        secret,
        hmac_header,
        hmac_algorithm,
        hmac_encoding,
        hmac_prefix,
        username,
    } = flags;
    let mut v = Map::new();
    v.insert("scheme".into(), json!(scheme.name()));
    match scheme {
        SchemeArg::None => {}
        SchemeArg::Basic => {
            let password = secret.into_iter().next().unwrap_or_default();
            v.insert("username".into(), json!(username.unwrap_or_default()));
            v.insert("password".into(), json!(password));
        }
        _ => {
            v.insert("secrets".into(), json!(secret));
            if let SchemeArg::Hmac = scheme {
                v.insert("header".into(), json!(hmac_header.unwrap_or_default()));
                v.insert("algorithm".into(), json!(hmac_algorithm));
                v.insert("encoding".into(), json!(hmac_encoding));
                if let Some(p) = hmac_prefix {
                    v.insert("prefix".into(), json!(p));
                }
            }
        }
    }
    serde_json::from_value(Value::Object(v)).map_err(|e| CliError::usage(format!("{e}")))
}

async fn run(api: &Client, json: bool, command: SourceCommand) -> Result<(), CliError> {
    let out = Style::stdout();
    match command {
        SourceCommand::Create(args) => {
            let CreateArgs {
                name,
                tenant,
                scheme,
                verify,
                event_name,
                dedupe_key,
                max_body_bytes,
                rate_limit,
                transform,
            } = *args;
            let verify = verify_of(scheme, verify)?;
            let body = SourceIn {
                name,
                verify,
                event_name,
                dedupe_key,
                max_body_bytes,
                rate_limit_per_s: rate_limit,
                transformation: transform.as_deref().map(read_code).transpose()?,
                transformation_enabled: None,
            };
            let s = api
                .post::<SourceOut>(&["v1", "tenants", &tenant.tenant, "sources"], &body)
                .await?;
            if json {
                print_json(&s);
            } else {
                println!("Created source {} ({})", out.bold(&s.id), s.scheme);
                println!("Give the provider this URL: {}", out.bold(&s.ingest_url));
            }
        }
        SourceCommand::Update(args) => {
            let UpdateArgs {
                id,
                tenant,
                name,
                scheme,
                verify,
                event_name,
                dedupe_key,
                max_body_bytes,
                rate_limit,
                clear_rate_limit,
                transform,
                clear_transform,
            } = *args;
            if scheme.is_none() && (!verify.secret.is_empty() || verify.username.is_some()) {
                return Err(CliError::usage(
                    "--secret and --username replace the verification: give --scheme with them",
                ));
            }
            let body = SourcePatch {
                name,
                verify: scheme.map(|s| verify_of(s, verify)).transpose()?,
                event_name: event_name.map(Some),
                dedupe_key: dedupe_key.map(Some),
                max_body_bytes: max_body_bytes.map(Some),
                rate_limit_per_s: match (rate_limit, clear_rate_limit) {
                    (Some(n), _) => Some(Some(n)),
                    (None, true) => Some(None),
                    (None, false) => None,
                },
                transformation: match (transform, clear_transform) {
                    (Some(path), _) => Some(Some(read_code(&path)?)),
                    (None, true) => Some(None),
                    (None, false) => None,
                },
                transformation_enabled: None,
            };
            if serde_json::to_string(&body).is_ok_and(|b| b == "{}") {
                return Err(CliError::usage(
                    "nothing to change: give at least one setting (see chime source update --help)",
                ));
            }
            let s = api
                .patch::<SourceOut>(&["v1", "tenants", &tenant.tenant, "sources", &id], &body)
                .await?
                .value;
            if json {
                print_json(&s);
            } else {
                println!("Updated source {}", out.bold(&s.id));
                print_source(false, &s);
            }
        }
        SourceCommand::List { tenant, page } => {
            let list = api
                .get::<ListOut<SourceOut>>(
                    &["v1", "tenants", &tenant.tenant, "sources"],
                    &client::page_query(&page),
                )
                .await?;
            if json {
                print_json(&list);
            } else if list.data.is_empty() {
                println!(
                    "No sources yet. Add one with: chime source create NAME --tenant {} --scheme stripe --secret …",
                    tenant.tenant
                );
            } else {
                let mut table = Table::new(&["ID", "NAME", "SCHEME", "EVENT NAME", "INGEST URL"]);
                for s in &list.data {
                    table.row(vec![
                        s.id.clone(),
                        s.name.clone(),
                        s.scheme.clone(),
                        s.event_name.clone(),
                        s.ingest_url.clone(),
                    ]);
                }
                table.print(Style::stdout());
                client::print_next_cursor(&list);
            }
        }
        SourceCommand::Show { id, tenant } => {
            let s = api
                .get::<SourceOut>(&["v1", "tenants", &tenant.tenant, "sources", &id], &())
                .await?;
            print_source(json, &s.value);
        }
        SourceCommand::RotateUrl { id, tenant } => {
            let s = api
                .post_empty::<SourceOut>(&[
                    "v1",
                    "tenants",
                    &tenant.tenant,
                    "sources",
                    &id,
                    "rotate-url",
                ])
                .await?;
            if json {
                print_json(&s);
            } else {
                println!(
                    "New ingest URL (the old one no longer answers): {}",
                    out.bold(&s.ingest_url)
                );
            }
        }
        SourceCommand::Delete { id, tenant } => {
            api.delete(&["v1", "tenants", &tenant.tenant, "sources", &id])
                .await?;
            if !json {
                println!("Deleted source {id}");
            }
        }
        SourceCommand::Rejections { id, tenant } => {
            let list = api
                .get::<ListOut<RejectionOut>>(
                    &[
                        "v1",
                        "tenants",
                        &tenant.tenant,
                        "sources",
                        &id,
                        "rejections",
                    ],
                    &(),
                )
                .await?;
            if json {
                print_json(&list);
            } else if list.data.is_empty() {
                println!("No rejections on this node.");
            } else {
                let mut table = Table::new(&["AT", "CODE", "WHY"]);
                for r in &list.data {
                    table.row(vec![r.at.clone(), r.code.clone(), r.detail.clone()]);
                }
                table.print(Style::stdout());
            }
        }
    }
    Ok(())
}

fn print_source(json: bool, s: &SourceOut) {
    let out = Style::stdout();
    if json {
        print_json(s);
        return;
    }
    println!("{} {}", out.bold(&s.id), s.name);
    println!(
        "  scheme      {} ({} secret{})",
        s.scheme,
        s.secrets,
        if s.secrets == 1 { "" } else { "s" }
    );
    println!("  event name  {}", s.event_name);
    if let Some(d) = &s.dedupe_key {
        println!("  dedupe key  {d}");
    }
    if let Some(r) = s.rate_limit_per_s {
        println!("  rate limit  {r}/s");
    }
    println!("  ingest URL  {}", s.ingest_url);
}

/// A transformation's JavaScript, from the file a flag names.
fn read_code(path: &std::path::Path) -> Result<String, CliError> {
    std::fs::read_to_string(path)
        .map_err(|e| CliError::usage(format!("cannot read {}: {e}", path.display())))
}
