-- Accounts, sign-in sessions, refresh tokens and therapist profiles.
--
-- The PostgreSQL twin of this file is ../postgres/0001_accounts.sql: keep them in step.
-- Here ids are 16-byte BLOBs, booleans 0/1, and times fixed-width RFC 3339 UTC text
-- (store::Ts), so that text order is time order. The application binds every time itself
-- (no now() in SQL), so both backends see the same clock.

CREATE TABLE users (
    id            BLOB PRIMARY KEY,
    -- Lower-cased by the application (domain::Email), so this UNIQUE is case-insensitive.
    email         TEXT NOT NULL CONSTRAINT users_email_key UNIQUE,
    display_name  TEXT NOT NULL,
    role          TEXT NOT NULL CHECK (role IN ('client', 'therapist', 'admin')),
    -- Argon2id PHC string; the password itself is never stored.
    password_hash TEXT NOT NULL,
    disabled      INTEGER NOT NULL DEFAULT 0,
    created_at    TEXT NOT NULL,
    updated_at    TEXT NOT NULL
);

-- One row per sign-in: the "family" of refresh tokens that descend from one login.
-- Access tokens carry its id (`sid`), so revoking it ends the access tokens too.
CREATE TABLE auth_sessions (
    id             BLOB PRIMARY KEY,
    user_id        BLOB NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at     TEXT NOT NULL,
    last_used_at   TEXT NOT NULL,
    -- Absolute end of the family: rotation does not extend a sign-in forever.
    expires_at     TEXT NOT NULL,
    revoked_at     TEXT,
    -- logout | refresh_reuse | password_change | disabled
    revoked_reason TEXT
);
CREATE INDEX auth_sessions_user_idx ON auth_sessions (user_id);

-- Refresh tokens are stored only as SHA-256 hashes. A token is used once: `used_at` marks
-- it rotated, and presenting a used token again revokes its whole session.
CREATE TABLE refresh_tokens (
    token_hash BLOB PRIMARY KEY,
    session_id BLOB NOT NULL REFERENCES auth_sessions (id) ON DELETE CASCADE,
    created_at TEXT NOT NULL,
    expires_at TEXT NOT NULL,
    used_at    TEXT
);
CREATE INDEX refresh_tokens_session_idx ON refresh_tokens (session_id);

-- The public face of a therapist in the directory. List fields are JSON arrays for
-- display; therapist_tags holds the same values one per row, for filtering.
CREATE TABLE therapist_profiles (
    user_id                  BLOB PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
    bio                      TEXT NOT NULL DEFAULT '',
    qualifications           TEXT NOT NULL DEFAULT '[]',
    specialisations          TEXT NOT NULL DEFAULT '[]',
    modalities               TEXT NOT NULL DEFAULT '[]',
    languages                TEXT NOT NULL DEFAULT '[]',
    time_zone                TEXT NOT NULL DEFAULT 'UTC',
    offers_free_consultation INTEGER NOT NULL DEFAULT 0,
    updated_at               TEXT NOT NULL
);

CREATE TABLE therapist_tags (
    user_id BLOB NOT NULL REFERENCES therapist_profiles (user_id) ON DELETE CASCADE,
    kind    TEXT NOT NULL CHECK (kind IN ('specialisation', 'modality', 'language')),
    value   TEXT NOT NULL,
    PRIMARY KEY (user_id, kind, value)
);
CREATE INDEX therapist_tags_lookup_idx ON therapist_tags (kind, value);
