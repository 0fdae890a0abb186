-- Retention: the periodic purge finds delivery bodies still held and finished tasks by age
-- without scanning the tables. A purged body is empty; the row (its GUID is the duplicate
-- check) stays.
CREATE INDEX deliveries_body_held_idx ON deliveries (received_at)
    WHERE state <> 'pending' AND octet_length(body) > 0;
CREATE INDEX tasks_finished_idx ON tasks (finished_at) WHERE finished_at IS NOT NULL;
