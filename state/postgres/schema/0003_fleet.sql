-- Schema 3: several daemons on one database. Every time here comes from
-- the database clock (now()), never from a daemon's.

-- daemon: who is alive. A daemon is live while expires > now(); it moves
-- expires forward with every heartbeat.
CREATE TABLE daemon (
	id        text PRIMARY KEY,
	started   timestamptz NOT NULL DEFAULT now(),
	heartbeat timestamptz NOT NULL DEFAULT now(),
	expires   timestamptz NOT NULL
);

-- lease: at most one daemon polls an account. A lease is held while owner
-- is set and expires_at > now(). token grows by one on every acquisition,
-- so a daemon that lost the lease (paused, partitioned, slow) holds a
-- token that no longer matches: its fenced writes are refused.
CREATE TABLE lease (
	account_id  bigint PRIMARY KEY REFERENCES account (id),
	owner       text,                -- daemon id; NULL when released
	prev_owner  text,                -- owner before the latest acquisition (a takeover when set)
	token       bigint NOT NULL,
	acquired_at timestamptz NOT NULL,
	expires_at  timestamptz NOT NULL
);

CREATE INDEX lease_owner ON lease (owner) WHERE owner IS NOT NULL;

-- schedule: when the fleet polls an account next.
CREATE TABLE schedule (
	account_id bigint PRIMARY KEY REFERENCES account (id),
	next_due   timestamptz NOT NULL
);

CREATE INDEX schedule_due ON schedule (next_due);

-- popsync_fence raises SQLSTATE PSL01 unless daemon own holds the lease of
-- account acct with token tok. Called first in every transaction that
-- records a delivery, an intent or a deletion: FOR SHARE keeps a takeover
-- (an UPDATE of the row) waiting until that transaction ends, so a write
-- that passed the check commits before anyone else can hold the lease.
CREATE FUNCTION popsync_fence(acct bigint, own text, tok bigint) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
	PERFORM 1 FROM lease
		WHERE account_id = acct AND owner = own AND token = tok AND expires_at > clock_timestamp()
		FOR SHARE;
	IF NOT FOUND THEN
		RAISE EXCEPTION 'lease of account % with token % is not held by %', acct, tok, own
			USING ERRCODE = 'PSL01';
	END IF;
END
$$;
