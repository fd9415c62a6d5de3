-- The store's incarnation (see SQLite schema 7). After restoring a pg_dump, set a new one:
-- UPDATE store_meta SET value = floor(random() * 4294967294)::bigint + 1 WHERE key = 'incarnation';
CREATE TABLE store_meta (
    key   TEXT PRIMARY KEY,
    value BIGINT NOT NULL
);
INSERT INTO store_meta (key, value) VALUES ('incarnation', floor(random() * 4294967294)::bigint + 1);
