ALTER TABLE actual_lrps ADD COLUMN metric_tags MEDIUMTEXT;
