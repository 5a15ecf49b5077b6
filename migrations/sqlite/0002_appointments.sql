-- Scheduling: availability, appointments, their participants and their history.
-- Twin: ../postgres/0002_appointments.sql. Comments there explain each table; here only
-- what differs.

ALTER TABLE therapist_profiles ADD COLUMN session_minutes INTEGER NOT NULL DEFAULT 50
    CHECK (session_minutes BETWEEN 15 AND 240);
ALTER TABLE therapist_profiles ADD COLUMN consultation_minutes INTEGER NOT NULL DEFAULT 20
    CHECK (consultation_minutes BETWEEN 10 AND 120);
ALTER TABLE therapist_profiles ADD COLUMN buffer_minutes INTEGER NOT NULL DEFAULT 10
    CHECK (buffer_minutes BETWEEN 0 AND 120);
ALTER TABLE therapist_profiles ADD COLUMN slot_step_minutes INTEGER NOT NULL DEFAULT 30
    CHECK (slot_step_minutes BETWEEN 5 AND 240);

CREATE TABLE availability_rules (
    therapist_id BLOB NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    weekday      INTEGER NOT NULL CHECK (weekday BETWEEN 1 AND 7),
    start_minute INTEGER NOT NULL CHECK (start_minute BETWEEN 0 AND 1439),
    end_minute   INTEGER NOT NULL CHECK (end_minute BETWEEN 1 AND 1440),
    CHECK (end_minute > start_minute),
    PRIMARY KEY (therapist_id, weekday, start_minute)
);

CREATE TABLE availability_exceptions (
    id           BLOB PRIMARY KEY,
    therapist_id BLOB NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    day          TEXT NOT NULL,
    kind         TEXT NOT NULL CHECK (kind IN ('unavailable', 'available')),
    start_minute INTEGER CHECK (start_minute BETWEEN 0 AND 1439),
    end_minute   INTEGER CHECK (end_minute BETWEEN 1 AND 1440),
    CHECK ((start_minute IS NULL) = (end_minute IS NULL)),
    CHECK (start_minute IS NULL OR end_minute > start_minute),
    CHECK (kind = 'unavailable' OR start_minute IS NOT NULL)
);
CREATE INDEX availability_exceptions_therapist_idx ON availability_exceptions (therapist_id, day);

CREATE TABLE appointments (
    id                BLOB PRIMARY KEY,
    therapist_id      BLOB NOT NULL REFERENCES users (id),
    kind              TEXT NOT NULL CHECK (kind IN ('consultation', 'session')),
    starts_at         TEXT NOT NULL,
    ends_at           TEXT NOT NULL,
    status            TEXT NOT NULL CHECK (status IN ('booked', 'cancelled', 'completed', 'no_show')),
    series_id         BLOB,
    created_by        BLOB NOT NULL REFERENCES users (id),
    created_at        TEXT NOT NULL,
    updated_at        TEXT NOT NULL,
    cancelled_at      TEXT,
    cancelled_by      BLOB REFERENCES users (id),
    cancel_reason     TEXT,
    late_cancellation INTEGER NOT NULL DEFAULT 0,
    auto_admit        INTEGER NOT NULL DEFAULT 0,
    revision          INTEGER NOT NULL DEFAULT 0,
    CHECK (ends_at > starts_at)
);
CREATE INDEX appointments_therapist_idx ON appointments (therapist_id, starts_at);
CREATE INDEX appointments_starts_idx ON appointments (starts_at);

CREATE TABLE appointment_participants (
    appointment_id BLOB NOT NULL REFERENCES appointments (id) ON DELETE CASCADE,
    user_id        BLOB NOT NULL REFERENCES users (id),
    role           TEXT NOT NULL CHECK (role IN ('therapist', 'client')),
    starts_at      TEXT NOT NULL,
    blocks_until   TEXT NOT NULL,
    live           INTEGER NOT NULL,
    PRIMARY KEY (appointment_id, user_id),
    CHECK (blocks_until > starts_at)
);
CREATE INDEX appointment_participants_user_idx ON appointment_participants (user_id, starts_at);

-- SQLite has no exclusion constraints. These triggers hold the same invariant: they run
-- inside the writing transaction, and SQLite runs one writer at a time, so no two
-- concurrent bookings can both pass. (Times are fixed-width UTC text: text order is time
-- order.) The message prefix "conflict:" is what the application maps to 409.
CREATE TRIGGER no_overlapping_appointments_insert
BEFORE INSERT ON appointment_participants
WHEN NEW.live
BEGIN
    SELECT RAISE(ABORT, 'conflict: no_overlapping_appointments')
    WHERE EXISTS (
        SELECT 1 FROM appointment_participants p
        WHERE p.user_id = NEW.user_id AND p.live
          AND p.appointment_id <> NEW.appointment_id
          AND p.starts_at < NEW.blocks_until AND NEW.starts_at < p.blocks_until
    );
END;

CREATE TRIGGER no_overlapping_appointments_update
BEFORE UPDATE OF starts_at, blocks_until, live, user_id ON appointment_participants
WHEN NEW.live
BEGIN
    SELECT RAISE(ABORT, 'conflict: no_overlapping_appointments')
    WHERE EXISTS (
        SELECT 1 FROM appointment_participants p
        WHERE p.user_id = NEW.user_id AND p.live
          AND p.appointment_id <> NEW.appointment_id
          AND p.starts_at < NEW.blocks_until AND NEW.starts_at < p.blocks_until
    );
END;

CREATE TABLE consultations (
    therapist_id   BLOB NOT NULL REFERENCES users (id),
    client_id      BLOB NOT NULL REFERENCES users (id),
    appointment_id BLOB NOT NULL REFERENCES appointments (id) ON DELETE CASCADE,
    PRIMARY KEY (therapist_id, client_id)
);

CREATE TABLE appointment_events (
    id             BLOB PRIMARY KEY,
    appointment_id BLOB NOT NULL REFERENCES appointments (id) ON DELETE CASCADE,
    at             TEXT NOT NULL,
    actor_id       BLOB REFERENCES users (id),
    action         TEXT NOT NULL,
    details        TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX appointment_events_appointment_idx ON appointment_events (appointment_id, at);

CREATE TRIGGER appointment_events_no_update BEFORE UPDATE ON appointment_events
BEGIN
    SELECT RAISE(ABORT, 'appointment_events is append-only');
END;

CREATE TABLE calendar_feeds (
    user_id    BLOB PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
    token_hash BLOB NOT NULL UNIQUE,
    created_at TEXT NOT NULL
);
