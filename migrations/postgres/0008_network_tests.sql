-- Network tests (order 10): what the server's test peer measured of one person's path, so
-- that the person and, while they wait, their therapist know whether a session can work.
-- Metadata only, like the session records: the path's kind and numbers, never an address,
-- an ICE candidate or an SDP.
CREATE TABLE network_tests (
    id            UUID PRIMARY KEY,
    user_id       UUID NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    started_at    TIMESTAMPTZ NOT NULL,
    finished_at   TIMESTAMPTZ NOT NULL,
    -- ready | relay_only | blocked
    verdict       TEXT NOT NULL,
    -- Why `blocked` (or a warning with another verdict): a code of docs/network-test.md.
    reason        TEXT,
    -- direct | relay_udp | relay_tcp | relay_tls | relay (absent: no connection)
    path          TEXT,
    -- The person asked for the relay path only.
    relay_forced  BOOLEAN NOT NULL,
    connect_ms    BIGINT,
    rtt_ms        DOUBLE PRECISION,
    -- Fraction of echo packets lost, 0 to 1.
    packet_loss   DOUBLE PRECISION,
    -- The upload the bounded transfer reached.
    upload_kbps   DOUBLE PRECISION
);
CREATE INDEX network_tests_user_idx ON network_tests (user_id, finished_at);
CREATE INDEX network_tests_finished_idx ON network_tests (finished_at);
