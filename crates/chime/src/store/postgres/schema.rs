//! Versioned schema migrations, tracked in the `chime_migrations` table of the connection's
//! schema (the first of its `search_path`).
//!
//! Several nodes may start at once against one database: all of them run `migrate`, and a
//! transaction-scoped advisory lock, keyed by the schema, makes them take turns. The first
//! applies what is missing; the others then find nothing to do. DDL is transactional in
//! PostgreSQL, so a failed step leaves no half-applied schema behind.

use tokio_postgres::Client;

/// Each entry moves the schema from version `index` to `index + 1`. Append only.
///
/// The tables mirror the SQLite backend's (`sqlite/schema.rs`): times are BIGINT milliseconds
/// (`Millis`), bodies BYTEA, `seq` an identity column that orders lists (newest first) and is
/// the pagination cursor. SQLite's migration 2 (the previous secret of a rotation) is part of
/// version 1 here, since no PostgreSQL database predates it.
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

CREATE TABLE tenants (
    id         TEXT PRIMARY KEY,
    seq        BIGINT GENERATED ALWAYS AS IDENTITY UNIQUE,
    name       TEXT,
    created_at BIGINT NOT NULL
);

-- tenant_id NULL is an admin token.
CREATE TABLE tokens (
    hash       TEXT PRIMARY KEY,
    tenant_id  TEXT REFERENCES tenants(id) ON DELETE CASCADE,
    created_at BIGINT NOT NULL
);
CREATE INDEX tokens_tenant ON tokens(tenant_id);

CREATE TABLE endpoints (
    seq                        BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id                         TEXT NOT NULL UNIQUE,
    tenant_id                  TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    url                        TEXT NOT NULL,
    events                     TEXT NOT NULL,
    description                TEXT NOT NULL,
    enabled                    BOOLEAN NOT NULL,
    secret                     TEXT NOT NULL,
    created_at                 BIGINT NOT NULL,
    updated_at                 BIGINT NOT NULL,
    previous_secret            TEXT,
    previous_secret_expires_at BIGINT
);
CREATE INDEX endpoints_tenant ON endpoints(tenant_id, seq);

CREATE TABLE events (
    seq             BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id              TEXT NOT NULL UNIQUE,
    tenant_id       TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    name            TEXT NOT NULL,
    payload         BYTEA NOT NULL,
    idempotency_key TEXT,
    created_at      BIGINT NOT NULL
);
CREATE INDEX events_tenant ON events(tenant_id, seq);
CREATE INDEX events_tenant_name ON events(tenant_id, name, seq);
CREATE UNIQUE INDEX events_idempotency ON events(tenant_id, idempotency_key)
    WHERE idempotency_key IS NOT NULL;

-- status: pending | succeeded | failed. A pending delivery with a live lease is in flight.
-- leased_until is on the database's clock (see `Lease`).
CREATE TABLE deliveries (
    seq              BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id               TEXT NOT NULL UNIQUE,
    tenant_id        TEXT NOT NULL,
    event_id         TEXT NOT NULL REFERENCES events(id) ON DELETE CASCADE,
    event_name       TEXT NOT NULL,
    endpoint_id      TEXT NOT NULL REFERENCES endpoints(id) ON DELETE CASCADE,
    status           TEXT NOT NULL,
    attempts         INTEGER NOT NULL DEFAULT 0,
    cycle_failures   INTEGER NOT NULL DEFAULT 0,
    next_attempt_at  BIGINT,
    lease_owner      TEXT,
    lease_token      BIGINT,
    leased_until     BIGINT,
    last_attempt_at  BIGINT,
    last_status_code INTEGER,
    last_error_kind  TEXT,
    created_at       BIGINT NOT NULL,
    updated_at       BIGINT NOT NULL
);
-- The claim query: one endpoint's due deliveries, oldest due first. Partial, so finished
-- deliveries cost nothing here.
CREATE INDEX deliveries_due ON deliveries(endpoint_id, next_attempt_at) WHERE status = 'pending';
CREATE INDEX deliveries_tenant ON deliveries(tenant_id, seq);
CREATE INDEX deliveries_tenant_status ON deliveries(tenant_id, status, seq);
CREATE INDEX deliveries_event ON deliveries(event_id);
CREATE INDEX deliveries_leased ON deliveries(lease_owner) WHERE lease_owner IS NOT NULL;

