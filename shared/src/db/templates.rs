//! A tenant's message templates.
//!
//! Every function takes the tenant first and every query is scoped by it, so
//! another tenant's template is simply not found. Keys are unique per tenant:
//! a create or update that takes a used key fails on [`KEY_CONSTRAINT`].
//! Only templates from [`Template::parse`] are written.
//!
//! Sends read templates through a [`TemplateCache`]: compiled once, then used
//! for `TEMPLATE_CACHE_SECS`.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use chrono::{DateTime, Utc};
use sqlx::{PgExecutor, types::Json};

use crate::{
    cache::{Clock, TtlCache},
    domain::{Channel, TemplateId, TenantId},
    templates::{LocaleContent, Prepared, Template},
};

/// The unique constraint on a tenant's template keys.
pub const KEY_CONSTRAINT: &str = "templates_tenant_id_key_key";

/// A stored template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredTemplate {
    /// Its id.
    pub id: TemplateId,
    /// The template.
    pub template: Template,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
}

/// A template in a list: everything but its content.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct TemplateSummary {
    /// Its id.
    pub id: TemplateId,
    /// Its key.
    pub key: String,
    /// Its name.
    pub name: String,
    /// What it is for.
    pub description: Option<String>,
    /// The category its sends get.
    pub category: Option<String>,
    /// Whether its sends are critical.
    pub critical: bool,
    /// The fallback locale.
    pub default_locale: String,
    /// The channels a send uses when it names none.
    pub default_channels: Vec<String>,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
}

