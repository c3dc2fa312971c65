ALTER TABLE desired_lrps ADD COLUMN metric_tags MEDIUMTEXT

-- Then, in code (store/src/sql/upgrade.rs): each row's run info metric tags (field 25)
-- sealed as encoded JSON into the new column (a run info that cannot be opened leaves NULL).
