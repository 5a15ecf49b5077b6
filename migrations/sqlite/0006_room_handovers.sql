-- Rooms a stopping node handed over to its next start (see ../postgres/0006_room_handovers.sql).

CREATE TABLE room_handovers (
    appointment_id BLOB PRIMARY KEY REFERENCES appointments (id) ON DELETE CASCADE,
    node_id        TEXT NOT NULL,
    saved_at       TEXT NOT NULL,
    snapshot       TEXT NOT NULL
);
CREATE INDEX room_handovers_node_idx ON room_handovers (node_id);