CREATE TABLE attempts (
    seq         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id          TEXT NOT NULL UNIQUE,
    delivery_id TEXT NOT NULL REFERENCES deliveries(id) ON DELETE CASCADE,
    started_at  BIGINT NOT NULL,
    duration_ms BIGINT NOT NULL,
    status_code INTEGER,
    error_kind  TEXT,
    error       TEXT,
    response    TEXT,
    succeeded   BOOLEAN NOT NULL
);
CREATE INDEX attempts_delivery ON attempts(delivery_id, seq);
"#,
    // Delivery settings (one JSON document: read and written together), health state, and
    // the index that finds an ordered endpoint's head (its oldest pending delivery). Mirrors
    // SQLite's migration 3.
    r#"
ALTER TABLE endpoints ADD COLUMN settings TEXT NOT NULL DEFAULT '{}';
ALTER TABLE endpoints ADD COLUMN disabled_reason TEXT;
ALTER TABLE endpoints ADD COLUMN failing_since BIGINT;
CREATE INDEX deliveries_pending_seq ON deliveries(endpoint_id, seq) WHERE status = 'pending';
"#,
    // The event-type catalog, and retention: purged events keep their row, lose their
    // payload. Mirrors SQLite's migration 4.
    r#"
CREATE TABLE event_types (
    name        TEXT PRIMARY KEY,
    seq         BIGINT GENERATED ALWAYS AS IDENTITY UNIQUE,
    description TEXT NOT NULL,
    schema      TEXT,
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL
);
ALTER TABLE events ADD COLUMN purged_at BIGINT;
CREATE INDEX events_created ON events(created_at);
"#,
    // Leased deliveries are always pending, so the partial `deliveries_due` index already
    // finds them; an index on lease_owner only cost every lease set and cleared (and kept
    // those updates from being HOT). Mirrors SQLite's migration 5.
    r#"
DROP INDEX IF EXISTS deliveries_leased;
"#,
    // Node heartbeats: how many nodes share the database, so that per-endpoint limits (a
    // concurrency cap, a rate limit) are shared out among them rather than multiplied.
    r#"
CREATE TABLE nodes (
    id      TEXT PRIMARY KEY,
    seen_at BIGINT NOT NULL
);
"#,
    // A version of each tenant's endpoints, bumped by every change to one of them, so a node
    // can keep the endpoint rows it publishes to in memory and check them with one tiny read
    // instead of reading and parsing every row per publish. A trigger rather than the store's
    // statements, so that any writer (an older node in a rolling upgrade, an operator's SQL)
    // invalidates the nodes' copies too. A cascade from a deleted tenant finds no tenant row
    // to bump, which is harmless: publishing to that tenant fails anyway.
    r#"
ALTER TABLE tenants ADD COLUMN endpoints_version BIGINT NOT NULL DEFAULT 0;
CREATE FUNCTION chime_endpoints_changed() RETURNS trigger
    LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
BEGIN
    UPDATE tenants SET endpoints_version = endpoints_version + 1
    WHERE id = CASE WHEN TG_OP = 'DELETE' THEN OLD.tenant_id ELSE NEW.tenant_id END;
    RETURN NULL;
END $$;
CREATE TRIGGER endpoints_changed AFTER INSERT OR UPDATE OR DELETE ON endpoints
    FOR EACH ROW EXECUTE FUNCTION chime_endpoints_changed();
"#,
    // The foreign keys of the hot rows (a delivery's event and endpoint, an attempt's
    // delivery) cost a lookup and a row lock per inserted row, a quarter to a third of the
    // statements that publish and record. Their checks are replaced by what writes these rows
    // already guarantee: a delivery is inserted in the statement that inserts its event; its
    // endpoint is locked (FOR KEY SHARE) by that statement, once per batch (`publish.rs`); an
    // attempt is inserted only for a delivery its statement has just updated, i.e. locked.
    // (`chime_all_endpoints` fails a publish that could not lock all of its endpoints.)
    // Their cascades become statement-level triggers, so deleting an event, an endpoint or a
    // delivery still takes its rows along, whoever deletes. Each trigger statement takes a
    // fresh snapshot (READ COMMITTED), so it also sees rows committed by a writer it waited for.
    r#"
