//! What the plain modules need from the Workers runtime: the clock, random ids, settings and
//! structured logs.

use crate::bindings::env_text;
use crate::config::Settings;
use crate::error::ApiError;
use crate::json::Object;
use std::rc::Rc;
use wasm_bindgen::JsValue;

/// Unix time in milliseconds.
pub fn now_ms() -> i64 {
    js_sys::Date::now() as i64
}

/// A random 128-bit id as 32 lowercase hex characters.
pub fn random_id() -> String {
    let mut bytes = [0u8; 16];
    // getrandom on wasm uses crypto.getRandomValues, which does not fail in workerd.
    if getrandom::getrandom(&mut bytes).is_err() {
        let t = now_ms().to_le_bytes();
        bytes[..8].copy_from_slice(&t);
    }
    let mut out = String::with_capacity(32);
    for b in bytes {
        out.push(char::from_digit(u32::from(b >> 4), 16).unwrap_or('0'));
        out.push(char::from_digit(u32::from(b & 15), 16).unwrap_or('0'));
    }
    out
}

thread_local! {
    /// Settings parsed once per isolate: an isolate's `env` never changes.
    static SETTINGS: std::cell::RefCell<Option<Rc<Settings>>> = const { std::cell::RefCell::new(None) };
}

/// The settings from the Worker's vars and secrets, parsed on first use in this isolate. Vars
/// may be strings, numbers or booleans in `wrangler.toml`; all are read as text. An unusable
/// setting is not cached, so every request reports it.
pub fn settings(env: &JsValue) -> Result<Rc<Settings>, ApiError> {
    if let Some(s) = SETTINGS.with(|c| c.borrow().clone()) {
        return Ok(s);
    }
    let parsed = Rc::new(read_settings(env)?);
    SETTINGS.with(|c| *c.borrow_mut() = Some(Rc::clone(&parsed)));
    Ok(parsed)
}

fn read_settings(env: &JsValue) -> Result<Settings, ApiError> {
    Settings::from_lookup(|name| env_text(env, name))
}

/// Starts a structured log line: `log(event("publish").str("room", id)…)`.
pub fn event(name: &str) -> Object {
    Object::new().str("event", name)
}

/// Writes one structured log line (JSON, one object per line, never secrets).
pub fn log(line: Object) {
    web_sys::console::log_1(&JsValue::from_str(&line.finish()));
}
