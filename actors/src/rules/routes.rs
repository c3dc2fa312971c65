//! A desired LRP's routes as upstream keeps them. The Go BBS stores `routes` with
//! `json.Marshal` of a `map[string]*json.RawMessage`, which rewrites each router's value
//! compacted (no whitespace outside strings) with `<`, `>`, `&`, U+2028 and U+2029 escaped,
//! keys in their order; every read then serves those bytes. Holding the same bytes in memory
//! means a client sees the same routes before and after a restart, and the same as from the
//! Go BBS.

use bbs_models as m;

/// Every router's value as upstream's store rewrites it; a value that is not JSON is kept as
/// sent, for the store step to refuse (upstream's ErrBadRequest).
pub fn as_stored(routes: &m::ProtoRoutes) -> m::ProtoRoutes {
    m::ProtoRoutes {
        routes: routes
            .routes
            .iter()
            .map(|(router, raw)| {
                let value = marshal_raw(raw).unwrap_or_else(|| raw.clone());
                (router.clone(), value)
            })
            .collect(),
    }
}

/// Go's `json.Marshal` of a `json.RawMessage`; `None` when the bytes are not JSON.
pub fn marshal_raw(raw: &[u8]) -> Option<Vec<u8>> {
    serde_json::from_slice::<serde::de::IgnoredAny>(raw).ok()?;
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = Vec::with_capacity(raw.len());
    let (mut in_string, mut escaped) = (false, false);
    let mut i = 0;
    while i < raw.len() {
        let c = raw[i];
        i += 1;
        match c {
            b'<' | b'>' | b'&' => {
                out.extend_from_slice(b"\\u00");
                out.extend_from_slice(&[HEX[usize::from(c >> 4)], HEX[usize::from(c & 0xf)]]);
                escaped = false;
                continue;
            }
            // U+2028 and U+2029 (E2 80 A8 / E2 80 A9), which JavaScript reads as line breaks.
            0xe2 if raw.get(i) == Some(&0x80) && raw.get(i + 1).is_some_and(|b| b & !1 == 0xa8) => {
                out.extend_from_slice(b"\\u202");
                out.push(HEX[usize::from(raw[i + 1] & 0xf)]);
                i += 2;
                escaped = false;
                continue;
            }
            _ => {}
        }
        if in_string {
            if escaped {
                escaped = false;
            } else if c == b'\\' {
                escaped = true;
            } else if c == b'"' {
                in_string = false;
            }
        } else if matches!(c, b' ' | b'\t' | b'\n' | b'\r') {
            continue;
        } else if c == b'"' {
            in_string = true;
        }
        out.push(c);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_rewritten_as_gos_json_marshal_rewrites_a_raw_message() {
        let table: &[(&str, &str)] = &[
            (
                "[ {\"hostnames\" : [\"a.example.com\"], \"port\": 8080} ]",
                "[{\"hostnames\":[\"a.example.com\"],\"port\":8080}]",
            ),
            // Keys keep their order.
            ("{\"z\":1,\n\t\"a\":2}", "{\"z\":1,\"a\":2}"),
            // Whitespace inside strings stays; HTML characters are escaped.
            (
                "{\"a b\": \"<x & y>\"}",
                "{\"a b\":\"\\u003cx \\u0026 y\\u003e\"}",
            ),
            // Escapes are left alone, an escaped quote does not end the string.
            ("[\"q\\\" <\", 1]", "[\"q\\\" \\u003c\",1]"),
            ("\"\u{2028}\u{2029}\"", "\"\\u2028\\u2029\""),
            ("null", "null"),
        ];
        for (raw, stored) in table {
            assert_eq!(
                marshal_raw(raw.as_bytes()).map(String::from_utf8),
                Some(Ok((*stored).to_owned())),
                "{raw}"
            );
        }
    }

    #[test]
    fn what_is_not_json_is_refused() {
        for raw in ["", "{", "[1,]", "{\"a\":1} x", "<x>"] {
            assert_eq!(marshal_raw(raw.as_bytes()), None, "{raw}");
        }
    }

    #[test]
    fn a_value_that_is_not_json_is_kept_for_the_store_to_refuse() {
        let routes = m::ProtoRoutes {
            routes: [
                ("cf-router".to_owned(), b"[ 1 ]".to_vec()),
                ("broken".to_owned(), b"[".to_vec()),
            ]
            .into(),
        };
        let stored = as_stored(&routes);
        assert_eq!(stored.routes["cf-router"], b"[1]");
        assert_eq!(stored.routes["broken"], b"[");
    }
}