ALTER TABLE deliveries DROP CONSTRAINT deliveries_event_id_fkey;
ALTER TABLE deliveries DROP CONSTRAINT deliveries_endpoint_id_fkey;
ALTER TABLE attempts DROP CONSTRAINT attempts_delivery_id_fkey;
CREATE FUNCTION chime_event_deleted() RETURNS trigger
    LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
BEGIN
    DELETE FROM deliveries WHERE event_id IN (SELECT id FROM gone);
    RETURN NULL;
END $$;
CREATE TRIGGER events_deleted AFTER DELETE ON events
    REFERENCING OLD TABLE AS gone FOR EACH STATEMENT EXECUTE FUNCTION chime_event_deleted();
CREATE FUNCTION chime_endpoint_deleted() RETURNS trigger
    LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
BEGIN
    DELETE FROM deliveries WHERE endpoint_id IN (SELECT id FROM gone);
    RETURN NULL;
END $$;
CREATE TRIGGER endpoints_deleted AFTER DELETE ON endpoints
    REFERENCING OLD TABLE AS gone FOR EACH STATEMENT EXECUTE FUNCTION chime_endpoint_deleted();
CREATE FUNCTION chime_delivery_deleted() RETURNS trigger
    LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
BEGIN
    DELETE FROM attempts WHERE delivery_id IN (SELECT id FROM gone);
    RETURN NULL;
END $$;
CREATE TRIGGER deliveries_deleted AFTER DELETE ON deliveries
    REFERENCING OLD TABLE AS gone FOR EACH STATEMENT EXECUTE FUNCTION chime_delivery_deleted();
-- Fails a publish statement whose endpoints were not all found (locked): one was deleted after
-- the batch read it. The error is the one the foreign key raised, so callers retry alike.
CREATE FUNCTION chime_all_endpoints(locked BIGINT, wanted BIGINT) RETURNS boolean
    LANGUAGE plpgsql AS $$
BEGIN
    IF locked < wanted THEN
        RAISE EXCEPTION 'an endpoint was deleted while publishing to it'
            USING ERRCODE = 'foreign_key_violation';
    END IF;
    RETURN true;
END $$;
"#,
    // Hot-path diet, as SQLite's migration 6: lists filter status with `($n IS NULL OR
    // status = $n)`, which reads `deliveries_tenant`, so the status index was only maintained
    // (on every insert and every non-HOT update); attempts are only found through their
    // delivery, so their id needs no unique index. Deliveries leave a fifth of each page free
    // so that lease changes (claims, releases), which touch no indexed column, can be HOT
    // updates instead of new entries in every index.
    r#"
DROP INDEX IF EXISTS deliveries_tenant_status;
ALTER TABLE attempts DROP CONSTRAINT IF EXISTS attempts_id_key;
ALTER TABLE deliveries SET (fillfactor = 80);
"#,
    // The claim orders by (next_attempt_at, seq), which an index on (endpoint_id,
    // next_attempt_at) does not give: EXPLAIN ANALYZE in a fanout showed every claim reading
    // and sorting all of the endpoint's pending rows (1,762 rows, 13 ms, for a LIMIT 64), so
    // claims grew with the backlog. With `seq` in the key the index gives the order and the
    // scan stops at the limit. (SQLite's index ends with the rowid, which is `seq`.)
    r#"
DROP INDEX IF EXISTS deliveries_due;
CREATE INDEX deliveries_due ON deliveries(endpoint_id, next_attempt_at, seq)
    WHERE status = 'pending';
"#,
    // Retention reads old events by creation time in two groups, each with its own index:
    // those that still have a payload and those already purged. One index over all events
    // made every payload purge batch step over every purged event still kept (by default 60
    // days of them, the gap between the two retentions). An event is inserted into one
    // index, as before; a purge moves it to the other.
    r#"
DROP INDEX IF EXISTS events_created;
CREATE INDEX events_unpurged ON events(created_at) WHERE purged_at IS NULL;
CREATE INDEX events_purged ON events(created_at) WHERE purged_at IS NOT NULL;
"#,
    // Identifiers compare byte by byte (COLLATE "C"), as in SQLite. With the database's
    // default collation every B-tree step on an id, a tenant, an endpoint or an event name
    // went through the locale's comparison (strcoll, or ICU): about 17 index entries per
    // published event, each several comparisons deep. Measured in `chime bench throughput`
    // on PostgreSQL 15 (BENCHMARKS.md): on an ICU `en-US` database this migration gave 32%
    // more deliveries a second for 37% less PostgreSQL CPU; on `C.UTF-8`, whose comparison
    // is cheap, no difference the runs resolve. Byte order is also the order SQLite
    // gives, so lists and cursors over ids sort alike on both backends whatever the server's
    // locale. Only the collation changes: PostgreSQL rebuilds these columns' indexes and
    // does not rewrite the tables.
    r#"
