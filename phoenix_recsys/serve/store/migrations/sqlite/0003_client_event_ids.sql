-- Idempotent event writes: the client's optional event id per user. A replayed request (same user,
-- same event id) finds its row here and is not written again. A table of its own, not a column of
-- engagements, because impressions (the seen table) carry event ids too, and `engagements.event_id`
-- is already the row id.
CREATE TABLE client_events (
    user_id INTEGER NOT NULL,
    event_id TEXT NOT NULL,
    received_at INTEGER NOT NULL,
    PRIMARY KEY (user_id, event_id)
) WITHOUT ROWID;
