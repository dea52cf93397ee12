//! `chime endpoint add|list|show|update|delete|disable|enable|rotate-secret|test`: a tenant's
//! receiver URLs and their delivery settings.

use std::process::ExitCode;

use clap::{Args, Subcommand};
mod print;

use super::client::{self, ApiArgs, CliError, Client, PageArgs, TenantArg};
use super::output::{Style, Table, print_json};
use crate::api::types::{
    EndpointDetailOut, EndpointIn, EndpointOut, EndpointPatch, ListOut, PublishedOut, RotateIn,
    RotatedOut, SecretOut, SignatureScheme, TestEventIn,
};
use crate::model::{Destination, EndpointAuth, TlsSettings};
use print::{print_endpoint, settings_lines, yes_no};

#[derive(Args)]
#[command(after_help = "Examples:\n  \
    chime endpoint add http://127.0.0.1:5000/webhook --tenant acme --events 'order.*'\n  \
    chime endpoint add https://example.com/hook --tenant acme --ordered -H 'X-Api-Key: k1'\n  \
    chime endpoint list --tenant acme\n  \
    chime endpoint show ep_01j… --tenant acme --secret\n  \
    chime endpoint update ep_01j… --tenant acme --rate-limit 10 --filter '$[?@.data.amount > 100]'\n  \
    chime endpoint rotate-secret ep_01j… --tenant acme --grace 24h\n  \
    chime endpoint delete ep_01j… --tenant acme")]
pub struct EndpointArgs {
    #[command(flatten)]
    api: ApiArgs,
    #[command(subcommand)]
    command: EndpointCommand,
}

