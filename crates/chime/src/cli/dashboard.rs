//! `chime dashboard`: a one-time sign-in link to the dashboard, made with the admin token
//! (like Jupyter's token URL), printed and, on a desktop, opened in the browser.

use std::process::ExitCode;

use super::client::{self, ApiArgs, Client};
use super::output::print_json;
use crate::api::types::SignInLinkOut;
use clap::Args;

#[derive(Args)]
#[command(
    after_help = "Examples:\n  chime dashboard\n  chime dashboard --no-open --url https://chime.example.com"
)]
pub struct DashboardArgs {
    #[command(flatten)]
    api: ApiArgs,
    /// Print the link only; do not open a browser.
    #[arg(long)]
    no_open: bool,
}

/// A desktop session: a display on Linux and the BSDs; macOS always has one.
fn has_desktop() -> bool {
    cfg!(target_os = "macos")
        || std::env::var_os("DISPLAY").is_some_and(|d| !d.is_empty())
        || std::env::var_os("WAYLAND_DISPLAY").is_some_and(|d| !d.is_empty())
}

fn open(url: &str) -> bool {
    let opener = if cfg!(target_os = "macos") {
        "open"
    } else {
        "xdg-open"
    };
    std::process::Command::new(opener)
        .arg(url)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .is_ok()
}

pub fn main(args: DashboardArgs) -> ExitCode {
    client::run(async move {
        let api = Client::new(&args.api)?;
        let link = api
            .post_empty::<SignInLinkOut>(&["v1", "dashboard-links"])
            .await?;
        if args.api.json {
            print_json(&link);
            return Ok(());
        }
        println!("{}", link.url);
        eprintln!(
            "This link signs you in once, until {}. Do not share it.",
            link.expires_at
        );
        if !args.no_open && has_desktop() && !open(&link.url) {
            eprintln!("(could not start a browser: open the link yourself)");
        }
        Ok(())
    })
}