ALTER TABLE meta ALTER COLUMN key TYPE text COLLATE "C";
ALTER TABLE tenants ALTER COLUMN id TYPE text COLLATE "C";
ALTER TABLE tokens ALTER COLUMN hash TYPE text COLLATE "C",
                   ALTER COLUMN tenant_id TYPE text COLLATE "C";
ALTER TABLE endpoints ALTER COLUMN id TYPE text COLLATE "C",
                      ALTER COLUMN tenant_id TYPE text COLLATE "C";
ALTER TABLE events ALTER COLUMN id TYPE text COLLATE "C",
                   ALTER COLUMN tenant_id TYPE text COLLATE "C",
                   ALTER COLUMN name TYPE text COLLATE "C",
                   ALTER COLUMN idempotency_key TYPE text COLLATE "C";
ALTER TABLE deliveries ALTER COLUMN id TYPE text COLLATE "C",
                       ALTER COLUMN tenant_id TYPE text COLLATE "C",
                       ALTER COLUMN event_id TYPE text COLLATE "C",
                       ALTER COLUMN event_name TYPE text COLLATE "C",
                       ALTER COLUMN endpoint_id TYPE text COLLATE "C",
                       ALTER COLUMN status TYPE text COLLATE "C",
                       ALTER COLUMN lease_owner TYPE text COLLATE "C";
ALTER TABLE attempts ALTER COLUMN id TYPE text COLLATE "C",
                     ALTER COLUMN delivery_id TYPE text COLLATE "C";
ALTER TABLE event_types ALTER COLUMN name TYPE text COLLATE "C";
ALTER TABLE nodes ALTER COLUMN id TYPE text COLLATE "C";
"#,
    // The foreign key from events to their tenant checked every inserted event with a lookup
    // and a row lock (about 5% of PostgreSQL's CPU in a publish profile), for a tenant the
    // batch has just read. As migration 7 did for deliveries: the publish statement locks
    // the batch's tenants FOR KEY SHARE once each and `chime_all_tenants` fails it (with the
    // foreign key's error, so it is retried alike) if one was deleted since the read; a
    // tenant deleted later waits for that commit, and a statement-level trigger takes the
    // tenant's events along (their deliveries and attempts follow through `events_deleted`).
    r#"
ALTER TABLE events DROP CONSTRAINT events_tenant_id_fkey;
CREATE FUNCTION chime_tenant_deleted() RETURNS trigger
    LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
BEGIN
    DELETE FROM events WHERE tenant_id IN (SELECT id FROM gone);
    RETURN NULL;
END $$;
CREATE TRIGGER tenants_deleted AFTER DELETE ON tenants
    REFERENCING OLD TABLE AS gone FOR EACH STATEMENT EXECUTE FUNCTION chime_tenant_deleted();
CREATE FUNCTION chime_all_tenants(locked BIGINT, wanted BIGINT) RETURNS boolean
    LANGUAGE plpgsql AS $$
BEGIN
    IF locked < wanted THEN
        RAISE EXCEPTION 'a tenant was deleted while publishing to it'
            USING ERRCODE = 'foreign_key_violation';
    END IF;
    RETURN true;
END $$;
"#,
    // Tokens with a scope of their own (`metrics`: reads GET /metrics only). NULL for the
    // admin and tenant tokens, whose scope `tenant_id` tells as before.
    r#"
ALTER TABLE tokens ADD COLUMN scope text;
"#,
    // The W3C `traceparent` of the publish request (model::TraceParent), sent on each
    // delivery. NULL when the request had none (or an invalid one).
    r#"
ALTER TABLE events ADD COLUMN traceparent text;
"#,
    // A tenant's branding (model::Branding as JSON), shown by the portal; NULL: the server's.
    r#"
