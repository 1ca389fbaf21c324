//! A room's WebSocket: workers-rs's `WebSocket`, with its attachment read and written as JSON
//! text through the raw handle (`worker_sys::ext::WebSocketExt`): one string across the
//! runtime boundary instead of a serde-wasm-bindgen object built field by field.

use crate::codes::Close;
use crate::connections::Attachment;
use crate::outbox::Sink;
use crate::protocol::server;
use js_sys::{Function, JsString, Reflect};
use std::cell::{Cell, OnceCell};
use std::rc::Rc;
use wasm_bindgen::{JsCast, JsValue};
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

/// A frame for many sockets: made into one JavaScript string once, and handed to each socket's
/// `send` as that string. `WebSocket::send_with_str` copies the text out of wasm memory again
/// for every socket, which a large room pays per socket (docs/architecture.md).
pub struct Frame {
    /// The text, kept for the `batch` frames it may join and for shards.
    source: String,
    /// Made on the first send to a socket here (a frame only for shards never crosses).
    text: OnceCell<JsString>,
    /// `WebSocket.prototype.send`, taken from the first socket sent to.
    send: OnceCell<Option<Function>>,
    /// Unique per frame made: a shard's message names a frame once for all its targets.
    pub uid: u64,
    /// The seq of a notification's first delivery (a shard delivers each once).
    pub seq: Option<u64>,
}

thread_local! {
    static NEXT_UID: Cell<u64> = const { Cell::new(0) };
}

impl Frame {
    /// A notification's first delivery, at `seq`.
    pub fn first_delivery(text: String, seq: u64) -> Frame {
        Frame {
            seq: Some(seq),
            ..Frame::from(text)
        }
    }

    pub fn text(&self) -> &str {
        &self.source
    }
}

impl From<String> for Frame {
    fn from(text: String) -> Frame {
        Frame {
            text: OnceCell::new(),
            source: text,
            send: OnceCell::new(),
            uid: NEXT_UID.with(|n| {
                n.set(n.get() + 1);
                n.get()
            }),
            seq: None,
        }
    }
}

impl Sink for Socket {
    type Frame = Frame;

    fn batch(frames: &[Rc<Frame>]) -> Frame {
        Frame::from(server::batch(frames.iter().map(|f| f.source.as_str())))
    }

    fn send(&self, frame: &Frame) -> bool {
        let ws: &JsValue = self.raw().as_ref();
        let send = frame.send.get_or_init(|| {
            Reflect::get(ws, &JsValue::from_str("send"))
                .ok()
                .and_then(|f| f.dyn_into::<Function>().ok())
        });
        let text = frame
            .text
            .get_or_init(|| JsString::from(frame.source.as_str()));
        match send {
            Some(send) => send.call1(ws, text).is_ok(),
            None => false,
        }
    }
}
