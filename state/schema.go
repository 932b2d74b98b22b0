package state

import (
	"context"
	"database/sql"
	"fmt"
)

// A migration brings the schema from version i to i+1, where i is its index
// in the list; it runs inside the transaction that also sets user_version.
type migration func(ctx context.Context, tx *sql.Tx) error

// schemaMigrations is the SQLite schema history. Append only: a released
// migration is never edited, and PRAGMA user_version counts how many ran.
var schemaMigrations = []migration{
	migrate1,
	migrate2,
	migrate3,
	migrateTokens, // tokens.go
}

// migrate1 creates the tables.
//
// Times are INTEGER microseconds since the Unix epoch (UTC), NULL when unset.
// message and intent are WITHOUT ROWID tables clustered on their primary key,
// so the per-account scans of Reconcile read contiguous pages.
func migrate1(ctx context.Context, tx *sql.Tx) error {
	_, err := tx.ExecContext(ctx, fmt.Sprintf(`
CREATE TABLE account (
	id            INTEGER PRIMARY KEY,
	host          TEXT NOT NULL,    -- canonical: lower case, no trailing dot
	port          INTEGER NOT NULL,
	username      TEXT NOT NULL,
	-- summary of recorded polls, kept by RecordPoll (poll rows are pruned)
	name          TEXT,             -- account name of the latest poll
	last_poll     INTEGER,          -- start of the latest poll
	last_ok       INTEGER,          -- 1 if the latest poll succeeded
	last_success  INTEGER,          -- start of the latest successful poll
	last_error    TEXT,
	last_error_at INTEGER,          -- start of the latest failed poll
	pending       INTEGER,          -- from the latest poll
	UNIQUE (host, port, username)
);

CREATE TABLE message (
	account_id   INTEGER NOT NULL REFERENCES account (id),
	uidl         TEXT NOT NULL,
	state        INTEGER NOT NULL CHECK (state IN (1, 2, 3)), -- MsgState
	size         INTEGER NOT NULL,
	first_seen   INTEGER NOT NULL,
	delivered_at INTEGER,
	deleted_at   INTEGER,
	gone_since   INTEGER,           -- first Reconcile that missed the UIDL
	note         TEXT NOT NULL DEFAULT '',
	PRIMARY KEY (account_id, uidl)
) WITHOUT ROWID;

CREATE INDEX message_gone ON message (account_id, gone_since) WHERE gone_since IS NOT NULL;

CREATE TABLE intent (
	account_id INTEGER NOT NULL REFERENCES account (id),
	uidl       TEXT NOT NULL,
	target     INTEGER NOT NULL,
	token      TEXT NOT NULL,
	size       INTEGER NOT NULL,
	created    INTEGER NOT NULL,
	PRIMARY KEY (account_id, uidl, target)
) WITHOUT ROWID;

CREATE TABLE poll (
	id         INTEGER PRIMARY KEY, -- recording order
	account_id INTEGER NOT NULL REFERENCES account (id),
	name       TEXT NOT NULL,
	started    INTEGER NOT NULL,
	finished   INTEGER,
	on_server  INTEGER NOT NULL,
	new        INTEGER NOT NULL,
	delivered  INTEGER NOT NULL,
	deleted    INTEGER NOT NULL,
	skipped    INTEGER NOT NULL,
	bytes      INTEGER NOT NULL,
	err        TEXT NOT NULL,
	pending    INTEGER NOT NULL
);

CREATE INDEX poll_account ON poll (account_id, id);

PRAGMA application_id = %d;
`, sqliteAppID))
	return err
}

// migrate2 lets message.state hold Imported (4). SQLite cannot alter a
// CHECK constraint, so the table is rebuilt with the same columns.
func migrate2(ctx context.Context, tx *sql.Tx) error {
	_, err := tx.ExecContext(ctx, `
CREATE TABLE message_v2 (
	account_id   INTEGER NOT NULL REFERENCES account (id),
	uidl         TEXT NOT NULL,
	state        INTEGER NOT NULL CHECK (state IN (1, 2, 3, 4)), -- MsgState
	size         INTEGER NOT NULL,
	first_seen   INTEGER NOT NULL,
	delivered_at INTEGER,
	deleted_at   INTEGER,
	gone_since   INTEGER,
	note         TEXT NOT NULL DEFAULT '',
	PRIMARY KEY (account_id, uidl)
) WITHOUT ROWID;
INSERT INTO message_v2 SELECT account_id, uidl, state, size, first_seen, delivered_at, deleted_at, gone_since, note FROM message;
DROP TABLE message;
ALTER TABLE message_v2 RENAME TO message;
CREATE INDEX message_gone ON message (account_id, gone_since) WHERE gone_since IS NOT NULL;
`)
	return err
}

