//! Settings: the Worker's vars and secrets (docs/operations.md, "Settings"), parsed once into types.

use crate::error::ApiError;
use crate::limits::EventRate;
use crate::protocol::TypePattern;

/// Every setting (docs/operations.md) with its default applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// HS256 key for client tokens.
    pub jwt_secret: Option<String>,
    /// JSON Web Key Set (RS256, ES256, EdDSA public keys) for client tokens.
    pub jwt_jwks: Option<String>,
    /// When set, a token's `iss` must equal it.
    pub jwt_issuer: Option<String>,
    /// When set, a token's `aud` must contain it.
    pub jwt_audience: Option<String>,
    /// Publish keys; several allow rotation.
    pub broadcast_api_keys: Vec<String>,
    /// When non-empty, a WebSocket upgrade's `Origin` must be one of these.
    pub allowed_origins: Vec<String>,
    /// Largest publish body and client frame, in bytes.
    pub max_message_bytes: usize,
    pub max_connections_per_room: u32,
    /// Per room, by token `sub`.
    pub max_connections_per_user: u32,
    /// Client frames per connection per minute (token bucket).
    pub rate_limit_per_minute: u32,
    pub ack_retry_interval_ms: u64,
    /// Sends in all, first delivery included.
    pub ack_max_attempts: u32,
    /// Notifications kept per room.
    pub history_limit: u32,
    pub history_ttl_seconds: u64,
    /// Largest presence state, serialized.
    pub presence_state_bytes: usize,
    /// Client event names allowed in `emit` (patterns); empty refuses every `emit`.
    pub client_event_types: Vec<TypePattern>,
    /// Largest client event `data`, serialized.
    pub max_client_event_bytes: usize,
    /// Client events per connection per 10 s.
    pub client_event_rate: u32,
    /// Limits per client event name pattern, on top of `client_event_rate`.
    pub client_event_rates: Vec<EventRate>,
    /// Connections silent this long are closed (4008); 0 turns it off.
    pub idle_timeout_seconds: u64,
    /// Sockets one Durable Object holds for a room before the room spreads over more.
    pub room_shard_size: u32,
    /// Development conveniences (the demo page's token minting and publish form). Never set in
    /// production: `DEV_MODE=true` in `.dev.vars` only.
    pub dev_mode: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            jwt_secret: None,
            jwt_jwks: None,
            jwt_issuer: None,
            jwt_audience: None,
            broadcast_api_keys: Vec::new(),
            allowed_origins: Vec::new(),
            max_message_bytes: 1_048_576,
            max_connections_per_room: 10_000,
            max_connections_per_user: 10,
            rate_limit_per_minute: 100,
            ack_retry_interval_ms: 5_000,
            ack_max_attempts: 3,
            history_limit: 1_000,
            history_ttl_seconds: 604_800,
            presence_state_bytes: 1024,
            client_event_types: Vec::new(),
            max_client_event_bytes: 4096,
            client_event_rate: 20,
            client_event_rates: Vec::new(),
            idle_timeout_seconds: 300,
            room_shard_size: 4000,
            dev_mode: false,
        }
    }
}

impl Settings {
    /// Reads every setting through `get` (the Worker's `env`, or a map in tests).
    ///
    /// An empty value counts as unset. A value that is present but unusable (not a number, zero
    /// where zero makes no sense) is an error naming the setting, so a typo fails loudly instead
    /// of silently falling back to a default.
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Settings, ApiError> {
        let text = |name: &str| {
            get(name)
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        };
        let list = |name: &str| -> Vec<String> {
            text(name)
                .map(|v| {
                    v.split(',')
                        .map(|s| s.trim().to_owned())
                        .filter(|s| !s.is_empty())
                        .collect()
                })
                .unwrap_or_default()
        };
        let d = Settings::default();
        Ok(Settings {
            jwt_secret: text("JWT_SECRET"),
            jwt_jwks: text("JWT_JWKS"),
            jwt_issuer: text("JWT_ISSUER"),
            jwt_audience: text("JWT_AUDIENCE"),
            broadcast_api_keys: list("BROADCAST_API_KEYS"),
            allowed_origins: list("ALLOWED_ORIGINS")
                .into_iter()
                .map(|o| o.trim_end_matches('/').to_owned())
                .collect(),
            max_message_bytes: number(&text, "MAX_MESSAGE_BYTES", d.max_message_bytes as u64)?
                as usize,
            max_connections_per_room: number(
                &text,
                "MAX_CONNECTIONS_PER_ROOM",
                d.max_connections_per_room.into(),
            )? as u32,
            max_connections_per_user: number(
                &text,
                "MAX_CONNECTIONS_PER_USER",
                d.max_connections_per_user.into(),
            )? as u32,
            rate_limit_per_minute: number(
                &text,
                "RATE_LIMIT_PER_MINUTE",
                d.rate_limit_per_minute.into(),
            )? as u32,
            ack_retry_interval_ms: number(&text, "ACK_RETRY_INTERVAL_MS", d.ack_retry_interval_ms)?,
            ack_max_attempts: number(&text, "ACK_MAX_ATTEMPTS", d.ack_max_attempts.into())? as u32,
            history_limit: number(&text, "HISTORY_LIMIT", d.history_limit.into())? as u32,
            history_ttl_seconds: number(&text, "HISTORY_TTL_SECONDS", d.history_ttl_seconds)?,
            presence_state_bytes: number(
                &text,
                "PRESENCE_STATE_BYTES",
                d.presence_state_bytes as u64,
            )? as usize,
            client_event_types: TypePattern::parse_list(
                list("CLIENT_EVENT_TYPES").iter().map(String::as_str),
            )
            .map_err(|reason| ApiError::Misconfigured {
                setting: "CLIENT_EVENT_TYPES",
                reason,
            })?,
            max_client_event_bytes: number(
                &text,
                "MAX_CLIENT_EVENT_BYTES",
                d.max_client_event_bytes as u64,
            )? as usize,
            client_event_rate: number(&text, "CLIENT_EVENT_RATE", d.client_event_rate.into())?
                as u32,
            client_event_rates: EventRate::parse_list(
                &text("CLIENT_EVENT_RATES").unwrap_or_default(),
            )
            .map_err(|reason| ApiError::Misconfigured {
                setting: "CLIENT_EVENT_RATES",
                reason,
            })?,
            room_shard_size: number(&text, "ROOM_SHARD_SIZE", d.room_shard_size.into())? as u32,
            idle_timeout_seconds: match text("IDLE_TIMEOUT_SECONDS").as_deref() {
                Some("0") => 0,
                _ => number(&text, "IDLE_TIMEOUT_SECONDS", d.idle_timeout_seconds)?,
            },
            dev_mode: matches!(text("DEV_MODE").as_deref(), Some("true" | "1")),
        })
    }
}

