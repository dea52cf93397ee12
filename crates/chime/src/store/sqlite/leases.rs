//! The embedded store's leases, held in memory on the writer thread.
//!
//! A lease says "this node is attempting this delivery; nobody else may until it ends". With
//! PostgreSQL several nodes share the rows, so a lease must be a column there. An SQLite file
//! has exactly one owner process (`<file>.lock`), and every lease dies with that process
//! (`reset_leases` runs at start), so a lease never has to outlive the process. Written into
//! the row, it cost a page write (and a checkpoint copy) per claimed delivery, then another
//! one to clear it; a profile of a fanout drain put the claims' updates and their share of
//! the commits at about a third of the writer's time. Here a claim writes nothing.
//!
//! Every write runs on the writer thread, which alone changes the table (it [`adopt`]s it;
//! the functions below act on the calling thread's adopted table). Its changes follow the
//! writer's transaction: each change is journaled, and the writer calls [`committed`] or
//! [`rolled_back`] with the batch, so a rolled-back claim leaves no lease behind and a
//! rolled-back record gives its lease back. SQL on any of the store's connections reads the
//! table through `chime_leased(seq, now)`, which [`register`] installs.
//!
//! Leases are keyed by the delivery's `seq` (its rowid), not its text id: a claim's scan
//! reads the rowid from the `deliveries_due` index entry itself, so it skips the deliveries
//! in flight without reading their rows, and a key is an integer to hash, not a string to
//! allocate. SQLite may hand the rowid of the newest row out again once that row is
//! deleted, so a lease can outlive its delivery under a number a new delivery gets: the
//! insert [`forget`]s any lease under its number, and records also match the id.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use rusqlite::Connection;
use rusqlite::functions::FunctionFlags;

use crate::model::Millis;

#[derive(Clone)]
struct Held {
    owner: Arc<str>,
    token: i64,
    until: Millis,
}

#[derive(Default)]
struct Table {
    /// Looked up for every row a claim scans (`chime_leased`): a fast hash, not SipHash
    /// (the ids come from this process, not from an adversary choosing collisions).
    held: HashMap<i64, Held, foldhash::fast::RandomState>,
    /// What each change of the open transaction replaced, oldest first.
    undo: Vec<(i64, Option<Held>)>,
    /// Size at which `hold` next drops expired leases (those of attempts that never came
    /// back: a lost job, or a delivery deleted while leased).
    sweep_at: usize,
}

/// One store's lease table, shared by its connections' `chime_leased`.
#[derive(Clone)]
pub struct Shared(Arc<Mutex<Table>>);

impl Shared {
    pub fn new() -> Self {
        Self(Arc::new(Mutex::new(Table {
            sweep_at: 4096,
            ..Table::default()
        })))
    }

    fn lock(&self) -> MutexGuard<'_, Table> {
        // A panic while holding it cannot leave the map half-changed in a way that matters
        // more than losing the process's leases, which a restart does anyway.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

thread_local! {
    static ADOPTED: RefCell<Option<Shared>> = const { RefCell::new(None) };
}

/// Makes `table` the one the calling thread (the writer) changes.
pub fn adopt(table: Shared) {
    ADOPTED.with(|a| *a.borrow_mut() = Some(table));
}

fn with<R>(f: impl FnOnce(&mut Table) -> R) -> R {
    ADOPTED.with(|a| {
        let a = a.borrow();
        let table = a
            .as_ref()
            .expect("leases are changed on the writer thread only");
        f(&mut table.lock())
    })
}

impl Table {
    fn is_leased(&self, seq: i64, now: Millis) -> bool {
        self.held.get(&seq).is_some_and(|h| h.until > now)
    }

