ALTER TABLE actual_lrps
ADD COLUMN routable BOOL DEFAULT false;
UPDATE actual_lrps
SET routable = true WHERE state = 'RUNNING';
