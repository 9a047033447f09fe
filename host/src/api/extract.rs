//! Request extractors whose rejections are `ApiError`s: JSON bodies, raw bodies, query strings
//! and ids in paths, each failing with a 4xx that says what to fix.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;
use uuid::Uuid;

use super::error::ApiError;

/// The raw body, within the route's body limit (over it: 413).
#[derive(Debug, Clone)]
pub struct Body(pub Bytes);

impl<S: Send + Sync> FromRequest<S> for Body {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        match Bytes::from_request(req, state).await {
            Ok(bytes) => Ok(Self(bytes)),
            Err(rejection) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => Err(
                ApiError::too_large("the request body is larger than this endpoint accepts"),
            ),
            Err(rejection) => Err(ApiError::bad_request(
                "invalid_body",
                format!("cannot read the request body: {}", rejection.body_text()),
            )),
        }
    }
}

/// A JSON body (any content type): malformed JSON is 400 `invalid_json`, JSON of the wrong
/// shape 400 `invalid_request`, both with serde's message.
#[derive(Debug, Clone)]
pub struct Json<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for Json<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let Body(bytes) = Body::from_request(req, state).await?;
        parse_json(&bytes).map(Self)
    }
}

/// Parses a JSON request body.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(bytes).map_err(|e| {
        if e.is_data() {
            ApiError::bad_request("invalid_request", format!("invalid request body: {e}"))
        } else {
            ApiError::bad_request("invalid_json", format!("the body is not valid JSON: {e}"))
        }
    })
}

/// A query string: a bad one is 400 `invalid_query`.
#[derive(Debug, Clone)]
pub struct Query<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for Query<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(query)) => Ok(Self(query)),
            Err(rejection) => Err(ApiError::bad_request(
                "invalid_query",
                rejection.body_text().to_lowercase(),
            )),
        }
    }
}

/// Path parameters: a segment that cannot be read (bad percent-encoding, say) is 400
/// `invalid_path`, in JSON like every other error.
#[derive(Debug, Clone)]
pub struct Path<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for Path<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(path)) => Ok(Self(path)),
            Err(rejection) => Err(ApiError::bad_request("invalid_path", rejection.body_text())),
        }
    }
}

/// Parses the id of a `what` from a path; a malformed id names nothing, so it is a 404.
pub fn parse_id(what: &str, id: &str) -> Result<Uuid, ApiError> {
    id.parse()
        .map_err(|_| ApiError::not_found(format!("no {what} `{id}`")))
}
