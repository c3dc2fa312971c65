CREATE TABLE IF NOT EXISTS bbs_health_check (id SERIAL PRIMARY KEY, time bigint NOT NULL)
