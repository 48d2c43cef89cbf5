-- The schema the single-file store shipped with (unchanged).
CREATE TABLE posts (
    post_id INTEGER PRIMARY KEY,
    author_id INTEGER NOT NULL CHECK (author_id >= 0),
    created_at INTEGER NOT NULL,
    text TEXT,
    repost_of INTEGER,
    video_duration_s REAL
);
CREATE INDEX idx_posts_author_created ON posts (author_id, created_at DESC, post_id DESC);
CREATE INDEX idx_posts_created ON posts (created_at DESC, post_id DESC);

CREATE TABLE engagements (
    event_id INTEGER PRIMARY KEY,
    user_id INTEGER NOT NULL,
    post_id INTEGER NOT NULL REFERENCES posts (post_id),
    timestamp INTEGER NOT NULL,
    actions TEXT NOT NULL CHECK (json_valid(actions)),
    product_surface INTEGER NOT NULL DEFAULT 0 CHECK (product_surface >= 0)
);
CREATE INDEX idx_engagements_user_time ON engagements (user_id, timestamp, event_id, post_id);
CREATE INDEX idx_engagements_post ON engagements (post_id);
CREATE INDEX idx_engagements_time_post ON engagements (timestamp, post_id);

CREATE TABLE follows (
    user_id INTEGER NOT NULL,
    author_id INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (user_id, author_id)
) WITHOUT ROWID;
CREATE TABLE blocks (
    user_id INTEGER NOT NULL,
    author_id INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (user_id, author_id)
) WITHOUT ROWID;
CREATE TABLE mutes (
    user_id INTEGER NOT NULL,
    author_id INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (user_id, author_id)
) WITHOUT ROWID;

CREATE TABLE served (
    user_id INTEGER NOT NULL,
    session_id TEXT NOT NULL,
    post_id INTEGER NOT NULL REFERENCES posts (post_id),
    served_at INTEGER NOT NULL,
    PRIMARY KEY (user_id, session_id, post_id)
) WITHOUT ROWID;
CREATE TABLE seen (
    user_id INTEGER NOT NULL,
    post_id INTEGER NOT NULL REFERENCES posts (post_id),
    seen_at INTEGER NOT NULL,
    PRIMARY KEY (user_id, post_id)
) WITHOUT ROWID;
