//! `chime metrics-token`: a token that can read GET /metrics and nothing else.

use std::process::ExitCode;

use clap::Args;

use super::client::{self, ApiArgs, Client};
use super::output::{Style, print_json};
use crate::api::types::MetricsTokenOut;

#[derive(Args)]
#[command(
    after_help = "Example:\n  chime metrics-token --json | jq -r .token > /etc/prometheus/chime-token"
)]
pub struct MetricsTokenArgs {
    #[command(flatten)]
    api: ApiArgs,
}

pub fn main(args: MetricsTokenArgs) -> ExitCode {
    client::run(async move {
        let api = Client::new(&args.api)?;
        let t = api
            .post_empty::<MetricsTokenOut>(&["v1", "metrics-tokens"])
            .await?;
        if args.api.json {
            print_json(&t);
        } else {
            println!("{}", t.token);
            eprintln!(
                "{}",
                Style::stderr().dim("a token for GET /metrics only; shown once, keep it safe")
            );
        }
        Ok(())
    })
}
