//! The wasm-only glue between the Workers runtime and the plain modules: the Worker's entry
//! point ([`worker`]), the `NotificationRoom` Durable Object ([`room`]) with its SQLite log
//! ([`storage`]), and what they share ([`env`], [`http`], [`socket`], [`webcrypto`]).
//!
//! Everything here is on workers-rs (`worker`); where a measured cost justified it, the code
//! takes the raw handle workers-rs itself hands out (docs/architecture.md lists each one with its
//! figure). Decisions are made by the plain modules; this layer only carries them out.

pub mod env;
pub mod http;
pub mod room;
pub mod rooms;
pub mod socket;
pub mod storage;
pub mod webcrypto;
pub mod worker;
