//! A stored notification's delivery status, as history reports it.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryStatus {
    /// No ack needed; sent to whoever was connected.
    Sent,
    /// Waiting for an ack.
    Pending,
    /// Acked by some connection of the room.
    Acked,
    /// `ACK_MAX_ATTEMPTS` rounds went unacked, or it waited `HISTORY_TTL_SECONDS` unacked.
    Failed,
}

impl DeliveryStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryStatus::Sent => "sent",
            DeliveryStatus::Pending => "pending",
            DeliveryStatus::Acked => "acked",
            DeliveryStatus::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<DeliveryStatus> {
        Some(match s {
            "sent" => DeliveryStatus::Sent,
            "pending" => DeliveryStatus::Pending,
            "acked" => DeliveryStatus::Acked,
            "failed" => DeliveryStatus::Failed,
            _ => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_round_trip() {
        for s in [
            DeliveryStatus::Sent,
            DeliveryStatus::Pending,
            DeliveryStatus::Acked,
            DeliveryStatus::Failed,
        ] {
            assert_eq!(DeliveryStatus::parse(s.as_str()), Some(s));
        }
        assert_eq!(DeliveryStatus::parse("x"), None);
    }
}
