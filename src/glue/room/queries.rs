//! The Worker's read-only calls: history, presence, keyed health.

use super::Room;
use crate::answer::{self, Answer, Health};
use worker::Result;

impl Room {
    /// `GET /history`: stored notifications after `since`.
    pub(super) fn history(&self, since: u64, limit: u32) -> Result<Answer> {
        let (rows, has_more) = self.log.history(since, limit)?;
        Ok(answer::history(
            &self.log.id,
            self.log.last_seq,
            has_more,
            &rows,
        ))
    }

    /// `GET /presence`: who is connected now.
    pub(super) fn presence(&self, limit: u32) -> Answer {
        answer::presence(&self.log.id, &self.sockets.presence, limit)
    }

    /// Keyed health: connections, the log's counters, and what the object costs.
    pub(super) fn health(&self) -> Result<Answer> {
        let counts = self.log.counts()?;
        let rows = self.log.row_stats();
        let memory = js_sys::WebAssembly::Memory::from(wasm_bindgen::memory());
        let health = Health {
            room: self.log.id.clone(),
            connections: self.sockets.conns.len(),
            pending_acks: counts.pending,
            failed_acks: counts.failed,
            last_seq: self.log.last_seq,
            deliveries: counts.deliveries,
            last_broadcast_at: counts.last_broadcast_at,
            wasm_memory_bytes: Some(js_sys::ArrayBuffer::from(memory.buffer()).byte_length() as u64),
            sql_rows: Some((rows.read, rows.written)),
            shards: self.sockets.per_object(self.shards),
        };
        Ok(answer::health(&health))
    }
}
