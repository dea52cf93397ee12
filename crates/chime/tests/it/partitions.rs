//! PostgreSQL's time partitions (issue 19): made ahead by retention, dropped whole once past
//! retention unless a delivery in them is pending, rows that landed outside every partition
//! moved into the one made for them, idempotency keys that hold across partitions, and an
//! upgrade of a database in the unpartitioned shape. The rule retention keeps on both
//! backends is in the conformance suite (`retention_purges_payloads_then_events`).

use crate::store_conformance::{HELD, endpoint, event, lease, outcome, tenant};
use crate::support::postgres::PgSchema;
use chime::store::postgres::PostgresStore;
use chime::store::{Admin, EventLog, Queue, Retention};

const DAY: i64 = 86_400_000;
/// 2024-10-04T00:00:00Z: a day boundary, so partitions start at `T0 + k * DAY`.
const T0: i64 = 20_000 * DAY;

/// A fresh schema with tenant `a` and one endpoint: its store and a client of its own.
async fn set_up() -> (PgSchema, PostgresStore, tokio_postgres::Client) {
    let schema = PgSchema::create().await;
    let s = crate::postgres_faults::open(&schema.url).await;
    let c = schema.client().await;
    s.create_tenant(tenant("a")).await.unwrap();
    s.create_endpoint(endpoint("a", &["*"], true))
        .await
        .unwrap();
    (schema, s, c)
}

/// The partition (table name) each of `table`'s rows with these ids is in.
async fn partition_of(c: &tokio_postgres::Client, table: &str, id: &str) -> Option<String> {
    c.query_opt(
        &format!("SELECT tableoid::regclass::text FROM {table} WHERE id = $1"),
        &[&id],
    )
    .await
    .unwrap()
    .map(|r| r.get(0))
}