struct Row {
    id: TemplateId,
    key: String,
    name: String,
    description: Option<String>,
    category: Option<String>,
    critical: bool,
    default_locale: String,
    default_channels: Vec<String>,
    locales: Json<BTreeMap<String, LocaleContent>>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl TryFrom<Row> for StoredTemplate {
    type Error = sqlx::Error;

    fn try_from(row: Row) -> Result<Self, Self::Error> {
        let default_channels = row
            .default_channels
            .iter()
            .map(|c| {
                Channel::parse(c).ok_or_else(|| {
                    sqlx::Error::Decode(format!("template {}: channel `{c}`", row.id).into())
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(Self {
            id: row.id,
            template: Template {
                key: row.key,
                name: row.name,
                description: row.description,
                category: row.category,
                critical: row.critical,
                default_locale: row.default_locale,
                default_channels,
                locales: row.locales.0,
            },
            created_at: row.created_at,
            updated_at: row.updated_at,
        })
    }
}

/// `template`'s default channels as stored.
fn channels(template: &Template) -> Vec<&'static str> {
    template
        .default_channels
        .iter()
        .map(|c| c.as_str())
        .collect()
}

/// Stores a new template.
#[tracing::instrument(skip_all)]
pub async fn create(
    db: impl PgExecutor<'_>,
    tenant_id: TenantId,
    template: &Template,
) -> Result<StoredTemplate, sqlx::Error> {
    let channels = channels(template);
    let row = sqlx::query_as!(
        Row,
        r#"insert into templates (id, tenant_id, key, name, description, category, critical,
                                default_locale, default_channels, locales)
         values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
         returning id as "id: TemplateId", key, name, description, category, critical, default_locale,
             default_channels, locales as "locales: Json<BTreeMap<String, LocaleContent>>",
             created_at, updated_at"#,
        TemplateId::new().0,
        tenant_id.0,
        &template.key,
        &template.name,
        template.description.as_deref(),
        template.category.as_deref(),
        template.critical,
        &template.default_locale,
        channels.as_slice() as &[&str],
        Json(&template.locales) as _,
    )
    .fetch_one(db)
    .await?;
    row.try_into()
}

/// The columns of a [`TemplateSummary`].
const SUMMARY_COLUMNS: &str = "id, key, name, description, category, critical, default_locale, \
     default_channels, created_at, updated_at";

super::owned_rows! {
    "templates", key: &str;
    /// Up to `limit` templates in key order, after the key `after` when given.
    list -> TemplateSummary, SUMMARY_COLUMNS;
}

/// One template by id.
#[tracing::instrument(skip_all)]
pub async fn get(
    db: impl PgExecutor<'_>,
    tenant_id: TenantId,
    id: TemplateId,
) -> Result<Option<StoredTemplate>, sqlx::Error> {
    let row = sqlx::query_as!(
        Row,
        r#"select id as "id: TemplateId", key, name, description, category, critical, default_locale,
             default_channels, locales as "locales: Json<BTreeMap<String, LocaleContent>>",
             created_at, updated_at
         from templates where tenant_id = $1 and id = $2"#,
        tenant_id.0,
        id.0,
    )
    .fetch_optional(db)
    .await?;
    row.map(TryInto::try_into).transpose()
}

/// One template by key.
#[tracing::instrument(skip_all)]
pub async fn get_by_key(
    db: impl PgExecutor<'_>,
    tenant_id: TenantId,
    key: &str,
) -> Result<Option<StoredTemplate>, sqlx::Error> {
    let row = sqlx::query_as!(
        Row,
        r#"select id as "id: TemplateId", key, name, description, category, critical, default_locale,
             default_channels, locales as "locales: Json<BTreeMap<String, LocaleContent>>",
             created_at, updated_at
         from templates where tenant_id = $1 and key = $2"#,
        tenant_id.0,
        key,
    )
    .fetch_optional(db)
    .await?;
    row.map(TryInto::try_into).transpose()
}

/// Replaces a template wholesale; `None` when the tenant has no such template.
#[tracing::instrument(skip_all)]
pub async fn update(
    db: impl PgExecutor<'_>,
    tenant_id: TenantId,
    id: TemplateId,
    template: &Template,
) -> Result<Option<StoredTemplate>, sqlx::Error> {
    let channels = channels(template);
    let row = sqlx::query_as!(
        Row,
        r#"update templates
         set key = $3, name = $4, description = $5, category = $6, critical = $7,
             default_locale = $8, default_channels = $9, locales = $10
         where tenant_id = $1 and id = $2
         returning id as "id: TemplateId", key, name, description, category, critical, default_locale,
             default_channels, locales as "locales: Json<BTreeMap<String, LocaleContent>>",
             created_at, updated_at"#,
        tenant_id.0,
        id.0,
        &template.key,
        &template.name,
        template.description.as_deref(),
        template.category.as_deref(),
        template.critical,
        &template.default_locale,
        channels.as_slice() as &[&str],
        Json(&template.locales) as _,
    )
    .fetch_optional(db)
    .await?;
    row.map(TryInto::try_into).transpose()
}

/// Deletes a template; its key, or `None` when the tenant has no such
/// template.
#[tracing::instrument(skip_all)]
pub async fn delete(
    db: impl PgExecutor<'_>,
    tenant_id: TenantId,
    id: TemplateId,
) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar!(
        "delete from templates where tenant_id = $1 and id = $2 returning key",
        tenant_id.0,
        id.0,
    )
    .fetch_optional(db)
    .await
}

/// Most templates a [`TemplateCache`] keeps compiled; past it the oldest are
/// dropped.
pub const TEMPLATE_CACHE_CAPACITY: usize = 1_000;

/// Templates compiled once and used for sends for a stated time, by tenant
/// and key. An edit made through this process shows at once (the route
/// calls [`TemplateCache::forget_tenant`] after its commit); one made through
/// another process shows within the time-to-live. A key without a template
/// is never cached.
#[derive(Debug)]
pub struct TemplateCache(TtlCache<(TenantId, String), Arc<Prepared>>);

impl TemplateCache {
    /// A cache that uses a compiled template for `ttl` (zero: reads and
    /// compiles it for every send).
    pub fn new(ttl: Duration) -> Self {
        Self(TtlCache::new(ttl, TEMPLATE_CACHE_CAPACITY))
    }

    /// [`TemplateCache::new`], reading the time from `clock`.
    pub fn with_clock(ttl: Duration, clock: Arc<dyn Clock>) -> Self {
        Self(TtlCache::with_clock(ttl, TEMPLATE_CACHE_CAPACITY, clock))
    }

    /// The template `key` of `tenant_id`, compiled: from the cache while
    /// fresh, else read through `db`.
    #[tracing::instrument(skip_all)]
    pub async fn prepared(
        &self,
        db: impl PgExecutor<'_>,
        tenant_id: TenantId,
        key: &str,
    ) -> Result<Option<Arc<Prepared>>, sqlx::Error> {
        let entry = (tenant_id, key.to_owned());
        if let Some(prepared) = self.0.get(&entry) {
            return Ok(Some(prepared));
        }
        let Some(stored) = get_by_key(db, tenant_id, key).await? else {
            return Ok(None);
        };
        let prepared = Arc::new(Prepared::new(stored.template));
        self.0.insert(entry, prepared.clone());
        Ok(Some(prepared))
    }

    /// Forgets every template of `tenant_id`, after it changed one.
    pub fn forget_tenant(&self, tenant_id: TenantId) {
        self.0.remove_where(|(tenant, _), _| *tenant == tenant_id);
    }

    /// Forgets every template.
    pub fn clear(&self) {
        self.0.clear();
    }

    /// Entries held, hits and misses.
    pub fn stats(&self) -> crate::cache::Stats {
        self.0.stats()
    }

    /// How long a compiled template is used.
    pub fn ttl(&self) -> Duration {
        self.0.ttl()
    }
}
