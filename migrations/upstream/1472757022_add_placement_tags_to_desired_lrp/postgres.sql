ALTER TABLE desired_lrps
	ADD COLUMN IF NOT EXISTS placement_tags TEXT;
