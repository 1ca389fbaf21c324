//! HTTP responses of the Worker and the room: JSON bodies and SPEC's error shape.

use crate::error::ApiError;
use worker::{Headers, Response, Result};

/// A JSON response with `status`.
pub fn json(status: u16, body: String) -> Result<Response> {
    let headers = Headers::new();
    headers.set("content-type", "application/json; charset=utf-8")?;
    headers.set("cache-control", "no-store")?;
    Ok(Response::ok(body)?
        .with_status(status)
        .with_headers(headers))
}

/// SPEC's error response, with `Retry-After` and `Allow` where the error has them.
pub fn error(err: &ApiError) -> Result<Response> {
    let resp = json(err.status(), err.body())?;
    if let Some(secs) = err.retry_after_secs() {
        resp.headers().set("retry-after", &secs.to_string())?;
    }
    if let Some(allow) = err.allow() {
        resp.headers().set("allow", allow)?;
    }
    Ok(resp)
}

/// A page or script with its content type.
pub fn text(content_type: &str, body: &str) -> Result<Response> {
    let headers = Headers::new();
    headers.set("content-type", content_type)?;
    headers.set("cache-control", "no-cache")?;
    Ok(Response::ok(body)?.with_headers(headers))
}
