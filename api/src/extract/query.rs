//! Query parameters a handler reads as one argument.
//!
//! poem-openapi takes each query parameter as its own handler argument, so
//! a list with a handful of filters, `cursor` and `limit` grows a long
//! signature. A [`query_params!`](crate::query_params) struct groups them:
//! the handler takes `query: Params<AuditQuery>`, and the OpenAPI document
//! still lists every parameter by name, with its schema, constraints and
//! description, as if each were an argument. poem-openapi describes the
//! group as one parameter whose schema holds the others
//! ([`GROUP_FORMAT`]); [`expand`] turns it back into them when the document
//! is amended ([`crate::spec::amend`]).
//!
//! A parameter that does not parse or breaks a constraint is refused with
//! the same 400 as one poem-openapi reads (`invalid_params` naming it).

use poem::Request;
use poem_openapi::{
    ApiExtractor, ApiExtractorType, ExtractParamOptions,
    error::ParseParamError,
    registry::{MetaParamIn, MetaSchema, MetaSchemaRef, Registry},
    types::{ParseFromParameter, Type},
    validation::{Validator, ValidatorMeta},
};
use serde_json::Value;

/// The schema `format` that marks a group of query parameters in the
/// document poem-openapi writes.
pub const GROUP_FORMAT: &str = "x-query-parameters";

/// A constraint on a parameter, checked when it is read and stated in its
/// schema (poem-openapi's validators: `MaxLength::new(200)`,
/// `Pattern::new("^(a|b)$")`, …).
pub trait Rule<T>: Validator<T> + ValidatorMeta {}

impl<T, R: Validator<T> + ValidatorMeta> Rule<T> for R {}

/// One parameter of a group, as the document lists it.
#[derive(Debug)]
pub struct Param {
    /// Its name in the query.
    pub name: &'static str,
    /// Its description: the field's doc comment.
    pub description: Option<String>,
    /// Its schema, constraints included.
    pub schema: MetaSchemaRef,
    /// Whether a request must carry it.
    pub required: bool,
}

impl Param {
    /// Parameter `name` of type `T`, constrained by `rules`, described by
    /// the lines of its doc comment.
    pub fn new<T: Type>(
        name: &'static str,
        doc: &[&str],
        rules: &[&dyn Rule<T::RawValueType>],
    ) -> Self {
        let mut patch = MetaSchema::ANY;
        for rule in rules {
            rule.update_meta(&mut patch);
        }
        let description = doc
            .iter()
            .map(|line| line.trim())
            .collect::<Vec<_>>()
            .join("\n");
        Self {
            name,
            description: (!description.is_empty()).then_some(description),
            schema: T::schema_ref().merge(patch),
            required: T::IS_REQUIRED,
        }
    }

    /// The same parameter, taking `default` when left out.
    pub fn with_default(self, default: Option<Value>) -> Self {
        Self {
            schema: self.schema.merge(MetaSchema {
                default,
                ..MetaSchema::ANY
            }),
            required: false,
            ..self
        }
    }
}

/// A struct of query parameters read together (declared with
/// [`query_params!`](crate::query_params)).
pub trait QueryParams: Sized + Send {
    /// Registers the types of its parameters (enumerations are referenced).
    fn register(registry: &mut Registry);

    /// Its parameters, in the order the document lists them.
    fn params() -> Vec<Param>;

    /// Reads them from the query's name/value pairs.
    fn parse(query: &[(String, String)]) -> Result<Self, ParseParamError>;
}

/// Reads parameter `name` of `query` as a `T`, checked against `rules`:
/// as poem-openapi reads a `Query<T>` argument with those validators.
pub fn read<T: ParseFromParameter>(
    query: &[(String, String)],
    name: &'static str,
    rules: &[&dyn Rule<T::RawValueType>],
) -> Result<T, ParseParamError> {
    let values = query
        .iter()
        .filter(|(n, _)| n == name)
        .map(|(_, v)| v.as_str());
    let value = T::parse_from_parameters(values).map_err(|e| ParseParamError {
        name,
        reason: e.into_message(),
    })?;
    if let Some(raw) = value.as_raw_value() {
        for rule in rules {
            if !rule.check(raw) {
                return Err(ParseParamError {
                    name,
                    reason: format!("verification failed. {rule}"),
                });
            }
        }
    }
    Ok(value)
}

/// Reads parameter `name` as [`read`] does, `default` when it is left out.
pub fn read_or<T: ParseFromParameter>(
    query: &[(String, String)],
    name: &'static str,
    rules: &[&dyn Rule<T::RawValueType>],
    default: T,
) -> Result<T, ParseParamError> {
    if query.iter().any(|(n, _)| n == name) {
        read(query, name, rules)
    } else {
        Ok(default)
    }
}

