//! Locket's semantics as pure functions over a stored row (upstream: locket db/lock_db.go and
//! handlers/handler.go). The table applies them inside one store transaction, so two callers
//! racing for a lock see each other's writes.

use bbs_store::LockRecord;

use crate::error::{LocketError, LocketResult};
use crate::models::{Resource, TypeCode};
use crate::{LOCK_TYPE, PRESENCE_TYPE};

/// The type code a stored type string stands for.
pub fn type_code_of(lock_type: &str) -> TypeCode {
    match lock_type {
        LOCK_TYPE => TypeCode::Lock,
        PRESENCE_TYPE => TypeCode::Presence,
        _ => TypeCode::Unknown,
    }
}

/// The type string stored for a type code; an unknown code keeps the deprecated string.
pub fn type_string(type_code: i32, deprecated_type: &str) -> String {
    match TypeCode::try_from(type_code) {
        Ok(TypeCode::Lock) => LOCK_TYPE.into(),
        Ok(TypeCode::Presence) => PRESENCE_TYPE.into(),
        _ => deprecated_type.into(),
    }
}

/// Lock and FetchAll need a known, non-UNKNOWN type code; the deprecated string alone does not
/// do (upstream's `validate`).
pub fn validate_type_code(type_code: i32) -> LocketResult<TypeCode> {
    match TypeCode::try_from(type_code) {
        Ok(TypeCode::Unknown) | Err(_) => Err(LocketError::InvalidType),
        Ok(code) => Ok(code),
    }
}

/// Checks a lock request in upstream's order: type, then TTL, then owner. An empty key is
/// accepted, as upstream's locket accepts it.
pub fn validate_lock(resource: Option<&Resource>, ttl_seconds: i64) -> LocketResult<&Resource> {
    let resource = resource.ok_or(LocketError::InvalidType)?;
    validate_type_code(resource.type_code)?;
    if ttl_seconds <= 0 {
        return Err(LocketError::InvalidTtl);
    }
    if resource.owner.is_empty() {
        return Err(LocketError::InvalidOwner);
    }
    Ok(resource)
}

/// The resource a row shows to Fetch and FetchAll.
pub fn resource_of(row: &LockRecord) -> Resource {
    #[allow(deprecated)]
    Resource {
        key: row.key.clone(),
        owner: row.owner.clone(),
        value: row.value.clone(),
        r#type: row.lock_type.clone(),
        type_code: type_code_of(&row.lock_type) as i32,
    }
}