// migrate3 names intents' targets by a stable ID instead of their index
// in the config, and makes "confirmed" a column instead of a token value.
//
// Indexes become state.LegacyTarget IDs ("index:N"), which the fetcher
// maps to the target at that index, so that an intent left by a crash
// before the upgrade is still resolved; the quarantine's index 1000
// becomes QuarantineTarget. The "=confirmed" token becomes confirmed = 1
// with an empty token.
//
// message's CHECK on state becomes state >= 1: which states exist is the
// Go code's business (MsgState), so the next one needs no table rebuild
// like migrate2's.
func migrate3(ctx context.Context, tx *sql.Tx) error {
	_, err := tx.ExecContext(ctx, `
CREATE TABLE intent2 (
	account_id INTEGER NOT NULL REFERENCES account (id),
	uidl       TEXT NOT NULL,
	target     TEXT NOT NULL,    -- the target's stable ID
	token      TEXT NOT NULL,    -- '' for a confirmed intent
	confirmed  INTEGER NOT NULL, -- 1: a confirming target accepted the message
	size       INTEGER NOT NULL,
	created    INTEGER NOT NULL,
	PRIMARY KEY (account_id, uidl, target)
) WITHOUT ROWID;

INSERT INTO intent2 (account_id, uidl, target, token, confirmed, size, created)
SELECT account_id, uidl,
	CASE target WHEN 1000 THEN 'quarantine' ELSE 'index:' || target END,
	CASE token WHEN '=confirmed' THEN '' ELSE token END,
	token = '=confirmed',
	size, created
FROM intent;

DROP TABLE intent;
ALTER TABLE intent2 RENAME TO intent;

CREATE TABLE message2 (
	account_id   INTEGER NOT NULL REFERENCES account (id),
	uidl         TEXT NOT NULL,
	state        INTEGER NOT NULL CHECK (state >= 1), -- MsgState
	size         INTEGER NOT NULL,
	first_seen   INTEGER NOT NULL,
	delivered_at INTEGER,
	deleted_at   INTEGER,
	gone_since   INTEGER,           -- first Reconcile that missed the UIDL
	note         TEXT NOT NULL DEFAULT '',
	PRIMARY KEY (account_id, uidl)
) WITHOUT ROWID;

INSERT INTO message2 SELECT account_id, uidl, state, size, first_seen, delivered_at, deleted_at, gone_since, note FROM message;
DROP TABLE message;
ALTER TABLE message2 RENAME TO message;
CREATE INDEX message_gone ON message (account_id, gone_since) WHERE gone_since IS NOT NULL;
`)
	return err
}

// migrate runs the missing migrations in one write transaction. It reads
// user_version again inside the transaction: another process may have
// migrated (or a newer popsync upgraded) the file since the probe.
func migrate(ctx context.Context, db *sql.DB, abs string, migrations []migration) error {
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return openError(abs, "migrating", err)
	}
	defer tx.Rollback()
	var version int64
	if err := tx.QueryRowContext(ctx, "PRAGMA user_version").Scan(&version); err != nil {
		return openError(abs, "reading", err)
	}
	if version > int64(len(migrations)) {
		return newerSchema(abs, version, len(migrations))
	}
	if version == int64(len(migrations)) {
		return nil
	}
	for v := version; v < int64(len(migrations)); v++ {
		if err := migrations[v](ctx, tx); err != nil {
			return fmt.Errorf("migrating state file %s to schema %d: %w", abs, v+1, classify(err))
		}
	}
	// PRAGMA takes no bound parameters; the value is our own integer.
	if _, err := tx.ExecContext(ctx, fmt.Sprintf("PRAGMA user_version = %d", len(migrations))); err != nil {
		return openError(abs, "migrating", err)
	}
	if err := tx.Commit(); err != nil {
		return openError(abs, "migrating", err)
	}
	return nil
}
