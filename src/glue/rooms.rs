//! Calling a room's Durable Objects: the Worker calls a room's coordinator; a coordinator and its
//! shards call each other (src/shards.rs). Every call is an internal [`Call`], built from scratch.
//!
//! The stub comes from workers-rs; the request goes through its raw handle (`Stub::into_rpc`):
//! workers-rs's `fetch_with_request` would first convert the request into its own type (method,
//! URL, headers and `cf` read back out), only to hand the same object on.

use crate::internal::Call;
use std::cell::RefCell;
use wasm_bindgen::JsCast;
use wasm_bindgen::JsValue;
use wasm_bindgen_futures::JsFuture;
use web_sys::{Headers, Request, RequestInit, Response};
use worker::{wasm_bindgen_futures, worker_sys, Env, ObjectNamespace};

/// The binding of the rooms' Durable Object namespace (wrangler.toml).
const ROOMS_BINDING: &str = "ROOMS";

thread_local! {
    /// The rooms' namespace, looked up once per isolate (its `env` never changes).
    static ROOMS: RefCell<Option<ObjectNamespace>> = const { RefCell::new(None) };
}

/// Sends a call and awaits its answer: the `Response` when its status is 2xx or 101, else an
/// error naming the status.
pub async fn answered(env: &Env, c: &Call, body: Option<&str>) -> Result<Response, JsValue> {
    let r: Response = call(env, c, body)?.await?.dyn_into()?;
    if r.ok() || r.status() == 101 {
        Ok(r)
    } else {
        Err(JsValue::from_str(&format!("answered {}", r.status())))
    }
}

/// The text of a call's answer.
pub async fn text(env: &Env, c: &Call) -> Result<String, JsValue> {
    let r = answered(env, c, None).await?;
    let t = wasm_bindgen_futures::JsFuture::from(r.text()?).await?;
    t.as_string()
        .ok_or_else(|| JsValue::from_str("an answer that is not text"))
}

/// Sends a call to the Durable Object it is for; resolves to its `Response`.
pub fn call(env: &Env, call: &Call, body: Option<&str>) -> Result<JsFuture, JsValue> {
    let init = RequestInit::new();
    if matches!(
        call,
        Call::Publish { .. } | Call::ShardOps { .. } | Call::ShardRelay { .. }
    ) {
        init.set_method("POST");
    }
    match body {
        Some(b) => init.set_body(&JsValue::from_str(b)),
        None if matches!(call, Call::Subscribe { .. } | Call::ShardAccept { .. }) => {
            let headers = Headers::new()?;
            headers.set("upgrade", "websocket")?;
            init.set_headers(&headers);
        }
        None => {}
    }
    let ns = match ROOMS.with(|r| r.borrow().clone()) {
        Some(ns) => ns,
        None => {
            let ns = env
                .durable_object(ROOMS_BINDING)
                .map_err(|e| JsValue::from_str(&e.to_string()))?;
            ROOMS.with(|r| *r.borrow_mut() = Some(ns.clone()));
            ns
        }
    };
    let stub: worker_sys::DurableObject = ns
        .get_by_name(&call.object_name())
        .map_err(|e| JsValue::from_str(&e.to_string()))?
        .into_rpc();
    let req = Request::new_with_str_and_init(&call.url(), &init)?;
    Ok(JsFuture::from(stub.fetch_with_request(&req)?))
}
