//! A room's WebSocket: workers-rs's `WebSocket`, with its attachment read and written as JSON
//! text through the raw handle (`worker_sys::ext::WebSocketExt`): one string across the
//! runtime boundary instead of a serde-wasm-bindgen object built field by field.

use crate::codes::Close;
use crate::connections::Attachment;
use crate::outbox::Sink;
use wasm_bindgen::JsValue;
use worker::worker_sys::ext::WebSocketExt;
use worker::WebSocket;

/// A hibernatable socket of the room.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Socket(pub WebSocket);

impl Socket {
    fn raw(&self) -> &web_sys::WebSocket {
        self.0.as_ref()
    }

    /// Sends one text frame; false when the socket refused it (closing or closed).
    pub fn send_text(&self, text: &str) -> bool {
        self.0.send_with_str(text).is_ok()
    }

    /// Closes the socket with `close`'s code and `reason`.
    pub fn close(&self, close: Close, reason: &str) {
        let _ = self.0.close(Some(close.code()), Some(reason));
    }

    /// The socket's attachment, if it has one of ours.
    pub fn attachment(&self) -> Option<Attachment> {
        let text = self.raw().deserialize_attachment().ok()?.as_string()?;
        Attachment::from_json(&text)
    }

    /// Stores the attachment with the socket (it survives hibernation).
    pub fn save(&self, a: &Attachment) -> Result<(), JsValue> {
        self.raw()
            .serialize_attachment(JsValue::from_str(&a.to_json()))
    }
}

impl Sink for Socket {
    type Frame = String;

    fn send(&self, frame: &String) -> bool {
        self.send_text(frame)
    }
}
