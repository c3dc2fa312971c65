ALTER TABLE actual_lrps
	ALTER crash_reason TYPE VARCHAR(1024),
	ALTER placement_error TYPE VARCHAR(1024)
