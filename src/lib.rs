//! roomcast: realtime notifications with exact delivery semantics, as one Cloudflare Worker.
//!
//! The plain modules hold every rule of `SPEC.md` and compile natively, so `cargo test` checks
//! them without a runtime. The wasm-only modules (`worker`, `room`, `storage`, `bindings`,
//! `http`, `runtime`, `init`) are thin glue between the Workers runtime and those types.
//!
//! | SPEC.md | module |
//! |---|---|
//! | Routes, checks order, query parameters | [`routing`] |
//! | Room ids | [`room_id`] |
//! | Error responses | [`error`] |
//! | Auth (client tokens, API keys) | [`auth`] |
//! | Publishing (body validation, frames) | [`notification`] |
//! | WebSocket frames, type filters | [`protocol`] |
//! | Connections (filters, per-user counts, token expiry) | [`connections`] |
//! | Delivery (acks, retries, replay, pruning) | [`delivery`], `storage` |
//! | Limits, close codes | [`limits`] |
//! | Settings | [`config`] |
//!
//! Between the Worker and a room: [`internal`] (the call, in the internal URL), [`query`] (URL
//! parts), [`json`] (frames and log lines written in one pass).

pub mod auth;
pub mod config;
pub mod connections;
pub mod delivery;
pub mod error;
pub mod internal;
pub mod json;
pub mod limits;
pub mod notification;
pub mod protocol;
pub mod query;
pub mod room_id;
pub mod routing;
pub mod time;

#[cfg(target_arch = "wasm32")]
mod bindings;
#[cfg(target_arch = "wasm32")]
mod http;
#[cfg(target_arch = "wasm32")]
mod init;
#[cfg(target_arch = "wasm32")]
mod room;
#[cfg(target_arch = "wasm32")]
mod runtime;
#[cfg(target_arch = "wasm32")]
mod storage;
#[cfg(target_arch = "wasm32")]
mod webcrypto;
#[cfg(target_arch = "wasm32")]
mod worker;

#[cfg(target_arch = "wasm32")]
pub use room::NotificationRoom;

/// The demo page served at `GET /`.
pub const DEMO_PAGE: &str = include_str!("../demo/index.html");
/// The browser client, served at `GET /client/roomcast.js` for the demo page.
pub const CLIENT_SCRIPT: &str = include_str!("../client/roomcast.js");
