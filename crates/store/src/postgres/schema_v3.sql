-- Documents stored incrementally: a merge appends its changes as a chunk after the
-- document's snapshot (docs.bytes), which is rewritten only every core::CHUNKS_MAX merges.
ALTER TABLE docs ADD COLUMN chunks BIGINT NOT NULL DEFAULT 0;
ALTER TABLE docs ADD COLUMN stored_bytes BIGINT NOT NULL DEFAULT 0;
UPDATE docs SET stored_bytes = octet_length(bytes);
CREATE TABLE doc_chunks (
    doc_id TEXT NOT NULL,
    n      BIGINT NOT NULL,
    heads  BYTEA NOT NULL,
    bytes  BYTEA NOT NULL,
    PRIMARY KEY (doc_id, n)
);