ALTER TABLE tenants ADD COLUMN branding text;
"#,
    // Inbound sources (store::Source), and what a source event's deliveries carry besides
    // its bytes (model::Inbound as JSON; NULL for events published through the API).
    r#"
CREATE TABLE sources (
    seq             BIGINT GENERATED ALWAYS AS IDENTITY UNIQUE,
    id              text COLLATE "C" PRIMARY KEY,
    tenant_id       text COLLATE "C" NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    name            text COLLATE "C" NOT NULL,
    settings        text NOT NULL,
    ingest_key      text NOT NULL,
    ingest_key_hash text COLLATE "C" NOT NULL UNIQUE,
    created_at      bigint NOT NULL,
    updated_at      bigint NOT NULL
);
CREATE UNIQUE INDEX sources_tenant_name ON sources(tenant_id, name);
CREATE INDEX sources_tenant ON sources(tenant_id, seq);
ALTER TABLE events ADD COLUMN inbound text;
"#,
    // Time partitions (issue 19). `events`, `deliveries` and `attempts` are partitioned by
    // range of `created_at` (an attempt carries its delivery's, which is its event's), so an
    // event and everything it caused share one partition, and retention drops whole
    // partitions (`chime_drop_partitions`) instead of deleting rows, which bloated the tables
    // and held locks (the peers' users met both). Partitions are made ahead of time by
    // retention (`chime_ensure_partitions`, under an advisory lock); a row outside every
    // partition lands in the DEFAULT partition and is moved out when its range is made.
    //
    // The primary keys lead with `tenant_id` (the column a distributed PostgreSQL would shard
    // by, docs/SCALING.md) and end with the partition key, as PostgreSQL requires; they also
    // serve the tenant's lists in `seq` order, which had an index each. Ids stay unique by
    // construction (random), so their indexes are no longer unique; idempotency keys, whose
    // uniqueness PostgreSQL cannot enforce across partitions, move to `event_keys`.
    //
    // The existing rows are copied into one partition covering them, inside this migration:
    // nodes wait for it (it holds the migration lock), a pause proportional to the rows kept.
    r#"
ALTER TABLE events RENAME TO events_unpartitioned;
ALTER TABLE deliveries RENAME TO deliveries_unpartitioned;
ALTER TABLE attempts RENAME TO attempts_unpartitioned;
ALTER TABLE events_unpartitioned DROP CONSTRAINT events_pkey,
                                 DROP CONSTRAINT events_id_key;
ALTER TABLE deliveries_unpartitioned DROP CONSTRAINT deliveries_pkey,
                                     DROP CONSTRAINT deliveries_id_key;
ALTER TABLE attempts_unpartitioned DROP CONSTRAINT attempts_pkey;
DROP INDEX events_tenant, events_tenant_name, events_idempotency, events_unpurged,
           events_purged, deliveries_due, deliveries_tenant, deliveries_event,
           deliveries_pending_seq, attempts_delivery;

CREATE SEQUENCE events_seq;
CREATE TABLE events (
    seq             bigint NOT NULL DEFAULT nextval('events_seq'),
    id              text COLLATE "C" NOT NULL,
    tenant_id       text COLLATE "C" NOT NULL,
    name            text COLLATE "C" NOT NULL,
    payload         bytea NOT NULL,
    idempotency_key text COLLATE "C",
    created_at      bigint NOT NULL,
    purged_at       bigint,
    traceparent     text,
    inbound         text,
    PRIMARY KEY (tenant_id, seq, created_at)
) PARTITION BY RANGE (created_at);
ALTER SEQUENCE events_seq OWNED BY events.seq;

CREATE SEQUENCE deliveries_seq;
CREATE TABLE deliveries (
    seq              bigint NOT NULL DEFAULT nextval('deliveries_seq'),
    id               text COLLATE "C" NOT NULL,
    tenant_id        text COLLATE "C" NOT NULL,
    event_id         text COLLATE "C" NOT NULL,
    event_name       text COLLATE "C" NOT NULL,
    endpoint_id      text COLLATE "C" NOT NULL,
    status           text COLLATE "C" NOT NULL,
    attempts         integer NOT NULL DEFAULT 0,
    cycle_failures   integer NOT NULL DEFAULT 0,
    next_attempt_at  bigint,
    lease_owner      text COLLATE "C",
    lease_token      bigint,
    leased_until     bigint,
    last_attempt_at  bigint,
    last_status_code integer,
    last_error_kind  text,
    created_at       bigint NOT NULL,
    updated_at       bigint NOT NULL,
    PRIMARY KEY (tenant_id, seq, created_at)
) PARTITION BY RANGE (created_at);
ALTER SEQUENCE deliveries_seq OWNED BY deliveries.seq;

