ALTER TABLE actual_lrps ADD COLUMN internal_routes MEDIUMTEXT;
