//! `/api/v1/admin/templates`: a tenant's administrators keep reusable message
//! templates, and preview them with sample data.
//!
//! A template is stored only once every string in it compiles and passes the
//! rules in [`shared::templates`]; each bad field is named in the 400 answer.
//! Creates, updates and deletes are written to the audit log in the same
//! transaction (the id and key, never the content). Another tenant's
//! template, like a malformed id, answers 404.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use poem_openapi::{
    ApiResponse, Object, OpenApi,
    param::{Path, Query},
    payload::Json,
};
use serde_json::{Value, json};
use shared::{
    db::templates::{self, StoredTemplate, TemplateSummary},
    domain::{Channel, TemplateId},
    templates::{FieldError, RenderError, Template, render, requested_locale},
};

use crate::body::StrictJson;
use crate::{
    error::{ApiError, InvalidParam},
    extract::AdminCtx,
    extract::{Cursor, PageSize, PathId, page},
    routes::ApiTags,
};

/// The template administration endpoints.
#[derive(Debug)]
pub struct TemplatesApi;

/// A stored template.
#[derive(Debug, Object)]
pub struct TemplateView {
    /// Its id.
    pub id: String,
    /// Its key, unique in the organisation.
    pub key: String,
    /// Its name.
    pub name: String,
    /// What it is for.
    pub description: Option<String>,
    /// The category its sends get.
    pub category: Option<String>,
    /// Whether its sends ignore preferences and quiet hours.
    pub critical: bool,
    /// The locale renders fall back to.
    pub default_locale: String,
    /// The channels a send uses when it names none.
    pub default_channels: Vec<String>,
    /// The content per locale and channel, as it was saved.
    pub locales: Value,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
}

fn view(stored: StoredTemplate) -> Result<TemplateView, ApiError> {
    let t = &stored.template;
    Ok(TemplateView {
        id: stored.id.to_string(),
        key: t.key().to_owned(),
        name: t.name().to_owned(),
        description: t.description().map(str::to_owned),
        category: t.category().map(str::to_owned),
        critical: t.critical(),
        default_locale: t.default_locale().to_owned(),
        default_channels: t
            .default_channels()
            .iter()
            .map(|c| c.as_str().to_owned())
            .collect(),
        locales: serde_json::to_value(t.locales()).map_err(anyhow::Error::from)?,
        created_at: stored.created_at,
        updated_at: stored.updated_at,
    })
}

/// A template in a list, without its content.
#[derive(Debug, Object)]
pub struct TemplateListItem {
    /// Its id.
    pub id: String,
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
    /// The locale renders fall back to.
    pub default_locale: String,
    /// The channels a send uses when it names none.
    pub default_channels: Vec<String>,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
}

impl From<TemplateSummary> for TemplateListItem {
    fn from(s: TemplateSummary) -> Self {
        Self {
            id: s.id.to_string(),
            key: s.key,
            name: s.name,
            description: s.description,
            category: s.category,
            critical: s.critical,
            default_locale: s.default_locale,
            default_channels: s.default_channels,
            created_at: s.created_at,
            updated_at: s.updated_at,
        }
    }
}

