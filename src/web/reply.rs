//! Typed answers shared by the resources: a list as `{"items": [...]}` and a 201 with the
//! created thing, so the OpenAPI document can name their shapes.

use serde::Serialize;
use utoipa::openapi::{ArrayBuilder, ObjectBuilder, Ref, RefOr, Schema};
use utoipa::{PartialSchema, ToSchema};
use warp::Reply;
use warp::http::StatusCode;
use warp::reply::Response;

/// A list of items: `{"items": [...]}`.
#[derive(Debug, Serialize)]
pub struct Page<T> {
    pub items: Vec<T>,
}

/// By hand: the derived `schemas` of a generic type adds what `T` refers to but not `T` itself,
/// which left `Page<KnownChat>`'s items a reference to nothing.
impl<T: ToSchema> PartialSchema for Page<T> {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .description(Some("A list of items: `{\"items\": [...]}`."))
            .property(
                "items",
                ArrayBuilder::new().items(Ref::from_schema_name(T::name())),
            )
            .required("items")
            .into()
    }
}

impl<T: ToSchema> ToSchema for Page<T> {
    fn schemas(schemas: &mut Vec<(String, RefOr<Schema>)>) {
        schemas.push((T::name().into_owned(), T::schema()));
        T::schemas(schemas);
    }
}

impl<T> Page<T> {
    pub fn new(items: Vec<T>) -> Self {
        Page { items }
    }
}

impl<T: Serialize + Send> Reply for Page<T> {
    fn into_response(self) -> Response {
        warp::reply::json(&self).into_response()
    }
}

/// `201 Created` with the created thing as JSON.
pub struct Created<T>(pub T);

impl<T: Serialize + Send> Reply for Created<T> {
    fn into_response(self) -> Response {
        warp::reply::with_status(warp::reply::json(&self.0), StatusCode::CREATED).into_response()
    }
}

/// `200 OK` with a JSON body.
pub struct Json<T>(pub T);

impl<T: Serialize + Send> Reply for Json<T> {
    fn into_response(self) -> Response {
        warp::reply::json(&self.0).into_response()
    }
}
