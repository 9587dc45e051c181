-- The reference workload: users study contents; each (user, content) pair has a
-- review schedule; every completed review appends a history row.
-- Portable between SQLite and PostgreSQL: BIGINT keys and times in Unix
-- milliseconds, no engine-specific types.

CREATE TABLE users (
    id BIGINT PRIMARY KEY,
    name TEXT NOT NULL,
    email TEXT NOT NULL UNIQUE,
    created_at BIGINT NOT NULL
);

CREATE TABLE contents (
    id BIGINT PRIMARY KEY,
    title TEXT NOT NULL,
    category TEXT NOT NULL,
    difficulty BIGINT NOT NULL CHECK (difficulty BETWEEN 1 AND 5),
    created_at BIGINT NOT NULL
);

CREATE TABLE review_schedules (
    user_id BIGINT NOT NULL REFERENCES users (id),
    content_id BIGINT NOT NULL REFERENCES contents (id),
    -- When the next review is due.
    due_at BIGINT NOT NULL,
    -- SM-2 state: days until the next review, ease factor in thousandths
    -- (2500 = 2.5), and successful repetitions in a row.
    interval_days BIGINT NOT NULL CHECK (interval_days >= 0),
    ease_permille BIGINT NOT NULL CHECK (ease_permille >= 1300),
    repetitions BIGINT NOT NULL CHECK (repetitions >= 0),
    last_reviewed_at BIGINT,
    PRIMARY KEY (user_id, content_id)
);

-- "What is due for this user", in due order.
CREATE INDEX review_schedules_due ON review_schedules (user_id, due_at);

-- Append-only. Rows are written with their schedule's update in one
-- transaction; the seed writes a million of them, so no foreign key is
-- checked per row.
CREATE TABLE review_history (
    user_id BIGINT NOT NULL,
    content_id BIGINT NOT NULL,
    reviewed_at BIGINT NOT NULL,
    -- SM-2 quality: 0 (blackout) to 5 (perfect); 3 and above is a pass.
    rating BIGINT NOT NULL CHECK (rating BETWEEN 0 AND 5),
    duration_ms BIGINT NOT NULL CHECK (duration_ms >= 0)
);

-- One user's history over time (their statistics), and everyone's recent
-- history (the comparison with other learners).
CREATE INDEX review_history_user ON review_history (user_id, reviewed_at);
CREATE INDEX review_history_recent ON review_history (reviewed_at, user_id);

-- Facts about the database itself, such as whether the demo dataset was
-- written and for which sizes.
CREATE TABLE seawall_meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
