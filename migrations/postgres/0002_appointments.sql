-- Scheduling: availability, appointments, their participants and their history.
-- Twin: ../sqlite/0002_appointments.sql.

-- Overlap of time ranges with equality on a UUID needs btree_gist (ships with PostgreSQL).
CREATE EXTENSION IF NOT EXISTS btree_gist;

-- Scheduling settings live with the profile: one time zone per therapist.
ALTER TABLE therapist_profiles ADD COLUMN session_minutes INTEGER NOT NULL DEFAULT 50
    CHECK (session_minutes BETWEEN 15 AND 240);
ALTER TABLE therapist_profiles ADD COLUMN consultation_minutes INTEGER NOT NULL DEFAULT 20
    CHECK (consultation_minutes BETWEEN 10 AND 120);
ALTER TABLE therapist_profiles ADD COLUMN buffer_minutes INTEGER NOT NULL DEFAULT 10
    CHECK (buffer_minutes BETWEEN 0 AND 120);
-- Slots start every slot_step_minutes from the start of each availability window.
ALTER TABLE therapist_profiles ADD COLUMN slot_step_minutes INTEGER NOT NULL DEFAULT 30
    CHECK (slot_step_minutes BETWEEN 5 AND 240);

-- Weekly hours, in the therapist's wall-clock time (minutes after local midnight), so that
-- "Mondays 09:00-17:00" stays 09:00-17:00 across daylight-saving changes.
CREATE TABLE availability_rules (
    therapist_id UUID NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    weekday      SMALLINT NOT NULL CHECK (weekday BETWEEN 1 AND 7), -- 1 = Monday
    start_minute INTEGER NOT NULL CHECK (start_minute BETWEEN 0 AND 1439),
    end_minute   INTEGER NOT NULL CHECK (end_minute BETWEEN 1 AND 1440),
    CHECK (end_minute > start_minute),
    PRIMARY KEY (therapist_id, weekday, start_minute)
);

-- Dated changes: time off (unavailable) and extra hours (available). A NULL start and end
-- means the whole day.
CREATE TABLE availability_exceptions (
    id           UUID PRIMARY KEY,
    therapist_id UUID NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    day          TEXT NOT NULL, -- YYYY-MM-DD, local to the therapist
    kind         TEXT NOT NULL CHECK (kind IN ('unavailable', 'available')),
    start_minute INTEGER CHECK (start_minute BETWEEN 0 AND 1439),
    end_minute   INTEGER CHECK (end_minute BETWEEN 1 AND 1440),
    CHECK ((start_minute IS NULL) = (end_minute IS NULL)),
    CHECK (start_minute IS NULL OR end_minute > start_minute),
    CHECK (kind = 'unavailable' OR start_minute IS NOT NULL)
);
CREATE INDEX availability_exceptions_therapist_idx ON availability_exceptions (therapist_id, day);

CREATE TABLE appointments (
    id                UUID PRIMARY KEY,
    therapist_id      UUID NOT NULL REFERENCES users (id),
    kind              TEXT NOT NULL CHECK (kind IN ('consultation', 'session')),
    starts_at         TIMESTAMPTZ NOT NULL,
    ends_at           TIMESTAMPTZ NOT NULL,
    status            TEXT NOT NULL CHECK (status IN ('booked', 'cancelled', 'completed', 'no_show')),
    series_id         UUID,
    created_by        UUID NOT NULL REFERENCES users (id),
    created_at        TIMESTAMPTZ NOT NULL,
    updated_at        TIMESTAMPTZ NOT NULL,
    cancelled_at      TIMESTAMPTZ,
    cancelled_by      UUID REFERENCES users (id),
    cancel_reason     TEXT,
    late_cancellation BOOLEAN NOT NULL DEFAULT FALSE,
    -- The therapist may let clients into the session without admitting them by hand.
    auto_admit        BOOLEAN NOT NULL DEFAULT FALSE,
    -- Bumped on every change, for calendar SEQUENCE and optimistic checks.
    revision          INTEGER NOT NULL DEFAULT 0,
    CHECK (ends_at > starts_at)
);
CREATE INDEX appointments_therapist_idx ON appointments (therapist_id, starts_at);
CREATE INDEX appointments_starts_idx ON appointments (starts_at);

-- Who takes part: the therapist and one to three clients. Each row carries a copy of the
-- appointment's time range, so that one constraint can say "no person is ever in two live
-- appointments at once", for therapists and clients alike. The therapist's row extends by
-- their buffer, so that two of their appointments are never closer than that.
CREATE TABLE appointment_participants (
    appointment_id UUID NOT NULL REFERENCES appointments (id) ON DELETE CASCADE,
    user_id        UUID NOT NULL REFERENCES users (id),
    role           TEXT NOT NULL CHECK (role IN ('therapist', 'client')),
    starts_at      TIMESTAMPTZ NOT NULL,
    blocks_until   TIMESTAMPTZ NOT NULL,
    -- FALSE once the appointment is cancelled: it no longer holds the time.
    live           BOOLEAN NOT NULL,
    PRIMARY KEY (appointment_id, user_id),
    CHECK (blocks_until > starts_at),
    -- The invariant, enforced by the database under any concurrency.
    CONSTRAINT no_overlapping_appointments EXCLUDE USING gist (
        user_id WITH =,
        tstzrange(starts_at, blocks_until, '[)') WITH &&
    ) WHERE (live)
);
CREATE INDEX appointment_participants_user_idx ON appointment_participants (user_id, starts_at);

-- The free initial consultation: at most one per client and therapist. The row goes when
-- the consultation is cancelled (so it can be booked again) and stays once it took place.
CREATE TABLE consultations (
    therapist_id   UUID NOT NULL REFERENCES users (id),
    client_id      UUID NOT NULL REFERENCES users (id),
    appointment_id UUID NOT NULL REFERENCES appointments (id) ON DELETE CASCADE,
    CONSTRAINT consultations_once PRIMARY KEY (therapist_id, client_id)
);

-- Append-only history: who did what to an appointment, and when.
CREATE TABLE appointment_events (
    id             UUID PRIMARY KEY,
    appointment_id UUID NOT NULL REFERENCES appointments (id) ON DELETE CASCADE,
    at             TIMESTAMPTZ NOT NULL,
    actor_id       UUID REFERENCES users (id),
    action         TEXT NOT NULL,
    details        TEXT NOT NULL DEFAULT '{}' -- JSON: what changed
);
CREATE INDEX appointment_events_appointment_idx ON appointment_events (appointment_id, at);

CREATE FUNCTION appointment_events_append_only() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION 'appointment_events is append-only';
END;
$$ LANGUAGE plpgsql;
CREATE TRIGGER appointment_events_no_update BEFORE UPDATE ON appointment_events
    FOR EACH ROW EXECUTE FUNCTION appointment_events_append_only();

-- Private calendar feeds: one revocable token per account, stored only as a hash.
CREATE TABLE calendar_feeds (
    user_id    UUID PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
    token_hash BYTEA NOT NULL UNIQUE,
    created_at TIMESTAMPTZ NOT NULL
);
