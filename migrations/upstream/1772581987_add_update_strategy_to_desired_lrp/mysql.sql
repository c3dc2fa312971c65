ALTER TABLE desired_lrps
	ADD COLUMN update_strategy INT NOT NULL DEFAULT 0;