-- `created_at` is the delivery's (its event's): the partition key, not the attempt's time.
CREATE SEQUENCE attempts_seq;
CREATE TABLE attempts (
    seq         bigint NOT NULL DEFAULT nextval('attempts_seq'),
    id          text COLLATE "C" NOT NULL,
    delivery_id text COLLATE "C" NOT NULL,
    started_at  bigint NOT NULL,
    duration_ms bigint NOT NULL,
    status_code integer,
    error_kind  text,
    error       text,
    response    text,
    succeeded   boolean NOT NULL,
    tenant_id   text COLLATE "C" NOT NULL,
    created_at  bigint NOT NULL,
    PRIMARY KEY (tenant_id, seq, created_at)
) PARTITION BY RANGE (created_at);
ALTER SEQUENCE attempts_seq OWNED BY attempts.seq;

CREATE TABLE event_keys (
    tenant_id       text COLLATE "C" NOT NULL,
    idempotency_key text COLLATE "C" NOT NULL,
    event_id        text COLLATE "C" NOT NULL,
    created_at      bigint NOT NULL,
    PRIMARY KEY (tenant_id, idempotency_key)
);
CREATE INDEX event_keys_created ON event_keys (created_at);

CREATE TABLE events_default PARTITION OF events DEFAULT;
CREATE TABLE deliveries_default PARTITION OF deliveries DEFAULT WITH (fillfactor = 80);
CREATE TABLE attempts_default PARTITION OF attempts DEFAULT;

-- The range partitions of `events` (those of `deliveries` and `attempts` have the same
-- bounds, and names with their own prefix).
CREATE FUNCTION chime_partitions() RETURNS TABLE (suffix text, lo bigint, hi bigint)
    LANGUAGE sql STABLE SET search_path FROM CURRENT AS $$
    SELECT substr(c.relname, length('events_') + 1),
           substring(pg_get_expr(c.relpartbound, c.oid) FROM 'FROM \(''(-?[0-9]+)''\)')::bigint,
           substring(pg_get_expr(c.relpartbound, c.oid) FROM 'TO \(''(-?[0-9]+)''\)')::bigint
    FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
    WHERE i.inhparent = 'events'::regclass
      AND pg_get_expr(c.relpartbound, c.oid) <> 'DEFAULT'
$$;

-- Makes the three partitions of [lo, hi): each table made alone, given the rows of its
-- range that had landed in the DEFAULT partition, then attached (which indexes it).
CREATE FUNCTION chime_add_partitions(lo bigint, hi bigint) RETURNS void
    LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
DECLARE
    suffix text := to_char(to_timestamp(lo / 1000.0) AT TIME ZONE 'UTC', 'YYYYMMDD"t"HH24MISS');
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['events', 'deliveries', 'attempts'] LOOP
        EXECUTE format('CREATE TABLE %I (LIKE %I INCLUDING DEFAULTS)%s',
                       t || '_' || suffix, t,
                       CASE WHEN t = 'deliveries' THEN ' WITH (fillfactor = 80)' ELSE '' END);
        EXECUTE format('WITH moved AS (DELETE FROM %I WHERE created_at >= %s AND created_at < %s
                                       RETURNING *)
                        INSERT INTO %I SELECT * FROM moved',
                       t || '_default', lo, hi, t || '_' || suffix);
        EXECUTE format('ALTER TABLE %I ATTACH PARTITION %I FOR VALUES FROM (%s) TO (%s)',
                       t, t || '_' || suffix, lo, hi);
    END LOOP;
END $$;

-- Makes partitions of `step` ms, aligned to multiples of it, covering [from_ms, to_ms), in
-- the gaps between the partitions that exist (made with another step, or the legacy one).
-- Returns how many ranges it made.
CREATE FUNCTION chime_ensure_partitions(from_ms bigint, to_ms bigint, step bigint)
    RETURNS integer LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
DECLARE
    s bigint := from_ms - (from_ms % step);
    e bigint;
    c bigint;
    p record;
    made integer := 0;
