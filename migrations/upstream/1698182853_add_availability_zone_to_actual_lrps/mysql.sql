ALTER TABLE actual_lrps
ADD COLUMN availability_zone VARCHAR(255) NOT NULL DEFAULT '';
