-- Relay-only privacy mode per account (see ../postgres/0003_privacy.sql).
ALTER TABLE users ADD COLUMN relay_only INTEGER NOT NULL DEFAULT 0;
