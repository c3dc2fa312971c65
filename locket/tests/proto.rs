//! Our copy of locket's proto against upstream's (cloudfoundry/locket models/locket.proto),
//! field by field: package, service methods, enums, messages, names, numbers, types and
//! labels. The expected table is upstream's file transcribed; a difference here is a wire
//! incompatibility with Diego's reps and the Go BBS.

use prost_types::field_descriptor_proto::{Label, Type};

/// (message, field, number, type, label, type name for messages and enums)
const UPSTREAM_FIELDS: &[(&str, &str, i32, Type, Label, &str)] = &[
    ("Resource", "key", 1, Type::String, Label::Optional, ""),
    ("Resource", "owner", 2, Type::String, Label::Optional, ""),
    ("Resource", "value", 3, Type::String, Label::Optional, ""),
    ("Resource", "type", 4, Type::String, Label::Optional, ""),
    (
        "Resource",
        "type_code",
        5,
        Type::Enum,
        Label::Optional,
        ".models.TypeCode",
    ),
    (
        "LockRequest",
        "resource",
        1,
        Type::Message,
        Label::Optional,
        ".models.Resource",
    ),
    (
        "LockRequest",
        "ttl_in_seconds",
        2,
        Type::Int64,
        Label::Optional,
        "",
    ),
    (
        "ReleaseRequest",
        "resource",
        1,
        Type::Message,
        Label::Optional,
        ".models.Resource",
    ),
    ("FetchRequest", "key", 1, Type::String, Label::Optional, ""),
    (
        "FetchResponse",
        "resource",
        1,
        Type::Message,
        Label::Optional,
        ".models.Resource",
    ),
    (
        "FetchAllRequest",
        "type",
        1,
        Type::String,
        Label::Optional,
        "",
    ),
    (
        "FetchAllRequest",
        "type_code",
        2,
        Type::Enum,
        Label::Optional,
        ".models.TypeCode",
    ),
    (
        "FetchAllResponse",
        "resources",
        1,
        Type::Message,
        Label::Repeated,
        ".models.Resource",
    ),
];

/// Messages with no fields upstream.
const UPSTREAM_EMPTY: &[&str] = &["LockResponse", "ReleaseResponse"];

/// (method, input, output)
const UPSTREAM_METHODS: &[(&str, &str, &str)] = &[
    ("Lock", ".models.LockRequest", ".models.LockResponse"),
    ("Fetch", ".models.FetchRequest", ".models.FetchResponse"),
    (
        "Release",
        ".models.ReleaseRequest",
        ".models.ReleaseResponse",
    ),
    (
        "FetchAll",
        ".models.FetchAllRequest",
        ".models.FetchAllResponse",
    ),
];

#[test]
fn our_locket_proto_is_upstreams_field_by_field() {
    let proto_dir = concat!(env!("CARGO_MANIFEST_DIR"), "/proto");
    let set = protox::compile(["locket.proto"], [proto_dir]).expect("our locket.proto compiles");
    let file = set
        .file
        .iter()
        .find(|f| f.name() == "locket.proto")
        .expect("the file");
    assert_eq!(file.package(), "models");
    assert_eq!(file.syntax(), "proto3");

    let mut fields = Vec::new();
    let mut empty = Vec::new();
    for message in &file.message_type {
        if message.field.is_empty() {
            empty.push(message.name().to_owned());
        }
        for field in &message.field {
            fields.push((
                message.name().to_owned(),
                field.name().to_owned(),
                field.number(),
                field.r#type(),
                field.label(),
                field.type_name().to_owned(),
            ));
        }
    }
    let expected: Vec<_> = UPSTREAM_FIELDS
        .iter()
        .map(|(m, f, n, t, l, tn)| (m.to_string(), f.to_string(), *n, *t, *l, tn.to_string()))
        .collect();
    assert_eq!(fields, expected);
    assert_eq!(empty, UPSTREAM_EMPTY);

    let service = &file.service[0];
    assert_eq!((file.service.len(), service.name()), (1, "Locket"));
    let methods: Vec<_> = service
        .method
        .iter()
        .map(|m| (m.name(), m.input_type(), m.output_type()))
        .collect();
    assert_eq!(methods, UPSTREAM_METHODS);

    let type_code = &file.enum_type[0];
    assert_eq!(type_code.name(), "TypeCode");
    let values: Vec<_> = type_code
        .value
        .iter()
        .map(|v| (v.name(), v.number()))
        .collect();
    assert_eq!(values, [("UNKNOWN", 0), ("LOCK", 1), ("PRESENCE", 2)]);
    // The deprecated markers are upstream's too.
    let deprecated: Vec<_> = file
        .message_type
        .iter()
        .flat_map(|m| m.field.iter().map(move |f| (m.name(), f)))
        .filter(|(_, f)| f.options.as_ref().is_some_and(|o| o.deprecated()))
        .map(|(m, f)| (m, f.name()))
        .collect();
    assert_eq!(
        deprecated,
        [("Resource", "type"), ("FetchAllRequest", "type")]
    );
}
