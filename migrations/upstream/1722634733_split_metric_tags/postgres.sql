ALTER TABLE desired_lrps ADD COLUMN IF NOT EXISTS metric_tags TEXT

-- Then, in code (store/src/sql/upgrade.rs): each row's run info metric tags (field 25)
-- sealed as encoded JSON into the new column (a run info that cannot be opened leaves NULL).
