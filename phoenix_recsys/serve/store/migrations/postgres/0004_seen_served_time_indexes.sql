-- Bounded per-request reads for users with long lifetimes (issue 13). `seen_posts` reads the most
-- recent impressions of one user (`WHERE user_id = ? AND seen_at >= ? ORDER BY seen_at DESC
-- LIMIT n`); with only the (user_id, post_id) key it read and sorted every seen row of the user
-- (32k rows, 14 ms for a heavy user), now it walks this covering index backwards and stops after n.
-- The same for the served rows of one session (pagination), and `prune_served` (served_at < ?),
-- which otherwise scans the whole table every refresh.
CREATE INDEX idx_seen_user_time ON seen (user_id, seen_at, post_id);
CREATE INDEX idx_served_session_time ON served (user_id, session_id, served_at, post_id);
CREATE INDEX idx_served_time ON served (served_at);
