//! The OpenAPI document, generated from the route table (`web::routes()`): one operation per
//! route and method with its path parameters, body, answer, who may call it and the error
//! catalog. Served at `GET /api/openapi.json`; `tests/openapi.rs` compares it with the committed
//! snapshot `tests/snapshots/openapi.json` (`UPDATE_OPENAPI=1` rewrites it).

use std::collections::BTreeMap;
use std::sync::OnceLock;

use utoipa::openapi::path::{HttpMethod, OperationBuilder, ParameterBuilder, ParameterIn};
use utoipa::openapi::request_body::RequestBodyBuilder;
use utoipa::openapi::security::{
    ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme,
};
use utoipa::openapi::{
    ComponentsBuilder, ContentBuilder, InfoBuilder, ObjectBuilder, OpenApi, OpenApiBuilder, Paths, Ref,
    RefOr, Required, ResponseBuilder, Schema, Type,
};

use super::error::CATALOG;
use super::route::{Access, Content, Listener, RouteSpec};

const ERROR_RESPONSE: &str = "Error";

fn http_method(method: &str) -> HttpMethod {
    match method {
        "GET" => HttpMethod::Get,
        "HEAD" => HttpMethod::Head,
        "POST" => HttpMethod::Post,
        "PUT" => HttpMethod::Put,
        "PATCH" => HttpMethod::Patch,
        "DELETE" => HttpMethod::Delete,
        other => panic!("the route table has no method {other}"),
    }
}

/// `{name}` segments of a path, in order.
pub fn path_params(path: &str) -> impl Iterator<Item = &str> {
    path.split('/')
        .filter_map(|seg| seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
}

/// The alternatives that satisfy an access rule; public routes say `security: []`.
fn security(access: Access) -> Vec<SecurityRequirement> {
    let one = |name: &str| SecurityRequirement::new::<&str, [&str; 0], &str>(name, []);
    match access {
        Access::Public => vec![],
        Access::Admin => vec![one("admin_session"), one("api_token")],
        Access::IntegrationKey => vec![one("integration_key"), one("integration_key_bearer")],
        Access::LarkSignature => vec![one("lark_signature")],
        Access::HomepageSession => vec![one("homepage_session")],
    }
}

fn content(
    kind: Content,
    schemas: &mut Vec<(String, RefOr<Schema>)>,
) -> Option<(&'static str, utoipa::openapi::Content)> {
    let plain = |mime| Some((mime, ContentBuilder::new().build()));
    match kind {
        Content::Empty | Content::Redirect => None,
        Content::Json(schema) => Some((
            "application/json",
            ContentBuilder::new().schema(Some(schema(schemas))).build(),
        )),
        Content::Form => plain("application/x-www-form-urlencoded"),
        Content::Html => plain("text/html"),
        Content::Other(mime) => plain(mime),
        Content::Error => Some((
            "application/json",
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("Error")))
                .build(),
        )),
    }
}

fn status_text(status: u16) -> &'static str {
    warp::http::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("Answer")
}

fn operation(
    route: &RouteSpec,
    method: &str,
    schemas: &mut Vec<(String, RefOr<Schema>)>,
) -> utoipa::openapi::path::Operation {
    let id = if route.methods.len() > 1 {
        format!("{}_{}", route.handler, method.to_ascii_lowercase())
    } else {
        route.handler.to_string()
    };
    let mut op = OperationBuilder::new()
        .operation_id(Some(id))
        .summary(Some(route.summary.trim()))
        .tag(route.resource())
        .securities(Some(security(route.access)));
    for name in path_params(route.path) {
        op = op.parameter(
            ParameterBuilder::new()
                .name(name)
                .parameter_in(ParameterIn::Path)
                .required(Required::True)
                .schema(Some(ObjectBuilder::new().schema_type(Type::String))),
        );
    }
    if let Some(params) = route.query {
        op = op.parameters(Some(params()));
    }
    if let Some((mime, body)) = content(route.request, schemas) {
        op = op.request_body(Some(
            RequestBodyBuilder::new()
                .content(mime, body)
                .required(Some(Required::True))
                .build(),
        ));
    }
    for (status, body) in std::iter::once((route.status, route.response)).chain(route.also.iter().copied()) {
        let mut answer = ResponseBuilder::new().description(status_text(status));
        if let Some((mime, body)) = content(body, schemas) {
            answer = answer.content(mime, body);
        }
        op = op.response(status.to_string(), answer.build());
    }
    let listener = match route.listener {
        Listener::Public => "public",
        Listener::Admin => "admin",
        Listener::Both => "both",
    };
    op.response("default", Ref::from_response_name(ERROR_RESPONSE))
        .extensions(Some(
            utoipa::openapi::extensions::ExtensionsBuilder::new()
                .add("x-listener", listener)
                .build(),
        ))
        .build()
}