#[derive(Subcommand)]
enum EndpointCommand {
    /// Register a receiver URL; prints its id and signing secret.
    #[command(after_help = "Examples:\n  \
        chime endpoint add http://127.0.0.1:5000/webhook --tenant acme --events 'order.*,user.created'\n  \
        chime endpoint add https://example.com/hook --tenant acme --signature ed25519 \\\n    \
        --ordered --header 'X-Api-Key: k1' --filter '$[?@.data.amount > 100]'")]
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
        /// Use this secret instead of a generated one: `whsec_…` (HMAC, v1) or `whsk_…`
        /// (Ed25519, v1a; receivers then verify with its whpk_ public key).
        #[arg(long, conflicts_with = "signature")]
        secret: Option<String>,
        /// The signature scheme of the generated secret: `hmac` (v1, a shared whsec_ secret)
        /// or `ed25519` (v1a; receivers verify with a whpk_ public key) [default: hmac].
        #[arg(long, value_enum)]
        signature: Option<SignatureScheme>,
        /// Deliver strictly in the order events were accepted, one at a time; a failing
        /// delivery holds back the ones behind it until it succeeds or is skipped.
        #[arg(long)]
        ordered: bool,
        #[command(flatten)]
        settings: SettingsArgs,
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
    /// Change an endpoint's URL, subscription or delivery settings; what is not given stays.
    #[command(after_help = "Examples:\n  \
        chime endpoint update ep_01j… --tenant acme --target https://example.com/v2/hook\n  \
        chime endpoint update ep_01j… --tenant acme --events 'order.*' --rate-limit 10 --clear-filter\n  \
        chime endpoint update ep_01j… --tenant acme --header 'X-Api-Key: k2' --header 'X-Team: ops'")]
    Update {
        /// The endpoint id.
        id: String,
        #[command(flatten)]
        tenant: TenantArg,
        /// The new URL deliveries are POSTed to (`--url` is the address of chime itself).
        #[arg(long, value_name = "URL")]
        target: Option<String>,
        /// Replace the subscription: event names or patterns, repeated or comma-separated.
        #[arg(long, short = 'e', value_delimiter = ',')]
        events: Vec<String>,
        /// Deliver in acceptance order, one at a time.
        #[arg(long, conflicts_with = "unordered")]
        ordered: bool,
        /// Deliver in parallel again (undo --ordered).
        #[arg(long)]
        unordered: bool,
        #[command(flatten)]
        settings: SettingsArgs,
        /// Go back to the server's default cap on attempts in flight.
        #[arg(long, conflicts_with = "max_in_flight")]
        clear_max_in_flight: bool,
        /// Remove the rate limit.
        #[arg(long, conflicts_with = "rate_limit")]
        clear_rate_limit: bool,
        /// Remove the filter: every subscribed event is delivered.
        #[arg(long, conflicts_with = "filter")]
        clear_filter: bool,
        /// Remove every custom header.
        #[arg(long, conflicts_with = "headers")]
        clear_headers: bool,
        /// Remove the TLS settings (the system's roots only, no client certificate).
        #[arg(long, conflicts_with_all = ["ca_file", "client_cert", "insecure_skip_verify"])]
        clear_tls: bool,
        /// Remove the authentication.
        #[arg(long, conflicts_with_all = ["basic_auth", "oauth2_token_url"])]
        clear_auth: bool,
        /// Remove the endpoint's own proxy (the server's egress proxy applies again).
        #[arg(long, conflicts_with = "proxy")]
        clear_proxy: bool,
        /// Remove the transformation: deliveries go as published.
        #[arg(long, conflicts_with_all = ["transform", "transform_off", "transform_on"])]
        clear_transform: bool,
        /// Stop running the transformation, keeping its code.
        #[arg(long, conflicts_with = "transform_on")]
        transform_off: bool,
        /// Run the transformation again.
        #[arg(long)]
        transform_on: bool,
        /// Deliver over HTTP again (with --target http(s)://…) instead of to a broker.
        #[arg(long, conflicts_with = "destination")]
        clear_destination: bool,
        /// Pause it (as `chime endpoint disable`).
        #[arg(long, conflicts_with = "enabled")]
        disabled: bool,
        /// Resume it (as `chime endpoint enable`).
        #[arg(long)]
        enabled: bool,
    },
    /// Delete an endpoint, with its deliveries and their attempts.
    #[command(after_help = "Example:\n  chime endpoint delete ep_01j… --tenant acme")]
    Delete {
        /// The endpoint id.
        id: String,
        #[command(flatten)]
        tenant: TenantArg,
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
    /// Send a test event to this endpoint alone (signed, retried and logged like any other).
    #[command(
        after_help = "Example:\n  chime endpoint test ep_01j… --tenant acme --event order.created --data '{\"id\": 1}'"
    )]
    Test {
        /// The endpoint id.
        id: String,
        #[command(flatten)]
        tenant: TenantArg,
        /// The event name [default: chime.test].
        #[arg(long)]
        event: Option<String>,
        /// The event's data, as JSON [default: {"test": true}].
        #[arg(long)]
        data: Option<String>,
    },
}

