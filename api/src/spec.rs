//! The OpenAPI document served at `/openapi.json`: poem-openapi's, amended in
//! one place where poem-openapi does not describe what the API does.
//!
//! * **Optional properties are nullable.** For every property an object does
//!   not require, poem-openapi writes `None` as `null` and reads `null` as
//!   absent (or as the field's default), but never marks the property
//!   `nullable`. Every such property is marked here, so an `Option` field
//!   can never again be documented as a plain string that comes back `null`.
//! * **Statuses answered at the edge.** Some answers come before any
//!   handler runs, for any operation: a NUL or malformed input (400), a body
//!   sent too slowly (408), without a length (411) or over the limit (413),
//!   a wrong `Content-Type` for an operation that takes a body (415), a
//!   Postgres outage (503) and an internal error (500). Each operation
//!   documents them, as `application/problem+json`, when it does not already.
//!   (405 for an undocumented method is not listed: it answers no documented
//!   operation.)
//! * **Rate limits.** Every operation the edge limits ([`crate::limits`])
//!   documents 429 with `Retry-After` and the `RateLimit-*` headers.
//! * **Integers are bounded** by their format (a `u32` is never negative).
//! * **Objects are closed.** No object has properties beyond those it
//!   declares: responses never carry others, and request objects refuse them.
//! * **Grouped query parameters are listed one by one.** A handler that
//!   reads its query parameters as one struct ([`crate::extract::Params`])
//!   is documented as if it took each as an argument.

use poem::{Endpoint, Response, endpoint::make_sync, web::Html};
use serde_json::{Map, Value, json};

/// What the edge may answer for any operation, and why.
pub const EDGE_STATUSES: &[(u16, &str)] = &[
    (
        400,
        "A malformed request (e.g. a NUL character in any input)",
    ),
    (408, "The request body was not received in time"),
    (411, "No Content-Length on a request with a body"),
    (413, "A body over the configured limit"),
    (500, "An internal error; quote the request id"),
    (503, "A dependency is down"),
];

/// What a limited operation answers once its caller's limit is used up.
pub const RATE_LIMITED: &str =
    "A rate limit or send quota is used up; see Retry-After and the RateLimit headers";

/// The headers of a 429.
fn rate_limit_headers() -> Value {
    let integer = |description: &str| {
        json!({
            "description": description,
            "schema": {"type": "integer", "format": "int64", "minimum": 0},
        })
    };
    json!({
        "Retry-After": integer("Seconds until the request may be sent again"),
        "RateLimit-Limit": integer("Requests of this class allowed at once (absent for a send quota)"),
        "RateLimit-Remaining": integer("Requests that could be sent now (absent for a send quota)"),
        "RateLimit-Reset": integer("Seconds until the allowance is whole again (absent for a send quota)"),
    })
}

/// What the edge answers for an operation whose body has another content type.
pub const UNSUPPORTED_MEDIA_TYPE: (u16, &str) =
    (415, "A body of a content type this operation does not take");

/// The served document.
pub fn document<T: poem_openapi::OpenApi>(api: &poem_openapi::OpenApiService<T, ()>) -> Value {
    let mut doc: Value =
        serde_json::from_str(&api.spec()).expect("poem-openapi writes its document as JSON");
    amend(&mut doc);
    doc
}

/// Swagger UI at `/docs`, showing the same amended document as
/// `/openapi.json` (poem-openapi's own UI would embed its unamended one).
pub fn docs_endpoint<T: poem_openapi::OpenApi>(
    api: &poem_openapi::OpenApiService<T, ()>,
) -> impl Endpoint + 'static {
    let amended = serde_json::to_string(&document(api)).expect("a JSON value serializes");
    let html = api.swagger_ui_html().replacen(&api.spec(), &amended, 1);
    make_sync(move |_| Html(html.clone()))
}

