-- Mail (order 11): the outbox of appointment messages, and each person's mail settings.
--
-- A row is written in the same transaction as the booking, change or cancellation that
-- causes it, one per recipient, so a crash or a mail server's outage loses none of them.
-- The node claims due rows with a lease in `claimed_until` (SQLite serves one node), so
-- no row is sent twice. What a message says is built when it is sent, from the
-- appointment as it is then: nothing of its content is stored here.
CREATE TABLE mail_outbox (
    id                 BLOB PRIMARY KEY,
    appointment_id     BLOB NOT NULL REFERENCES appointments (id) ON DELETE CASCADE,
    user_id            BLOB NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    -- confirmation | reminder | rescheduled | cancelled
    kind               TEXT NOT NULL,
    -- email (room for a second channel behind the same outbox)
    channel            TEXT NOT NULL DEFAULT 'email',
    -- The start the message is about; a reminder whose appointment no longer starts then
    -- is dropped, not sent.
    starts_at          TEXT NOT NULL,
    -- A reschedule notice: the start it moved from.
    previous_starts_at TEXT,
    -- A reminder: how long before the start.
    lead_seconds       INTEGER,
    due_at             TEXT NOT NULL,
    created_at         TEXT NOT NULL,
    attempts           INTEGER NOT NULL DEFAULT 0,
    next_attempt_at    TEXT NOT NULL,
    -- A node is sending it until then.
    claimed_until      TEXT,
    sent_at            TEXT,
    dropped_at         TEXT,
    -- Why dropped: cancelled | moved | reminders_off | not_participant | too_late |
    -- refused | expired
    dropped_reason     TEXT
);
CREATE INDEX mail_outbox_due_idx ON mail_outbox (next_attempt_at)
    WHERE sent_at IS NULL AND dropped_at IS NULL;
CREATE INDEX mail_outbox_appointment_idx ON mail_outbox (appointment_id);
CREATE INDEX mail_outbox_created_idx ON mail_outbox (created_at);

-- Reminders can be switched off; a client's time zone (the times in their mail).
ALTER TABLE users ADD COLUMN email_reminders INTEGER NOT NULL DEFAULT 1;
ALTER TABLE users ADD COLUMN time_zone TEXT;