/// A page of templates.
#[derive(Debug, Object)]
pub struct TemplatePage {
    /// Templates in key order.
    pub items: Vec<TemplateListItem>,
    /// Pass as `cursor` for the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

/// A preview: sample data rendered through a stored template.
#[derive(Debug, Object, serde::Deserialize)]
#[oai(deny_unknown_fields)]
#[serde(deny_unknown_fields)]
pub struct PreviewRequest {
    /// The variables, as a send would give them (a JSON object).
    pub data: Option<Value>,
    /// The locale to render, e.g. `fr-CA`; it falls back to its language
    /// (`fr`), then to the template's default locale.
    pub locale: Option<String>,
    /// The channels to render; the template's default channels when absent.
    pub channels: Option<Vec<String>>,
}

/// One channel of a preview.
#[derive(Debug, Object)]
pub struct RenderedChannel {
    /// The locale whose content was used.
    pub locale: String,
    /// The rendered content, as a send on this channel carries it: email
    /// `{subject, text, html}`, sms `{body}`, push `{title, body, data}`,
    /// whatsapp `{text}` or `{template_name, language, parameters}`, in-app
    /// `{title, body, action_url, data}`.
    pub content: Value,
}

/// A rendered preview.
#[derive(Debug, Object)]
pub struct Preview {
    /// Each requested channel, by name.
    pub channels: BTreeMap<String, RenderedChannel>,
}

/// Answers to a create.
#[derive(Debug, ApiResponse)]
pub enum CreatedResponse {
    /// Created.
    #[oai(status = 201)]
    Created(Json<TemplateView>, #[oai(header = "Location")] String),
}

/// Answers with one template.
#[derive(Debug, ApiResponse)]
pub enum TemplateResponse {
    /// The template.
    #[oai(status = 200)]
    Ok(Json<TemplateView>),
}

/// Answers with a page of templates.
#[derive(Debug, ApiResponse)]
pub enum PageResponse {
    /// A page.
    #[oai(status = 200)]
    Ok(Json<TemplatePage>),
}

/// Answers to a delete.
#[derive(Debug, ApiResponse)]
pub enum DeletedResponse {
    /// Deleted.
    #[oai(status = 204)]
    NoContent,
}

/// Answers to a preview.
#[derive(Debug, ApiResponse)]
pub enum PreviewResponse {
    /// The rendered content.
    #[oai(status = 200)]
    Ok(Json<Preview>),
}

fn invalid(errors: Vec<FieldError>) -> ApiError {
    ApiError::fields(errors)
}

/// The channels a preview asks for, or the template's defaults.
fn preview_channels(
    template: &Template,
    requested: Option<&[String]>,
) -> Result<Vec<Channel>, ApiError> {
    let Some(requested) = requested else {
        return Ok(template.default_channels().to_vec());
    };
    if requested.is_empty() {
        return Err(ApiError::invalid(
            "channels",
            "must name at least one channel",
        ));
    }
    let has = template.channels();
    let mut problems = Vec::new();
    let mut channels = Vec::new();
    for (i, name) in requested.iter().enumerate() {
        let reason = match Channel::parse(name) {
            None => format!("`{name}` is not a channel; use email, sms, push, whatsapp or inapp"),
            Some(c) if !has.contains(&c) => format!("the template has no {name} content"),
            Some(c) => {
                if !channels.contains(&c) {
                    channels.push(c);
                }
                continue;
            }
        };
        problems.push(InvalidParam {
            name: format!("channels[{i}]"),
            reason,
        });
    }
    if problems.is_empty() {
        Ok(channels)
    } else {
        Err(ApiError::Invalid(problems))
    }
}

#[OpenApi(prefix_path = "/api/v1/admin/templates", tag = "ApiTags::Admin")]
impl TemplatesApi {
    /// Create a template.
    ///
    /// The body is the template: `key` (unique in the organisation: lower-case
    /// letters, digits, `.`, `_`, `-`), `name`, optional `description`,
    /// `category` and `critical`, `default_locale`, `default_channels`, and
    /// `locales`: per locale tag (`en`, `en-US`, `pt-BR`), content per channel.
    /// Email has `subject` and `html` and/or `text`; sms `body`; push `title`,
    /// `body`, `data`; whatsapp `text`, or `template_name`, `language` and
    /// `parameters`; inapp `title`, `body`, `action_url`, `data`. Every string
    /// except WhatsApp's `template_name` and `language` is a Handlebars
    /// template, rendered in strict mode (an unknown variable is an error).
    /// Partials are not supported, and email `html` always escapes values.
    /// The default locale must have every channel any locale has. At most
    /// 64 KiB of JSON, 20 locales and 16 KiB per string.
    #[oai(path = "/", method = "post", operation_id = "templates.create")]
    async fn create(
        &self,
        cx: AdminCtx<'_>,
        body: Json<Value>,
    ) -> Result<CreatedResponse, ApiError> {
        let caller = cx.auth.caller();
        let template = Template::parse(body.0).map_err(invalid)?;
        let mut tx = cx.state.pool.begin().await?;
        let stored = templates::create(&mut *tx, caller.tenant_id, &template).await?;
        cx.audit(
            &mut *tx,
            "template.create",
            "template",
            stored.id,
            json!({"key": template.key()}),
        )
        .await?;
        tx.commit().await?;
        tracing::info!(template_id = %stored.id, "template created");
        let location = format!("/api/v1/admin/templates/{}", stored.id);
        Ok(CreatedResponse::Created(Json(view(stored)?), location))
    }

    /// List templates in key order, without their content.
    #[oai(path = "/", method = "get", operation_id = "templates.list")]
    async fn list(
        &self,
        cx: AdminCtx<'_>,
        /// From `next_cursor` of the previous page.
        cursor: Query<Option<Cursor<String>>>,
        /// Templates per page.
        limit: Query<PageSize>,
    ) -> Result<PageResponse, ApiError> {
        let caller = cx.auth.caller();
        let after = cursor.0.map(Cursor::get).transpose()?;
        let rows = templates::list(
            &cx.state.pool,
            caller.tenant_id,
            after.as_deref(),
            limit.0.fetch(),
        )
        .await?;
        let (rows, next_cursor) = page(rows, limit.0, |r| r.key.clone());
        Ok(PageResponse::Ok(Json(TemplatePage {
            items: rows.into_iter().map(Into::into).collect(),
            next_cursor,
        })))
    }

