-- Deliveries GitHub failed to hand us (an outage, a deploy) that we asked it to send
-- again: one row per GUID, so replicas sweeping at once ask once, and a delivery that
-- keeps failing is asked for a bounded number of times.
CREATE TABLE redelivery_requests (
    guid text PRIMARY KEY,
    -- GitHub's id of the attempt we asked to repeat.
    delivery_id bigint NOT NULL,
    event text NOT NULL,
    attempts integer NOT NULL DEFAULT 1 CHECK (attempts > 0),
    first_requested_at timestamptz NOT NULL DEFAULT now(),
    last_requested_at timestamptz NOT NULL DEFAULT now(),
    -- Why GitHub refused the last request, if it did.
    last_error text
);
