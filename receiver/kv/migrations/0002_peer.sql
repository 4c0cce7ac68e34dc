-- The control connection across receivers (package receiver/peer).

-- Which receiver holds which box's control connection: one row per device,
-- written by the holder when the box connects (a newer connection anywhere
-- takes the row over), removed when it disconnects. The holder renews
-- expires every third of the lease; a row whose lease ran out (its receiver
-- was killed or lost the database) counts for nothing.
CREATE TABLE peer_holders (
	device  text PRIMARY KEY,
	replica text NOT NULL,
	since   timestamptz NOT NULL,
	source  text NOT NULL DEFAULT '',
	version text NOT NULL DEFAULT '',
	-- the consent state the box last pushed (JSON, as the box sent it)
	state   bytea,
	expires timestamptz NOT NULL
);
CREATE INDEX peer_holders_replica ON peer_holders (replica);

-- Every receiver also listens on uploadbox_peer_rooms: the holder notifies
-- it (payload: the device name) when a box connects, disconnects or pushes
-- a new consent state, so teachers' pages on every receiver follow it.

-- A request for a box held by another receiver: written by the caller, run
-- by the target on its control connection, answered in place; the caller
-- reads the answer and deletes the row. Each receiver is woken by NOTIFY on
-- its own channel (uploadbox_peer_<replica>) with the call id as payload.
CREATE TABLE peer_calls (
	id       text PRIMARY KEY,
	device   text NOT NULL,
	op       text NOT NULL,
	params   bytea NOT NULL,
	caller   text NOT NULL,
	target   text NOT NULL,
	deadline timestamptz NOT NULL,
	taken    boolean NOT NULL DEFAULT false,
	answer   bytea
);
CREATE INDEX peer_calls_target ON peer_calls (target) WHERE answer IS NULL;