    /// Read a template.
    #[oai(path = "/:id", method = "get", operation_id = "templates.get")]
    async fn get(
        &self,
        cx: AdminCtx<'_>,
        id: Path<PathId<TemplateId>>,
    ) -> Result<TemplateResponse, ApiError> {
        let caller = cx.auth.caller();
        let id = id.0.get("template")?;
        let stored = templates::get(&cx.state.pool, caller.tenant_id, id)
            .await?
            .ok_or(ApiError::NotFound("template"))?;
        Ok(TemplateResponse::Ok(Json(view(stored)?)))
    }

    /// Replace a template (the whole template, as for a create).
    #[oai(path = "/:id", method = "put", operation_id = "templates.put")]
    async fn put(
        &self,
        cx: AdminCtx<'_>,
        id: Path<PathId<TemplateId>>,
        body: Json<Value>,
    ) -> Result<TemplateResponse, ApiError> {
        let caller = cx.auth.caller();
        let id = id.0.get("template")?;
        let template = Template::parse(body.0).map_err(invalid)?;
        let mut tx = cx.state.pool.begin().await?;
        let stored = templates::update(&mut *tx, caller.tenant_id, id, &template)
            .await?
            .ok_or(ApiError::NotFound("template"))?;
        cx.audit(
            &mut *tx,
            "template.update",
            "template",
            id,
            json!({"key": template.key()}),
        )
        .await?;
        tx.commit().await?;
        cx.state.templates.forget_tenant(caller.tenant_id);
        tracing::info!(template_id = %id, "template updated");
        Ok(TemplateResponse::Ok(Json(view(stored)?)))
    }

    /// Delete a template.
    #[oai(path = "/:id", method = "delete", operation_id = "templates.delete")]
    async fn delete(
        &self,
        cx: AdminCtx<'_>,
        id: Path<PathId<TemplateId>>,
    ) -> Result<DeletedResponse, ApiError> {
        let caller = cx.auth.caller();
        let id = id.0.get("template")?;
        let mut tx = cx.state.pool.begin().await?;
        let key = templates::delete(&mut *tx, caller.tenant_id, id)
            .await?
            .ok_or(ApiError::NotFound("template"))?;
        cx.audit(
            &mut *tx,
            "template.delete",
            "template",
            id,
            json!({"key": key}),
        )
        .await?;
        tx.commit().await?;
        cx.state.templates.forget_tenant(caller.tenant_id);
        tracing::info!(template_id = %id, "template deleted");
        Ok(DeletedResponse::NoContent)
    }

    /// Render a template with sample data, as a send would.
    ///
    /// Answers each channel's content and the locale it came from. An unknown
    /// variable, a subject that renders to more than one line, an unsafe
    /// in-app link or too much output is a 400 naming the template field
    /// (e.g. `locales.fr.email.subject`) and the variable.
    #[oai(
        path = "/:id/preview",
        method = "post",
        operation_id = "templates.preview"
    )]
    async fn preview(
        &self,
        cx: AdminCtx<'_>,
        id: Path<PathId<TemplateId>>,
        body: StrictJson<PreviewRequest>,
    ) -> Result<PreviewResponse, ApiError> {
        let caller = cx.auth.caller();
        let id = id.0.get("template")?;
        let req = body.0;
        let data = match req.data {
            None | Some(Value::Null) => json!({}),
            Some(v @ Value::Object(_)) => v,
            Some(_) => return Err(ApiError::invalid("data", "must be a JSON object")),
        };
        if let Some(l) = &req.locale {
            requested_locale(l).map_err(|e| ApiError::invalid("locale", e.0))?;
        }
        let stored = templates::get(&cx.state.pool, caller.tenant_id, id)
            .await?
            .ok_or(ApiError::NotFound("template"))?;
        let channels = preview_channels(&stored.template, req.channels.as_deref())?;
        let mut rendered = BTreeMap::new();
        let mut problems = Vec::new();
        for channel in channels {
            match render(&stored.template, channel, req.locale.as_deref(), &data) {
                Ok(r) => {
                    rendered.insert(
                        channel.as_str().to_owned(),
                        RenderedChannel {
                            locale: r.locale,
                            content: r.content.to_stored(),
                        },
                    );
                }
                Err(e) => problems.push(render_problem(&e)),
            }
        }
        if !problems.is_empty() {
            return Err(ApiError::Invalid(problems));
        }
        Ok(PreviewResponse::Ok(Json(Preview { channels: rendered })))
    }
}

fn render_problem(e: &RenderError) -> InvalidParam {
    InvalidParam {
        name: e.field().to_owned(),
        reason: e.reason(),
    }
}
