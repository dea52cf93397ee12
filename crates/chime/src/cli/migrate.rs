//! `chime migrate`: brings the store's schema to this version's and exits.
//!
//! `chime serve` migrates at start too; this command lets an operator migrate once before
//! rolling out new nodes. Safe while other nodes start or run: PostgreSQL migrations take
//! an advisory lock, and each runs in one transaction. A SQLite file in use by a running
//! server is refused (one process owns it).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use crate::config::{Config, Layer};

#[derive(Args)]
pub struct MigrateArgs {
    /// Config file (TOML) overriding the defaults; see `chime default-config`.
    #[arg(long, env = "CHIME_CONFIG")]
    config: Option<PathBuf>,
    /// Directory of the embedded database, when no --database-url is given.
    #[arg(long, env = "CHIME_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Store URL: sqlite:///path/file.db or postgres://user@host/db (empty: the SQLite file
    /// in the data directory).
    #[arg(long, env = "CHIME_DATABASE_URL")]
    database_url: Option<String>,
    /// Print one JSON object: {"database", "from", "to", "migrated"}.
    #[arg(long)]
    json: bool,
}

impl MigrateArgs {
    fn into_config(self) -> Result<Config, String> {
        let file = Layer::from_file(self.config.as_deref())?;
        let cli = Layer {
            data_dir: self.data_dir,
            database_url: self.database_url,
            ..Default::default()
        };
        Config::from_layer(cli.over(file))
    }
}

/// What a person reads after `chime migrate`: whether anything changed, and the versions.
fn report(database: &str, migrated: crate::store::Migrated) -> String {
    let crate::store::Migrated { from, to } = migrated;
    if from == to {
        format!("{database}: the schema was already up to date (version {to})")
    } else if from == 0 {
        format!("{database}: created the schema (version {to})")
    } else {
        format!("{database}: migrated the schema from version {from} to {to}")
    }
}

pub fn main(args: MigrateArgs) -> ExitCode {
    let json = args.json;
    let config = match args.into_config() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("chime: configuration error: {e}");
            return ExitCode::from(2);
        }
    };
    super::init_logging(config.observability.log_format);
    let database = config.store.database();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("chime: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    // One connection is enough to migrate.
    match runtime.block_on(crate::store::open(&database, 1)) {
        Ok(opened) => {
            if json {
                let crate::store::Migrated { from, to } = opened.migrated;
                super::output::print_json(&serde_json::json!({
                    "database": database.display(),
                    "from": from,
                    "to": to,
                    "migrated": from != to,
                }));
            } else {
                println!("{}", report(&database.display(), opened.migrated));
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("chime: migrating {}: {e:#}", database.display());
            ExitCode::from(1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Migrated;

    #[test]
    fn the_report_says_what_changed() {
        let say = |from, to| report("db", Migrated { from, to });
        assert_eq!(say(0, 12), "db: created the schema (version 12)");
        assert_eq!(say(10, 12), "db: migrated the schema from version 10 to 12");
        assert_eq!(
            say(12, 12),
            "db: the schema was already up to date (version 12)"
        );
    }
}
