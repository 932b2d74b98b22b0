-- Schema 4: the login-needed mark of an OAuth2 token, as the SQLite
-- store keeps it: why the grant stopped working (invalid_grant, ...),
-- empty while it works. Every daemon sees it, so a gone grant is asked
-- for no more by any of them until `popsync login` saves a new token
-- (Save clears it).

ALTER TABLE oauth_token ADD COLUMN login_needed text NOT NULL DEFAULT '';
