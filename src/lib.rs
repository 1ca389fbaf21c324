//! roomcast: realtime notifications with exact delivery semantics, as one Cloudflare Worker.
//!
//! The plain modules hold every rule of the contract (docs/protocol.md) and compile natively, so
//! `cargo test` checks them without a runtime. The wasm-only glue ([`glue`], on workers-rs) turns
//! runtime events into calls on those types and carries out their decisions.
//!
//! | subject | module |
//! |---|---|
//! | Routes, check order, query parameters | [`routing`] |
//! | Room ids | [`room_id`] |
//! | Client tokens, API keys, credentials, origins | [`auth`] |
//! | Publishing (body validation, the publish fields, frames) | [`notification`] |
//! | WebSocket frames, type filters | [`protocol`] |
//! | Connections (attachments, filters, per-user counts, token expiry) | [`connections`] |
//! | Delivery (retries, replay, retention) | [`delivery`] |
//! | Fan-out pacing | [`outbox`] |
//! | Presence | [`presence`] |
//! | Frame limits | [`limits`] |
//! | Close codes and log events | [`codes`] |
//! | When the room's alarm must run | [`alarm`] |
//! | Idle connections (4008) | [`idle`] |
//! | Large rooms: placement, the coordinator↔shard messages | [`shards`] |
//! | HTTP answers and errors | [`answer`], [`error`] |
//! | Settings | [`config`] |
//!
//! Between the Worker and a room: [`internal`] (the call, in the internal URL), [`query`] (URL
//! parts), [`json`] (frames and log lines written in one pass), [`time`].

pub mod alarm;
pub mod answer;
pub mod auth;
pub mod codes;
pub mod config;
pub mod connections;
pub mod delivery;
pub mod error;
pub mod idle;
pub mod internal;
pub mod json;
pub mod limits;
pub mod notification;
pub mod outbox;
pub mod presence;
pub mod protocol;
pub mod query;
pub mod room_id;
pub mod routing;
pub mod shards;
pub mod time;

#[cfg(target_arch = "wasm32")]
pub mod glue;

/// The demo page served at `GET /`.
pub const DEMO_PAGE: &str = include_str!("../demo/index.html");
/// The browser client, served at `GET /client/roomcast.js` for the demo page.
pub const CLIENT_SCRIPT: &str = include_str!("../client/roomcast.js");
