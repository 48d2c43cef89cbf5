-- Idempotent event writes (see the SQLite twin): one row per (user, client event id).
CREATE TABLE client_events (
    user_id BIGINT NOT NULL,
    event_id TEXT NOT NULL,
    received_at BIGINT NOT NULL,
    PRIMARY KEY (user_id, event_id)
);
