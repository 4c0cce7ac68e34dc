-- The audit chain the receivers of one database share (package
-- receiver/pgaudit): the same entries, hashed by the same rule, as the file
-- chain of a receiver on bbolt (internal/audit).

-- The chain's head: the seq and hash of the last entry and the bytes the
-- entries take (their JSON lines, as in the file). An append locks this row
-- (FOR UPDATE) for its transaction, so appends from every receiver are
-- serialised by the database: seq strictly increasing, without gaps, and
-- each entry's prev the hash of the one before.
CREATE TABLE audit_head (
	one   boolean PRIMARY KEY DEFAULT true CHECK (one),
	seq   bigint NOT NULL,
	hash  text NOT NULL,
	bytes bigint NOT NULL
);
INSERT INTO audit_head (seq, hash, bytes)
	VALUES (0, '0000000000000000000000000000000000000000000000000000000000000000', 0);

-- One row per entry. time is the entry's time exactly as it is hashed
-- (RFC 3339); at is the same instant for queries (filters, retention).
CREATE TABLE audit_entries (
	seq      bigint PRIMARY KEY,
	time     text NOT NULL,
	at       timestamptz NOT NULL,
	event    text NOT NULL,
	identity text NOT NULL DEFAULT '',
	source   text NOT NULL DEFAULT '',
	by_      text NOT NULL DEFAULT '',
	outcome  text NOT NULL,
	detail   text NOT NULL DEFAULT '',
	receiver text NOT NULL DEFAULT '',
	prev     text NOT NULL,
	hash     text NOT NULL,
	bytes    integer NOT NULL
);
CREATE INDEX audit_entries_at ON audit_entries (at);

-- Checkpoints: the head signed with the receipt key (which the receivers
-- share), one JSON line each as the file chain's checkpoints file holds
-- them. Written one at a time (an advisory lock), in seq order.
CREATE TABLE audit_checkpoints (
	n    bigserial PRIMARY KEY,
	seq  bigint NOT NULL,
	at   timestamptz NOT NULL,
	line text NOT NULL
);