/// `/openapi.json`.
pub fn endpoint<T: poem_openapi::OpenApi>(
    api: &poem_openapi::OpenApiService<T, ()>,
) -> impl Endpoint + 'static {
    let body = serde_json::to_string_pretty(&document(api)).expect("a JSON value serializes");
    make_sync(move |_| {
        Response::builder()
            .content_type("application/json")
            .body(body.clone())
    })
}

/// Applies the amendments to a poem-openapi document.
pub fn amend(doc: &mut Value) {
    crate::extract::query::expand(doc);
    if let Some(schemas) = doc
        .pointer_mut("/components/schemas")
        .and_then(Value::as_object_mut)
    {
        for schema in schemas.values_mut() {
            nullable_optionals(schema);
            closed(schema);
        }
    }
    integer_bounds(doc);
    let problem = json!({"$ref": "#/components/schemas/Problem"});
    if let Some(paths) = doc.get_mut("paths").and_then(Value::as_object_mut) {
        for (path, item) in paths.iter_mut() {
            let Some(item) = item.as_object_mut() else {
                continue;
            };
            for (method, operation) in item.iter_mut() {
                let Some(operation) = operation.as_object_mut() else {
                    continue;
                };
                let limited = method
                    .to_ascii_uppercase()
                    .parse::<poem::http::Method>()
                    .ok()
                    .and_then(|m| crate::limits::Class::of(&m, path));
                let has_body = operation.contains_key("requestBody");
                let responses = operation
                    .entry("responses")
                    .or_insert_with(|| Value::Object(Map::new()));
                let Some(responses) = responses.as_object_mut() else {
                    continue;
                };
                let edge = EDGE_STATUSES
                    .iter()
                    .chain(has_body.then_some(&UNSUPPORTED_MEDIA_TYPE));
                for (status, description) in edge {
                    responses.entry(status.to_string()).or_insert_with(|| {
                        json!({
                            "description": description,
                            "content": {"application/problem+json": {"schema": problem.clone()}},
                        })
                    });
                }
                if limited.is_some() {
                    let refused = responses.entry("429").or_insert_with(|| {
                        json!({
                            "description": RATE_LIMITED,
                            "content": {"application/problem+json": {"schema": problem.clone()}},
                        })
                    });
                    if let Some(refused) = refused.as_object_mut() {
                        refused.insert("headers".to_owned(), rate_limit_headers());
                    }
                }
            }
        }
    }
}

