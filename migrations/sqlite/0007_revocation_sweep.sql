-- Sign-ins ended recently, for the revocation sweep: each node closes the signalling
-- connections of sign-ins that another process ended (the admin CLI, a node without Redis).
CREATE INDEX auth_sessions_revoked_at ON auth_sessions (revoked_at) WHERE revoked_at IS NOT NULL;
