//! Reading a CSV upload: the multipart form with its fields, streamed so a
//! large file is never held whole.

use super::*;

/// The form's fields before the file, checked.
pub(super) struct Form {
    pub(super) template: String,
    pub(super) channels: Vec<Channel>,
    pub(super) locale: Option<String>,
    pub(super) mapping: Mapping,
}

pub(super) async fn form(
    state: &AppState,
    tenant_id: shared::domain::TenantId,
    fields: Vec<(String, String)>,
) -> Result<Form, ApiError> {
    let mut template = None;
    let mut channels_raw = None;
    let mut locale = None;
    let mut mapping_raw = None;
    for (name, value) in fields {
        let slot = match name.as_str() {
            "template" => &mut template,
            "channels" => &mut channels_raw,
            "locale" => &mut locale,
            "mapping" => &mut mapping_raw,
            other => {
                return Err(ApiError::invalid(
                    other,
                    "is not a field of this form (template, channels, locale, mapping, file)",
                ));
            }
        };
        if slot.replace(value).is_some() {
            return Err(ApiError::invalid(name, "is given twice"));
        }
    }
    let template = template.ok_or_else(|| ApiError::invalid("template", "is required"))?;
    let stored = shared::db::templates::get_by_key(&state.pool, tenant_id, template.trim())
        .await?
        .ok_or_else(|| ApiError::invalid("template", "no template with this key"))?
        .template;
    let mut channels = Vec::new();
    match &channels_raw {
        Some(raw) => {
            for c in raw.split(',').map(str::trim) {
                match Channel::parse(c) {
                    Some(Channel::Push) => {
                        return Err(ApiError::invalid(
                            "channels",
                            "push is not offered for bulk jobs: devices belong to subscribers",
                        ));
                    }
                    Some(c) if !channels.contains(&c) => channels.push(c),
                    Some(_) => {
                        return Err(ApiError::invalid(
                            "channels",
                            format!("`{c}` is listed twice"),
                        ));
                    }
                    None => {
                        return Err(ApiError::invalid(
                            "channels",
                            format!("`{c}` is not a channel"),
                        ));
                    }
                }
            }
        }
        None => {
            channels = crate::services::batches::default_batch_channels(&stored);
        }
    }
    if channels.is_empty() {
        return Err(ApiError::invalid(
            "channels",
            "must name at least one channel",
        ));
    }
    if let Some(l) = &locale {
        shared::templates::requested_locale(l).map_err(|e| ApiError::invalid("locale", e.0))?;
    }
    let mapping_raw = mapping_raw.ok_or_else(|| ApiError::invalid("mapping", "is required"))?;
    let mapping: Mapping = serde_json::from_str(&mapping_raw)
        .map_err(|e| ApiError::invalid("mapping", format!("is not a valid mapping: {e}")))?;
    for column in mapping.columns() {
        if column.contains('\0') {
            return Err(ApiError::invalid("mapping", crate::input::NUL_REASON));
        }
        if column.is_empty() || column.chars().count() > 200 {
            return Err(ApiError::invalid(
                "mapping",
                "column names must be 1 to 200 characters",
            ));
        }
    }
    if mapping.data.len() > 50 {
        return Err(ApiError::invalid(
            "mapping",
            "`data` maps at most 50 variables",
        ));
    }
    for channel in &channels {
        if mapping.column_for(*channel).is_none() {
            let key = match channel {
                Channel::Email => "email",
                Channel::InApp => "subscriber_id",
                _ => "phone",
            };
            return Err(ApiError::invalid(
                "mapping",
                format!(
                    "`{key}` must name a column: the job sends {}",
                    channel.as_str()
                ),
            ));
        }
    }
    Ok(Form {
        template: template.trim().to_owned(),
        channels,
        locale,
        mapping,
    })
}

/// The upload form, read as a stream by [`BulkApi::upload`]; as a request
/// body it documents the form's fields (and so the 415 poem answers for any
/// other content type).
pub struct CsvForm(pub Multipart);

impl std::fmt::Debug for CsvForm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CsvForm")
    }
}

impl<'a> poem_openapi::ApiExtractor<'a> for CsvForm {
    const TYPES: &'static [poem_openapi::ApiExtractorType] =
        &[poem_openapi::ApiExtractorType::RequestObject];
    type ParamType = ();
    type ParamRawType = ();

    fn request_meta() -> Option<poem_openapi::registry::MetaRequest> {
        use poem_openapi::registry::{MetaMediaType, MetaRequest, MetaSchema, MetaSchemaRef};
        let field = |format: Option<&'static str>, description: &'static str| {
            MetaSchemaRef::Inline(Box::new(MetaSchema {
                format,
                description: Some(description),
                ..MetaSchema::new("string")
            }))
        };
        let form = MetaSchema {
            required: vec!["template", "file"],
            properties: vec![
                ("template", field(None, "The template's key.")),
                (
                    "channels",
                    field(None, "Comma-separated channels; default: the template's."),
                ),
                ("locale", field(None, "The template locale.")),
                (
                    "mapping",
                    field(
                        None,
                        "JSON: which column feeds each recipient field and template variable.",
                    ),
                ),
                ("file", field(Some("binary"), "The CSV, last in the form.")),
            ],
            ..MetaSchema::new("object")
        };
        Some(MetaRequest {
            description: None,
            content: vec![MetaMediaType {
                content_type: "multipart/form-data",
                schema: MetaSchemaRef::Inline(Box::new(form)),
            }],
            required: true,
        })
    }

    async fn from_request(
        req: &'a poem::Request,
        body: &mut poem::RequestBody,
        _: poem_openapi::ExtractParamOptions<()>,
    ) -> poem::Result<Self> {
        <Multipart as poem::FromRequest>::from_request(req, body)
            .await
            .map(Self)
    }
}
