-- Relay-only privacy mode per account: the browser uses TURN only, so that the other side
-- never learns this person's IP address. Twin: ../sqlite/0003_privacy.sql.
ALTER TABLE users ADD COLUMN relay_only BOOLEAN NOT NULL DEFAULT FALSE;
