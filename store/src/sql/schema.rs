//! Diesel's view of upstream's final schema (bbs-reference §7.2). Nullability follows the
//! upstream DDL exactly, so a database written by the Go BBS reads back without surprises.

diesel::table! {
    configurations (id) {
        id -> Text,
        value -> Nullable<Text>,
    }
}

diesel::table! {
    domains (domain) {
        domain -> Text,
        expire_time -> Nullable<BigInt>,
    }
}

diesel::table! {
    tasks (guid) {
        guid -> Text,
        domain -> Text,
        updated_at -> Nullable<BigInt>,
        created_at -> Nullable<BigInt>,
        first_completed_at -> Nullable<BigInt>,
        state -> Nullable<Integer>,
        cell_id -> Text,
        result -> Nullable<Text>,
        failed -> Nullable<Bool>,
        failure_reason -> Text,
        task_definition -> Text,
        rejection_count -> Integer,
        rejection_reason -> Text,
    }
}

diesel::table! {
    desired_lrps (process_guid) {
        process_guid -> Text,
        domain -> Text,
        log_guid -> Text,
        annotation -> Nullable<Text>,
        instances -> Integer,
        memory_mb -> Integer,
        disk_mb -> Integer,
        rootfs -> Text,
        routes -> Text,
        volume_placement -> Text,
        modification_tag_epoch -> Text,
        modification_tag_index -> Nullable<Integer>,
        run_info -> Text,
        placement_tags -> Nullable<Text>,
        max_pids -> Nullable<Integer>,
        metric_tags -> Nullable<Text>,
        update_strategy -> Integer,
    }
}

diesel::table! {
    actual_lrps (process_guid, instance_index, presence) {
        process_guid -> Text,
        instance_index -> Integer,
        evacuating -> Bool,
        domain -> Text,
        state -> Text,
        instance_guid -> Text,
        cell_id -> Text,
        placement_error -> Text,
        since -> Nullable<BigInt>,
        net_info -> Text,
        modification_tag_epoch -> Text,
        modification_tag_index -> Nullable<Integer>,
        crash_count -> Integer,
        crash_reason -> Text,
        expire_time -> Nullable<BigInt>,
        presence -> Integer,
        internal_routes -> Nullable<Text>,
        metric_tags -> Nullable<Text>,
        routable -> Nullable<Bool>,
        availability_zone -> Text,
    }
}

diesel::table! {
    cell_presences (cell_id) {
        cell_id -> Text,
        presence -> Text,
        expire_time -> BigInt,
    }
}

// Upstream locket's table, column for column (locket db/queries.go); every column but the
// key is nullable there.
diesel::table! {
    locks (path) {
        path -> Text,
        owner -> Nullable<Text>,
        value -> Nullable<Text>,
        #[sql_name = "type"]
        lock_type -> Nullable<Text>,
        modified_index -> Nullable<BigInt>,
        modified_id -> Nullable<Text>,
        ttl -> Nullable<BigInt>,
    }
}
