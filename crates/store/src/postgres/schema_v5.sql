-- A user's sign-in PIN (see SQLite schema 8), so a browser that signed out signs in again
-- without a new enrolment code. Argon2id PHC strings only; failures counts attempts since
-- the last success and locked_until refuses sign-in until then.
CREATE TABLE user_pins (
    user_id      TEXT PRIMARY KEY REFERENCES users(user_id),
    pin_hash     TEXT NOT NULL,
    failures     BIGINT NOT NULL DEFAULT 0,
    locked_until BIGINT,
    set_at       BIGINT NOT NULL
);
