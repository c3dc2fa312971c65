//! Request validation with upstream's messages (bbs-reference §2.10; field names, order and
//! joining as the Go models produce them). Errors accumulate in order and join with ", ";
//! nested errors are spliced in flat, after the marker field the parent adds, if any.

// Upstream still validates fields it has deprecated (legacy_download_user, SHA512).
#![allow(deprecated)]

use std::net::IpAddr;

use bbs_models as m;
use bbs_models::image_layer;

use crate::error::BbsError;

/// The accumulated violations of one request.
#[derive(Debug, Default, PartialEq)]
pub struct Violations(Vec<String>);

impl Violations {
    pub fn field(&mut self, name: &str) {
        self.0.push(format!("Invalid field: {name}"));
    }

    pub fn plain(&mut self, text: &str) {
        self.0.push(text.to_owned());
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn into_result(self) -> Result<(), BbsError> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(BbsError::InvalidRequest(self.0.join(", ")))
        }
    }
}

/// Task and process guids: letters, digits, `_` and `-`, at least one.
pub fn is_valid_guid(guid: &str) -> bool {
    !guid.is_empty()
        && guid
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Go's `url.Parse` followed by a non-empty scheme: a letter, then letters, digits, `+-.`,
/// then `:`. Control characters fail the parse.
pub fn has_url_scheme(value: &str) -> bool {
    if value.is_empty() || value.bytes().any(|b| b < 0x20 || b == 0x7f) {
        return false;
    }
    for (i, c) in value.char_indices() {
        match c {
            'a'..='z' | 'A'..='Z' => {}
            '0'..='9' | '+' | '-' | '.' if i > 0 => {}
            ':' => return i > 0,
            _ => return false,
        }
    }
    false
}

const MAX_ANNOTATION_BYTES: usize = 10 * 1024;

pub fn desire_task(request: &m::DesireTaskRequest) -> Result<(), BbsError> {
    let mut v = Violations::default();
    if !is_valid_guid(&request.task_guid) {
        v.field("task_guid");
    }
    if request.domain.is_empty() {
        v.field("domain");
    }
    match &request.task_definition {
        None => v.field("task_definition"),
        Some(definition) => task_definition(definition, &mut v),
    }
    v.into_result()
}

pub fn task_definition(d: &m::TaskDefinition, v: &mut Violations) {
    if !has_url_scheme(&d.root_fs) {
        v.field("rootfs");
    }
    match &d.action {
        None => v.plain("invalid action type"),
        Some(action) => {
            let mut inner = Violations::default();
            validate_action(action, &mut inner);
            if !inner.is_empty() {
                v.field("action");
                v.0.extend(inner.0);
            }
        }
    }
    if d.memory_mb < 0 {
        v.field("memory_mb");
    }
    if d.disk_mb < 0 {
        v.field("disk_mb");
    }
    if d.log_rate_limit
        .as_ref()
        .is_some_and(|l| l.bytes_per_second < -1)
    {
        v.field("log_rate_limit");
    }
    if d.max_pids < 0 {
        v.field("max_pids");
    }
    if d.annotation.len() > MAX_ANNOTATION_BYTES {
        v.field("annotation");
    }
    for rule in &d.egress_rules {
        if !security_group_rule_is_valid(rule) {
            v.field("egress_rules");
        }
    }
    if d.image_username.is_empty() && !d.image_password.is_empty() {
        v.field("image_username");
    }
    if !d.image_username.is_empty() && d.image_password.is_empty() {
        v.field("image_password");
    }
    for dependency in &d.cached_dependencies {
        let mut inner = Violations::default();
        cached_dependency(dependency, &mut inner);
        if !inner.is_empty() {
            v.field("cached_dependency");
            v.0.extend(inner.0);
        }
    }
    image_layers(&d.image_layers, &d.legacy_download_user, v);
}

/// Checks image layers, with a marker per bad layer and the legacy user rule once.
pub fn image_layers(layers: &[m::ImageLayer], legacy_download_user: &str, v: &mut Violations) {
    let mut any_exclusive = false;
    for layer in layers {
        let mut inner = Violations::default();
        image_layer(layer, &mut inner);
        if !inner.is_empty() {
            v.field("image_layer");
            v.0.extend(inner.0);
        }
        any_exclusive |= layer.layer_type == image_layer::Type::Exclusive as i32;
    }
    if any_exclusive && legacy_download_user.is_empty() {
        v.field("legacy_download_user");
    }
}

/// The inner action upstream uses: the first one present, in field order.
pub enum InnerAction<'a> {
    Download(&'a m::DownloadAction),
    Upload(&'a m::UploadAction),
    Run(&'a m::RunAction),
    Timeout(&'a m::TimeoutAction),
    EmitProgress(&'a m::EmitProgressAction),
    Try(&'a m::TryAction),
    Parallel(&'a m::ParallelAction),
    Serial(&'a m::SerialAction),
    Codependent(&'a m::CodependentAction),
}

pub fn inner_action(action: &m::Action) -> Option<InnerAction<'_>> {
    if let Some(a) = &action.download_action {
        return Some(InnerAction::Download(a));
    }
    if let Some(a) = &action.upload_action {
        return Some(InnerAction::Upload(a));
    }
    if let Some(a) = &action.run_action {
        return Some(InnerAction::Run(a));
    }
    if let Some(a) = &action.timeout_action {
        return Some(InnerAction::Timeout(a));
    }
    if let Some(a) = &action.emit_progress_action {
        return Some(InnerAction::EmitProgress(a));
    }
    if let Some(a) = &action.try_action {
        return Some(InnerAction::Try(a));
    }
    if let Some(a) = &action.parallel_action {
        return Some(InnerAction::Parallel(a));
    }
    if let Some(a) = &action.serial_action {
        return Some(InnerAction::Serial(a));
    }
    action
        .codependent_action
        .as_ref()
        .map(InnerAction::Codependent)
}

fn checksum(algorithm: &str, value: &str, v: &mut Violations) {
    if !value.is_empty() && algorithm.is_empty() {
        v.field("checksum algorithm");
    }
    if !algorithm.is_empty() && value.is_empty() {
        v.field("checksum value");
    }
    if !algorithm.is_empty()
        && !value.is_empty()
        && !matches!(
            algorithm.to_ascii_lowercase().as_str(),
            "md5" | "sha1" | "sha256"
        )
    {
        v.field("invalid algorithm");
    }
}

fn wrapped(action: Option<&m::Action>, v: &mut Violations) {
    match action {
        None => v.field("action"),
        Some(action) => validate_action(action, v),
    }
}

/// An action's errors, flat. An empty action (no inner action) is `inner-action` wherever it
/// appears; upstream's handler panics on a nested one, we answer instead.
pub fn validate_action(action: &m::Action, v: &mut Violations) {
    let Some(inner) = inner_action(action) else {
        v.field("inner-action");
        return;
    };
    match inner {
        InnerAction::Download(a) => {
            for (name, value) in [("from", &a.from), ("to", &a.to), ("user", &a.user)] {
                if value.is_empty() {
                    v.field(name);
                }
            }
            checksum(&a.checksum_algorithm, &a.checksum_value, v);
        }
        InnerAction::Upload(a) => {
            for (name, value) in [("to", &a.to), ("from", &a.from), ("user", &a.user)] {
                if value.is_empty() {
                    v.field(name);
                }
            }
        }
        InnerAction::Run(a) => {
            for (name, value) in [("path", &a.path), ("user", &a.user)] {
                if value.is_empty() {
                    v.field(name);
                }
            }
        }
        InnerAction::Timeout(a) => {
            wrapped(a.action.as_deref(), v);
            if a.timeout_ms <= 0 {
                v.field("timeout_ms");
            }
        }
        InnerAction::EmitProgress(a) => wrapped(a.action.as_deref(), v),
        InnerAction::Try(a) => wrapped(a.action.as_deref(), v),
        InnerAction::Parallel(m::ParallelAction { actions, .. })
        | InnerAction::Serial(m::SerialAction { actions, .. })
        | InnerAction::Codependent(m::CodependentAction { actions, .. }) => {
            if actions.is_empty() {
                v.field("actions");
            }
            for action in actions {
                validate_action(action, v);
            }
        }
    }
}

pub fn cached_dependency(d: &m::CachedDependency, v: &mut Violations) {
    if d.from.is_empty() {
        v.field("from");
    }
    if d.to.is_empty() {
        v.field("to");
    }
    checksum(&d.checksum_algorithm, &d.checksum_value, v);
}

pub fn image_layer(layer: &m::ImageLayer, v: &mut Violations) {
    use image_layer::{DigestAlgorithm, MediaType, Type};
    if layer.url.is_empty() {
        v.field("url");
    }
    if layer.destination_path.is_empty() {
        v.field("destination_path");
    }
    let exclusive = layer.layer_type == Type::Exclusive as i32;
    if layer.layer_type != Type::Shared as i32 && !exclusive {
        v.field("layer_type");
    }
    let media = layer.media_type;
    if media != MediaType::Tgz as i32
        && media != MediaType::Tar as i32
        && media != MediaType::Zip as i32
    {
        v.field("media_type");
    }
    let algorithm = layer.digest_algorithm;
    let unset = 0; // DigestAlgorithmInvalid
    if (!layer.digest_value.is_empty() || exclusive) && algorithm == unset {
        v.field("digest_algorithm");
    }
    if (algorithm != unset || exclusive) && layer.digest_value.is_empty() {
        v.field("digest_value");
    }
    if !layer.digest_value.is_empty()
        && algorithm != DigestAlgorithm::Sha256 as i32
        && algorithm != DigestAlgorithm::Sha512 as i32
    {
        v.field("digest_algorithm");
    }
}

/// An egress rule's own errors, as LRP validation reports them (tasks only report that there
/// are some).
pub fn security_group_rule_errors(rule: &m::SecurityGroupRule) -> Vec<String> {
    let mut v = Violations::default();
    let has_ports = !rule.ports.is_empty();
    let has_range = rule.port_range.is_some();
    let has_icmp = rule.icmp_info.is_some();
    match rule.protocol.as_str() {
        "tcp" | "udp" => {
            if !has_ports && !has_range {
                v.plain("Missing required field: ports or port_range");
            } else if has_ports && has_range {
                v.plain("Invalid: ports and port_range provided");
            } else {
                if let Some(range) = &rule.port_range {
                    if range.start < 1 {
                        v.field("port_range");
                    }
                    if range.end < 1 {
                        v.field("port_range");
                    }
                    if range.start > range.end {
                        v.field("port_range");
                    }
                }
                for port in &rule.ports {
                    if *port < 1 {
                        v.field("ports");
                    }
                }
            }
            if has_icmp {
                v.field("icmp_info");
            }
        }
        "icmp" | "icmpv6" => {
            if has_range {
                v.field("port_range");
            }
            if has_ports {
                v.field("ports");
            }
            if !has_icmp {
                v.field(if rule.protocol == "icmp" {
                    "icmp_info"
                } else {
                    "icmpv6_info"
                });
            }
        }
        "all" => {
            if has_range {
                v.field("port_range");
            }
            if has_ports {
                v.field("ports");
            }
            if has_icmp {
                v.field("icmp_info");
            }
        }
        _ => v.field("protocol"),
    }
    let destination_errors: Vec<String> = if rule.destinations.is_empty() {
        vec!["Must have at least 1 destination".into()]
    } else {
        rule.destinations
            .iter()
            .flat_map(|d| d.split(','))
            .flat_map(destination_errors)
            .collect()
    };
    if !destination_errors.is_empty() {
        v.field(&format!(
            "destinations [ {} ]",
            destination_errors.join(", ")
        ));
    }
    v.0
}

/// Upstream's destination check: an IP, a CIDR, or an `ip-ip` range. A reversed range
/// reports "Invalid IP" once per byte where the start is above the end, until one is below.
fn destination_errors(destination: &str) -> Vec<String> {
    let invalid = || vec!["Invalid IP".to_owned()];
    match destination.find(['-', '/']) {
        None => {
            if destination.parse::<IpAddr>().is_ok() {
                vec![]
            } else {
                invalid()
            }
        }
        Some(i) if destination.as_bytes()[i] == b'/' => {
            let (ip, bits) = (&destination[..i], &destination[i + 1..]);
            let ok = match (ip.parse::<IpAddr>(), bits.parse::<u8>()) {
                (Ok(IpAddr::V4(_)), Ok(bits)) => {
                    bits <= 32 && !bits_has_sign(bits_str(destination, i))
                }
                (Ok(IpAddr::V6(_)), Ok(bits)) => {
                    bits <= 128 && !bits_has_sign(bits_str(destination, i))
                }
                _ => false,
            };
            if ok {
                vec![]
            } else {
                vec![format!("invalid CIDR address: {destination}")]
            }
        }
        Some(i) => match (
            destination[..i].parse::<IpAddr>(),
            destination[i + 1..].parse::<IpAddr>(),
        ) {
            (Ok(first), Ok(last)) => {
                let (first, last) = (ip_bytes(first), ip_bytes(last));
                let mut errors = Vec::new();
                for (a, b) in first.iter().zip(last.iter()) {
                    if a < b {
                        break;
                    }
                    if a > b {
                        errors.push("Invalid IP".to_owned());
                    }
                }
                errors
            }
            _ => invalid(),
        },
    }
}

fn bits_str(destination: &str, slash: usize) -> &str {
    &destination[slash + 1..]
}

fn bits_has_sign(bits: &str) -> bool {
    bits.starts_with('+')
}

/// Whether an egress rule is valid (tasks report only that it is not).
pub fn security_group_rule_is_valid(rule: &m::SecurityGroupRule) -> bool {
    security_group_rule_errors(rule).is_empty()
}

fn ip_bytes(ip: IpAddr) -> [u8; 16] {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        IpAddr::V6(v6) => v6.octets(),
    }
}

/// StartTask and CompleteTask: a task guid and a cell id.
pub fn task_guid_and_cell(task_guid: &str, cell_id: &str) -> Result<(), BbsError> {
    let mut v = Violations::default();
    if !is_valid_guid(task_guid) {
        v.field("task_guid");
    }
    if cell_id.is_empty() {
        v.field("cell_id");
    }
    v.into_result()
}

/// FailTask and RejectTask: a task guid and a reason, which upstream names `failure_reason`
/// for both.
pub fn task_guid_and_reason(task_guid: &str, reason: &str) -> Result<(), BbsError> {
    let mut v = Violations::default();
    if !is_valid_guid(task_guid) {
        v.field("task_guid");
    }
    if reason.is_empty() {
        v.field("failure_reason");
    }
    v.into_result()
}

/// TaskGuidRequest and TaskByGuidRequest: only non-empty.
pub fn task_guid_present(task_guid: &str) -> Result<(), BbsError> {
    if task_guid.is_empty() {
        Err(BbsError::invalid_fields(["task_guid"]))
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(result: Result<(), BbsError>) -> String {
        match result {
            Err(BbsError::InvalidRequest(m)) => m,
            other => panic!("expected InvalidRequest, got {other:?}"),
        }
    }

    fn run(path: &str, user: &str) -> m::Action {
        m::Action {
            run_action: Some(m::RunAction {
                path: path.into(),
                user: user.into(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn valid_definition() -> m::TaskDefinition {
        m::TaskDefinition {
            root_fs: "docker:///busybox".into(),
            action: Some(run("/bin/true", "root")),
            ..Default::default()
        }
    }

    fn desire(guid: &str, domain: &str, d: Option<m::TaskDefinition>) -> m::DesireTaskRequest {
        m::DesireTaskRequest {
            task_guid: guid.into(),
            domain: domain.into(),
            task_definition: d,
        }
    }

    #[test]
    fn a_valid_task_passes() {
        assert!(desire_task(&desire("task-1_A", "d", Some(valid_definition()))).is_ok());
    }

    #[test]
    fn everything_empty() {
        assert_eq!(
            message(desire_task(&desire("", "", None))),
            "Invalid field: task_guid, Invalid field: domain, Invalid field: task_definition"
        );
    }

    #[test]
    fn nested_errors_are_spliced_after_their_marker() {
        let d = m::TaskDefinition {
            root_fs: "".into(),
            action: Some(run("", "")),
            ..Default::default()
        };
        assert_eq!(
            message(desire_task(&desire("my guid", "d", Some(d)))),
            "Invalid field: task_guid, Invalid field: rootfs, Invalid field: action, \
             Invalid field: path, Invalid field: user"
        );
    }

    #[test]
    fn scalar_limits_in_order() {
        let d = m::TaskDefinition {
            root_fs: "cflinuxfs4".into(),
            action: None,
            memory_mb: -1,
            disk_mb: -5,
            log_rate_limit: Some(m::LogRateLimit {
                bytes_per_second: -2,
            }),
            max_pids: -1,
            annotation: "a".repeat(10241),
            image_password: "x".into(),
            ..Default::default()
        };
        assert_eq!(
            message(desire_task(&desire("g", "d", Some(d)))),
            "Invalid field: rootfs, invalid action type, Invalid field: memory_mb, \
             Invalid field: disk_mb, Invalid field: log_rate_limit, Invalid field: max_pids, \
             Invalid field: annotation, Invalid field: image_username"
        );
    }

    #[test]
    fn the_big_worked_example() {
        let download = m::Action {
            download_action: Some(m::DownloadAction {
                from: "x".into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        let timeout = m::Action {
            timeout_action: Some(Box::new(m::TimeoutAction::default())),
            ..Default::default()
        };
        let serial = m::Action {
            serial_action: Some(m::SerialAction {
                actions: vec![download, timeout],
                log_source: String::new(),
            }),
            ..Default::default()
        };
        let no_ports = m::SecurityGroupRule {
            protocol: "tcp".into(),
            destinations: vec!["1.2.3.4".into()],
            ..Default::default()
        };
        let upper = m::SecurityGroupRule {
            protocol: "TCP".into(),
            destinations: vec!["1.2.3.4".into()],
            ports: vec![80],
            ..Default::default()
        };
        let d = m::TaskDefinition {
            root_fs: "docker:///busybox".into(),
            action: Some(serial),
            egress_rules: vec![no_ports, upper],
            cached_dependencies: vec![m::CachedDependency {
                to: "/t".into(),
                checksum_value: "abc".into(),
                ..Default::default()
            }],
            image_layers: vec![m::ImageLayer {
                url: "u".into(),
                destination_path: "/d".into(),
                layer_type: image_layer::Type::Exclusive as i32,
                media_type: image_layer::MediaType::Tgz as i32,
                ..Default::default()
            }],
            ..Default::default()
        };
        assert_eq!(
            message(desire_task(&desire("g", "d", Some(d)))),
            "Invalid field: action, Invalid field: to, Invalid field: user, \
             Invalid field: action, Invalid field: timeout_ms, Invalid field: egress_rules, \
             Invalid field: egress_rules, Invalid field: cached_dependency, Invalid field: from, \
             Invalid field: checksum algorithm, Invalid field: image_layer, \
             Invalid field: digest_algorithm, Invalid field: digest_value, \
             Invalid field: legacy_download_user"
        );
    }

    #[test]
    fn empty_actions_anywhere_are_inner_action() {
        let d = m::TaskDefinition {
            action: Some(m::Action::default()),
            ..valid_definition()
        };
        assert_eq!(
            message(desire_task(&desire("g", "d", Some(d)))),
            "Invalid field: action, Invalid field: inner-action"
        );
        let nested = m::Action {
            parallel_action: Some(m::ParallelAction {
                actions: vec![m::Action::default()],
                log_source: String::new(),
            }),
            ..Default::default()
        };
        let mut v = Violations::default();
        validate_action(&nested, &mut v);
        assert_eq!(v.0, ["Invalid field: inner-action"]);
    }

    #[test]
    fn upload_checks_to_before_from() {
        let upload = m::Action {
            upload_action: Some(m::UploadAction::default()),
            ..Default::default()
        };
        let mut v = Violations::default();
        validate_action(&upload, &mut v);
        assert_eq!(
            v.0,
            [
                "Invalid field: to",
                "Invalid field: from",
                "Invalid field: user"
            ]
        );
    }

    #[test]
    fn checksums() {
        let mut v = Violations::default();
        checksum("SHA256", "abc", &mut v);
        checksum("crc32", "abc", &mut v);
        checksum("md5", "", &mut v);
        assert_eq!(
            v.0,
            [
                "Invalid field: invalid algorithm",
                "Invalid field: checksum value"
            ]
        );
    }

    #[test]
    fn root_fs_needs_a_scheme() {
        for ok in [
            "docker:///img",
            "preloaded:cflinuxfs4",
            "http://x",
            "a+b.c-d:x",
        ] {
            assert!(has_url_scheme(ok), "{ok}");
        }
        for bad in [
            "",
            "cflinuxfs4",
            "/a/b",
            ":x",
            "1abc:x",
            "docker:///a\u{7f}",
        ] {
            assert!(!has_url_scheme(bad), "{bad}");
        }
    }

    #[test]
    fn egress_rules() {
        let rule =
            |protocol: &str, ports: Vec<u32>, range: Option<(u32, u32)>, icmp: bool, dest: &str| {
                m::SecurityGroupRule {
                    protocol: protocol.into(),
                    destinations: vec![dest.into()],
                    ports,
                    port_range: range.map(|(start, end)| m::PortRange { start, end }),
                    icmp_info: icmp.then(m::IcmpInfo::default),
                    ..Default::default()
                }
            };
        assert!(security_group_rule_is_valid(&rule(
            "tcp",
            vec![80, 443],
            None,
            false,
            "10.0.0.0/8"
        )));
        assert!(security_group_rule_is_valid(&rule(
            "udp",
            vec![],
            Some((1, 65535)),
            false,
            "1.1.1.1-2.2.2.2"
        )));
        assert!(security_group_rule_is_valid(&rule(
            "icmp",
            vec![],
            None,
            true,
            "0.0.0.0/0"
        )));
        assert!(security_group_rule_is_valid(&rule(
            "all",
            vec![],
            None,
            false,
            "1.2.3.4,::1"
        )));
        assert!(!security_group_rule_is_valid(&rule(
            "tcp",
            vec![80],
            Some((1, 2)),
            false,
            "1.2.3.4"
        )));
        assert!(!security_group_rule_is_valid(&rule(
            "tcp",
            vec![0],
            None,
            false,
            "1.2.3.4"
        )));
        assert!(!security_group_rule_is_valid(&rule(
            "udp",
            vec![],
            Some((5, 1)),
            false,
            "1.2.3.4"
        )));
        assert!(!security_group_rule_is_valid(&rule(
            "icmp",
            vec![],
            None,
            false,
            "1.2.3.4"
        )));
        assert!(!security_group_rule_is_valid(&rule(
            "all",
            vec![1],
            None,
            false,
            "1.2.3.4"
        )));
        assert!(!security_group_rule_is_valid(&rule(
            "tcp",
            vec![1],
            None,
            false,
            "2.2.2.2-1.1.1.1"
        )));
        assert!(!security_group_rule_is_valid(&rule(
            "tcp",
            vec![1],
            None,
            false,
            "1.2.3.4, 5.6.7.8"
        )));
        assert!(!security_group_rule_is_valid(&rule(
            "tcp",
            vec![1],
            None,
            false,
            "1.2.3.4/33"
        )));
        assert!(!security_group_rule_is_valid(&rule(
            "tcp",
            vec![1],
            None,
            false,
            "example.com"
        )));
        let mut no_destinations = rule("all", vec![], None, false, "");
        no_destinations.destinations.clear();
        assert!(!security_group_rule_is_valid(&no_destinations));
    }

    #[test]
    fn shared_layer_with_value_and_no_algorithm_reports_it_twice() {
        let mut v = Violations::default();
        image_layer(
            &m::ImageLayer {
                url: "u".into(),
                destination_path: "/d".into(),
                layer_type: image_layer::Type::Shared as i32,
                media_type: image_layer::MediaType::Tgz as i32,
                digest_value: "abc".into(),
                ..Default::default()
            },
            &mut v,
        );
        assert_eq!(
            v.0,
            [
                "Invalid field: digest_algorithm",
                "Invalid field: digest_algorithm"
            ]
        );
    }

    #[test]
    fn simple_requests() {
        assert_eq!(
            message(task_guid_and_cell("", "")),
            "Invalid field: task_guid, Invalid field: cell_id"
        );
        assert_eq!(
            message(task_guid_and_reason("g", "")),
            "Invalid field: failure_reason"
        );
        assert_eq!(message(task_guid_present("")), "Invalid field: task_guid");
        assert!(task_guid_present("a b").is_ok());
    }
}

// ---- LRPs ------------------------------------------------------------------------------

const MAX_ROUTES_BYTES: usize = 128 * 1024;
const MAX_VOLUME_MOUNTED_FILES_BYTES: usize = 1024 * 1024;

fn volume_mounted_files_too_big(files: &[m::File]) -> bool {
    files.iter().map(|f| f.content.len()).sum::<usize>() > MAX_VOLUME_MOUNTED_FILES_BYTES
}

fn routes_too_big(routes: Option<&m::ProtoRoutes>) -> bool {
    routes.is_some_and(|r| r.routes.values().map(Vec::len).sum::<usize>() > MAX_ROUTES_BYTES)
}

/// Per-tag checks: exactly one of static and a known dynamic value.
fn metric_tag_value_errors(
    tags: &std::collections::BTreeMap<String, m::MetricTagValue>,
    v: &mut Violations,
) {
    for value in tags.values() {
        let known_dynamic = matches!(value.dynamic, 1 | 2);
        if (!value.r#static.is_empty() && known_dynamic)
            || (value.r#static.is_empty() && !known_dynamic)
        {
            v.field("static");
            v.field("dynamic");
        }
    }
}

fn action_errors(name: &str, action: Option<&m::Action>, required: bool, v: &mut Violations) {
    match action {
        None if required => v.plain("invalid action type"),
        None => {}
        Some(action) => {
            let mut inner = Violations::default();
            validate_action(action, &mut inner);
            if !inner.is_empty() {
                v.field(name);
                v.0.extend(inner.0);
            }
        }
    }
}

fn check_errors(check: &m::Check, v: &mut Violations) {
    if check.tcp_check.is_some() && check.http_check.is_some() {
        v.field("check");
        return;
    }
    let port = check
        .tcp_check
        .as_ref()
        .map(|c| c.port)
        .or_else(|| check.http_check.as_ref().map(|c| c.port))
        .unwrap_or(0);
    if port == 0 || port > 65535 {
        v.field("port");
    }
}

/// DesireLRPRequest, in upstream's order: the DesiredLRP's own checks, then the same LRP's
/// run-info checks (which repeat some fields, as upstream's messages do).
pub fn desire_lrp(request: &m::DesireLrpRequest) -> Result<(), BbsError> {
    let mut v = Violations::default();
    match &request.desired_lrp {
        None => v.field("desired_lrp"),
        Some(lrp) => desired_lrp(lrp, &mut v),
    }
    v.into_result()
}

#[allow(deprecated)]
pub fn desired_lrp(d: &m::DesiredLrp, v: &mut Violations) {
    if volume_mounted_files_too_big(&d.volume_mounted_files) {
        v.field("volumeMountedFiles");
    }
    if d.domain.is_empty() {
        v.field("domain");
    }
    if d.root_fs.is_empty() {
        v.field("rootfs");
    }
    if !has_url_scheme(&d.root_fs) {
        v.field("rootfs");
    }
    if d.instances < 0 {
        v.field("instances");
    }
    if d.memory_mb < 0 {
        v.field("memory_mb");
    }
    if d.disk_mb < 0 {
        v.field("disk_mb");
    }
    if d.log_rate_limit
        .as_ref()
        .is_some_and(|l| l.bytes_per_second < -1)
    {
        v.field("log_rate_limit_bytes_per_second");
    }
    if d.annotation.len() > MAX_ANNOTATION_BYTES {
        v.field("annotation");
    }
    if d.max_pids < 0 {
        v.field("max_pids");
    }
    if routes_too_big(d.routes.as_ref()) {
        v.field("routes");
    }
    if d.metric_tags.is_empty() {
        v.field("metric_tags");
    } else {
        let mut tags = Violations::default();
        metric_tag_value_errors(&d.metric_tags, &mut tags);
        let source_matches = d
            .metric_tags
            .get("source_id")
            .is_some_and(|s| s.r#static == d.metrics_guid);
        if !d.metrics_guid.is_empty() && !source_matches {
            tags.field("source_id should match metrics_guid");
        }
        if !tags.is_empty() {
            v.field("metric_tags");
            v.0.extend(tags.0);
        }
    }
    // The run-info part.
    if d.domain.is_empty() {
        v.field("domain");
    }
    if !is_valid_guid(&d.process_guid) {
        v.field("process_guid");
    }
    if volume_mounted_files_too_big(&d.volume_mounted_files) {
        v.field("volumeMountedFiles");
    }
    action_errors("setup", d.setup.as_ref(), false, v);
    action_errors("action", d.action.as_ref(), true, v);
    action_errors("monitor", d.monitor.as_ref(), false, v);
    for env in &d.environment_variables {
        if env.name.is_empty() {
            v.plain("invalid field: name cannot be blank");
        }
    }
    for rule in &d.egress_rules {
        let errors = security_group_rule_errors(rule);
        if !errors.is_empty() {
            v.field("egress_rules");
            v.0.extend(errors);
        }
    }
    for dependency in &d.cached_dependencies {
        let mut inner = Violations::default();
        cached_dependency(dependency, &mut inner);
        if !inner.is_empty() {
            v.field("cached_dependency");
            v.0.extend(inner.0);
        }
    }
    image_layers(&d.image_layers, &d.legacy_download_user, v);
    let mut sidecars = Violations::default();
    for sidecar in &d.sidecars {
        action_errors("action", sidecar.action.as_ref(), true, &mut sidecars);
        if sidecar.memory_mb < 0 {
            sidecars.field("memory_mb");
        }
        if sidecar.disk_mb < 0 {
            sidecars.field("disk_mb");
        }
    }
    if !sidecars.is_empty() {
        v.field("sidecars");
        v.0.extend(sidecars.0);
    }
    for mount in &d.volume_mounts {
        if mount.driver.is_empty() {
            v.plain("invalid volume_mount driver");
        }
        if mount.mode != "r" && mount.mode != "rw" {
            v.plain("invalid volume_mount mode");
        }
        if mount
            .shared
            .as_ref()
            .is_some_and(|s| s.volume_id.is_empty())
        {
            v.plain("invalid volume_mount volume id");
        }
        if mount
            .dedicated
            .as_ref()
            .is_some_and(|d| d.mounter_id.is_empty())
        {
            v.plain("invalid volume_mount mounter id");
        }
    }
    if d.image_username.is_empty() && !d.image_password.is_empty() {
        v.field("image_username");
    }
    if !d.image_username.is_empty() && d.image_password.is_empty() {
        v.field("image_password");
    }
    if let Some(definition) = &d.check_definition {
        let mut checks = Violations::default();
        for check in definition
            .checks
            .iter()
            .chain(definition.readiness_checks.iter())
        {
            check_errors(check, &mut checks);
        }
        if !checks.is_empty() {
            v.field("check_definition");
            v.0.extend(checks.0);
        }
    }
    if d.log_rate_limit
        .as_ref()
        .is_some_and(|l| l.bytes_per_second < -1)
    {
        v.field("log_rate_limit");
    }
}

pub fn update_desired_lrp(request: &m::UpdateDesiredLrpRequest) -> Result<(), BbsError> {
    use m::desired_lrp_update::{OptionalImagePassword, OptionalImageUsername, OptionalInstances};
    let mut v = Violations::default();
    if request.process_guid.is_empty() {
        v.field("process_guid");
    }
    match &request.update {
        // Upstream's handler crashes here; we answer instead.
        None => v.field("update"),
        Some(update) => {
            if matches!(update.optional_instances, Some(OptionalInstances::Instances(n)) if n < 0) {
                v.field("instances");
            }
            let annotation_len = match &update.optional_annotation {
                Some(m::desired_lrp_update::OptionalAnnotation::Annotation(a)) => a.len(),
                None => 0,
            };
            if annotation_len > MAX_ANNOTATION_BYTES {
                v.field("annotation");
            }
            if routes_too_big(update.routes.as_ref()) {
                v.field("routes");
            }
            let mut tags = Violations::default();
            metric_tag_value_errors(&update.metric_tags, &mut tags);
            if !tags.is_empty() {
                v.field("metric_tags");
                v.0.extend(tags.0);
            }
            let username = matches!(
                update.optional_image_username,
                Some(OptionalImageUsername::ImageUsername(_))
            );
            let password = matches!(
                update.optional_image_password,
                Some(OptionalImagePassword::ImagePassword(_))
            );
            if username && !password {
                v.field("image_password");
            }
            if password && !username {
                v.field("image_username");
            }
        }
    }
    v.into_result()
}

pub fn process_guid_present(process_guid: &str) -> Result<(), BbsError> {
    if process_guid.is_empty() {
        Err(BbsError::invalid_fields(["process_guid"]))
    } else {
        Ok(())
    }
}

/// ActualLRPKey: process_guid, index, domain (or the key itself when absent).
pub fn actual_key(key: Option<&m::ActualLrpKey>, v: &mut Violations) {
    match key {
        None => v.field("actual_lrp_key"),
        Some(key) => {
            if key.process_guid.is_empty() {
                v.field("process_guid");
            }
            if key.index < 0 {
                v.field("index");
            }
            if key.domain.is_empty() {
                v.field("domain");
            }
        }
    }
}

/// ActualLRPInstanceKey: cell_id before instance_guid, as upstream checks them.
pub fn instance_key(key: Option<&m::ActualLrpInstanceKey>, v: &mut Violations) {
    match key {
        None => v.field("actual_lrp_instance_key"),
        Some(key) => {
            if key.cell_id.is_empty() {
                v.field("cell_id");
            }
            if key.instance_guid.is_empty() {
                v.field("instance_guid");
            }
        }
    }
}

pub fn claim_actual_lrp(r: &m::ClaimActualLrpRequest) -> Result<(), BbsError> {
    let mut v = Violations::default();
    if r.process_guid.is_empty() {
        v.field("process_guid");
    }
    instance_key(r.actual_lrp_instance_key.as_ref(), &mut v);
    v.into_result()
}

pub fn start_actual_lrp(r: &m::StartActualLrpRequest) -> Result<(), BbsError> {
    let mut v = Violations::default();
    actual_key(r.actual_lrp_key.as_ref(), &mut v);
    instance_key(r.actual_lrp_instance_key.as_ref(), &mut v);
    match &r.actual_lrp_net_info {
        None => v.field("actual_lrp_net_info"),
        Some(net) if net.address.is_empty() => v.field("address"),
        Some(_) => {}
    }
    v.into_result()
}

pub fn crash_actual_lrp(r: &m::CrashActualLrpRequest) -> Result<(), BbsError> {
    let mut v = Violations::default();
    actual_key(r.actual_lrp_key.as_ref(), &mut v);
    instance_key(r.actual_lrp_instance_key.as_ref(), &mut v);
    v.into_result()
}

pub fn fail_actual_lrp(r: &m::FailActualLrpRequest) -> Result<(), BbsError> {
    let mut v = Violations::default();
    actual_key(r.actual_lrp_key.as_ref(), &mut v);
    if r.error_message.is_empty() {
        v.field("error_message");
    }
    v.into_result()
}

pub fn retire_actual_lrp(r: &m::RetireActualLrpRequest) -> Result<(), BbsError> {
    let mut v = Violations::default();
    actual_key(r.actual_lrp_key.as_ref(), &mut v);
    v.into_result()
}

pub fn guid_and_index(process_guid: &str, index: i32) -> Result<(), BbsError> {
    let mut v = Violations::default();
    if process_guid.is_empty() {
        v.field("process_guid");
    }
    if index < 0 {
        v.field("index");
    }
    v.into_result()
}

pub fn actual_lrps_by_process_guids(
    r: &m::ActualLrpsByProcessGuidsRequest,
) -> Result<(), BbsError> {
    if r.process_guids.is_empty() {
        Err(BbsError::InvalidRequest(
            "process_guids must not be empty".into(),
        ))
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod lrp_tests {
    use super::*;

    fn message(result: Result<(), BbsError>) -> String {
        match result {
            Err(BbsError::InvalidRequest(m)) => m,
            other => panic!("expected InvalidRequest, got {other:?}"),
        }
    }

    #[test]
    fn empty_desired_lrp_repeats_fields_as_upstream_does() {
        assert_eq!(
            message(desire_lrp(&m::DesireLrpRequest::default())),
            "Invalid field: desired_lrp"
        );
        let request = m::DesireLrpRequest {
            desired_lrp: Some(m::DesiredLrp::default()),
        };
        assert_eq!(
            message(desire_lrp(&request)),
            "Invalid field: domain, Invalid field: rootfs, Invalid field: rootfs, \
             Invalid field: metric_tags, Invalid field: domain, Invalid field: process_guid, \
             invalid action type"
        );
    }

    #[test]
    fn egress_rule_details_are_kept_for_lrps() {
        let rule = m::SecurityGroupRule {
            protocol: "udp".into(),
            ports: vec![0],
            destinations: vec!["10.0.0.5-9.0.0.1".into()],
            ..Default::default()
        };
        assert_eq!(
            security_group_rule_errors(&rule),
            [
                "Invalid field: ports",
                "Invalid field: destinations [ Invalid IP, Invalid IP ]"
            ]
        );
        let ok_range = m::SecurityGroupRule {
            protocol: "all".into(),
            destinations: vec!["10.0.0.5-11.0.0.1".into()],
            ..Default::default()
        };
        assert!(security_group_rule_errors(&ok_range).is_empty());
    }

    #[test]
    fn actual_lrp_requests() {
        assert_eq!(
            message(claim_actual_lrp(&m::ClaimActualLrpRequest::default())),
            "Invalid field: process_guid, Invalid field: actual_lrp_instance_key"
        );
        let claim = m::ClaimActualLrpRequest {
            process_guid: "p".into(),
            index: 0,
            actual_lrp_instance_key: Some(Default::default()),
        };
        assert_eq!(
            message(claim_actual_lrp(&claim)),
            "Invalid field: cell_id, Invalid field: instance_guid"
        );
        assert_eq!(
            message(start_actual_lrp(&m::StartActualLrpRequest::default())),
            "Invalid field: actual_lrp_key, Invalid field: actual_lrp_instance_key, Invalid field: actual_lrp_net_info"
        );
        let start = m::StartActualLrpRequest {
            actual_lrp_key: Some(m::ActualLrpKey {
                index: -1,
                ..Default::default()
            }),
            actual_lrp_instance_key: Some(m::ActualLrpInstanceKey {
                instance_guid: "i".into(),
                cell_id: String::new(),
            }),
            actual_lrp_net_info: Some(Default::default()),
            ..Default::default()
        };
        assert_eq!(
            message(start_actual_lrp(&start)),
            "Invalid field: process_guid, Invalid field: index, Invalid field: domain, \
             Invalid field: cell_id, Invalid field: address"
        );
        assert_eq!(
            message(fail_actual_lrp(&m::FailActualLrpRequest::default())),
            "Invalid field: actual_lrp_key, Invalid field: error_message"
        );
        assert_eq!(
            message(guid_and_index("", -1)),
            "Invalid field: process_guid, Invalid field: index"
        );
        assert_eq!(
            message(actual_lrps_by_process_guids(&Default::default())),
            "process_guids must not be empty"
        );
    }

    #[test]
    fn update_rules() {
        use m::desired_lrp_update::*;
        assert_eq!(
            message(update_desired_lrp(&m::UpdateDesiredLrpRequest::default())),
            "Invalid field: process_guid, Invalid field: update"
        );
        let mut tags = std::collections::BTreeMap::new();
        tags.insert(
            "x".to_owned(),
            m::MetricTagValue {
                r#static: "s".into(),
                dynamic: 1,
            },
        );
        let request = m::UpdateDesiredLrpRequest {
            process_guid: "p".into(),
            update: Some(m::DesiredLrpUpdate {
                optional_instances: Some(OptionalInstances::Instances(-1)),
                optional_annotation: Some(OptionalAnnotation::Annotation("a".repeat(10241))),
                metric_tags: tags,
                optional_image_password: Some(OptionalImagePassword::ImagePassword("p".into())),
                ..Default::default()
            }),
        };
        assert_eq!(
            message(update_desired_lrp(&request)),
            "Invalid field: instances, Invalid field: annotation, Invalid field: metric_tags, \
             Invalid field: static, Invalid field: dynamic, Invalid field: image_username"
        );
    }
}