/// Takes or refreshes a lock. Anyone may take a missing row or one with an empty owner; only
/// the owner may refresh a held one. Each success bumps the modified index; the modified id is
/// made once, when the row gets its first, and kept while it is refreshed.
pub fn lock(
    current: Option<&LockRecord>,
    resource: &Resource,
    ttl_seconds: i64,
    new_id: impl FnOnce() -> String,
) -> LocketResult<LockRecord> {
    if let Some(row) = current {
        if !row.owner.is_empty() && row.owner != resource.owner {
            return Err(LocketError::LockCollision);
        }
    }
    let (index, id) = match current {
        Some(row) => (row.modified_index, row.modified_id.clone()),
        None => (0, String::new()),
    };
    #[allow(deprecated)]
    let lock_type = type_string(resource.type_code, &resource.r#type);
    Ok(LockRecord {
        key: resource.key.clone(),
        owner: resource.owner.clone(),
        value: resource.value.clone(),
        lock_type,
        modified_index: index + 1,
        modified_id: if id.is_empty() { new_id() } else { id },
        ttl: ttl_seconds,
    })
}

/// Releases a lock: a missing row is already released; only its owner may release a row.
pub fn release(current: Option<&LockRecord>, owner: &str) -> LocketResult<()> {
    match current {
        Some(row) if row.owner != owner => Err(LocketError::LockCollision),
        _ => Ok(()),
    }
}

/// What expiring a row that was seen at some version does.
#[derive(Debug, PartialEq, Eq)]
pub enum Expiry {
    /// Unchanged since it was seen: released.
    Released,
    /// Already gone.
    Gone,
    /// Refreshed or re-taken since: kept.
    Refreshed,
}

/// Expires `seen` if the row is still exactly as it was seen (owner, id and index), the
/// compare-and-release that makes expiry safe against a refresh racing it.
pub fn expire(current: Option<&LockRecord>, seen: &LockRecord) -> Expiry {
    match current {
        None => Expiry::Gone,
        Some(row)
            if row.owner == seen.owner
                && row.modified_id == seen.modified_id
                && row.modified_index == seen.modified_index =>
        {
            Expiry::Released
        }
        Some(_) => Expiry::Refreshed,
    }
}

/// Fetch shows a row only while someone owns it.
pub fn fetched(row: Option<&LockRecord>) -> LocketResult<Resource> {
    match row {
        Some(row) if !row.owner.is_empty() => Ok(resource_of(row)),
        _ => Err(LocketError::ResourceNotFound),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[allow(deprecated)]
    fn resource(key: &str, owner: &str, type_code: TypeCode) -> Resource {
        Resource {
            key: key.into(),
            owner: owner.into(),
            value: "v".into(),
            r#type: String::new(),
            type_code: type_code as i32,
        }
    }

    fn row(owner: &str, index: i64, id: &str) -> LockRecord {
        LockRecord {
            key: "bbs".into(),
            owner: owner.into(),
            value: "v".into(),
            lock_type: LOCK_TYPE.into(),
            modified_index: index,
            modified_id: id.into(),
            ttl: 15,
        }
    }

    #[test]
    fn lock_requests_are_checked_in_upstreams_order() {
        let ok = resource("bbs", "me", TypeCode::Lock);
        let cases: Vec<(Option<Resource>, i64, Result<(), LocketError>)> = vec![
            (Some(ok.clone()), 15, Ok(())),
            (None, 15, Err(LocketError::InvalidType)),
            (
                Some(resource("bbs", "me", TypeCode::Unknown)),
                15,
                Err(LocketError::InvalidType),
            ),
            (
                Some(Resource {
                    type_code: 7,
                    ..ok.clone()
                }),
                15,
                Err(LocketError::InvalidType),
            ),
            (Some(ok.clone()), 0, Err(LocketError::InvalidTtl)),
            (Some(ok.clone()), -1, Err(LocketError::InvalidTtl)),
            (
                Some(resource("bbs", "", TypeCode::Lock)),
                15,
                Err(LocketError::InvalidOwner),
            ),
            (
                Some(resource("", "", TypeCode::Lock)),
                0,
                Err(LocketError::InvalidTtl),
            ),
            (Some(resource("", "me", TypeCode::Presence)), 15, Ok(())),
        ];
        for (request, ttl, expected) in cases {
            let got = validate_lock(request.as_ref(), ttl).map(|_| ());
            assert_eq!(got, expected, "{request:?} ttl {ttl}");
        }
    }

    #[test]
    fn lock_takes_refreshes_or_collides() {
        let me = resource("bbs", "me", TypeCode::Lock);
        let fresh = lock(None, &me, 15, || "id-1".into()).unwrap();
        assert_eq!(fresh, row("me", 1, "id-1"));
        let refreshed = lock(Some(&fresh), &me, 15, || unreachable!()).unwrap();
        assert_eq!(refreshed, row("me", 2, "id-1"));
        let other = resource("bbs", "other", TypeCode::Lock);
        assert_eq!(
            lock(Some(&refreshed), &other, 15, || "x".into()),
            Err(LocketError::LockCollision)
        );
        // A row whose owner is empty (written by hand or by an old locket) is free.
        let unowned = row("", 9, "");
        assert_eq!(
            lock(Some(&unowned), &other, 20, || "id-2".into()).unwrap(),
            LockRecord {
                owner: "other".into(),
                modified_index: 10,
                modified_id: "id-2".into(),
                ttl: 20,
                ..row("", 0, "")
            }
        );
    }

    #[test]
    fn the_stored_type_follows_the_type_code() {
        let presence = resource("cell-1", "rep", TypeCode::Presence);
        assert_eq!(
            lock(None, &presence, 15, || "i".into()).unwrap().lock_type,
            "presence"
        );
        assert_eq!(type_code_of("presence"), TypeCode::Presence);
        assert_eq!(type_code_of("lock"), TypeCode::Lock);
        assert_eq!(type_code_of("other"), TypeCode::Unknown);
        assert_eq!(type_string(0, "legacy"), "legacy");
    }

    #[test]
    fn only_the_owner_releases() {
        let held = row("me", 3, "id");
        assert_eq!(release(Some(&held), "me"), Ok(()));
        assert_eq!(
            release(Some(&held), "other"),
            Err(LocketError::LockCollision)
        );
        assert_eq!(release(None, "anyone"), Ok(()));
    }

    #[test]
    fn expiry_releases_only_the_version_seen() {
        let seen = row("me", 3, "id");
        assert_eq!(expire(Some(&seen), &seen), Expiry::Released);
        assert_eq!(expire(None, &seen), Expiry::Gone);
        assert_eq!(expire(Some(&row("me", 4, "id")), &seen), Expiry::Refreshed);
        assert_eq!(
            expire(Some(&row("me", 3, "id-2")), &seen),
            Expiry::Refreshed
        );
        assert_eq!(expire(Some(&row("you", 3, "id")), &seen), Expiry::Refreshed);
    }

    #[test]
    fn fetch_hides_unowned_rows() {
        assert_eq!(fetched(None), Err(LocketError::ResourceNotFound));
        assert_eq!(
            fetched(Some(&row("", 1, "i"))),
            Err(LocketError::ResourceNotFound)
        );
        let shown = fetched(Some(&row("me", 1, "i"))).unwrap();
        assert_eq!(
            (shown.owner.as_str(), shown.type_code),
            ("me", TypeCode::Lock as i32)
        );
    }
}
