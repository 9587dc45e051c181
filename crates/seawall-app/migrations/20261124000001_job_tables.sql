-- What the queue processors write. Times are Unix milliseconds, as elsewhere.
-- Jobs run at least once: a job re-run after a crash may add a second row,
-- told apart by nothing but its time; the `job` column names the queue job
-- (`queue:id`) so a consumer can drop repeats.

-- Mail waiting to be handed to a mail relay: one row per sent message.
CREATE TABLE email_outbox (
    -- The queue job that wrote it, as `queue:id`.
    job TEXT NOT NULL,
    user_id BIGINT NOT NULL,
    address TEXT NOT NULL,
    template TEXT NOT NULL,
    subject TEXT NOT NULL,
    body TEXT NOT NULL,
    created_at BIGINT NOT NULL
);

-- Notifications handed to a channel.
CREATE TABLE notification_deliveries (
    job TEXT NOT NULL,
    user_id BIGINT NOT NULL,
    channel TEXT NOT NULL,
    message TEXT NOT NULL,
    delivered_at BIGINT NOT NULL
);

-- Review reports, kept as the JSON document the report job built.
CREATE TABLE reports (
    job TEXT NOT NULL,
    user_id BIGINT NOT NULL,
    period_days BIGINT NOT NULL,
    generated_at BIGINT NOT NULL,
    body TEXT NOT NULL
);

-- Reviews per UTC day, refreshed by the analytics job.
CREATE TABLE analytics_daily (
    -- Days since the Unix epoch.
    day BIGINT PRIMARY KEY,
    reviews BIGINT NOT NULL,
    passed BIGINT NOT NULL,
    learners BIGINT NOT NULL,
    study_time_ms BIGINT NOT NULL,
    refreshed_at BIGINT NOT NULL
);

-- Reviews written behind the cache that a worker has applied: a replayed
-- job finds its review here and changes nothing.
CREATE TABLE applied_reviews (
    review_id TEXT PRIMARY KEY,
    applied_at BIGINT NOT NULL
);
