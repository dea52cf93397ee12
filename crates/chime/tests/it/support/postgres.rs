//! PostgreSQL for tests: a fresh schema (cheap: conformance cases make one each) or a fresh
//! database (for tests that cut every connection of their database) on the server named by
//! `CHIME_TEST_DATABASE_URL`, dropped again when the guard is dropped.
//!
//! The server exists on every dev and CI machine (`.ci/run` starts it), so these tests never
//! skip: an unreachable server fails them, with a message that says what to do.

use tokio_postgres::NoTls;

/// The server every dev and CI machine has; `CHIME_TEST_DATABASE_URL` overrides it.
pub const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

pub fn base_url() -> String {
    std::env::var("CHIME_TEST_DATABASE_URL")
        .ok()
        .filter(|u| !u.trim().is_empty())
        .unwrap_or_else(|| DEFAULT_URL.to_owned())
}

/// A unique lower-case name with `prefix` (identifiers are folded to lower case).
fn unique(prefix: &str) -> String {
    chime::model::new_id(prefix).to_lowercase()
}

async fn admin(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, NoTls)
        .await
        .unwrap_or_else(|e| {
            panic!(
                "PostgreSQL at {url} is unreachable ({e}). The store's tests run on PostgreSQL \
                 too: start the server (.ci/run does) or point CHIME_TEST_DATABASE_URL at one."
            )
        });
    tokio::spawn(async move {
        let _ = connection.await;
    });
    client
}

/// Runs `sql` on `url` from a thread of its own: usable in `Drop`, inside or outside a runtime.
fn run_detached(url: String, sql: String) {
    let done = std::thread::spawn(move || {
        let Ok(rt) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        else {
            return;
        };
        rt.block_on(async move {
            if let Ok((client, connection)) = tokio_postgres::connect(&url, NoTls).await {
                tokio::spawn(async move {
                    let _ = connection.await;
                });
                if let Err(e) = client.batch_execute(&sql).await {
                    eprintln!("test clean-up `{sql}` failed: {e}");
                }
            }
        });
    });
    let _ = done.join();
}

/// `url` with its query string extended by `param`.
fn with_param(url: &str, param: &str) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}{param}")
}

/// `url` naming the database `name` instead of its own.
fn with_database(url: &str, name: &str) -> String {
    let (head, query) = match url.split_once('?') {
        Some((h, q)) => (h, Some(q)),
        None => (url, None),
    };
    let authority_start = head.find("://").map_or(0, |i| i + 3);
    let path_start = head[authority_start..]
        .find('/')
        .map_or(head.len(), |i| authority_start + i);
    let mut out = format!("{}/{name}", &head[..path_start]);
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    out
}

/// A schema of its own in the test database; `url` selects it (`search_path`).
pub struct PgSchema {
    pub url: String,
    pub name: String,
    base: String,
}

impl PgSchema {
    pub async fn create() -> Self {
        let base = base_url();
        let name = unique("chime_t");
        admin(&base)
            .await
            .batch_execute(&format!("CREATE SCHEMA {name}"))
            .await
            .expect("create a test schema");
        Self {
            url: with_param(&base, &format!("options=-csearch_path%3D{name}")),
            name,
            base,
        }
    }
}

impl PgSchema {
    /// A client whose search path is this schema (for checks and fault injection).
    pub async fn client(&self) -> tokio_postgres::Client {
        admin(&self.url).await
    }
}

impl Drop for PgSchema {
    fn drop(&mut self) {
        run_detached(
            self.base.clone(),
            format!("DROP SCHEMA IF EXISTS {} CASCADE", self.name),
        );
    }
}

/// A database of its own, for tests that cut all of its connections.
pub struct PgDatabase {
    pub url: String,
    pub name: String,
    base: String,
}

impl PgDatabase {
    pub async fn create() -> Self {
        let base = base_url();
        let name = unique("chime_f");
        admin(&base)
            .await
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .expect("create a test database");
        Self {
            url: with_database(&base, &name),
            name,
            base,
        }
    }

    /// A client connected to this database (for checks and fault injection).
    pub async fn client(&self) -> tokio_postgres::Client {
        admin(&self.url).await
    }

    /// Cuts every connection to this database, and only this one: what a database restart
    /// or a network cut looks like to chime. Returns how many were cut.
    pub async fn cut_connections(&self) -> u64 {
        let client = admin(&self.base).await;
        client
            .query(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
                 WHERE datname = $1 AND pid <> pg_backend_pid()",
                &[&self.name],
            )
            .await
            .expect("terminate backends")
            .len() as u64
    }
}

impl PgDatabase {
    /// Makes the server refuse (or accept again) new connections to this database: an
    /// outage that lasts until it is lifted.
    pub async fn set_allow_connections(&self, allow: bool) {
        admin(&self.base)
            .await
            .batch_execute(&format!(
                "ALTER DATABASE {} WITH ALLOW_CONNECTIONS {allow}",
                self.name
            ))
            .await
            .expect("alter database");
    }
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        run_detached(
            self.base.clone(),
            format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
        );
    }
}
