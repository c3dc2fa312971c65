DROP TABLE IF EXISTS domains;
DROP TABLE IF EXISTS tasks;
DROP TABLE IF EXISTS desired_lrps;
DROP TABLE IF EXISTS actual_lrps;

CREATE TABLE domains(
	domain VARCHAR(255) PRIMARY KEY,
	expire_time BIGINT DEFAULT 0
);

CREATE TABLE desired_lrps(
	process_guid VARCHAR(255) PRIMARY KEY,
	domain VARCHAR(255) NOT NULL,
	log_guid VARCHAR(255) NOT NULL,
	annotation MEDIUMTEXT,
	instances INT NOT NULL,
	memory_mb INT NOT NULL,
	disk_mb INT NOT NULL,
	rootfs VARCHAR(255) NOT NULL,
	routes MEDIUMTEXT NOT NULL,
	volume_placement MEDIUMTEXT NOT NULL,
	modification_tag_epoch VARCHAR(255) NOT NULL,
	modification_tag_index INT,
	run_info MEDIUMTEXT NOT NULL
);

CREATE TABLE actual_lrps(
	process_guid VARCHAR(255),
	instance_index INT,
	evacuating BOOL DEFAULT false,
	domain VARCHAR(255) NOT NULL,
	state VARCHAR(255) NOT NULL,
	instance_guid VARCHAR(255) NOT NULL DEFAULT '',
	cell_id VARCHAR(255) NOT NULL DEFAULT '',
	placement_error VARCHAR(255) NOT NULL DEFAULT '',
	since BIGINT DEFAULT 0,
	net_info MEDIUMTEXT NOT NULL,
	modification_tag_epoch VARCHAR(255) NOT NULL,
	modification_tag_index INT,
	crash_count INT NOT NULL DEFAULT 0,
	crash_reason VARCHAR(255) NOT NULL DEFAULT '',
	expire_time BIGINT DEFAULT 0,

	PRIMARY KEY(process_guid, instance_index, evacuating)
);

CREATE TABLE tasks(
	guid VARCHAR(255) PRIMARY KEY,
	domain VARCHAR(255) NOT NULL,
	updated_at BIGINT DEFAULT 0,
	created_at BIGINT DEFAULT 0,
	first_completed_at BIGINT DEFAULT 0,
	state INT,
	cell_id VARCHAR(255) NOT NULL DEFAULT '',
	result MEDIUMTEXT,
	failed BOOL DEFAULT false,
	failure_reason VARCHAR(255) NOT NULL DEFAULT '',
	task_definition MEDIUMTEXT NOT NULL
);

CREATE INDEX domains_expire_time_idx ON domains (expire_time);
CREATE INDEX desired_lrps_domain_idx ON desired_lrps (domain);
CREATE INDEX actual_lrps_domain_idx ON actual_lrps (domain);
CREATE INDEX actual_lrps_cell_id_idx ON actual_lrps (cell_id);
CREATE INDEX actual_lrps_since_idx ON actual_lrps (since);
CREATE INDEX actual_lrps_state_idx ON actual_lrps (state);
CREATE INDEX actual_lrps_expire_time_idx ON actual_lrps (expire_time);
CREATE INDEX tasks_domain_idx ON tasks (domain);
CREATE INDEX tasks_state_idx ON tasks (state);
CREATE INDEX tasks_cell_id_idx ON tasks (cell_id);
CREATE INDEX tasks_updated_at_idx ON tasks (updated_at);
CREATE INDEX tasks_created_at_idx ON tasks (created_at);
CREATE INDEX tasks_first_completed_at_idx ON tasks (first_completed_at);
