//! HTTP responses: [`Answer`]s and pages as the runtime's `Response`.

use crate::answer::Answer;
use js_sys::{Object, Reflect};
use wasm_bindgen::{JsCast, JsValue};
use web_sys::{Headers, Response, ResponseInit};

const JSON: &str = "application/json; charset=utf-8";

/// A plain object with these string properties (headers for a `Response` init).
fn object(entries: &[(&str, &str)]) -> Object {
    let o = Object::new();
    for (k, v) in entries {
        let _ = Reflect::set(&o, &JsValue::from_str(k), &JsValue::from_str(v));
    }
    o
}

fn init(status: u16, headers: &JsValue) -> ResponseInit {
    let init = ResponseInit::new();
    init.set_status(status);
    init.set_headers(headers);
    init
}

thread_local! {
    /// The init of every plain `200` JSON answer, built once per isolate (a `Response` copies
    /// its init, so one serves them all): the publish path then makes one runtime call for it.
    static OK_JSON: ResponseInit = init(200, &object(&[("content-type", JSON), ("cache-control", "no-store")]));
}

/// An answer as a JSON response, with `Retry-After` and `Allow` where it has them.
pub fn answer(a: &Answer) -> Response {
    let built = if a.status == 200 && a.retry_after.is_none() {
        OK_JSON.with(|i| Response::new_with_opt_str_and_init(Some(&a.body), i))
    } else {
        let headers = object(&[("content-type", JSON), ("cache-control", "no-store")]);
        let set = |k: &str, v: &str| Reflect::set(&headers, &k.into(), &v.into());
        let retry = a.retry_after.map(|s| s.to_string());
        for (k, v) in retry
            .as_deref()
            .map(|s| ("retry-after", s))
            .into_iter()
            .chain(a.allow.map(|v| ("allow", v)))
        {
            let _ = set(k, v);
        }
        Response::new_with_opt_str_and_init(Some(&a.body), &init(a.status, &headers))
    };
    built.unwrap_or_else(|_| fallback())
}

/// A page or script with its content type.
pub fn text(content_type: &str, body: &str) -> Response {
    let headers = object(&[
        ("content-type", content_type),
        ("cache-control", "no-cache"),
    ]);
    Response::new_with_opt_str_and_init(Some(body), &init(200, &headers))
        .unwrap_or_else(|_| fallback())
}

/// An empty `204` with these headers.
pub fn no_content(headers: &[(&str, &str)]) -> Response {
    Response::new_with_opt_str_and_init(None, &init(204, &object(headers)))
        .unwrap_or_else(|_| fallback())
}

/// `resp` readable from the allowed `origin`. A Durable Object's response has immutable
/// headers, so they are copied into a new response.
pub fn with_cors(resp: Response, origin: &str) -> Response {
    let copy = || -> Result<Response, JsValue> {
        let headers = Headers::new_with_headers(&resp.headers())?;
        for (k, v) in [
            ("access-control-allow-origin", origin),
            ("access-control-allow-methods", "GET, HEAD, OPTIONS"),
            ("access-control-allow-headers", "authorization"),
            ("access-control-max-age", "600"),
            ("vary", "Origin"),
        ] {
            headers.set(k, v)?;
        }
        let init = ResponseInit::new();
        init.set_status(resp.status());
        init.set_headers(&headers);
        Response::new_with_opt_readable_stream_and_init(resp.body().as_ref(), &init)
    };
    copy().unwrap_or(resp)
}

/// A bare `500`, for when even building a response failed (it does not, in practice).
fn fallback() -> Response {
    let init = ResponseInit::new();
    init.set_status(500);
    Response::new_with_opt_str_and_init(None, &init)
        .or_else(|_| Response::new())
        .unwrap_or_else(|_| JsValue::NULL.unchecked_into())
}
