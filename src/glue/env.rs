//! What the plain modules need from the runtime: the clock, random ids, the settings, and the
//! structured log.

use crate::config::Settings;
use crate::error::ApiError;
use crate::json::Object;
use std::cell::RefCell;
use std::rc::Rc;
use wasm_bindgen::JsValue;
use worker::Env;

/// Unix time in milliseconds.
pub fn now_ms() -> i64 {
    js_sys::Date::now() as i64
}

/// A random 128-bit id as 32 lowercase hex characters.
pub fn random_id() -> String {
    let mut bytes = [0u8; 16];
    // getrandom on wasm uses crypto.getRandomValues, which does not fail in workerd.
    if getrandom::getrandom(&mut bytes).is_err() {
        bytes[..8].copy_from_slice(&now_ms().to_le_bytes());
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
    static SETTINGS: RefCell<Option<Rc<Settings>>> = const { RefCell::new(None) };
}

/// The settings from the Worker's vars and secrets, parsed on first use in this isolate. An
/// unusable setting is not cached, so every request reports it.
pub fn settings(env: &Env) -> Result<Rc<Settings>, ApiError> {
    if let Some(s) = SETTINGS.with(|c| c.borrow().clone()) {
        return Ok(s);
    }
    let parsed = Rc::new(Settings::from_lookup(|name| text(env, name))?);
    SETTINGS.with(|c| *c.borrow_mut() = Some(Rc::clone(&parsed)));
    Ok(parsed)
}

/// `env[name]` as text: vars may be strings, numbers or booleans in `wrangler.toml`.
fn text(env: &Env, name: &str) -> Option<String> {
    let v = js_sys::Reflect::get(env, &JsValue::from_str(name)).ok()?;
    if let Some(s) = v.as_string() {
        Some(s)
    } else if let Some(n) = v.as_f64() {
        Some(format!("{n}"))
    } else {
        v.as_bool().map(|b| b.to_string())
    }
}

/// Writes one structured log line (JSON, one object per line).
pub fn log(line: Object) {
    worker::console_log!("{}", line.finish());
}

/// A message for logs: a JavaScript error's `message`, or the value as text.
pub fn describe(err: &JsValue) -> String {
    use wasm_bindgen::JsCast;
    if let Some(e) = err.dyn_ref::<js_sys::Error>() {
        return String::from(e.message());
    }
    err.as_string().unwrap_or_else(|| format!("{err:?}"))
}