/// The handler argument of a group: `query: Params<AuditQuery>`.
#[derive(Debug)]
pub struct Params<T>(pub T);

impl<'a, T: QueryParams> ApiExtractor<'a> for Params<T> {
    const TYPES: &'static [ApiExtractorType] = &[ApiExtractorType::Parameter];
    const PARAM_IS_REQUIRED: bool = false;
    type ParamType = ();
    type ParamRawType = ();

    fn register(registry: &mut Registry) {
        T::register(registry);
    }

    fn param_in() -> Option<MetaParamIn> {
        Some(MetaParamIn::Query)
    }

    fn param_schema_ref() -> Option<MetaSchemaRef> {
        let params = T::params();
        Some(MetaSchemaRef::Inline(Box::new(MetaSchema {
            format: Some(GROUP_FORMAT),
            // The document's objects do not keep their order: the names,
            // in order, are the "enum".
            enum_items: params.iter().map(|p| p.name.into()).collect(),
            required: params
                .iter()
                .filter(|p| p.required)
                .map(|p| p.name)
                .collect(),
            properties: params
                .into_iter()
                .map(|p| {
                    let holder = MetaSchema {
                        title: p.description,
                        all_of: vec![p.schema],
                        ..MetaSchema::ANY
                    };
                    (p.name, MetaSchemaRef::Inline(Box::new(holder)))
                })
                .collect(),
            ..MetaSchema::new("object")
        })))
    }

    async fn from_request(
        request: &'a Request,
        _body: &mut poem::RequestBody,
        _param_opts: ExtractParamOptions<Self::ParamType>,
    ) -> poem::Result<Self> {
        let query: Vec<(String, String)> =
            url::form_urlencoded::parse(request.uri().query().unwrap_or_default().as_bytes())
                .into_owned()
                .collect();
        T::parse(&query).map(Self).map_err(Into::into)
    }
}

/// Replaces every group in `doc`'s operations by the parameters it holds,
/// each as poem-openapi lists a `Query` argument.
pub fn expand(doc: &mut Value) {
    let Some(paths) = doc.get_mut("paths").and_then(Value::as_object_mut) else {
        return;
    };
    for op in paths.values_mut().filter_map(Value::as_object_mut) {
        for op in op.values_mut() {
            let Some(params) = op.get_mut("parameters").and_then(Value::as_array_mut) else {
                continue;
            };
            *params = std::mem::take(params)
                .into_iter()
                .flat_map(|p| match group_members(&p) {
                    Some(members) => members,
                    None => vec![p],
                })
                .collect();
        }
    }
}

/// The parameters a group parameter holds; `None` for any other.
fn group_members(param: &Value) -> Option<Vec<Value>> {
    let schema = param.get("schema")?;
    if schema.get("format").and_then(Value::as_str) != Some(GROUP_FORMAT) {
        return None;
    }
    let required: Vec<&str> = schema
        .get("required")
        .and_then(Value::as_array)
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let members = schema.get("properties")?.as_object()?;
    let order = schema.get("enum")?.as_array()?;
    Some(
        order
            .iter()
            .filter_map(|name| {
                let name = name.as_str()?;
                Some((name, members.get(name)?))
            })
            .map(|(name, holder)| {
                let mut out = serde_json::Map::new();
                out.insert("name".into(), name.into());
                let inner = holder
                    .get("allOf")
                    .and_then(|all| all.get(0))
                    .cloned()
                    .unwrap_or_default();
                out.insert("schema".into(), inner);
                out.insert("in".into(), "query".into());
                if let Some(d) = holder.get("title") {
                    out.insert("description".into(), d.clone());
                }
                out.insert("required".into(), required.contains(&name).into());
                out.insert("deprecated".into(), false.into());
                out.insert("explode".into(), true.into());
                Value::Object(out)
            })
            .collect(),
    )
}

