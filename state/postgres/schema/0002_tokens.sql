-- Schema 2: OAuth2 tokens (DESIGN: "OAuth2 tokens live only in a table of
-- their own"). key names the credential's owner, an account identity or
-- a delivery target; blob is the token set as the credential package
-- serialises it. A rotated refresh token is committed here before it is
-- used.

CREATE TABLE oauth_token (
	key     text PRIMARY KEY,
	blob    bytea NOT NULL,
	updated timestamptz NOT NULL DEFAULT now()
);