/// Gives every integer schema the range its format can hold, wherever it is
/// (properties, parameters, items): poem-openapi refuses a value outside it,
/// e.g. a negative number for a `u32`, but states only the format.
fn integer_bounds(value: &mut Value) {
    match value {
        Value::Object(object) => {
            let range = match object.get("format").and_then(Value::as_str) {
                _ if object.get("type").and_then(Value::as_str) != Some("integer") => None,
                Some("uint8") => Some((json!(0), json!(u8::MAX))),
                Some("uint16") => Some((json!(0), json!(u16::MAX))),
                Some("uint32") => Some((json!(0), json!(u32::MAX))),
                Some("uint64") => Some((json!(0), json!(u64::MAX))),
                Some("int8") => Some((json!(i8::MIN), json!(i8::MAX))),
                Some("int16") => Some((json!(i16::MIN), json!(i16::MAX))),
                Some("int32") => Some((json!(i32::MIN), json!(i32::MAX))),
                Some("int64") => Some((json!(i64::MIN), json!(i64::MAX))),
                _ => None,
            };
            if let Some((min, max)) = range {
                object.entry("minimum").or_insert(min);
                object.entry("maximum").or_insert(max);
            }
            for child in object.values_mut() {
                integer_bounds(child);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(integer_bounds),
        _ => {}
    }
}

/// Closes an object schema to properties it does not declare: poem-openapi
/// objects write only their own fields, and request objects are declared
/// `deny_unknown_fields` (the negative checks of `.ci/schemathesis.sh` send
/// unknown fields to every operation and hold each to this).
fn closed(schema: &mut Value) {
    let Some(schema) = schema.as_object_mut() else {
        return;
    };
    if schema.contains_key("properties") && !schema.contains_key("additionalProperties") {
        schema.insert("additionalProperties".to_owned(), Value::Bool(false));
    }
}

/// Marks every property `schema` (an object schema) does not require as
/// nullable.
fn nullable_optionals(schema: &mut Value) {
    let Some(schema) = schema.as_object_mut() else {
        return;
    };
    let required: Vec<String> = schema
        .get("required")
        .and_then(Value::as_array)
        .map(|r| {
            r.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    let Some(properties) = schema.get_mut("properties").and_then(Value::as_object_mut) else {
        return;
    };
    for (name, property) in properties.iter_mut() {
        if required.contains(name) {
            continue;
        }
        if let Some(property) = property.as_object_mut() {
            property.insert("nullable".to_owned(), Value::Bool(true));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc() -> Value {
        document(&crate::openapi())
    }

    #[test]
    fn optional_properties_are_nullable_and_required_ones_are_not() {
        let doc = doc();
        let audit = &doc["components"]["schemas"]["AuditView"]["properties"];
        assert_eq!(audit["resource_id"]["nullable"], true);
        assert!(audit["action"].get("nullable").is_none());
        let page = &doc["components"]["schemas"]["AuditPage"]["properties"];
        assert_eq!(page["next_cursor"]["nullable"], true);
        let org = &doc["components"]["schemas"]["OrganizationView"]["properties"];
        assert_eq!(org["baa"]["nullable"], true, "a $ref'd optional object too");
    }

    #[test]
    fn every_operation_documents_the_edge_statuses() {
        let doc = doc();
        let mut operations = 0;
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (method, op) in item.as_object().unwrap() {
                operations += 1;
                let responses = op["responses"].as_object().unwrap();
                for (status, _) in EDGE_STATUSES {
                    assert!(
                        responses.contains_key(&status.to_string()),
                        "{method} {path} lacks {status}"
                    );
                }
                assert_eq!(
                    responses.contains_key("415"),
                    op.get("requestBody").is_some(),
                    "{method} {path}: 415 exactly when it takes a body"
                );
            }
        }
        assert!(operations > 50);
    }

    #[test]
    fn integers_carry_the_range_of_their_format() {
        let doc = doc();
        let limit = doc["paths"]["/api/v1/admin/templates"]["get"]["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == "limit")
            .unwrap();
        assert_eq!(limit["schema"]["minimum"], 1.0, "a stated bound stays");
        assert_eq!(
            limit["schema"]["maximum"],
            f64::from(crate::extract::PageSize::MAX)
        );
        let days =
            &doc["components"]["schemas"]["CreateInvitation"]["properties"]["expires_in_days"];
        assert_eq!(days["minimum"], 0);
        assert_eq!(days["maximum"], u32::MAX);
    }

    #[test]
    fn a_subscribers_external_id_in_the_path_states_what_is_accepted() {
        let doc = doc();
        let param =
            &doc["paths"]["/api/v1/services/subscribers/{external_id}"]["get"]["parameters"][0];
        assert_eq!(param["name"], "external_id");
        assert_eq!(param["schema"]["maxLength"], 255);
        assert_eq!(param["schema"]["minLength"], 1);
        assert!(param["schema"]["pattern"].as_str().unwrap().contains("x1F"));
    }

    #[test]
    fn bulk_invitation_bodies_state_how_many_items_they_take() {
        let doc = doc();
        let schemas = &doc["components"]["schemas"];
        for (schema, field) in [("BulkIds", "ids"), ("BulkCreate", "invitations")] {
            let items = &schemas[schema]["properties"][field];
            assert_eq!(items["minItems"], 1, "{schema}");
            assert_eq!(items["maxItems"], 100, "{schema}");
        }
    }

    #[test]
    fn a_problem_need_not_list_invalid_params() {
        let doc = doc();
        let required = doc["components"]["schemas"]["Problem"]["required"]
            .as_array()
            .unwrap();
        assert!(!required.iter().any(|r| r == "invalid_params"));
    }
}
