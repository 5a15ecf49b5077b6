-- Accounts, sign-in sessions, refresh tokens and therapist profiles.
--
-- The SQLite twin of this file is ../sqlite/0001_accounts.sql: keep them in step. The
-- application binds every time itself (no now() in SQL), so both backends see the same clock.

CREATE TABLE users (
    id            UUID PRIMARY KEY,
    -- Lower-cased by the application (domain::Email), so this UNIQUE is case-insensitive.
    email         TEXT NOT NULL CONSTRAINT users_email_key UNIQUE,
    display_name  TEXT NOT NULL,
    role          TEXT NOT NULL CHECK (role IN ('client', 'therapist', 'admin')),
    -- Argon2id PHC string; the password itself is never stored.
    password_hash TEXT NOT NULL,
    disabled      BOOLEAN NOT NULL DEFAULT FALSE,
    created_at    TIMESTAMPTZ NOT NULL,
    updated_at    TIMESTAMPTZ NOT NULL
);

-- One row per sign-in: the "family" of refresh tokens that descend from one login.
-- Access tokens carry its id (`sid`), so revoking it ends the access tokens too.
CREATE TABLE auth_sessions (
    id             UUID PRIMARY KEY,
    user_id        UUID NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at     TIMESTAMPTZ NOT NULL,
    last_used_at   TIMESTAMPTZ NOT NULL,
    -- Absolute end of the family: rotation does not extend a sign-in forever.
    expires_at     TIMESTAMPTZ NOT NULL,
    revoked_at     TIMESTAMPTZ,
    -- logout | refresh_reuse | password_change | disabled
    revoked_reason TEXT
);
CREATE INDEX auth_sessions_user_idx ON auth_sessions (user_id);

-- Refresh tokens are stored only as SHA-256 hashes. A token is used once: `used_at` marks
-- it rotated, and presenting a used token again revokes its whole session.
CREATE TABLE refresh_tokens (
    token_hash BYTEA PRIMARY KEY,
    session_id UUID NOT NULL REFERENCES auth_sessions (id) ON DELETE CASCADE,
    created_at TIMESTAMPTZ NOT NULL,
    expires_at TIMESTAMPTZ NOT NULL,
    used_at    TIMESTAMPTZ
);
CREATE INDEX refresh_tokens_session_idx ON refresh_tokens (session_id);

-- The public face of a therapist in the directory. List fields are JSON arrays for
-- display; therapist_tags holds the same values one per row, for filtering.
CREATE TABLE therapist_profiles (
    user_id                  UUID PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
    bio                      TEXT NOT NULL DEFAULT '',
    qualifications           TEXT NOT NULL DEFAULT '[]',
    specialisations          TEXT NOT NULL DEFAULT '[]',
    modalities               TEXT NOT NULL DEFAULT '[]',
    languages                TEXT NOT NULL DEFAULT '[]',
    time_zone                TEXT NOT NULL DEFAULT 'UTC',
    offers_free_consultation BOOLEAN NOT NULL DEFAULT FALSE,
    updated_at               TIMESTAMPTZ NOT NULL
);

CREATE TABLE therapist_tags (
    user_id UUID NOT NULL REFERENCES therapist_profiles (user_id) ON DELETE CASCADE,
    kind    TEXT NOT NULL CHECK (kind IN ('specialisation', 'modality', 'language')),
    value   TEXT NOT NULL,
    PRIMARY KEY (user_id, kind, value)
);
CREATE INDEX therapist_tags_lookup_idx ON therapist_tags (kind, value);
