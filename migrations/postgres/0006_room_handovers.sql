-- Rooms a stopping node handed over to its next start. Twin: ../sqlite/0006_room_handovers.sql.

-- A node that stops (SIGTERM: a restart, an upgrade) without Redis keeps its live session
-- rooms here, and carries them on when it starts again: the people in them reconnect and
-- resume the same session. A snapshot holds who is in the room, their places in the
-- waiting room, their resume tokens' SHA-256 hashes and times; never a relayed signal (no
-- SDP, no candidate: those are dropped before it is written). Rows are taken (deleted) at
-- the next start.
CREATE TABLE room_handovers (
    appointment_id UUID PRIMARY KEY REFERENCES appointments (id) ON DELETE CASCADE,
    node_id        TEXT NOT NULL,
    saved_at       TIMESTAMPTZ NOT NULL,
    snapshot       TEXT NOT NULL
);
CREATE INDEX room_handovers_node_idx ON room_handovers (node_id);
