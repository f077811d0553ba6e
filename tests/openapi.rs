//! The OpenAPI document against the route table and the running appliance: the served document
//! is the committed snapshot (`UPDATE_OPENAPI=1 cargo test --test openapi` rewrites it), every
//! route of `web::routes()` is documented and every documented operation is a route, and every
//! documented operation is served on its listener with the access it documents.

mod common;

use std::collections::BTreeSet;
use std::path::Path;

use common::{Instance, client};
use reqwest::StatusCode;
use serde_json::{Value, json};

const SNAPSHOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/snapshots/openapi.json");

/// The JSON pointers at which two documents differ (at most `limit`).
fn differences(at: &str, ours: &Value, theirs: &Value, out: &mut Vec<String>, limit: usize) {
    if out.len() >= limit {
        return;
    }
    match (ours, theirs) {
        (Value::Object(a), Value::Object(b)) => {
            let keys: BTreeSet<&String> = a.keys().chain(b.keys()).collect();
            for key in keys {
                let here = format!("{at}/{}", key.replace('~', "~0").replace('/', "~1"));
                match (a.get(key), b.get(key)) {
                    (Some(x), Some(y)) => differences(&here, x, y, out, limit),
                    (Some(_), None) => out.push(format!("{here}: only in the served document")),
                    (None, Some(_)) => out.push(format!("{here}: only in the snapshot")),
                    (None, None) => {}
                }
            }
        }
        (Value::Array(a), Value::Array(b)) if a.len() == b.len() => {
            for (i, (x, y)) in a.iter().zip(b).enumerate() {
                differences(&format!("{at}/{i}"), x, y, out, limit);
            }
        }
        _ if ours != theirs => out.push(format!("{at}: served {ours}, snapshot {theirs}")),
        _ => {}
    }
}

async fn served_document(base: &str) -> Value {
    let res = client()
        .get(format!("{base}/api/openapi.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()["content-type"], "application/json");
    res.json().await.unwrap()
}

#[tokio::test]
async fn the_served_document_is_the_committed_snapshot() {
    let inst = Instance::new("");
    let server = inst.serve();
    let served = served_document(&server.admin).await;
    assert!(served["openapi"].as_str().unwrap().starts_with("3."));
    let path = Path::new(SNAPSHOT);
    if std::env::var_os("UPDATE_OPENAPI").is_some() {
        let mut text = serde_json::to_string_pretty(&served).unwrap();
        text.push('\n');
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
        return;
    }
    let snapshot: Value = serde_json::from_str(
        &std::fs::read_to_string(path)
            .expect("tests/snapshots/openapi.json; create it with UPDATE_OPENAPI=1"),
    )
    .expect("the snapshot is JSON");
    let mut found = Vec::new();
    differences("", &served, &snapshot, &mut found, 30);
    assert!(
        found.is_empty(),
        "the served OpenAPI document differs from tests/snapshots/openapi.json at:\n  {}\n\
         If the change is meant, rewrite the snapshot with `UPDATE_OPENAPI=1 cargo test --test \
         openapi` and commit it with the change.",
        found.join("\n  ")
    );
}

/// (method, path) of every operation in a document.
fn documented(doc: &Value) -> BTreeSet<(String, String)> {
    let mut ops = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            if method != "parameters" {
                ops.insert((method.to_uppercase(), path.clone()));
            }
        }
    }
    ops
}

