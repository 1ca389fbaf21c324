//! What the plain modules need from the Workers runtime: the clock, random ids, settings and
//! structured logs.

use crate::config::Settings;
use crate::error::ApiError;
use worker::wasm_bindgen::JsValue;
use worker::{js_sys, Env};

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
    static SETTINGS: std::cell::RefCell<Option<Settings>> = const { std::cell::RefCell::new(None) };
}

/// The settings from the Worker's vars and secrets, parsed on first use in this isolate. Vars
/// may be strings, numbers or booleans in `wrangler.toml`; all are read as text. An unusable
/// setting is not cached, so every request reports it.
pub fn settings(env: &Env) -> Result<Settings, ApiError> {
    if let Some(s) = SETTINGS.with(|c| c.borrow().clone()) {
        return Ok(s);
    }
    let parsed = read_settings(env)?;
    SETTINGS.with(|c| *c.borrow_mut() = Some(parsed.clone()));
    Ok(parsed)
}

fn read_settings(env: &Env) -> Result<Settings, ApiError> {
    let env: &JsValue = env.as_ref();
    Settings::from_lookup(|name| {
        let v = js_sys::Reflect::get(env, &JsValue::from_str(name)).ok()?;
        if let Some(s) = v.as_string() {
            Some(s)
        } else if let Some(n) = v.as_f64() {
            Some(format!("{n}"))
        } else {
            v.as_bool().map(|b| b.to_string())
        }
    })
}

/// Writes one structured log line (JSON, one object per line, never secrets).
pub fn log(event: &str, fields: serde_json::Value) {
    let mut line = serde_json::json!({ "event": event });
    if let (Some(obj), serde_json::Value::Object(extra)) = (line.as_object_mut(), fields) {
        obj.extend(extra);
    }
    worker::console_log!("{}", line);
}
