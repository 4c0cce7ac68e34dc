-- The receiver's state: named buckets of ordered key/value pairs (package kv).
-- A bucket exists once created, even while empty.
CREATE TABLE kv_buckets (
	name bytea PRIMARY KEY
);

-- One row per key. The primary key makes a key unique within its bucket:
-- a segment's key (device, recording, sequence) can be stored once only.
CREATE TABLE kv (
	bucket bytea NOT NULL REFERENCES kv_buckets (name),
	k      bytea NOT NULL,
	v      bytea NOT NULL,
	PRIMARY KEY (bucket, k)
);