/// A positive whole number no larger than `u32::MAX`, or the default when unset.
fn number(
    text: &impl Fn(&str) -> Option<String>,
    name: &'static str,
    default: u64,
) -> Result<u64, ApiError> {
    let Some(raw) = text(name) else {
        return Ok(default);
    };
    match raw.parse::<u64>() {
        Ok(n) if n > 0 && n <= u64::from(u32::MAX) => Ok(n),
        _ => Err(ApiError::Misconfigured {
            setting: name,
            reason: "expected a whole number from 1 to 4294967295".into(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn from(pairs: &[(&str, &str)]) -> Result<Settings, ApiError> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Settings::from_lookup(|k| map.get(k).cloned())
    }

    #[test]
    fn defaults_follow_the_spec() {
        assert_eq!(from(&[]).unwrap(), Settings::default());
        let d = Settings::default();
        assert_eq!(d.max_message_bytes, 1_048_576);
        assert_eq!((d.ack_retry_interval_ms, d.ack_max_attempts), (5_000, 3));
    }

    #[test]
    fn lists_are_trimmed_and_empty_values_are_unset() {
        let s = from(&[
            ("BROADCAST_API_KEYS", " k1, k2 ,,"),
            ("ALLOWED_ORIGINS", "https://a.example/, https://b.example"),
            ("JWT_SECRET", "  "),
            ("DEV_MODE", "true"),
        ])
        .unwrap();
        assert_eq!(s.broadcast_api_keys, vec!["k1", "k2"]);
        assert_eq!(
            s.allowed_origins,
            vec!["https://a.example", "https://b.example"]
        );
        assert_eq!(s.jwt_secret, None);
        assert!(s.dev_mode);
    }

    #[test]
    fn a_bad_number_names_the_setting() {
        for bad in ["abc", "0", "-1", "1.5", "99999999999"] {
            let err = from(&[("ACK_MAX_ATTEMPTS", bad)]).unwrap_err();
            assert_eq!(err.status(), 503);
            assert!(err.message().contains("ACK_MAX_ATTEMPTS"), "{bad}");
        }
        assert_eq!(from(&[("HISTORY_LIMIT", "5")]).unwrap().history_limit, 5);
    }

    #[test]
    fn idle_timeout_and_event_rates() {
        let d = Settings::default();
        assert_eq!(
            (d.idle_timeout_seconds, d.client_event_rates.len()),
            (300, 0)
        );
        let s = from(&[
            ("IDLE_TIMEOUT_SECONDS", "0"),
            ("CLIENT_EVENT_RATES", "typing.*=5/5s,cursor.move=30/1s"),
        ])
        .unwrap();
        assert_eq!(s.idle_timeout_seconds, 0, "0 turns it off");
        assert_eq!(s.client_event_rates.len(), 2);
        let err = from(&[("CLIENT_EVENT_RATES", "typing.*=5")]).unwrap_err();
        assert!(err.message().contains("CLIENT_EVENT_RATES"));
        let err = from(&[("IDLE_TIMEOUT_SECONDS", "-1")]).unwrap_err();
        assert!(err.message().contains("IDLE_TIMEOUT_SECONDS"));
    }

    #[test]
    fn client_event_types_are_patterns() {
        let s = from(&[("CLIENT_EVENT_TYPES", "typing.*, cursor.move")]).unwrap();
        let names: Vec<&str> = s.client_event_types.iter().map(|p| p.as_str()).collect();
        assert_eq!(names, ["typing.*", "cursor.move"]);
        assert!(from(&[]).unwrap().client_event_types.is_empty());
        let err = from(&[("CLIENT_EVENT_TYPES", "typing.*,bad pattern")]).unwrap_err();
        assert_eq!(err.code(), "misconfigured");
        assert!(err.message().contains("CLIENT_EVENT_TYPES"));
        let d = Settings::default();
        assert_eq!(
            (
                d.presence_state_bytes,
                d.max_client_event_bytes,
                d.client_event_rate
            ),
            (1024, 4096, 20)
        );
    }
}