    fn set(&mut self, seq: i64, held: Option<Held>) {
        let before = match held {
            Some(h) => self.held.insert(seq, h),
            None => self.held.remove(&seq),
        };
        self.undo.push((seq, before));
    }
}

/// Leases delivery `seq` to `owner` with `token` until `until`.
pub fn hold(seq: i64, owner: &Arc<str>, token: i64, until: Millis, now: Millis) {
    with(|t| {
        if t.held.len() >= t.sweep_at {
            // Not journaled: an expired lease protects nothing, dropping it is the same state.
            t.held.retain(|_, h| h.until > now);
            t.sweep_at = (t.held.len() * 2).max(4096);
        }
        t.set(
            seq,
            Some(Held {
                owner: owner.clone(),
                token,
                until,
            }),
        );
    });
}

/// Whether delivery `seq` has a lease that has not expired at `now`.
#[cfg(test)]
pub fn is_leased(seq: i64, now: Millis) -> bool {
    with(|t| t.is_leased(seq, now))
}

/// Ends the lease of delivery `seq` if it is still `token`'s (expired or not, as long as
/// nobody else took it since); says whether it was.
pub fn take(seq: i64, token: i64) -> bool {
    with(|t| {
        if t.held.get(&seq).is_some_and(|h| h.token == token) {
            t.set(seq, None);
            true
        } else {
            false
        }
    })
}

/// Drops whatever lease is held under `seq`: a new delivery row has just been given that
/// number, so a lease under it belonged to a deleted row.
pub fn forget(seq: i64) {
    with(|t| {
        if t.held.contains_key(&seq) {
            t.set(seq, None);
        }
    });
}

/// Ends every lease of `owner`.
pub fn release_owner(owner: &str) {
    with(|t| {
        let seqs: Vec<i64> = t
            .held
            .iter()
            .filter(|(_, h)| &*h.owner == owner)
            .map(|(seq, _)| *seq)
            .collect();
        for seq in seqs {
            t.set(seq, None);
        }
    });
}

/// Ends every lease.
pub fn clear() {
    with(|t| {
        let seqs: Vec<i64> = t.held.keys().copied().collect();
        for seq in seqs {
            t.set(seq, None);
        }
    });
}

/// How many lease changes the open transaction has made so far.
pub fn changes() -> usize {
    with(|t| t.undo.len())
}

/// The open transaction committed: its lease changes stand.
pub fn committed() {
    with(|t| t.undo.clear());
}

/// The open transaction rolled back: its lease changes are undone, newest first.
pub fn rolled_back() {
    with(|t| {
        while let Some((seq, before)) = t.undo.pop() {
            match before {
                Some(h) => t.held.insert(seq, h),
                None => t.held.remove(&seq),
            };
        }
    });
}

/// Installs `chime_leased(seq, now)` on `conn`: 1 if delivery `seq` has a live lease in
/// `table`, else 0.
pub fn register(conn: &Connection, table: &Shared) -> rusqlite::Result<()> {
    let table = table.clone();
    conn.create_scalar_function("chime_leased", 2, FunctionFlags::SQLITE_UTF8, move |ctx| {
        let seq: i64 = ctx.get(0)?;
        let now: Millis = ctx.get(1)?;
        Ok(table.lock().is_leased(seq, now))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owner() -> Arc<str> {
        adopt(Shared::new());
        Arc::from("n")
    }

    #[test]
    fn a_lease_lives_until_it_expires_or_its_token_takes_it() {
        let o = owner();
        hold(1, &o, 7, 100, 0);
        committed();
        assert!(is_leased(1, 99));
        assert!(!is_leased(1, 100), "expired at its end");
        assert!(!take(1, 8), "another token cannot end it");
        assert!(take(1, 7));
        assert!(!is_leased(1, 0));
        committed();
    }

    #[test]
    fn a_rolled_back_transaction_leaves_the_leases_as_they_were() {
        let o = owner();
        hold(10, &o, 1, 100, 0);
        committed();
        // One transaction: ends a, leases b, releases everything of the owner, rolls back.
        assert!(take(10, 1));
        hold(11, &o, 2, 100, 0);
        release_owner("n");
        rolled_back();
        assert!(is_leased(10, 0), "the ended lease is back");
        assert!(!is_leased(11, 0), "the new lease is gone");
        clear();
        committed();
        assert!(!is_leased(10, 0));
    }

    #[test]
    fn forgetting_a_number_is_journaled_like_any_change() {
        let o = owner();
        hold(5, &o, 1, 100, 0);
        committed();
        forget(5);
        assert!(!is_leased(5, 0));
        rolled_back();
        assert!(
            is_leased(5, 0),
            "a rolled-back insert gives the number's lease back"
        );
        forget(6);
        assert_eq!(
            changes(),
            0,
            "forgetting a number nobody holds changes nothing"
        );
        clear();
        committed();
    }

    #[test]
    fn sql_sees_the_table() {
        let o = owner();
        let conn = Connection::open_in_memory().unwrap();
        let table = ADOPTED.with(|a| a.borrow().clone().unwrap());
        register(&conn, &table).unwrap();
        hold(42, &o, 1, 100, 0);
        committed();
        let q = |now: i64| -> bool {
            conn.query_row("SELECT chime_leased(42, ?1)", [now], |r| r.get(0))
                .unwrap()
        };
        assert!(q(50));
        assert!(!q(150));
        clear();
        committed();
    }
}
