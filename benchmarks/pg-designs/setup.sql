-- Four ways to store one delivery's life on PostgreSQL, reduced to the rows and indexes each
-- writes (issue 19's "half the database work per delivery"). Each script of this folder is a
-- pgbench transaction of 50 deliveries: stored at publish, then finished by one successful
-- attempt. Run (alternating scripts, truncating between runs):
--   psql -h 127.0.0.1 -U postgres -d test -f setup.sql
--   pgbench -h 127.0.0.1 -U postgres -n -c 2 -j 1 -T 15 -f current.sql test
-- and count the machine's busy CPU (/proc/stat) per delivery around each run.
DROP SCHEMA IF EXISTS pa CASCADE; DROP SCHEMA IF EXISTS pb CASCADE; DROP SCHEMA IF EXISTS pc CASCADE;
CREATE SCHEMA pa; CREATE SCHEMA pb; CREATE SCHEMA pc;

-- current.sql, attempt-folded.sql: today's shape (the delivery inserted, updated when it
-- finishes, its attempt a row of its own), or with the attempt's fields in the delivery row.
CREATE TABLE pa.d (seq bigserial, id text COLLATE "C" NOT NULL, tenant_id text COLLATE "C" NOT NULL,
    event_id text COLLATE "C" NOT NULL, endpoint_id text COLLATE "C" NOT NULL, status text NOT NULL,
    attempts int DEFAULT 0, next_attempt_at bigint, lease_owner text, lease_token bigint,
    leased_until bigint, last_attempt_at bigint, last_status_code int, created_at bigint NOT NULL,
    updated_at bigint NOT NULL, att_id text, att_duration bigint, att_succeeded bool,
    PRIMARY KEY (tenant_id, seq, created_at)) WITH (fillfactor = 80);
CREATE INDEX ON pa.d (id); CREATE INDEX ON pa.d (event_id);
CREATE INDEX ON pa.d (endpoint_id, next_attempt_at, seq) WHERE status = 'pending';
CREATE INDEX ON pa.d (endpoint_id, seq) WHERE status = 'pending';
CREATE TABLE pa.att (seq bigserial, id text COLLATE "C" NOT NULL, delivery_id text COLLATE "C" NOT NULL,
    started_at bigint, duration_ms bigint, status_code int, succeeded bool,
    tenant_id text COLLATE "C" NOT NULL, created_at bigint NOT NULL,
    PRIMARY KEY (tenant_id, seq, created_at));
CREATE INDEX ON pa.att (delivery_id, seq);

-- pending-table.sql: the delivery row without queue indexes (its update is HOT), the queue
-- in a small table of its own (a row inserted at publish, deleted when it finishes).
CREATE TABLE pb.d (seq bigserial, id text COLLATE "C" NOT NULL, tenant_id text COLLATE "C" NOT NULL,
    event_id text COLLATE "C" NOT NULL, endpoint_id text COLLATE "C" NOT NULL, status text NOT NULL,
    attempts int DEFAULT 0, next_attempt_at bigint, last_attempt_at bigint, last_status_code int,
    created_at bigint NOT NULL, updated_at bigint NOT NULL,
    PRIMARY KEY (tenant_id, seq, created_at)) WITH (fillfactor = 80);
CREATE INDEX ON pb.d (id); CREATE INDEX ON pb.d (event_id);
CREATE TABLE pb.q (created_at bigint NOT NULL, id text COLLATE "C" NOT NULL,
    tenant_id text COLLATE "C" NOT NULL, endpoint_id text COLLATE "C" NOT NULL, seq bigint NOT NULL,
    next_attempt_at bigint NOT NULL, ordered boolean NOT NULL, lease_owner text, lease_token bigint,
    leased_until bigint, PRIMARY KEY (created_at, id, tenant_id));
CREATE INDEX ON pb.q (endpoint_id, next_attempt_at, seq);
CREATE INDEX ON pb.q (endpoint_id, seq) WHERE ordered;

-- written-once.sql: a pending delivery lives only in the queue table; when it finishes it is
-- deleted there and its row inserted once, final, with its attempt folded in.
CREATE TABLE pc.q (seq bigserial, id text COLLATE "C" NOT NULL, tenant_id text COLLATE "C" NOT NULL,
    event_id text COLLATE "C" NOT NULL, endpoint_id text COLLATE "C" NOT NULL,
    next_attempt_at bigint NOT NULL, lease_owner text, lease_token bigint, leased_until bigint,
    created_at bigint NOT NULL, PRIMARY KEY (created_at, id, tenant_id));
CREATE INDEX ON pc.q (endpoint_id, next_attempt_at, seq);
CREATE TABLE pc.d (seq bigint NOT NULL, id text COLLATE "C" NOT NULL, tenant_id text COLLATE "C" NOT NULL,
    event_id text COLLATE "C" NOT NULL, endpoint_id text COLLATE "C" NOT NULL, status text NOT NULL,
    attempts int DEFAULT 0, next_attempt_at bigint, last_attempt_at bigint, last_status_code int,
    first_duration bigint, created_at bigint NOT NULL, updated_at bigint NOT NULL,
    PRIMARY KEY (tenant_id, seq, created_at)) WITH (fillfactor = 80);
CREATE INDEX ON pc.d (id); CREATE INDEX ON pc.d (event_id);