BEGIN
    WHILE s < to_ms LOOP
        e := s + step;
        c := s;
        FOR p IN SELECT * FROM chime_partitions() x WHERE x.lo < e AND x.hi > s ORDER BY x.lo LOOP
            IF p.lo > c THEN
                PERFORM chime_add_partitions(c, p.lo);
                made := made + 1;
            END IF;
            c := greatest(c, p.hi);
        END LOOP;
        IF c < e THEN
            PERFORM chime_add_partitions(c, e);
            made := made + 1;
        END IF;
        s := e;
    END LOOP;
    RETURN made;
END $$;

-- Drops the partitions wholly older than `cutoff` whose deliveries are all finished (with
-- the idempotency keys of their events); a partition with a pending delivery is kept, and
-- reported with their count so that the operator sees why. Each partition's deliveries are
-- locked first, so nothing makes one of them pending between the count and the drop.
CREATE FUNCTION chime_drop_partitions(cutoff bigint)
    RETURNS TABLE (suffix text, pending bigint, events bigint)
    LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
DECLARE
    p record;
BEGIN
    FOR p IN SELECT * FROM chime_partitions() x WHERE x.hi <= cutoff ORDER BY x.lo LOOP
        suffix := p.suffix;
        EXECUTE format('LOCK TABLE %I IN SHARE MODE', 'deliveries_' || p.suffix);
        EXECUTE format('SELECT count(*) FROM %I WHERE status = %L',
                       'deliveries_' || p.suffix, 'pending') INTO pending;
        events := 0;
        IF pending = 0 THEN
            EXECUTE format('SELECT count(*) FROM %I', 'events_' || p.suffix) INTO events;
            EXECUTE format('DROP TABLE %I, %I, %I', 'attempts_' || p.suffix,
                           'deliveries_' || p.suffix, 'events_' || p.suffix);
            DELETE FROM event_keys k WHERE k.created_at >= p.lo AND k.created_at < p.hi;
        END IF;
        RETURN NEXT;
    END LOOP;
END $$;

-- The rows as they were, in one partition covering them.
DO $$
DECLARE
    lo bigint := (SELECT least((SELECT min(created_at) FROM events_unpartitioned),
                               (SELECT min(created_at) FROM deliveries_unpartitioned)));
    hi bigint := (SELECT greatest((SELECT max(created_at) FROM events_unpartitioned),
                                  (SELECT max(created_at) FROM deliveries_unpartitioned)));
BEGIN
    IF lo IS NOT NULL THEN
        PERFORM chime_add_partitions(lo, hi + 1);
    END IF;
END $$;
INSERT INTO events (seq, id, tenant_id, name, payload, idempotency_key, created_at, purged_at,
                    traceparent, inbound)
    SELECT seq, id, tenant_id, name, payload, idempotency_key, created_at, purged_at,
           traceparent, inbound
    FROM events_unpartitioned;
INSERT INTO event_keys (tenant_id, idempotency_key, event_id, created_at)
    SELECT tenant_id, idempotency_key, id, created_at FROM events_unpartitioned
    WHERE idempotency_key IS NOT NULL;
INSERT INTO deliveries (seq, id, tenant_id, event_id, event_name, endpoint_id, status,
                        attempts, cycle_failures, next_attempt_at, lease_owner, lease_token,
                        leased_until, last_attempt_at, last_status_code, last_error_kind,
                        created_at, updated_at)
    SELECT seq, id, tenant_id, event_id, event_name, endpoint_id, status, attempts,
           cycle_failures, next_attempt_at, lease_owner, lease_token, leased_until,
           last_attempt_at, last_status_code, last_error_kind, created_at, updated_at
    FROM deliveries_unpartitioned;
INSERT INTO attempts (seq, id, delivery_id, started_at, duration_ms, status_code, error_kind,
                      error, response, succeeded, tenant_id, created_at)
    SELECT a.seq, a.id, a.delivery_id, a.started_at, a.duration_ms, a.status_code,
           a.error_kind, a.error, a.response, a.succeeded, d.tenant_id, d.created_at
    FROM attempts_unpartitioned a JOIN deliveries_unpartitioned d ON d.id = a.delivery_id;
