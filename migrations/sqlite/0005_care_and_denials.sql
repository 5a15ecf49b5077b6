-- Who a therapist may book for, and turned-away clients (see ../postgres/0005_care_and_denials.sql).

CREATE TABLE care_relationships (
    therapist_id BLOB NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    client_id    BLOB NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    since        TEXT NOT NULL,
    source       TEXT NOT NULL CHECK (source IN ('booking', 'invitation')),
    PRIMARY KEY (therapist_id, client_id)
);
CREATE INDEX care_relationships_client_idx ON care_relationships (client_id);

INSERT INTO care_relationships (therapist_id, client_id, since, source)
SELECT a.therapist_id, p.user_id, MIN(a.created_at), 'booking'
FROM appointments a JOIN appointment_participants p ON p.appointment_id = a.id
WHERE p.role = 'client'
GROUP BY a.therapist_id, p.user_id;

CREATE TABLE care_invitations (
    code_hash    BLOB PRIMARY KEY,
    therapist_id BLOB NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at   TEXT NOT NULL,
    expires_at   TEXT NOT NULL,
    accepted_by  BLOB REFERENCES users (id) ON DELETE SET NULL,
    accepted_at  TEXT
);
CREATE INDEX care_invitations_therapist_idx ON care_invitations (therapist_id);

ALTER TABLE appointment_participants ADD COLUMN denied_at TEXT;
ALTER TABLE appointment_participants ADD COLUMN denied_by BLOB REFERENCES users (id);
