//! Start-up: what worker-build's JavaScript shim expects of the module. After a panic (with
//! `panic = "abort"` the instance's state is then unusable) the shim re-instantiates the wasm
//! before the next call, so one bad event cannot wedge an isolate.
//!
//! The same contract as workers-rs's `init.rs` (Apache-2.0), kept here because roomcast does
//! not link the `worker` crate: the shim reads `__worker_init_state()` and watches its
//! `criticalError`; `instanceId` counts instantiations.

use std::panic;
use wasm_bindgen::prelude::*;

#[wasm_bindgen(inline_js = "
export const state = globalThis.__worker_init_state = { criticalError: false, instanceId: 0 };
")]
extern "C" {
    type InitState;

    #[wasm_bindgen(thread_local_v2, js_name = state)]
    static INIT_STATE: InitState;

    #[wasm_bindgen(method, setter, js_name = criticalError)]
    fn set_critical_error(this: &InitState, val: bool);

    #[wasm_bindgen(method, getter, js_name = instanceId)]
    fn instance_id(this: &InitState) -> u32;

    #[wasm_bindgen(method, setter, js_name = instanceId)]
    fn set_instance_id(this: &InitState, val: u32);
}

#[wasm_bindgen(start, private)]
fn start() {
    panic::set_hook(Box::new(|info| {
        let err = js_sys::Error::new(&format!("Rust panic: {info}"));
        web_sys::console::error_2(&"Critical".into(), &err.into());
        INIT_STATE.with(|s| s.set_critical_error(true));
    }));
    INIT_STATE.with(|s| s.set_instance_id(s.instance_id() + 1));
    wasm_bindgen::handler::set_on_abort(wasm_bindgen::handler::schedule_reinit);
}

/// The state object the shim polls.
#[wasm_bindgen(js_name = "__worker_init_state")]
pub fn worker_init_state() -> JsValue {
    INIT_STATE.with(|s| s.into())
}