SELECT setval('events_seq', coalesce((SELECT max(seq) FROM events_unpartitioned), 0) + 1, false),
       setval('deliveries_seq',
              coalesce((SELECT max(seq) FROM deliveries_unpartitioned), 0) + 1, false),
       setval('attempts_seq', coalesce((SELECT max(seq) FROM attempts_unpartitioned), 0) + 1,
              false);
DROP TABLE events_unpartitioned, deliveries_unpartitioned, attempts_unpartitioned;

-- Indexed after the copy: faster than maintaining them row by row.
CREATE INDEX events_id ON events (id);
CREATE INDEX events_tenant_name ON events (tenant_id, name, seq);
CREATE INDEX events_unpurged ON events (created_at) WHERE purged_at IS NULL;
CREATE INDEX events_purged ON events (created_at) WHERE purged_at IS NOT NULL;
CREATE INDEX deliveries_id ON deliveries (id);
CREATE INDEX deliveries_event ON deliveries (event_id);
CREATE INDEX deliveries_due ON deliveries (endpoint_id, next_attempt_at, seq)
    WHERE status = 'pending';
CREATE INDEX deliveries_pending_seq ON deliveries (endpoint_id, seq) WHERE status = 'pending';
CREATE INDEX attempts_delivery ON attempts (delivery_id, seq);

CREATE OR REPLACE FUNCTION chime_event_deleted() RETURNS trigger
    LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
BEGIN
    DELETE FROM deliveries WHERE event_id IN (SELECT id FROM gone);
    DELETE FROM event_keys k USING gone g
    WHERE k.tenant_id = g.tenant_id AND k.idempotency_key = g.idempotency_key
      AND k.event_id = g.id;
    RETURN NULL;
END $$;
CREATE TRIGGER events_deleted AFTER DELETE ON events
    REFERENCING OLD TABLE AS gone FOR EACH STATEMENT EXECUTE FUNCTION chime_event_deleted();
CREATE TRIGGER deliveries_deleted AFTER DELETE ON deliveries
    REFERENCING OLD TABLE AS gone FOR EACH STATEMENT EXECUTE FUNCTION chime_delivery_deleted();
"#,
    // What an endpoint's transformation made of a delivery (transform::Transformed as JSON),
    // kept so that every retry sends the same bytes; cleared by a replay. NULL: none yet.
    r#"
ALTER TABLE deliveries ADD COLUMN transformed text;
"#,
];

/// The advisory-lock class of migrations (an arbitrary constant: "chim"). The other key is
/// a hash of the schema, so databases and schemas migrate independently.
const LOCK_CLASS: i32 = 0x6368_696d;

/// Brings the connection's schema to the latest version, in one transaction under a lock
/// that concurrent nodes wait on. Returns the version it found and the one it left.
pub async fn migrate(client: &mut Client) -> Result<(usize, usize), tokio_postgres::Error> {
    migrate_until(client, MIGRATIONS.len()).await
}

/// `migrate`, stopping at version `last`: how a test builds a database of an older shape.
pub async fn migrate_until(
    client: &mut Client,
    last: usize,
) -> Result<(usize, usize), tokio_postgres::Error> {
    let tx = client.transaction().await?;
    tx.execute(
        "SELECT pg_advisory_xact_lock($1, hashtext(coalesce(current_schema(), '')))",
        &[&LOCK_CLASS],
    )
    .await?;
    // `IF NOT EXISTS` on an existing table raises a NOTICE that tokio-postgres logs at every
    // start; the notices of this transaction are not worth a line in the log.
    tx.batch_execute(
        "SET LOCAL client_min_messages = warning;
         CREATE TABLE IF NOT EXISTS chime_migrations (
             version    INTEGER PRIMARY KEY,
             applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
         )",
    )
    .await?;
    let found: i32 = tx
        .query_one(
            "SELECT coalesce(max(version), 0) FROM chime_migrations",
            &[],
        )
        .await?
        .get(0);
    let found = found.max(0) as usize;
    for (index, sql) in MIGRATIONS.iter().enumerate().take(last).skip(found) {
        tx.batch_execute(sql).await?;
        tx.execute(
            "INSERT INTO chime_migrations (version) VALUES ($1)",
            &[&((index + 1) as i32)],
        )
        .await?;
    }
    tx.commit().await?;
    Ok((found, last.min(MIGRATIONS.len()).max(found)))
}
