-- A learner's statistics read every one of their history rows: with the
-- columns they read in the index, those reads never touch the table. The
-- new index starts with the old one's columns, so it serves every query the
-- old one did and replaces it (one index to keep up on each review, as
-- before).
CREATE INDEX review_history_user_cover
    ON review_history (user_id, reviewed_at, rating, duration_ms, content_id);
DROP INDEX review_history_user;