/// `ErrorCode`: every code of the catalog, with its status and meaning.
fn error_code_schema() -> Schema {
    let described: Vec<String> = CATALOG
        .iter()
        .map(|e| format!("- `{}` ({}): {}", e.name, e.status.as_u16(), e.meaning.trim()))
        .collect();
    ObjectBuilder::new()
        .schema_type(Type::String)
        .enum_values(Some(CATALOG.iter().map(|e| e.name)))
        .description(Some(format!(
            "The stable code of an error, with its HTTP status:\n\n{}",
            described.join("\n")
        )))
        .into()
}

fn error_body_schema() -> Schema {
    let inner = ObjectBuilder::new()
        .property("code", Ref::from_schema_name("ErrorCode"))
        .required("code")
        .property("message", ObjectBuilder::new().schema_type(Type::String))
        .required("message");
    ObjectBuilder::new()
        .property("error", inner)
        .required("error")
        .description(Some(
            "Every error answer: a code from the catalog and a message naming the field.",
        ))
        .into()
}

fn security_schemes() -> Vec<(&'static str, SecurityScheme)> {
    let described =
        |name: &str, text: &str| ApiKeyValue::with_description(name.to_string(), text.to_string());
    vec![
        (
            "admin_session",
            SecurityScheme::ApiKey(ApiKey::Cookie(described(
                super::route::SESSION_COOKIE,
                "The admin UI's session cookie (POST /api/v1/session); state-changing requests also \
                 send the session's CSRF token in x-csrf-token, from the same origin.",
            ))),
        ),
        (
            "api_token",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("An API token (admin, read or metrics scope)."))
                    .build(),
            ),
        ),
        (
            "integration_key",
            SecurityScheme::ApiKey(ApiKey::Query(described(
                "integration_key",
                "An alert source's integration key.",
            ))),
        ),
        (
            "integration_key_bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("An alert source's integration key as a bearer token."))
                    .build(),
            ),
        ),
        (
            "lark_signature",
            SecurityScheme::ApiKey(ApiKey::Header(described(
                "X-Lark-Signature",
                "Lark's signature over the timestamp, nonce, Encrypt Key and body (with \
                 X-Lark-Request-Timestamp and X-Lark-Request-Nonce), or the verification token in \
                 the body.",
            ))),
        ),
        (
            "homepage_session",
            SecurityScheme::ApiKey(ApiKey::Cookie(described(
                crate::homepage::COOKIE,
                "The homepage's session cookie, opened by the OAuth sign-in in the Lark client.",
            ))),
        ),
    ]
}

/// The document of every route.
pub fn document() -> OpenApi {
    let mut schemas = Vec::new();
    let mut paths = Paths::new();
    for route in super::routes() {
        for method in route.methods {
            let op = operation(route, method, &mut schemas);
            paths.add_path_operation(route.path, vec![http_method(method)], op);
        }
    }
    let mut components = ComponentsBuilder::new()
        .schema("ErrorCode", error_code_schema())
        .schema("Error", error_body_schema())
        .response(
            ERROR_RESPONSE,
            ResponseBuilder::new()
                .description("An error; `code` is one of `ErrorCode`.")
                .content(
                    "application/json",
                    ContentBuilder::new()
                        .schema(Some(Ref::from_schema_name("Error")))
                        .build(),
                )
                .build(),
        );
    let mut named: BTreeMap<String, RefOr<Schema>> = BTreeMap::new();
    for (name, schema) in schemas {
        if let Some(seen) = named.get(&name) {
            // Two types of one name would silently share a component.
            assert!(seen == &schema, "two different schemas are named {name}");
        }
        named.insert(name, schema);
    }
    for (name, schema) in named {
        components = components.schema(name, schema);
    }
    for (name, scheme) in security_schemes() {
        components = components.security_scheme(name, scheme);
    }
    OpenApiBuilder::new()
        .info(
            InfoBuilder::new()
                .title("lark-oncall")
                .version(env!("CARGO_PKG_VERSION"))
                .description(Some(
                    "The admin API (admin listener), and the paths Lark, people in the Lark client \
                     and calendar apps reach on the public listener (`x-listener`). Generated from \
                     the route table.",
                ))
                .build(),
        )
        .paths(paths)
        .components(Some(components.build()))
        .build()
}

/// The document as served, built once.
pub fn document_json() -> String {
    static JSON: OnceLock<String> = OnceLock::new();
    JSON.get_or_init(|| document().to_pretty_json().expect("the document serializes"))
        .clone()
}
