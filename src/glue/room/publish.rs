//! Publishing: an ephemeral notification to the sockets connected now, or the next seq
//! appended to the log and fanned out.

use super::Room;
use crate::alarm::AlarmAt;
use crate::answer::{self, Answer, Published};
use crate::codes::LogEvent;
use crate::glue::env::{log, now_ms};
use crate::glue::socket::Frame;
use crate::glue::storage::NewEntry;
use crate::notification::{render_ephemeral, render_frame, render_payload, Envelope};
use crate::outbox::Pace;
use worker::Result;

impl Room {
    /// Publishes (the notification's members have arrived): the answer, and when the alarm
    /// must run for its redelivery. From the key lookup to the answer nothing waits, so seq
    /// assignment, the append and the fan-out are one atomic step.
    pub(super) fn publish(
        &mut self,
        envelope: &Envelope,
        members: &str,
        received_at: i64,
    ) -> Result<(Answer, AlarmAt)> {
        let now = now_ms();
        if envelope.ephemeral {
            let frame = render_ephemeral(&envelope.id, members);
            let count = self
                .sockets
                .deliver(frame, Pace::Paced, |c| c.filter.matches(&envelope.kind));
            log(envelope
                .log(LogEvent::Publish.line().str("room", &self.log.id))
                .num("broadcastCount", count)
                .num("latencyMs", now - received_at));
            let outcome = Published::Ephemeral {
                id: envelope.id.clone(),
                count,
            };
            return Ok((answer::published(outcome), AlarmAt::NONE));
        }
        if let Some(k) = &envelope.key {
            if let Some(first) = self.log.duplicate(k)? {
                self.repush(first.seq, &envelope.kind)?;
                let outcome = Published::Duplicate {
                    id: first.id,
                    seq: first.seq,
                    count: first.broadcast_count,
                };
                return Ok((answer::published(outcome), AlarmAt::NONE));
            }
        }
        let seq = self.log.last_seq + 1;
        let payload = render_payload(&envelope.id, seq, members);
        let frame = Frame::first_delivery(render_frame(&payload, 1), seq);
        // One pass over the connections: their count goes into the row, which is appended
        // before anything is sent.
        let journal = &mut self.log;
        let sent = self.sockets.fan_out_if(
            vec![frame],
            Pace::Paced,
            |c| c.filter.matches(&envelope.kind),
            |count| {
                journal.append(&NewEntry {
                    seq,
                    envelope,
                    payload: &payload,
                    now,
                    broadcast_count: count,
                })
            },
        )?;
        let Some(count) = sent else {
            let taken = Published::IdTaken(envelope.id.clone());
            return Ok((answer::published(taken), AlarmAt::NONE));
        };
        self.log.prune(now)?;
        log(envelope
            .log(LogEvent::Publish.line().str("room", &self.log.id))
            .num("seq", seq)
            .num("broadcastCount", count)
            .num("latencyMs", now - received_at));
        let retry_at = AlarmAt::when(
            envelope.requires_ack && count > 0,
            now + self.log.policy().interval_ms,
        );
        let outcome = Published::Stored {
            id: envelope.id.clone(),
            seq,
            count,
        };
        Ok((answer::published(outcome), retry_at))
    }

    /// A publish retried after its first attempt's answer was lost: it may be that the
    /// coordinator failed before every shard had it. The shards get it again; each delivers a
    /// seq once, so one that had it skips it.
    fn repush(&mut self, seq: u64, kind: &str) -> Result<()> {
        if self.shards == 0 {
            return Ok(());
        }
        let (rows, _) = self.log.history(seq - 1, 1)?;
        if let Some(entry) = rows.into_iter().find(|e| e.seq == seq) {
            let frame = render_frame(&entry.payload, 1);
            self.sockets.deliver_first(frame, seq, |c| {
                c.socket.local().is_none() && c.filter.matches(kind)
            });
        }
        Ok(())
    }
}
