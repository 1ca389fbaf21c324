//! The Workers runtime APIs roomcast calls, bound directly.
//!
//! workers-rs converts every request into its own `Request` (parsing the URL with `url::Url`,
//! twice per publish), reads headers and SQL rows through serde-wasm-bindgen and wraps every
//! socket event in a future. On a publish that was about 190 calls across the wasm boundary,
//! against about 15 for a JavaScript Durable Object doing the same work (docs/benchmarks.md).
//! These bindings call the runtime the way JavaScript would: one call per runtime operation,
//! strings copied once.

use js_sys::{Array, JsString, Object, Promise, Reflect};
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;

/// A runtime call's failure (a JavaScript exception).
pub type Js<T> = Result<T, JsValue>;

#[wasm_bindgen(
    inline_js = "export function settle(p, f) { return p.then((v) => f(true, v), (e) => f(false, e)); }"
)]
extern "C" {
    fn settle(promise: &Promise, f: &JsValue) -> Promise;
}

#[wasm_bindgen]
extern "C" {
    /// A Durable Object's `ctx`.
    #[derive(Clone)]
    pub type DurableObjectState;
    #[wasm_bindgen(method, getter)]
    pub fn storage(this: &DurableObjectState) -> Storage;
    #[wasm_bindgen(method, catch, js_name = acceptWebSocket)]
    pub fn accept_web_socket(this: &DurableObjectState, ws: &Socket, tags: Vec<JsValue>) -> Js<()>;
    #[wasm_bindgen(method, js_name = getWebSockets)]
    pub fn get_web_sockets(this: &DurableObjectState) -> Vec<Socket>;
    #[wasm_bindgen(method, js_name = getTags)]
    pub fn get_tags(this: &DurableObjectState, ws: &Socket) -> Vec<JsString>;
    #[wasm_bindgen(method, catch, js_name = setWebSocketAutoResponse)]
    pub fn set_web_socket_auto_response(this: &DurableObjectState, pair: &JsValue) -> Js<()>;

    /// `ctx.storage`.
    pub type Storage;
    #[wasm_bindgen(method, getter)]
    pub fn sql(this: &Storage) -> Sql;
    #[wasm_bindgen(method, catch, js_name = getAlarm)]
    pub fn get_alarm(this: &Storage) -> Js<Promise>;
    /// `at`: Unix ms (a number is an absolute time here, unlike workers-rs's `i64`).
    #[wasm_bindgen(method, catch, js_name = setAlarm)]
    pub fn set_alarm(this: &Storage, at: f64) -> Js<Promise>;

    /// `ctx.storage.sql`.
    #[derive(Clone)]
    pub type Sql;
    #[wasm_bindgen(method, catch, variadic, js_name = exec)]
    pub fn exec(this: &Sql, query: &JsString, bindings: Vec<JsValue>) -> Js<Cursor>;

    /// The cursor `exec` returns.
    pub type Cursor;
    #[wasm_bindgen(method)]
    pub fn raw(this: &Cursor) -> js_sys::Iterator;
    #[wasm_bindgen(method, getter, js_name = rowsWritten)]
    pub fn rows_written(this: &Cursor) -> f64;

    /// A server-side WebSocket (hibernatable once accepted through the state).
    #[derive(Clone)]
    pub type Socket;
    #[wasm_bindgen(method, catch, js_name = send)]
    pub fn send(this: &Socket, text: &JsString) -> Js<()>;
    #[wasm_bindgen(method, catch, js_name = send)]
    pub fn send_str(this: &Socket, text: &str) -> Js<()>;
    #[wasm_bindgen(method, catch)]
    pub fn close(this: &Socket, code: u16, reason: &str) -> Js<()>;
    #[wasm_bindgen(method, catch, js_name = serializeAttachment)]
    pub fn serialize_attachment(this: &Socket, value: &str) -> Js<()>;
    #[wasm_bindgen(method, js_name = deserializeAttachment)]
    pub fn deserialize_attachment(this: &Socket) -> JsValue;

    /// `new WebSocketPair()`: `[client, server]`.
    type WebSocketPair;
    #[wasm_bindgen(constructor, catch)]
    fn new() -> Js<WebSocketPair>;

    /// `new WebSocketRequestResponsePair(request, response)`.
    type WebSocketRequestResponsePair;
    #[wasm_bindgen(constructor, catch)]
    fn new(request: &str, response: &str) -> Js<WebSocketRequestResponsePair>;

    /// The `NotificationRoom` namespace binding.
    pub type Namespace;
    #[wasm_bindgen(method, catch, js_name = getByName)]
    pub fn get_by_name(this: &Namespace, name: &str) -> Js<Stub>;

    /// A room's stub.
    pub type Stub;
    #[wasm_bindgen(method, js_name = fetch)]
    pub fn fetch(this: &Stub, url: &str, init: &web_sys::RequestInit) -> Promise;

    #[wasm_bindgen(js_name = setTimeout)]
    fn set_timeout(callback: &js_sys::Function, ms: i32);
}