/// Delivery settings that `add` and `update` both take.
#[derive(Args)]
struct SettingsArgs {
    /// A note for people reading the endpoint list.
    #[arg(long)]
    description: Option<String>,
    /// Most attempts in flight at once to this endpoint, 1 to 100 (1 when ordered)
    /// [server default: its --endpoint-concurrency, 8].
    #[arg(long, value_name = "N")]
    max_in_flight: Option<u32>,
    /// Most attempts started per second, 1 to 100000 [default: no limit].
    #[arg(long, value_name = "N")]
    rate_limit: Option<u32>,
    /// A header sent with every delivery, as 'Name: value'; repeat for each (at most 20).
    /// With `update`, the headers given replace all the current ones.
    #[arg(long = "header", short = 'H', value_name = "NAME: VALUE", value_parser = parse_header)]
    headers: Vec<(String, String)>,
    /// Deliver only the events this RFC 9535 JSONPath query selects; it runs over a
    /// one-element array holding the event, e.g. '$[?@.data.amount > 100]'.
    #[arg(long, value_name = "JSONPATH")]
    filter: Option<String>,
    /// A JavaScript file defining `function handler(webhook) { … return webhook; }`, run on
    /// each delivery before its first attempt (see the README's "Transformations"); refused
    /// with its line and column if it does not compile.
    #[arg(long, value_name = "JS_FILE")]
    transform: Option<std::path::PathBuf>,
    /// A PEM file of CA certificates trusted for this receiver besides the system's (a
    /// private CA).
    #[arg(long, value_name = "PEM_FILE")]
    ca_file: Option<std::path::PathBuf>,
    /// A PEM client certificate (chain) presented to the receiver: mutual TLS. With
    /// --client-key.
    #[arg(long, value_name = "PEM_FILE", requires = "client_key")]
    client_cert: Option<std::path::PathBuf>,
    /// The PEM private key of --client-cert.
    #[arg(long, value_name = "PEM_FILE", requires = "client_cert")]
    client_key: Option<std::path::PathBuf>,
    /// Do not verify the receiver's certificate (shown as a warning wherever the endpoint
    /// is). For tests against self-signed receivers only.
    #[arg(long)]
    insecure_skip_verify: bool,
    /// HTTP basic authentication on every delivery, as USER:PASSWORD.
    #[arg(
        long,
        value_name = "USER:PASSWORD",
        conflicts_with = "oauth2_token_url"
    )]
    basic_auth: Option<String>,
    /// OAuth2 client credentials: the token URL (with --oauth2-client-id and
    /// --oauth2-client-secret); chime sends the token it gets as a bearer token.
    #[arg(long, value_name = "URL", requires_all = ["oauth2_client_id", "oauth2_client_secret"])]
    oauth2_token_url: Option<String>,
    #[arg(long, value_name = "ID", requires = "oauth2_token_url")]
    oauth2_client_id: Option<String>,
    #[arg(
        long,
        value_name = "SECRET",
        env = "CHIME_OAUTH2_CLIENT_SECRET",
        requires = "oauth2_token_url"
    )]
    oauth2_client_secret: Option<String>,
    #[arg(long, requires = "oauth2_token_url")]
    oauth2_scope: Option<String>,
    #[arg(long, requires = "oauth2_token_url")]
    oauth2_audience: Option<String>,
    /// Send this endpoint's deliveries through this HTTP proxy (http://host:port).
    #[arg(long, value_name = "URL")]
    proxy: Option<String>,
    /// Receive only events from these inbound sources (src_…); repeat or comma-separate.
    #[arg(long = "source", value_name = "SOURCE_ID", value_delimiter = ',')]
    sources: Vec<String>,
    /// Publish to this NATS subject of the server the URL names (nats://host:4222) instead
    /// of POSTing; credentials, if any, with --basic-auth.
    #[arg(long, value_name = "SUBJECT", group = "destination")]
    nats_subject: Option<String>,
    /// With --nats-subject: publish through JetStream, a stream's acknowledgement counting
    /// as success.
    #[arg(long, requires = "nats_subject")]
    jetstream: bool,
    /// Publish to RabbitMQ (amqp://host:5672/vhost) with this routing key, confirmed by the
    /// broker; with the default exchange it names the queue.
    #[arg(long, value_name = "KEY", group = "destination")]
    rabbitmq_routing_key: Option<String>,
    /// With --rabbitmq-routing-key: the exchange [default: "", the default exchange].
    #[arg(long, value_name = "EXCHANGE", requires = "rabbitmq_routing_key")]
    rabbitmq_exchange: Option<String>,
    /// Append to this Redis stream (redis://host:6379/db) with XADD.
    #[arg(long, value_name = "STREAM", group = "destination")]
    redis_stream: Option<String>,
    /// With --redis-stream: trim the stream to about this many entries.
    #[arg(long, value_name = "N", requires = "redis_stream")]
    redis_maxlen: Option<u64>,
}

fn read_pem(path: &std::path::Path) -> Result<String, CliError> {
    std::fs::read_to_string(path)
        .map_err(|e| CliError::usage(format!("cannot read {}: {e}", path.display())))
}

impl SettingsArgs {
    /// The transformation's code, read from --transform.
    fn transformation(&self) -> Result<Option<String>, CliError> {
        self.transform.as_deref().map(read_pem).transpose()
    }

