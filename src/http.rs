//! HTTP responses of the Worker and the room: JSON bodies and SPEC's error shape.

use crate::bindings::{object, Js, Socket};
use crate::error::ApiError;
use js_sys::{Object, Reflect};
use wasm_bindgen::{JsCast, JsValue};
use web_sys::{Headers, Response, ResponseInit};

const JSON: &str = "application/json; charset=utf-8";

thread_local! {
    /// The init of every `200` JSON answer, built once per isolate (a `Response` copies its
    /// init, so one can serve them all): the publish path then makes one runtime call for it.
    static OK_JSON: ResponseInit = init(200, &json_headers());
}

fn json_headers() -> Object {
    object(&[("content-type", JSON), ("cache-control", "no-store")])
}

fn init(status: u16, headers: &JsValue) -> ResponseInit {
    let init = ResponseInit::new();
    init.set_status(status);
    init.set_headers(headers);
    init
}

/// A JSON response with `status`.
pub fn json(status: u16, body: &str) -> Js<Response> {
    if status == 200 {
        return OK_JSON.with(|i| Response::new_with_opt_str_and_init(Some(body), i));
    }
    Response::new_with_opt_str_and_init(Some(body), &init(status, &json_headers()))
}

/// SPEC's error response, with `Retry-After` and `Allow` where the error has them.
pub fn error(err: &ApiError) -> Js<Response> {
    let headers = json_headers();
    let set = |k: &str, v: &str| Reflect::set(&headers, &k.into(), &v.into());
    if let Some(secs) = err.retry_after_secs() {
        set("retry-after", &secs.to_string())?;
    }
    if let Some(allow) = err.allow() {
        set("allow", allow)?;
    }
    Response::new_with_opt_str_and_init(Some(&err.body()), &init(err.status(), &headers))
}

/// A page or script with its content type.
pub fn text(content_type: &str, body: &str) -> Js<Response> {
    let headers = object(&[
        ("content-type", content_type),
        ("cache-control", "no-cache"),
    ]);
    Response::new_with_opt_str_and_init(Some(body), &init(200, &headers))
}

/// An empty `204` with these headers.
pub fn no_content(headers: &[(&str, &str)]) -> Js<Response> {
    Response::new_with_opt_str_and_init(None, &init(204, &object(headers)))
}

/// The `101` answer to a WebSocket upgrade, handing the client end to the runtime.
pub fn upgrade(client: &Socket) -> Js<Response> {
    let init = Object::new();
    Reflect::set(&init, &"status".into(), &101.into())?;
    Reflect::set(&init, &"webSocket".into(), client)?;
    Response::new_with_opt_str_and_init(None, init.unchecked_ref())
}

/// `resp` with `extra` headers added. A Durable Object's response has immutable headers, so
/// they are copied into a new response.
pub fn with_headers(resp: Response, extra: &[(&'static str, String)]) -> Js<Response> {
    let headers = Headers::new_with_headers(&resp.headers())?;
    for (k, v) in extra {
        headers.set(k, v)?;
    }
    let init = ResponseInit::new();
    init.set_status(resp.status());
    init.set_headers(&headers);
    Response::new_with_opt_readable_stream_and_init(resp.body().as_ref(), &init)
}
