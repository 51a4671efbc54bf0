//! Checking the bodies of the permission endpoints: permission names, a
//! custom set's fields, and include cycles.

use std::collections::{BTreeMap, BTreeSet};

use shared::{
    db::permissions as db,
    domain::{PermissionSetId, TenantId},
    permissions::BUILT_IN,
};

use super::SetBody;
use crate::{AppState, error::ApiError, services::permissions::parse_permissions};

/// Most sets a set includes.
pub const MAX_INCLUDES: usize = 16;

/// The checked body of a custom set, with its includes resolved to ids.
pub async fn set_fields<'a>(
    state: &AppState,
    tenant: TenantId,
    own_id: Option<PermissionSetId>,
    b: &'a SetBody,
) -> Result<db::SetFields<'a>, ApiError> {
    check_key(&b.key)?;
    let name = check_name(&b.name)?;
    check_description(b.description.as_deref())?;
    let permissions = parse_permissions("permissions", &b.permissions)?;
    if b.includes.len() > MAX_INCLUDES {
        return Err(ApiError::invalid(
            "includes",
            format!("at most {MAX_INCLUDES} sets"),
        ));
    }
    let visible = db::list_sets(&state.pool, tenant, None, 10_000).await?;
    let includes = resolve_includes(&visible, &b.includes, own_id)?;
    if let Some(id) = own_id {
        check_acyclic(state, tenant, &visible, id, &includes).await?;
    }
    Ok(db::SetFields {
        key: &b.key,
        name,
        description: b.description.as_deref(),
        permissions: permissions.iter().map(|p| p.as_str().to_owned()).collect(),
        includes,
    })
}

/// A custom set's key: 1 to 64 lower-case letters, digits, '.', '_' or
/// '-', starting with a letter or digit, and not a built-in set's.
fn check_key(key: &str) -> Result<(), ApiError> {
    let key_ok = !key.is_empty()
        && key.len() <= 64
        && key
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-".contains(c))
        && key
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric());
    if !key_ok {
        return Err(ApiError::invalid(
            "key",
            "must be 1 to 64 lower-case letters, digits, '.', '_' or '-', starting with a letter or digit",
        ));
    }
    if BUILT_IN.iter().any(|s| s.key == key) {
        return Err(ApiError::invalid("key", "is the key of a built-in set"));
    }
    Ok(())
}

/// The trimmed name: 1 to 100 characters, none a control character.
fn check_name(raw: &str) -> Result<&str, ApiError> {
    let name = raw.trim();
    if name.is_empty() || name.chars().count() > 100 || name.chars().any(char::is_control) {
        return Err(ApiError::invalid("name", "must be 1 to 100 characters"));
    }
    Ok(name)
}

/// A description: at most 500 characters.
fn check_description(description: Option<&str>) -> Result<(), ApiError> {
    if description.is_some_and(|d| d.chars().count() > 500) {
        return Err(ApiError::invalid(
            "description",
            "must be at most 500 characters",
        ));
    }
    Ok(())
}

/// The ids of the sets `keys` name among `visible`, each once, in order;
/// a set (`own_id`) may not include itself.
fn resolve_includes(
    visible: &[db::PermissionSet],
    keys: &[String],
    own_id: Option<PermissionSetId>,
) -> Result<Vec<PermissionSetId>, ApiError> {
    let mut includes = Vec::new();
    for (i, key) in keys.iter().enumerate() {
        let set = visible.iter().find(|s| &s.key == key).ok_or_else(|| {
            ApiError::invalid(
                format!("includes[{i}]"),
                format!("no permission set with key {key:?}"),
            )
        })?;
        if Some(set.id) == own_id {
            return Err(ApiError::invalid(
                format!("includes[{i}]"),
                "a set cannot include itself",
            ));
        }
        if !includes.contains(&set.id) {
            includes.push(set.id);
        }
    }
    Ok(includes)
}

/// Refuses `includes` for set `id` when, with the organisation's other
/// include edges, they would lead back to it, naming the cycle's keys.
async fn check_acyclic(
    state: &AppState,
    tenant: TenantId,
    visible: &[db::PermissionSet],
    id: PermissionSetId,
    includes: &[PermissionSetId],
) -> Result<(), ApiError> {
    let keys: BTreeMap<PermissionSetId, String> =
        visible.iter().map(|s| (s.id, s.key.clone())).collect();
    let mut edges: BTreeMap<PermissionSetId, Vec<PermissionSetId>> = BTreeMap::new();
    for (from, to, _) in db::include_edges(&state.pool, tenant).await? {
        if from != id {
            edges.entry(from).or_default().push(to);
        }
    }
    edges.insert(id, includes.to_vec());
    if let Some(cycle) = find_cycle(&edges, id) {
        let names: Vec<&str> = cycle
            .iter()
            .map(|s| keys.get(s).map_or("?", String::as_str))
            .collect();
        return Err(ApiError::invalid(
            "includes",
            format!("would form a cycle: {}", names.join(" → ")),
        ));
    }
    Ok(())
}

/// A path from `start` back to itself through `edges`, if there is one
/// (`[start, …, start]`).
pub fn find_cycle(
    edges: &BTreeMap<PermissionSetId, Vec<PermissionSetId>>,
    start: PermissionSetId,
) -> Option<Vec<PermissionSetId>> {
    fn walk(
        edges: &BTreeMap<PermissionSetId, Vec<PermissionSetId>>,
        start: PermissionSetId,
        at: PermissionSetId,
        path: &mut Vec<PermissionSetId>,
        seen: &mut BTreeSet<PermissionSetId>,
    ) -> bool {
        for &next in edges.get(&at).map_or(&[][..], Vec::as_slice) {
            path.push(next);
            if next == start {
                return true;
            }
            if seen.insert(next) && walk(edges, start, next, path, seen) {
                return true;
            }
            path.pop();
        }
        false
    }
    let mut path = vec![start];
    let mut seen = BTreeSet::new();
    walk(edges, start, start, &mut path, &mut seen).then_some(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cycle_is_found_and_named_from_its_start() {
        let [a, b, c] = [
            PermissionSetId::new(),
            PermissionSetId::new(),
            PermissionSetId::new(),
        ];
        let mut edges = BTreeMap::from([(a, vec![b]), (b, vec![c])]);
        assert_eq!(find_cycle(&edges, a), None);
        edges.insert(c, vec![a]);
        assert_eq!(find_cycle(&edges, a), Some(vec![a, b, c, a]));
    }

    #[test]
    fn unknown_permission_names_are_refused_by_position() {
        let err = parse_permissions(
            "permissions",
            &["templates:write".into(), "templates:fly".into()],
        )
        .unwrap_err();
        let ApiError::Invalid(problems) = err else {
            panic!("400 expected")
        };
        assert_eq!(problems[0].name, "permissions[1]");
    }
}
