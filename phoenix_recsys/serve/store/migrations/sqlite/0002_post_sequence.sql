-- The post sequence: one row per change of a post (upsert, delete, takedown), numbered in commit
-- order. AUTOINCREMENT so a number is never reused, even after the newest row is deleted; the
-- single SQLite writer makes insertion order the commit order. Existing posts are logged once.
CREATE TABLE post_log (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    post_id INTEGER NOT NULL,
    op TEXT NOT NULL CHECK (op IN ('upsert', 'delete', 'takedown')),
    at INTEGER NOT NULL
);
CREATE INDEX idx_post_log_post ON post_log (post_id, seq);
INSERT INTO post_log (post_id, op, at) SELECT post_id, 'upsert', CAST(strftime('%s', 'now') AS INTEGER) FROM posts ORDER BY post_id;
