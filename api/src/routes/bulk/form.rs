//! The CSV upload's multipart form as a request body: read as a stream so a
//! large file is never held whole, and documented with its fields.

use super::*;

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
