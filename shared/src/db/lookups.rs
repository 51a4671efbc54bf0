//! The lookup values platform admins manage (`lookup_values`):
//! notification categories and organisation types' labels. Platform-wide,
//! not tenant-owned; see [`crate::lookups`].

use chrono::{DateTime, Utc};
use sqlx::PgExecutor;

use crate::lookups::{LookupKind, MAX_VALUES};

/// One stored value.
#[derive(Debug, Clone)]
pub struct Value {
    /// Its code.
    pub code: String,
    /// A label for people.
    pub label: String,
    /// What it means.
    pub description: Option<String>,
    /// Where it is shown in its list.
    pub position: i32,
    /// Last changed.
    pub updated_at: DateTime<Utc>,
}

/// The values of an editable kind, in their order (at most
/// [`MAX_VALUES`]).
#[tracing::instrument(skip_all)]
pub async fn list(db: impl PgExecutor<'_>, kind: LookupKind) -> Result<Vec<Value>, sqlx::Error> {
    sqlx::query_as!(
        Value,
        "select code, label, description, position, updated_at from lookup_values
         where kind = $1 order by position, code limit $2",
        kind.as_str(),
        MAX_VALUES,
    )
    .fetch_all(db)
    .await
}

/// How many values an editable kind has.
pub async fn count(db: impl PgExecutor<'_>, kind: LookupKind) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar!(
        r#"select count(*) as "count!" from lookup_values where kind = $1"#,
        kind.as_str(),
    )
    .fetch_one(db)
    .await
}

/// A value's new label, description and position.
#[derive(Debug, Clone)]
pub struct Change<'a> {
    /// The label.
    pub label: &'a str,
    /// The description.
    pub description: Option<&'a str>,
    /// The position (kept when `None`; 0 for a new value).
    pub position: Option<i32>,
}

/// Creates the value, or changes it; returns it and whether it is new.
/// With `create` false only an existing value is changed (`None` if there
/// is none).
#[tracing::instrument(skip_all)]
pub async fn put(
    db: impl PgExecutor<'_>,
    kind: LookupKind,
    code: &str,
    change: &Change<'_>,
    create: bool,
) -> Result<Option<(Value, bool)>, sqlx::Error> {
    // A value written, and whether it is new.
    macro_rules! written {
        ($row:expr) => {
            $row.map(|r| {
                let value = Value {
                    code: r.code,
                    label: r.label,
                    description: r.description,
                    position: r.position,
                    updated_at: r.updated_at,
                };
                (value, r.created)
            })
        };
    }
    Ok(if create {
        written!(
            sqlx::query!(
                r#"insert into lookup_values as v (kind, code, label, description, position)
                 values ($1, $2, $3, $4, coalesce($5, 0))
                 on conflict (kind, code) do update
                 set label = excluded.label, description = excluded.description,
                     position = coalesce($5, v.position)
                 returning code, label, description, position, updated_at,
                     (xmax = 0) as "created!""#,
                kind.as_str(),
                code,
                change.label,
                change.description,
                change.position,
            )
            .fetch_optional(db)
            .await?
        )
    } else {
        written!(
            sqlx::query!(
                r#"update lookup_values set label = $3, description = $4,
                     position = coalesce($5, position)
                 where kind = $1 and code = $2
                 returning code, label, description, position, updated_at,
                     false as "created!""#,
                kind.as_str(),
                code,
                change.label,
                change.description,
                change.position,
            )
            .fetch_optional(db)
            .await?
        )
    })
}

/// Removes a value; false if there was none.
#[tracing::instrument(skip_all)]
pub async fn delete(
    db: impl PgExecutor<'_>,
    kind: LookupKind,
    code: &str,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query!(
        "delete from lookup_values where kind = $1 and code = $2",
        kind.as_str(),
        code,
    )
    .execute(db)
    .await?;
    Ok(done.rows_affected() == 1)
}