    /// The TLS settings given, if any.
    fn tls(&self) -> Result<Option<TlsSettings>, CliError> {
        let read = |p: &Option<std::path::PathBuf>| p.as_deref().map(read_pem).transpose();
        let tls = TlsSettings {
            ca_pem: read(&self.ca_file)?,
            client_cert_pem: read(&self.client_cert)?,
            client_key_pem: read(&self.client_key)?,
            insecure_skip_verify: self.insecure_skip_verify,
        };
        Ok((!tls.is_empty()).then_some(tls))
    }

    /// The authentication given, if any.
    fn auth(&self) -> Result<Option<EndpointAuth>, CliError> {
        if let Some(pair) = &self.basic_auth {
            let (username, password) = pair
                .split_once(':')
                .ok_or_else(|| CliError::usage("--basic-auth is USER:PASSWORD"))?;
            return Ok(Some(EndpointAuth::Basic {
                username: username.to_owned(),
                password: password.to_owned(),
            }));
        }
        Ok(self
            .oauth2_token_url
            .clone()
            .map(|token_url| EndpointAuth::Oauth2ClientCredentials {
                token_url,
                client_id: self.oauth2_client_id.clone().unwrap_or_default(),
                client_secret: self.oauth2_client_secret.clone().unwrap_or_default(),
                scope: self.oauth2_scope.clone(),
                audience: self.oauth2_audience.clone(),
            }))
    }

    /// The broker destination given, if any.
    fn destination(&self) -> Option<Destination> {
        if let Some(subject) = &self.nats_subject {
            return Some(Destination::Nats {
                subject: subject.clone(),
                jetstream: self.jetstream,
            });
        }
        if let Some(routing_key) = &self.rabbitmq_routing_key {
            return Some(Destination::Rabbitmq {
                exchange: self.rabbitmq_exchange.clone().unwrap_or_default(),
                routing_key: routing_key.clone(),
            });
        }
        self.redis_stream
            .clone()
            .map(|stream| Destination::RedisStream {
                stream,
                maxlen: self.redis_maxlen,
            })
    }

    /// The headers given, if any (`None`: leave them as they are).
    fn headers(&self) -> Option<std::collections::BTreeMap<String, String>> {
        (!self.headers.is_empty()).then(|| self.headers.iter().cloned().collect())
    }
}

/// Whether `--url` was written after `update`. It is the global flag for chime's own address,
/// but there it reads like the endpoint's new URL, and taken as chime's address it would send
/// the API token to the receiver; so `update` refuses it in that place.
fn url_flag_after_update() -> bool {
    let args: Vec<String> = std::env::args_os()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let Some(at) = args.iter().position(|a| a == "update") else {
        return false;
    };
    args[at + 1..]
        .iter()
        .take_while(|a| *a != "--")
        .any(|a| a == "--url" || a.starts_with("--url="))
}

