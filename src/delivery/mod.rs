//! Delivery rules (docs/protocol.md, "Delivery"), as plain types the room executes: when a `requiresAck`
//! notification is sent again and when it fails ([`retry`]), what a (re)connecting client is
//! replayed ([`replay`]), and what the log keeps ([`retention`]).
//!
//! Nothing here touches the runtime: the room loads entries from its log, asks these types what
//! to do, and carries the answer out.

pub mod entry;
pub mod replay;
pub mod retention;
pub mod retry;
pub mod status;

pub use entry::Entry;
pub use replay::{recovered, Action};
pub use retention::{Prune, Pruner, Retention};
pub use retry::{PendingState, RetryPolicy, Step};
pub use status::DeliveryStatus;
