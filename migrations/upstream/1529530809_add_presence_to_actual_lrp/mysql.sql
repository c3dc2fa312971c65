ALTER TABLE actual_lrps ADD COLUMN presence INT NOT NULL DEFAULT 0;
UPDATE actual_lrps SET presence = 1 WHERE evacuating = true;
ALTER TABLE actual_lrps DROP primary key, ADD PRIMARY KEY (process_guid, instance_index, presence);