/// `Name: value` (as curl's -H) into its two parts; the value may be empty.
fn parse_header(text: &str) -> Result<(String, String), String> {
    let (name, value) = text
        .split_once(':')
        .ok_or_else(|| format!("{text:?} is not 'Name: value'"))?;
    let name = name.trim();
    if name.is_empty() || name.contains(char::is_whitespace) {
        return Err(format!(
            "{text:?}: the header name must be one word before the ':'"
        ));
    }
    Ok((name.to_owned(), value.trim().to_owned()))
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
            secret,
            signature,
            ordered,
            settings,
            disabled,
        } => {
            let (tls, auth, destination) =
                (settings.tls()?, settings.auth()?, settings.destination());
            let transformation = settings.transformation()?;
            let body = EndpointIn {
                url: target,
                events: (!events.is_empty()).then_some(events),
                secret,
                signature,
                ordered: ordered.then_some(true),
                enabled: disabled.then_some(false),
                headers: settings.headers(),
                description: settings.description,
                max_in_flight: settings.max_in_flight,
                rate_limit_per_s: settings.rate_limit,
                tls,
                auth,
                proxy: settings.proxy,
                destination,
                sources: (!settings.sources.is_empty()).then_some(settings.sources),
                transformation,
                transformation_enabled: None,
                filter: settings.filter,
            };
            let e = api
                .post::<EndpointOut>(&["v1", "tenants", &tenant.tenant, "endpoints"], &body)
                .await?;
            if json {
                print_json(&e);
            } else {
                let secret = e.secret.clone().unwrap_or_default();
                println!("Added endpoint {} → {}", out.bold(&e.id), e.url);
                println!("  events: {}", e.events.join(","));
                println!("  secret: {secret}");
                // An Ed25519 endpoint's receivers verify with the public key, not the secret.
                let verify_with = match &e.public_key {
                    Some(public) => {
                        println!("  public key: {public}");
                        public.clone()
                    }
                    None => secret,
                };
                for (label, value) in settings_lines(&e, false) {
                    if label.is_empty() {
                        // A further header, under the first one's value.
                        println!("  {:9}{value}", "");
                    } else {
                        println!("  {label}: {value}");
                    }
                }
                if !e.enabled {
                    println!(
                        "  disabled: nothing is delivered until `chime endpoint enable {}`",
                        e.id
                    );
                }
                println!(
                    "{}",
                    out.dim(&format!(
                        "  verify deliveries with: chime listen --secret {verify_with}"
                    ))
                );
            }
        }
        EndpointCommand::List { tenant, page } => {
            let list = api
                .get::<ListOut<EndpointOut>>(
                    &["v1", "tenants", &tenant.tenant, "endpoints"],
                    &client::page_query(&page),
                )
                .await?;
            if json {
                print_json(&list);
                return Ok(());
            }
            let mut table = Table::new(&["ID", "URL", "EVENTS", "ENABLED", "DESCRIPTION"]);
            for e in &list.data {
                table.row(vec![
                    e.id.clone(),
                    e.url.clone(),
                    e.events.join(","),
                    yes_no(e.enabled),
                    e.description.clone(),
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
            let mut e = api.get::<EndpointDetailOut>(&path, &()).await?.value;
            if secret {
                let s = api
                    .get::<SecretOut>(
                        &["v1", "tenants", &tenant.tenant, "endpoints", &id, "secret"],
                        &(),
                    )
                    .await?;
                e.endpoint.secret = Some(s.value.secret);
            }
            if json {
                print_json(&e);
            } else {
                print_endpoint(&e, &tenant.tenant, out);
            }
        }
        EndpointCommand::Update {
            id,
            tenant,
            target,
            events,
            ordered,
            unordered,
            settings,
            clear_max_in_flight,
            clear_rate_limit,
            clear_filter,
            clear_headers,
            clear_tls,
            clear_auth,
            clear_proxy,
            clear_transform,
            transform_off,
            transform_on,
            clear_destination,
            disabled,
            enabled,
        } => {
            if url_flag_after_update() {
                return Err(CliError::usage(
                    "--url after `update` is the address of chime itself, not the endpoint's: \
                     use --target URL to change where deliveries go (to reach another chime, \
                     set CHIME_URL or put --url before `update`)",
                ));
            }
            let (tls, auth, destination) =
                (settings.tls()?, settings.auth()?, settings.destination());
            let transformation = settings.transformation()?;
            let body = EndpointPatch {
                url: target,
                events: (!events.is_empty()).then_some(events),
                ordered: (ordered || unordered).then_some(ordered),
                enabled: (disabled || enabled).then_some(enabled),
                headers: settings
                    .headers()
                    .or_else(|| clear_headers.then(Default::default)),
                description: settings.description,
                max_in_flight: set_or_clear(settings.max_in_flight, clear_max_in_flight),
                rate_limit_per_s: set_or_clear(settings.rate_limit, clear_rate_limit),
                tls: set_or_clear(tls, clear_tls),
                auth: set_or_clear(auth, clear_auth),
                proxy: set_or_clear(settings.proxy, clear_proxy),
                destination: set_or_clear(destination, clear_destination),
                sources: (!settings.sources.is_empty()).then_some(Some(settings.sources)),
                transformation: set_or_clear(transformation, clear_transform),
                transformation_enabled: (transform_off || transform_on).then_some(transform_on),
                filter: set_or_clear(settings.filter, clear_filter),
            };
            if serde_json::to_string(&body).is_ok_and(|b| b == "{}") {
                return Err(CliError::usage(
                    "nothing to change: give at least one setting (see chime endpoint update --help)",
                ));
            }
            let e = api
                .patch::<EndpointDetailOut>(
                    &["v1", "tenants", &tenant.tenant, "endpoints", &id],
                    &body,
                )
                .await?;
            if json {
                print_json(&e);
            } else {
                println!("Updated endpoint {}", out.bold(&id));
                print_endpoint(&e, &tenant.tenant, out);
            }
        }
        EndpointCommand::Delete { id, tenant } => {
            api.delete(&["v1", "tenants", &tenant.tenant, "endpoints", &id])
                .await?;
            if json {
                // The server answers 204 with no body; say what was deleted.
                print_json(&serde_json::json!({ "id": id, "deleted": true }));
            } else {
                println!("Deleted endpoint {id}, with its deliveries.");
            }
        }
        EndpointCommand::Disable { id, tenant } => {
            set_enabled(api, json, &tenant.tenant, &id, false).await?;
        }
        EndpointCommand::Enable { id, tenant } => {
            set_enabled(api, json, &tenant.tenant, &id, true).await?;
        }
        EndpointCommand::RotateSecret { id, tenant, grace } => {
            let body = RotateIn {
                grace_period_seconds: grace.map(|g| g.as_secs()),
            };
            let r = api
                .post::<RotatedOut>(
                    &[
                        "v1",
                        "tenants",
                        &tenant.tenant,
                        "endpoints",
                        &id,
                        "secret",
                        "rotate",
                    ],
                    &body,
                )
                .await?;
            if json {
                print_json(&r);
            } else {
                // An Ed25519 endpoint's receivers need the new public key; its private key
                // signs inside chime and is nobody else's business (`--json` has both).
                match &r.public_key {
                    Some(public) => println!(
                        "New public key (receivers verify with it): {}",
                        out.bold(public)
                    ),
                    None => println!("New secret: {}", out.bold(&r.secret)),
                }
                match &r.previous_secret_expires_at {
                    Some(t) => println!(
                        "The previous key keeps signing too until {t}: update your \
                         receiver before then."
                    ),
                    None => println!("The previous key no longer signs."),
                }
            }
        }
        EndpointCommand::Test {
            id,
            tenant,
            event,
            data,
        } => {
            let data = data
                .map(serde_json::value::RawValue::from_string)
                .transpose()
                .map_err(|e| CliError::usage(format!("--data is not JSON: {e}")))?;
            let body = TestEventIn {
                event: event.map(Into::into),
                data: data.as_deref(),
            };
            let p = api
                .post::<PublishedOut>(
                    &["v1", "tenants", &tenant.tenant, "endpoints", &id, "test"],
                    &body,
                )
                .await?;
            if json {
                print_json(&p);
            } else {
                let delivery = p.deliveries.first().map(|d| d.id.as_str()).unwrap_or("");
                println!(
                    "Sent test event {} ({}) as delivery {}; follow it with: chime deliveries show {delivery} --tenant {}",
                    out.bold(&p.id),
                    p.event,
                    delivery,
                    tenant.tenant
                );
            }
        }
    }
    Ok(())
}

/// A PATCH field: the new value, or `Some(None)` (sent as `null`) to clear the setting, or
/// `None` to leave it as it is.
pub(super) fn set_or_clear<T>(value: Option<T>, clear: bool) -> Option<Option<T>> {
    match value {
        Some(v) => Some(Some(v)),
        None => clear.then_some(None),
    }
}

async fn set_enabled(
    api: &Client,
    json: bool,
    tenant: &str,
    id: &str,
    enabled: bool,
) -> Result<(), CliError> {
    let body = EndpointPatch {
        enabled: Some(enabled),
        ..Default::default()
    };
    let e = api
        .patch::<EndpointOut>(&["v1", "tenants", tenant, "endpoints", id], &body)
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
