-- Deletion and takedown (issue 14). A removed post keeps its row, because engagements, served and
-- seen rows reference it (engagement history is kept); these columns take it out of every read
-- that serves posts (hydration, sources, cold-start lists, the corpus index). deleted_at: the
-- author's deletion, final (the text is erased). taken_down_at: a moderator's takedown, reversible
-- (set back to NULL). A post is servable iff both are NULL.
ALTER TABLE posts ADD COLUMN deleted_at INTEGER;
ALTER TABLE posts ADD COLUMN taken_down_at INTEGER;
