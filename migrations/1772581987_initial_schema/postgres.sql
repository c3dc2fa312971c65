-- Upstream's final schema (after migration 1772581987), created in one step on an empty database.
DROP TABLE IF EXISTS domains;
DROP TABLE IF EXISTS tasks;
DROP TABLE IF EXISTS desired_lrps;
DROP TABLE IF EXISTS actual_lrps;
CREATE TABLE domains (
  domain VARCHAR(255) PRIMARY KEY,
  expire_time BIGINT DEFAULT 0
);
CREATE INDEX domains_expire_time_idx ON domains (expire_time);
CREATE TABLE desired_lrps (
  process_guid VARCHAR(255) PRIMARY KEY,
  domain VARCHAR(255) NOT NULL,
  log_guid VARCHAR(255) NOT NULL,
  annotation TEXT,
  instances INT NOT NULL,
  memory_mb INT NOT NULL,
  disk_mb INT NOT NULL,
  rootfs VARCHAR(1024) NOT NULL,
  routes TEXT NOT NULL,
  volume_placement TEXT NOT NULL,
  modification_tag_epoch VARCHAR(255) NOT NULL,
  modification_tag_index INT,
  run_info TEXT NOT NULL,
  placement_tags TEXT,
  max_pids INTEGER DEFAULT 0,
  metric_tags TEXT,
  update_strategy INT NOT NULL DEFAULT 0
);
CREATE INDEX desired_lrps_domain_idx ON desired_lrps (domain);
CREATE TABLE actual_lrps (
  process_guid VARCHAR(255),
  instance_index INT,
  evacuating BOOL NOT NULL DEFAULT false,
  domain VARCHAR(255) NOT NULL,
  state VARCHAR(255) NOT NULL,
  instance_guid VARCHAR(255) NOT NULL DEFAULT '',
  cell_id VARCHAR(255) NOT NULL DEFAULT '',
  placement_error VARCHAR(1024) NOT NULL DEFAULT '',
  since BIGINT DEFAULT 0,
  net_info TEXT NOT NULL,
  modification_tag_epoch VARCHAR(255) NOT NULL,
  modification_tag_index INT,
  crash_count INT NOT NULL DEFAULT 0,
  crash_reason VARCHAR(1024) NOT NULL DEFAULT '',
  expire_time BIGINT DEFAULT 0,
  presence INT NOT NULL DEFAULT 0,
  internal_routes TEXT,
  metric_tags TEXT,
  routable BOOL DEFAULT false,
  availability_zone VARCHAR(255) NOT NULL DEFAULT '',
  PRIMARY KEY (process_guid, instance_index, presence)
);
CREATE INDEX actual_lrps_domain_idx ON actual_lrps (domain);
CREATE INDEX actual_lrps_cell_id_idx ON actual_lrps (cell_id);
CREATE INDEX actual_lrps_since_idx ON actual_lrps (since);
CREATE INDEX actual_lrps_state_idx ON actual_lrps (state);
CREATE INDEX actual_lrps_expire_time_idx ON actual_lrps (expire_time);
CREATE TABLE tasks (
  guid VARCHAR(255) PRIMARY KEY,
  domain VARCHAR(255) NOT NULL,
  updated_at BIGINT DEFAULT 0,
  created_at BIGINT DEFAULT 0,
  first_completed_at BIGINT DEFAULT 0,
  state INT,
  cell_id VARCHAR(255) NOT NULL DEFAULT '',
  result TEXT,
  failed BOOL DEFAULT false,
  failure_reason VARCHAR(1024) NOT NULL DEFAULT '',
  task_definition TEXT NOT NULL,
  rejection_count INTEGER NOT NULL DEFAULT 0,
  rejection_reason VARCHAR(1024) NOT NULL DEFAULT ''
);
CREATE INDEX tasks_domain_idx ON tasks (domain);
CREATE INDEX tasks_state_idx ON tasks (state);
CREATE INDEX tasks_cell_id_idx ON tasks (cell_id);
CREATE INDEX tasks_updated_at_idx ON tasks (updated_at);
CREATE INDEX tasks_created_at_idx ON tasks (created_at);
CREATE INDEX tasks_first_completed_at_idx ON tasks (first_completed_at);
CREATE TABLE IF NOT EXISTS bbs_health_check (
  id SERIAL PRIMARY KEY,
  time BIGINT NOT NULL
);
