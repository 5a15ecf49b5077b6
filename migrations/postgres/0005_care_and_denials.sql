-- Who a therapist may book for, and turned-away clients. Twin: ../sqlite/0005_care_and_denials.sql.

-- A therapist books appointments only for clients they already work with: clients who
-- booked with them, and clients who accepted their invitation. Without this, a therapist
-- could book any account id and learn from the refusal when that person is busy elsewhere.
CREATE TABLE care_relationships (
    therapist_id UUID NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    client_id    UUID NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    since        TIMESTAMPTZ NOT NULL,
    -- booking: the client booked with the therapist; invitation: the client accepted one.
    source       TEXT NOT NULL CHECK (source IN ('booking', 'invitation')),
    PRIMARY KEY (therapist_id, client_id)
);
CREATE INDEX care_relationships_client_idx ON care_relationships (client_id);

-- Everyone who has an appointment with a therapist today already works with them.
INSERT INTO care_relationships (therapist_id, client_id, since, source)
SELECT a.therapist_id, p.user_id, MIN(a.created_at), 'booking'
FROM appointments a JOIN appointment_participants p ON p.appointment_id = a.id
WHERE p.role = 'client'
GROUP BY a.therapist_id, p.user_id;

-- Invitations a therapist gives a client (in person, by their own email): a single-use
-- code, stored only as its SHA-256 hash, that expires.
CREATE TABLE care_invitations (
    code_hash    BYTEA PRIMARY KEY,
    therapist_id UUID NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at   TIMESTAMPTZ NOT NULL,
    expires_at   TIMESTAMPTZ NOT NULL,
    accepted_by  UUID REFERENCES users (id) ON DELETE SET NULL,
    accepted_at  TIMESTAMPTZ
);
CREATE INDEX care_invitations_therapist_idx ON care_invitations (therapist_id);

-- A client the therapist turned away stays turned away for that appointment (they cannot
-- knock again at once) until the therapist lets them knock again.
ALTER TABLE appointment_participants ADD COLUMN denied_at TIMESTAMPTZ;
ALTER TABLE appointment_participants ADD COLUMN denied_by UUID REFERENCES users (id);