async fn partitions(c: &tokio_postgres::Client) -> Vec<(String, i64, i64)> {
    c.query(
        "SELECT suffix, lo, hi FROM chime_partitions() ORDER BY lo",
        &[],
    )
    .await
    .unwrap()
    .iter()
    .map(|r| (r.get(0), r.get(1), r.get(2)))
    .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitions_are_made_ahead_and_dropped_whole_unless_a_delivery_is_pending() {
    let (_schema, s, c) = set_up().await;

    assert_eq!(s.ensure_partitions(T0, T0 + 3 * DAY, DAY).await.unwrap(), 3);
    assert_eq!(
        s.ensure_partitions(T0 + DAY / 2, T0 + 3 * DAY, DAY)
            .await
            .unwrap(),
        0,
        "made once"
    );
    let made = partitions(&c).await;
    assert_eq!(
        made.iter().map(|p| (p.1, p.2)).collect::<Vec<_>>(),
        vec![
            (T0, T0 + DAY),
            (T0 + DAY, T0 + 2 * DAY),
            (T0 + 2 * DAY, T0 + 3 * DAY)
        ]
    );
    assert_eq!(made[0].0, "20241004t000000", "named after its first second");

    // Day 0: delivered. Day 1: still pending. Day 2: delivered.
    let publish = |at, token| {
        let s = &s;
        async move {
            s.publish(event("a", "x", None, at), lease("n", token, HELD))
                .await
                .unwrap()
        }
    };
    let day0 = publish(T0 + 1_000, 1).await;
    let day1 = publish(T0 + DAY + 1_000, 2).await;
    let day2 = publish(T0 + 2 * DAY + 5, 3).await;
    for p in [&day0, &day2] {
        let applied = s
            .record(vec![outcome(
                &p.jobs[0],
                true,
                None,
                p.event.created_at + 1,
            )])
            .await
            .unwrap();
        assert_eq!(
            applied,
            vec![true],
            "records find the delivery in its partition"
        );
    }
    assert_eq!(
        partition_of(&c, "events", &day0.event.id).await.as_deref(),
        Some("events_20241004t000000")
    );
    let attempt_partition: String = c
        .query_one(
            "SELECT tableoid::regclass::text FROM attempts WHERE delivery_id = $1",
            &[&&*day0.jobs[0].delivery_id],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(attempt_partition, "attempts_20241004t000000");

    // Past day 2's start: days 0 and 1 are wholly older; day 1 has a pending delivery.
    let cutoff = T0 + 2 * DAY + 10;
    assert_eq!(
        s.purge_events(cutoff, 500).await.unwrap(),
        1,
        "day 0 dropped"
    );
    assert!(s.get_event("a", &day0.event.id).await.unwrap().is_none());
    assert!(s.get_event("a", &day1.event.id).await.unwrap().is_some());
    assert!(
        s.get_event("a", &day2.event.id).await.unwrap().is_some(),
        "rows of a partition not yet past the cutoff are never deleted one by one"
    );
    assert_eq!(partitions(&c).await.len(), 2);

    s.record(vec![outcome(&day1.jobs[0], true, None, T0 + DAY + 2_000)])
        .await
        .unwrap();
    assert_eq!(s.purge_events(cutoff, 500).await.unwrap(), 1, "day 1 now");
    assert!(s.get_event("a", &day1.event.id).await.unwrap().is_none());
    assert_eq!(partitions(&c).await.len(), 1);
    let left: i64 = c
        .query_one("SELECT count(*) FROM deliveries", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(left, 1, "only day 2's delivery is left");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_outside_every_partition_move_into_the_one_made_for_them() {
    let (_schema, s, c) = set_up().await;
    let p = s
        .publish(event("a", "x", Some("k1"), T0 + 5), lease("n", 1, HELD))
        .await
        .unwrap();
    assert_eq!(
        partition_of(&c, "events", &p.event.id).await.as_deref(),
        Some("events_default")
    );
    assert_eq!(s.ensure_partitions(T0, T0 + DAY, DAY).await.unwrap(), 1);
    assert_eq!(
        partition_of(&c, "events", &p.event.id).await.as_deref(),
        Some("events_20241004t000000")
    );
    assert_eq!(
        partition_of(&c, "deliveries", &p.jobs[0].delivery_id)
            .await
            .as_deref(),
        Some("deliveries_20241004t000000")
    );
    // The leased job still records (its row moved, its key did not change).
    let applied = s
        .record(vec![outcome(&p.jobs[0], true, None, T0 + 6)])
        .await
        .unwrap();
    assert_eq!(applied, vec![true]);
    // The idempotency key holds across partitions: the same key a day later is a repeat.
    let again = s
        .publish(
            event("a", "x", Some("k1"), T0 + DAY + 5),
            lease("n", 2, HELD),
        )
        .await
        .unwrap();
    assert!(again.repeated);
    assert_eq!(again.event.id, p.event.id);
}

/// A database in the shape before partitions (migration 16), with events, deliveries (one
/// pending, one delivered with its attempt) and an idempotency key, upgrades in place: the
/// rows land in one partition covering them and everything works on them as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unpartitioned_database_upgrades_with_its_rows() {
    let schema = PgSchema::create().await;
    chime::store::postgres::migrate_until(&schema.url, 16)
        .await
        .unwrap();
    let c = schema.client().await;
    c.batch_execute(&format!(
        "INSERT INTO tenants (id, created_at) VALUES ('a', 1);
         INSERT INTO endpoints (id, tenant_id, url, events, description, enabled, secret,
                                created_at, updated_at)
             VALUES ('ep_1', 'a', 'http://127.0.0.1:9/', '[\"*\"]', '', true,
                     'whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw', 1, 1);
         INSERT INTO events (id, tenant_id, name, payload, idempotency_key, created_at)
             VALUES ('evt_1', 'a', 'x', '\\x7b7d', 'k1', {t1}),
                    ('evt_2', 'a', 'x', '\\x7b7d', NULL, {t2});
         INSERT INTO deliveries (id, tenant_id, event_id, event_name, endpoint_id, status,
                                 attempts, next_attempt_at, created_at, updated_at)
             VALUES ('dlv_1', 'a', 'evt_1', 'x', 'ep_1', 'succeeded', 1, NULL, {t1}, {t1}),
                    ('dlv_2', 'a', 'evt_2', 'x', 'ep_1', 'pending', 0, {t2}, {t2}, {t2});
         INSERT INTO attempts (id, delivery_id, started_at, duration_ms, status_code,
                               succeeded)
             VALUES ('att_1', 'dlv_1', {t1}, 5, 200, true);",
        t1 = T0 + 1_000,
        t2 = T0 + DAY + 1_000,
    ))
    .await
    .unwrap();

    let s = crate::postgres_faults::open(&schema.url).await;
    assert_eq!(
        partition_of(&c, "events", "evt_2").await.as_deref(),
        Some("events_20241004t000001"),
        "one partition covers the rows as they were"
    );
    let e = s.get_event("a", "evt_1").await.unwrap().unwrap();
    assert_eq!(e.idempotency_key.as_deref(), Some("k1"));
    let attempts = s
        .list_attempts(
            "dlv_1",
            chime::store::Page {
                limit: 10,
                cursor: None,
            },
        )
        .await
        .unwrap();
    assert_eq!(attempts.rows.len(), 1);
    let repeat = s
        .publish(
            event("a", "x", Some("k1"), T0 + 2 * DAY),
            lease("n", 1, HELD),
        )
        .await;
    assert!(
        matches!(repeat, Err(chime::store::StoreError::Conflict(_))),
        "the key is still taken (by a different body): {repeat:?}"
    );
    // The pending delivery is claimed and recorded in its new home.
    let claimed = s
        .claim("ep_1", 10, T0 + 3 * DAY, &lease("n", 7, HELD))
        .await
        .unwrap();
    assert_eq!(claimed.jobs.len(), 1);
    assert_eq!(&*claimed.jobs[0].delivery_id, "dlv_2");
    let applied = s
        .record(vec![outcome(&claimed.jobs[0], true, None, T0 + 3 * DAY)])
        .await
        .unwrap();
    assert_eq!(applied, vec![true]);
    // New rows get new sequence numbers after the old ones.
    let p = s
        .publish(event("a", "x", None, T0 + 3 * DAY), lease("n", 8, HELD))
        .await
        .unwrap();
    let seq: i64 = c
        .query_one("SELECT seq FROM events WHERE id = $1", &[&&*p.event.id])
        .await
        .unwrap()
        .get(0);
    assert!(seq > 2, "{seq}");
}
