ALTER TABLE tasks
	ALTER rejection_reason TYPE VARCHAR(1024),
	ALTER failure_reason TYPE VARCHAR(1024)
