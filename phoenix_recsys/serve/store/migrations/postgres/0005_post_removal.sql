-- Deletion and takedown (issue 14); see the SQLite twin for the meaning. A post is servable iff
-- both columns are NULL.
ALTER TABLE posts ADD COLUMN deleted_at BIGINT;
ALTER TABLE posts ADD COLUMN taken_down_at BIGINT;
