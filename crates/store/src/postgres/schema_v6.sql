-- Read-only API keys for BI tools and scripts (see SQLite schema 9). Only the SHA-256 of
-- each secret is kept; last_used_at is the last successful use.
CREATE TABLE api_keys (
    key_id       TEXT PRIMARY KEY,
    key_hash     BYTEA NOT NULL UNIQUE,
    label        TEXT NOT NULL,
    unit_id      TEXT NOT NULL REFERENCES units(unit_id),
    role         TEXT NOT NULL,
    created_by   TEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    revoked_at   BIGINT,
    last_used_at BIGINT
);