#[tokio::test]
async fn every_route_is_documented_and_every_operation_is_a_route() {
    let inst = Instance::new("");
    let server = inst.serve();
    let doc = served_document(&server.admin).await;
    let routes: BTreeSet<(String, String)> = lark_oncall::web::routes()
        .flat_map(|r| r.methods.iter().map(|m| (m.to_string(), r.path.to_string())))
        .collect();
    let ops = documented(&doc);
    let undocumented: Vec<_> = routes.difference(&ops).collect();
    let unrouted: Vec<_> = ops.difference(&routes).collect();
    assert!(
        undocumented.is_empty(),
        "routes missing from the document: {undocumented:?}"
    );
    assert!(
        unrouted.is_empty(),
        "documented operations not in the route table: {unrouted:?}"
    );
    for path in ["/healthz", "/readyz", "/lark/{integration_id}/callback"] {
        assert!(ops.iter().any(|(_, p)| p == path), "{path} is not documented");
    }
    // Each error code the catalog holds is in the document, with its status and meaning.
    let codes = doc["components"]["schemas"]["ErrorCode"]["enum"]
        .as_array()
        .unwrap();
    assert_eq!(codes.len(), lark_oncall::web::error::CATALOG.len());
    for spec in lark_oncall::web::error::CATALOG {
        assert!(codes.contains(&json!(spec.name)), "{}", spec.name);
    }
}

/// A request to every documented operation, on the listener it names: the admin API and the
/// alert receivers refuse without credentials (401), the Lark callback refuses an unsigned post
/// (401), and nothing answers "no such route" or 405.
#[tokio::test]
async fn every_documented_operation_is_served_with_its_access() {
    let inst = Instance::new("admin_listen = \"127.0.0.1:0\"");
    let server = inst.serve();
    assert_ne!(server.base, server.admin);
    let http = client();
    let doc = served_document(&server.admin).await;
    let mut checked = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let concrete = path
                .split('/')
                .map(|seg| match seg {
                    "{file}" => "index.html",
                    s if s.starts_with('{') => "doc-check",
                    s => s,
                })
                .collect::<Vec<_>>()
                .join("/");
            let bases = match op["x-listener"].as_str().unwrap() {
                "public" => vec![&server.base],
                "admin" => vec![&server.admin],
                "both" => vec![&server.base, &server.admin],
                other => panic!("{method} {path}: listener {other}"),
            };
            let schemes: Vec<&str> = op["security"]
                .as_array()
                .unwrap()
                .iter()
                .flat_map(|s| s.as_object().unwrap().keys().map(String::as_str))
                .collect();
            for base in bases {
                let res = http
                    .request(
                        method.to_uppercase().parse().unwrap(),
                        format!("{base}{concrete}"),
                    )
                    .json(&json!({}))
                    .send()
                    .await
                    .unwrap();
                let status = res.status();
                let body = res.text().await.unwrap();
                let at = format!("{method} {base}{path}: {status} {body}");
                assert_ne!(status, StatusCode::METHOD_NOT_ALLOWED, "{at}");
                assert!(!body.contains("no such route"), "{at}");
                if schemes.contains(&"admin_session")
                    || schemes.contains(&"integration_key")
                    || schemes.contains(&"lark_signature")
                {
                    assert_eq!(status, StatusCode::UNAUTHORIZED, "{at}");
                }
                checked += 1;
            }
        }
    }
    assert!(checked > 80, "{checked} operations checked");
}

/// A route of one listener is not served on the other.
#[tokio::test]
async fn each_listener_serves_only_its_own_routes() {
    let inst = Instance::new("admin_listen = \"127.0.0.1:0\"");
    let server = inst.serve();
    let http = client();
    let on_public = http
        .get(format!("{}/api/v1/version", server.base))
        .send()
        .await
        .unwrap();
    assert_eq!(on_public.status(), StatusCode::NOT_FOUND);
    let on_admin = http
        .post(format!("{}/lark/doc-check/callback", server.admin))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert!(
        matches!(
            on_admin.status(),
            StatusCode::NOT_FOUND | StatusCode::METHOD_NOT_ALLOWED
        ),
        "{}",
        on_admin.status()
    );
}

/// Where a body's schema is any JSON object by design, and why; every other object in a request
/// or an answer names its properties.
const FREE_JSON: &[(&str, &str)] = &[
    (
        "MessageInput.card",
        "a Lark card's JSON, whose shape Lark's card format sets and Lark checks",
    ),
    (
        "EventPost.event",
        "a Lark event's own fields, whose shape its event type sets",
    ),
    (
        "CardRequestV1.action",
        "the pressed component's value and state, whatever the card bound to it",
    ),
    ("CardReplacement.data", "a Lark card's JSON, as MessageInput.card"),
];

