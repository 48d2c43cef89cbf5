-- The post sequence (see the SQLite twin). Several servers write here at once, so numbering alone
-- is not commit order: every writer takes the store's post-log advisory lock before appending
-- (see PostgresStore), so a number becomes visible only after every smaller one. Followers are
-- woken by NOTIFY phoenix_posts, sent by the trigger below at commit.
CREATE TABLE post_log (
    seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    post_id BIGINT NOT NULL,
    op TEXT NOT NULL CHECK (op IN ('upsert', 'delete', 'takedown')),
    at BIGINT NOT NULL
);
CREATE INDEX idx_post_log_post ON post_log (post_id, seq);
INSERT INTO post_log (post_id, op, at) SELECT post_id, 'upsert', EXTRACT(EPOCH FROM now())::BIGINT FROM posts ORDER BY post_id;

CREATE FUNCTION phoenix_notify_posts() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('phoenix_posts', '');
    RETURN NULL;
END
$$;
CREATE TRIGGER post_log_notify AFTER INSERT ON post_log
    FOR EACH STATEMENT EXECUTE FUNCTION phoenix_notify_posts();
