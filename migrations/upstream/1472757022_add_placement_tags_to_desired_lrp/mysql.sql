ALTER TABLE desired_lrps
	ADD COLUMN placement_tags TEXT;
