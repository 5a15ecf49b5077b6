-- Session records (metadata only), the tamper-evident audit trail, and the webhook outbox.
-- Twin: ../sqlite/0004_records.sql.
--
-- Nothing here holds content: no SDP, no ICE candidates, no addresses, no tokens, no chat.

-- One signalling room's lifetime: a session of an appointment.
CREATE TABLE video_sessions (
    id             UUID PRIMARY KEY,
    appointment_id UUID NOT NULL REFERENCES appointments (id) ON DELETE CASCADE,
    -- The server process that ran the room; after a crash it closes its own open sessions.
    node_id        TEXT NOT NULL,
    started_at     TIMESTAMPTZ NOT NULL,
    -- Advanced by every event and by a heartbeat: the last time the room was known alive.
    last_seen_at   TIMESTAMPTZ NOT NULL,
    ended_at       TIMESTAMPTZ,
    -- ended_by_therapist | window_closed | empty | appointment_cancelled |
    -- appointment_changed | server_shutdown | server_lost
    end_reason     TEXT
);
CREATE INDEX video_sessions_appointment_idx ON video_sessions (appointment_id, started_at);
CREATE INDEX video_sessions_open_idx ON video_sessions (node_id) WHERE ended_at IS NULL;

-- A person in a session.
CREATE TABLE session_participants (
    session_id      UUID NOT NULL REFERENCES video_sessions (id) ON DELETE CASCADE,
    participant_id  UUID NOT NULL,
    user_id         UUID NOT NULL REFERENCES users (id),
    role            TEXT NOT NULL CHECK (role IN ('therapist', 'client')),
    -- Entered the waiting room (clients who were not let in automatically).
    knocked_at      TIMESTAMPTZ,
    admitted_at     TIMESTAMPTZ,
    -- The therapist who admitted; NULL with admitted_at set means auto-admit.
    admitted_by     UUID REFERENCES users (id),
    denied_at       TIMESTAMPTZ,
    left_at         TIMESTAMPTZ,
    left_reason     TEXT,
    reconnects      INTEGER NOT NULL DEFAULT 0,
    -- Connection path the client last reported: direct | relay (never an address).
    path            TEXT CHECK (path IN ('direct', 'relay')),
    PRIMARY KEY (session_id, participant_id)
);
CREATE INDEX session_participants_user_idx ON session_participants (user_id);

-- Every interval a participant's connection was open.
CREATE TABLE session_intervals (
    session_id      UUID NOT NULL REFERENCES video_sessions (id) ON DELETE CASCADE,
    participant_id  UUID NOT NULL,
    connected_at    TIMESTAMPTZ NOT NULL,
    disconnected_at TIMESTAMPTZ,
    PRIMARY KEY (session_id, participant_id, connected_at)
);

-- Connection quality per participant and minute: aggregates of the peers' stats, never
-- raw reports.
CREATE TABLE session_quality (
    session_id       UUID NOT NULL REFERENCES video_sessions (id) ON DELETE CASCADE,
    participant_id   UUID NOT NULL,
    minute           TIMESTAMPTZ NOT NULL,
    samples          INTEGER NOT NULL,
    rtt_ms_avg       DOUBLE PRECISION,
    rtt_ms_max       DOUBLE PRECISION,
    jitter_ms_avg    DOUBLE PRECISION,
    packet_loss_avg  DOUBLE PRECISION,
    packet_loss_max  DOUBLE PRECISION,
    bitrate_kbps_avg DOUBLE PRECISION,
    frames_dropped   BIGINT NOT NULL DEFAULT 0,
    relay_samples    INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (session_id, participant_id, minute)
);

-- The audit trail: who read or changed what, sign-ins, and waiting-room and session events.
-- Append-only, and tamper-evident: each row's hash is SHA-256 over the previous row's hash and
-- this row's content, so editing, inserting or removing a row breaks the chain at that row
-- (`alcove audit verify`). audit_head holds the newest link (and the anchor left by
-- retention purges), so removing the newest rows or the oldest is caught too.
CREATE TABLE audit_log (
    seq         BIGINT PRIMARY KEY,
    at          TIMESTAMPTZ NOT NULL,
    actor_id    UUID,
    actor_role  TEXT,
    action      TEXT NOT NULL,
    target_type TEXT NOT NULL,
    target_id   TEXT,
    details     TEXT NOT NULL DEFAULT '{}',
    prev_hash   BYTEA NOT NULL,
    hash        BYTEA NOT NULL
);
CREATE INDEX audit_log_at_idx ON audit_log (at);
CREATE INDEX audit_log_actor_idx ON audit_log (actor_id, at);
CREATE INDEX audit_log_target_idx ON audit_log (target_id, at);

CREATE TABLE audit_head (
    id                 INTEGER PRIMARY KEY CHECK (id = 1),
    seq                BIGINT NOT NULL,
    hash               BYTEA NOT NULL,
    -- Rows up to this seq were purged by retention; the next row's prev_hash is anchor_hash.
    purged_through_seq BIGINT NOT NULL DEFAULT 0,
    anchor_hash        BYTEA NOT NULL
);
INSERT INTO audit_head (id, seq, hash, anchor_hash)
VALUES (1, 0, '\x0000000000000000000000000000000000000000000000000000000000000000',
              '\x0000000000000000000000000000000000000000000000000000000000000000');

CREATE FUNCTION audit_log_no_update() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION 'audit_log is append-only';
END;
$$ LANGUAGE plpgsql;
CREATE TRIGGER audit_log_append_only BEFORE UPDATE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_no_update();

-- Webhook deliveries, written in the same transaction as the event they announce, so that
-- a crash loses none (at-least-once delivery).
CREATE TABLE webhook_deliveries (
    id              UUID PRIMARY KEY,
    url             TEXT NOT NULL,
    event_type      TEXT NOT NULL,
    payload         TEXT NOT NULL,
    created_at      TIMESTAMPTZ NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at TIMESTAMPTZ NOT NULL,
    delivered_at    TIMESTAMPTZ,
    failed_at       TIMESTAMPTZ,
    last_status     INTEGER
);
CREATE INDEX webhook_deliveries_due_idx ON webhook_deliveries (next_attempt_at)
    WHERE delivered_at IS NULL AND failed_at IS NULL;