/// Declares a struct of query parameters read as one handler argument
/// ([`Params`]): each field is a parameter of its name (or the name after
/// `as`), its doc comment the parameter's description, and the rules after
/// `where` its constraints, and a value after `=` what it is when left
/// out.
///
/// ```ignore
/// query_params! {
///     /// Filters of the audit log.
///     pub struct AuditQuery {
///         /// Rows by this actor.
///         actor: Option<String> where [MinLength::new(1), MaxLength::new(200)],
///         kind as "type": Option<String>,
///         archived: bool = false,
///         limit: PageSize,
///     }
/// }
/// ```
#[macro_export]
macro_rules! query_params {
    (
        $(#[doc = $sdoc:literal])*
        $vis:vis struct $name:ident {
            $(
                $(#[doc = $doc:literal])*
                $field:ident $(as $rename:literal)? : $ty:ty
                    $(where [$($rule:expr),* $(,)?])? $(= $default:expr)?
            ),* $(,)?
        }
    ) => {
        $(#[doc = $sdoc])*
        #[derive(Debug)]
        $vis struct $name {
            $(
                $(#[doc = $doc])*
                pub $field: $ty,
            )*
        }

        impl $crate::extract::QueryParams for $name {
            fn register(registry: &mut ::poem_openapi::registry::Registry) {
                $( <$ty as ::poem_openapi::types::Type>::register(registry); )*
            }

            fn params() -> ::std::vec::Vec<$crate::extract::Param> {
                ::std::vec![$(
                    $crate::extract::Param::new::<$ty>(
                        $crate::query_params!(@name $field $($rename)?),
                        &[$($doc),*],
                        &[$($(&$rule),*)?],
                    )
                    $(.with_default(::poem_openapi::types::ToJSON::to_json(&$default)))?
                ),*]
            }

            fn parse(
                query: &[(::std::string::String, ::std::string::String)],
            ) -> ::std::result::Result<Self, ::poem_openapi::error::ParseParamError> {
                ::std::result::Result::Ok(Self {
                    $(
                        $field: $crate::query_params!(
                            @read query, $ty,
                            $crate::query_params!(@name $field $($rename)?),
                            [$($(&$rule),*)?] $(, $default)?
                        )?,
                    )*
                })
            }
        }
    };
    (@name $field:ident $rename:literal) => { $rename };
    (@name $field:ident) => { ::std::stringify!($field) };
    (@read $query:ident, $ty:ty, $name:expr, [$($rule:expr),*]) => {
        $crate::extract::read::<$ty>($query, $name, &[$($rule),*])
    };
    (@read $query:ident, $ty:ty, $name:expr, [$($rule:expr),*], $default:expr) => {
        $crate::extract::query::read_or::<$ty>($query, $name, &[$($rule),*], $default)
    };
}

#[cfg(test)]
mod tests {
    use poem_openapi::validation::{MaxLength, Pattern};

    use super::*;
    use crate::extract::PageSize;

    crate::query_params! {
        /// Two filters and a page size.
        struct Example {
            /// Rows by this actor.
            /// Exactly.
            actor: Option<String> where [MaxLength::new(3)],
            result as "type": Option<String> where [Pattern::new("^(a|b)$")],
            archived: bool = false,
            limit: PageSize,
        }
    }

    fn pairs(q: &[(&str, &str)]) -> Vec<(String, String)> {
        q.iter()
            .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn a_group_reads_each_parameter_and_names_the_one_it_refuses() {
        let ok = Example::parse(&pairs(&[("actor", "bob"), ("type", "a")])).unwrap();
        assert_eq!(ok.actor.as_deref(), Some("bob"));
        assert_eq!(ok.result.as_deref(), Some("a"));
        assert_eq!(ok.limit, PageSize::default());
        assert!(!ok.archived);
        assert!(
            Example::parse(&pairs(&[("archived", "true")]))
                .unwrap()
                .archived
        );
        let none = Example::parse(&[]).unwrap();
        assert_eq!(none.actor, None);
        let long = Example::parse(&pairs(&[("actor", "bobby")])).unwrap_err();
        assert_eq!(long.name, "actor");
        let kind = Example::parse(&pairs(&[("type", "c")])).unwrap_err();
        assert_eq!(kind.name, "type");
        let limit = Example::parse(&pairs(&[("limit", "0")])).unwrap_err();
        assert_eq!(limit.name, "limit");
    }

    #[test]
    fn the_document_lists_each_parameter_of_a_group() {
        let group = Params::<Example>::param_schema_ref().unwrap();
        let mut doc = serde_json::json!({"paths": {"/x": {"get": {"parameters": [
            {"name": "before", "in": "query", "required": false, "schema": {"type": "string"}},
            {"name": "query", "in": "query", "required": false, "schema": group},
        ]}}}});
        expand(&mut doc);
        let params = doc["paths"]["/x"]["get"]["parameters"].as_array().unwrap();
        let names: Vec<&str> = params.iter().map(|p| p["name"].as_str().unwrap()).collect();
        assert_eq!(names, ["before", "actor", "type", "archived", "limit"]);
        assert_eq!(params[1]["description"], "Rows by this actor.\nExactly.");
        assert_eq!(params[1]["schema"]["maxLength"], 3);
        assert_eq!(params[2]["schema"]["pattern"], "^(a|b)$");
        assert_eq!(params[3]["schema"]["default"], false);
        assert_eq!(params[4]["schema"]["maximum"], 500.0);
        assert!(
            params
                .iter()
                .all(|p| p["required"] == false && p["in"] == "query")
        );
    }
}