/// The places (`Component.field`, or the operation for an inline schema) where a schema is an
/// object that says nothing of its contents, following `$ref`s into the components.
fn bare_objects(
    doc: &Value,
    schema: &Value,
    at: &str,
    seen: &mut BTreeSet<String>,
    found: &mut BTreeSet<String>,
) {
    if let Some(target) = schema["$ref"].as_str() {
        let name = target.rsplit('/').next().unwrap();
        if seen.insert(name.to_string()) {
            let component = &doc["components"]["schemas"][name];
            assert!(!component.is_null(), "{at}: no component {name}");
            bare_objects(doc, component, name, seen, found);
        }
        return;
    }
    let says_object = match &schema["type"] {
        Value::Null => true,
        Value::String(t) => t == "object",
        Value::Array(types) => types.iter().any(|t| t == "object"),
        _ => false,
    };
    let described = [
        "properties",
        "additionalProperties",
        "oneOf",
        "anyOf",
        "allOf",
        "items",
        "enum",
        "const",
    ]
    .iter()
    .any(|key| schema.get(key).is_some());
    if says_object && !described {
        found.insert(at.to_string());
    }
    if let Some(properties) = schema["properties"].as_object() {
        for (name, property) in properties {
            bare_objects(doc, property, &format!("{at}.{name}"), seen, found);
        }
    }
    for key in ["items", "additionalProperties"] {
        if schema[key].is_object() {
            bare_objects(doc, &schema[key], at, seen, found);
        }
    }
    for key in ["oneOf", "anyOf", "allOf"] {
        for alternative in schema[key].as_array().into_iter().flatten() {
            bare_objects(doc, alternative, at, seen, found);
        }
    }
}

#[test]
fn every_body_names_its_fields() {
    let doc: Value = serde_json::from_str(&lark_oncall::web::openapi::document_json()).unwrap();
    let mut seen = BTreeSet::new();
    let mut found = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let at = format!("{} {path}", method.to_uppercase());
            let mut bodies = vec![(format!("{at} request"), &op["requestBody"])];
            for (status, answer) in op["responses"].as_object().unwrap() {
                bodies.push((format!("{at} {status}"), answer));
            }
            for (here, body) in bodies {
                for content in body["content"].as_object().into_iter().flatten().map(|(_, c)| c) {
                    if let Some(schema) = content.get("schema") {
                        bare_objects(&doc, schema, &here, &mut seen, &mut found);
                    }
                }
            }
        }
    }
    let allowed: BTreeSet<String> = FREE_JSON.iter().map(|(at, _)| at.to_string()).collect();
    let untyped: Vec<_> = found.difference(&allowed).collect();
    assert!(
        untyped.is_empty(),
        "objects with no properties in a request or an answer (give them a type, or add them to \
         FREE_JSON with the reason): {untyped:?}"
    );
    let stale: Vec<_> = allowed.difference(&found).collect();
    assert!(
        stale.is_empty(),
        "FREE_JSON names places that are typed now: {stale:?}"
    );
}

/// The `$ref`s of a document that name no component.
fn dangling(doc: &Value, value: &Value, out: &mut BTreeSet<String>) {
    match value {
        Value::Object(map) => {
            if let Some(Value::String(target)) = map.get("$ref") {
                let pointer = target.trim_start_matches('#');
                if doc.pointer(pointer).is_none() {
                    out.insert(target.clone());
                }
            }
            map.values().for_each(|v| dangling(doc, v, out));
        }
        Value::Array(items) => items.iter().for_each(|v| dangling(doc, v, out)),
        _ => {}
    }
}

#[test]
fn every_reference_names_a_component() {
    let doc: Value = serde_json::from_str(&lark_oncall::web::openapi::document_json()).unwrap();
    let mut found = BTreeSet::new();
    dangling(&doc, &doc, &mut found);
    assert!(found.is_empty(), "references to no component: {found:?}");
}