/// `(client, server)` ends of a new WebSocket pair.
pub fn web_socket_pair() -> Js<(Socket, Socket)> {
    let pair: JsValue = WebSocketPair::new()?.into();
    let end = |i| Reflect::get_u32(&pair, i).map(JsCast::unchecked_into::<Socket>);
    Ok((end(0)?, end(1)?))
}

/// Makes the runtime answer the text frame `request` with `response` without waking the room.
pub fn auto_response(state: &DurableObjectState, request: &str, response: &str) -> Js<()> {
    state
        .set_web_socket_auto_response(&WebSocketRequestResponsePair::new(request, response)?.into())
}

/// Runs `f` on a later macrotask (`setTimeout(0)`): other events run first.
pub fn on_next_macrotask(f: impl FnOnce() + 'static) {
    set_timeout(Closure::once_into_js(f).unchecked_ref(), 0);
}

/// `promise.then(f, f)`: runs `f` with the outcome once `promise` settles; the returned promise
/// settles with what `f` returns (a value, a promise to follow, or an exception for `Err`).
///
/// This is how the glue waits, instead of Rust futures: wasm-bindgen-futures schedules every
/// poll with `queueMicrotask`, which in workerd costs tens of microseconds per await, more
/// than a publish's own work (docs/benchmarks.md).
pub fn on_settle(
    promise: &Promise,
    f: impl FnOnce(Js<JsValue>) -> Js<JsValue> + 'static,
) -> Promise {
    let f = Closure::once_into_js(move |ok: bool, v: JsValue| f(if ok { Ok(v) } else { Err(v) }));
    settle(promise, &f)
}

/// `env[name]` as text (vars may be strings, numbers or booleans in `wrangler.toml`).
pub fn env_text(env: &JsValue, name: &str) -> Option<String> {
    let v = Reflect::get(env, &JsValue::from_str(name)).ok()?;
    if let Some(s) = v.as_string() {
        Some(s)
    } else if let Some(n) = v.as_f64() {
        Some(format!("{n}"))
    } else {
        v.as_bool().map(|b| b.to_string())
    }
}

/// `env[name]` as a Durable Object namespace.
pub fn namespace(env: &JsValue, name: &str) -> Js<Namespace> {
    let v = Reflect::get(env, &JsValue::from_str(name))?;
    if v.is_undefined() {
        return Err(JsValue::from_str(&format!("no binding {name}")));
    }
    Ok(v.unchecked_into())
}

/// The rows of a cursor, each as an array of column values in `SELECT` order.
pub fn rows(cursor: &Cursor) -> Vec<Array> {
    let all = Array::from(&cursor.raw());
    all.iter().map(JsCast::unchecked_into).collect()
}

/// A column as an integer (SQLite integers arrive as numbers; NULL as `None`).
pub fn int(row: &Array, i: u32) -> Option<i64> {
    row.get(i).as_f64().map(|f| f as i64)
}

/// A column as text (NULL as `None`).
pub fn text(row: &Array, i: u32) -> Option<String> {
    row.get(i).as_string()
}

/// A message for logs: a JavaScript error's `message`, or the value as text.
pub fn describe(err: &JsValue) -> String {
    if let Some(e) = err.dyn_ref::<js_sys::Error>() {
        return String::from(e.message());
    }
    err.as_string().unwrap_or_else(|| format!("{err:?}"))
}

/// A plain object with these string properties (headers for a `Response` init).
pub fn object(entries: &[(&str, &str)]) -> Object {
    let o = Object::new();
    for (k, v) in entries {
        let _ = Reflect::set(&o, &JsValue::from_str(k), &JsValue::from_str(v));
    }
    o
}
