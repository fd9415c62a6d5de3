-- posync on PostgreSQL, schema version 1: everything SQLite's schema 3 holds, in one step.
-- Text ids, bytea for Automerge bytes and heads, bigint unix seconds.
--
-- Partitioning by district (see ARCHITECTURE.md): every row of a document belongs to the
-- district of its `posyandu` column; a deployment shards docs, feed, device_docs, visits,
-- visit_immunisations, people and conflicts by that district, one feed clock per shard.

-- Counters that serialise commits: a writer takes the row lock as the last step before
-- committing, so positions are handed out in commit order, and a rollback returns them.
CREATE TABLE clocks (
    name TEXT PRIMARY KEY,
    seq  BIGINT NOT NULL
);
INSERT INTO clocks (name, seq) VALUES ('feed', 0), ('audit', 0);

CREATE TABLE docs (
    doc_id     TEXT PRIMARY KEY,
    kind       TEXT NOT NULL,
    posyandu   TEXT NOT NULL,
    seq        BIGINT NOT NULL,
    heads      BYTEA NOT NULL,
    bytes      BYTEA NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX docs_scope_seq ON docs(posyandu, seq);

-- The change feed: one row per committed change of a document. `seq` comes from the feed
-- clock, so it is gap-free and in commit order across every server instance.
CREATE TABLE feed (
    seq       BIGINT PRIMARY KEY,
    doc_id    TEXT NOT NULL,
    posyandu  TEXT NOT NULL,
    heads     BYTEA NOT NULL,
    device_id TEXT NOT NULL,
    at        BIGINT NOT NULL
);
CREATE INDEX feed_doc_seq ON feed(doc_id, seq);
CREATE INDEX feed_scope_seq ON feed(posyandu, seq);

CREATE TABLE device_docs (
    device_id TEXT NOT NULL,
    doc_id    TEXT NOT NULL,
    heads     BYTEA NOT NULL,
    acked_at  BIGINT NOT NULL,
    PRIMARY KEY (device_id, doc_id)
);

CREATE TABLE units (
    unit_id   TEXT PRIMARY KEY,
    kind      TEXT NOT NULL,
    parent_id TEXT REFERENCES units(unit_id),
    name      TEXT NOT NULL
);
CREATE INDEX units_parent ON units(parent_id);

CREATE TABLE users (
    user_id     TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    role        TEXT NOT NULL,
    disabled_at BIGINT,
    updated_at  BIGINT NOT NULL
);

CREATE TABLE user_units (
    user_id TEXT NOT NULL REFERENCES users(user_id),
    unit_id TEXT NOT NULL REFERENCES units(unit_id),
    PRIMARY KEY (user_id, unit_id)
);
CREATE INDEX user_units_unit ON user_units(unit_id);

CREATE TABLE enrolments (
    code_hash  BYTEA PRIMARY KEY,
    user_id    TEXT NOT NULL REFERENCES users(user_id),
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    used_at    BIGINT,
    device_id  TEXT
);

CREATE TABLE devices (
    device_id          TEXT PRIMARY KEY,
    last_push_at       BIGINT,
    pushes             BIGINT NOT NULL DEFAULT 0,
    user_id            TEXT REFERENCES users(user_id),
    label              TEXT NOT NULL DEFAULT '',
    enrolled_at        BIGINT,
    revoked_at         BIGINT,
    refresh_hash       BYTEA,
    refresh_expires_at BIGINT,
    last_seen_at       BIGINT
);
CREATE INDEX devices_user ON devices(user_id);

-- Append-only: who did what, when. Ids and counts only, never record contents.
CREATE TABLE audit (
    seq    BIGINT PRIMARY KEY,
    at     BIGINT NOT NULL,
    actor  TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT NOT NULL,
    detail TEXT NOT NULL
);
CREATE FUNCTION audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit log is append-only';
END $$;
CREATE TRIGGER audit_no_update BEFORE UPDATE OR DELETE ON audit
    FOR EACH ROW EXECUTE FUNCTION audit_append_only();
CREATE TRIGGER audit_no_truncate BEFORE TRUNCATE ON audit
    FOR EACH STATEMENT EXECUTE FUNCTION audit_append_only();

-- Relational projection for plain-SQL queries; rewritten per document on every merge.
CREATE TABLE visits (
    visit_id          TEXT PRIMARY KEY,
    doc_id            TEXT NOT NULL,
    posyandu          TEXT NOT NULL,
    session_date      TEXT NOT NULL,
    person_id         TEXT NOT NULL,
    name              TEXT NOT NULL,
    sex               TEXT NOT NULL,
    birth_date        TEXT NOT NULL,
    weight_g          BIGINT,
    length_mm         BIGINT,
    lying             BOOLEAN,
    head_circ_mm      BIGINT,
    muac_mm           BIGINT,
    vitamin_a         TEXT,
    notes             TEXT NOT NULL,
    recorded_by       TEXT NOT NULL,
    recorded_at       BIGINT NOT NULL,
    life_group        TEXT NOT NULL DEFAULT 'balita',
    growth_card       BOOLEAN,
    oedema            BOOLEAN,
    exclusive_bf      BOOLEAN,
    deworming         BOOLEAN,
    referred          BOOLEAN,
    gestational_weeks BIGINT,
    bp_systolic       BIGINT,
    bp_diastolic      BIGINT,
    iron_tablets      BIGINT,
    danger_signs      TEXT,
    hb_g_l            BIGINT,
    blood_sugar_mg_dl BIGINT,
    waist_mm          BIGINT,
    tb_symptoms       BOOLEAN,
    puma_score        BIGINT,
    srq20_score       BIGINT,
    adl_score         BIGINT,
    counselled        BOOLEAN
);
CREATE INDEX visits_doc ON visits(doc_id);
CREATE INDEX visits_posyandu_date ON visits(posyandu, session_date);
CREATE INDEX visits_person ON visits(person_id);
CREATE INDEX visits_group ON visits(posyandu, life_group, session_date);

CREATE TABLE visit_immunisations (
    visit_id TEXT NOT NULL,
    antigen  TEXT NOT NULL,
    given_on TEXT NOT NULL,
    PRIMARY KEY (visit_id, antigen)
);

CREATE TABLE people (
    person_id     TEXT PRIMARY KEY,
    doc_id        TEXT NOT NULL,
    posyandu      TEXT NOT NULL,
    name          TEXT NOT NULL,
    sex           TEXT NOT NULL,
    birth_date    TEXT NOT NULL,
    mother_name   TEXT NOT NULL,
    nik           TEXT,
    registered_by TEXT NOT NULL,
    registered_at BIGINT NOT NULL,
    mother_nik    TEXT,
    address       TEXT NOT NULL DEFAULT '',
    rt            BIGINT,
    rw            BIGINT,
    pregnant      BOOLEAN NOT NULL DEFAULT FALSE,
    kia_book      BOOLEAN NOT NULL DEFAULT FALSE,
    merged_into   TEXT
);
CREATE INDEX people_doc ON people(doc_id);
CREATE INDEX people_nik ON people(nik) WHERE nik IS NOT NULL;
CREATE INDEX people_identity ON people(birth_date, name);
CREATE INDEX people_posyandu ON people(posyandu);

CREATE TABLE conflicts (
    conflict_id TEXT PRIMARY KEY,
    doc_id      TEXT NOT NULL,
    posyandu    TEXT NOT NULL,
    collection  TEXT NOT NULL,
    record_id   TEXT NOT NULL,
    field       TEXT NOT NULL,
    policy      TEXT NOT NULL,
    vals        TEXT NOT NULL,
    opened_at   BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL
);
CREATE INDEX conflicts_doc ON conflicts(doc_id);
CREATE INDEX conflicts_scope ON conflicts(posyandu, policy, opened_at);
