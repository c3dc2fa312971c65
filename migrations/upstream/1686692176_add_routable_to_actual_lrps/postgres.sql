ALTER TABLE actual_lrps
ADD COLUMN IF NOT EXISTS routable BOOL DEFAULT false;
UPDATE actual_lrps
SET routable = true WHERE state = 'RUNNING';
