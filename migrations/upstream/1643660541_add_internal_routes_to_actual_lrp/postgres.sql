ALTER TABLE actual_lrps ADD COLUMN IF NOT EXISTS internal_routes TEXT;
