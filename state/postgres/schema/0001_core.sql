-- Schema 1: the seen-set, intents and poll history (what the SQLite store
-- keeps, in the same shape). Times are timestamptz (microseconds), NULL
-- when unset. UIDLs and tokens are bytea: a UIDL is whatever octets the
-- server sent (RFC 1939 §7 asks for 0x21-0x7E, servers do not always
-- obey), and text would refuse invalid UTF-8 and NUL.

CREATE TABLE account (
	id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	host          text NOT NULL,     -- canonical: lower case, no trailing dot
	port          integer NOT NULL CHECK (port BETWEEN 1 AND 65535),
	username      text NOT NULL,
	-- summary of recorded polls, kept by RecordPoll (poll rows are pruned)
	name          text,              -- account name of the latest poll
	last_poll     timestamptz,       -- start of the latest poll
	last_ok       boolean,           -- whether the latest poll succeeded
	last_success  timestamptz,       -- start of the latest successful poll
	last_error    text,
	last_error_at timestamptz,       -- start of the latest failed poll
	pending       integer,           -- from the latest poll
	UNIQUE (host, port, username)
);

CREATE TABLE message (
	account_id   bigint NOT NULL REFERENCES account (id),
	uidl         bytea NOT NULL,
	state        smallint NOT NULL CHECK (state >= 1), -- state.MsgState; which exist is Go's business
	size         bigint NOT NULL,
	first_seen   timestamptz NOT NULL,
	delivered_at timestamptz,
	deleted_at   timestamptz,
	gone_since   timestamptz,        -- first Reconcile that missed the UIDL
	note         text NOT NULL DEFAULT '',
	PRIMARY KEY (account_id, uidl)
);

CREATE INDEX message_gone ON message (account_id, gone_since) WHERE gone_since IS NOT NULL;

CREATE TABLE intent (
	account_id bigint NOT NULL REFERENCES account (id),
	uidl       bytea NOT NULL,
	target     text NOT NULL CHECK (target <> ''), -- the target's stable ID
	token      bytea NOT NULL,                      -- empty for a confirmed intent
	confirmed  boolean NOT NULL,                    -- a confirming target accepted the message
	size       bigint NOT NULL,
	created    timestamptz NOT NULL,
	PRIMARY KEY (account_id, uidl, target)
);

CREATE TABLE poll (
	id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, -- recording order
	account_id bigint NOT NULL REFERENCES account (id),
	name       text NOT NULL,
	started    timestamptz NOT NULL,
	finished   timestamptz,
	on_server  integer NOT NULL,
	new        integer NOT NULL,
	delivered  integer NOT NULL,
	deleted    integer NOT NULL,
	skipped    integer NOT NULL,
	bytes      bigint NOT NULL,
	err        text NOT NULL,
	pending    integer NOT NULL
);

CREATE INDEX poll_account ON poll (account_id, id);
