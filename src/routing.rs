//! Routing: which route a request names, checked in the protocol's order (unknown route 404, wrong
//! method 405, invalid room id 400), and the query parameters of each route.

use crate::error::ApiError;
use crate::protocol::TypeFilter;
use crate::room_id::RoomId;

/// A route of the table in docs/protocol.md (plus the demo page's helpers).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// `GET /rooms/{roomId}/subscribe`
    Subscribe(RoomId),
    /// `POST /rooms/{roomId}/broadcast`
    RoomBroadcast(RoomId),
    /// `POST /broadcast`
    Broadcast,
    /// `GET /rooms/{roomId}/history`
    History(RoomId),
    /// `GET /rooms/{roomId}/health`
    RoomHealth(RoomId),
    /// `GET /rooms/{roomId}/presence`
    Presence(RoomId),
    /// `GET /healthz`
    Healthz,
    /// `GET /`: the demo page.
    Demo,
    /// `GET /client/roomcast.js`: the browser client, as the demo page loads it.
    ClientScript,
    /// `POST /dev/token`: mints a client token; exists only with `DEV_MODE` on.
    DevToken,
    /// `OPTIONS` on any route: a CORS preflight, answered by the Worker.
    Preflight { allow: &'static str },
}

/// What a path names before the method is checked.
enum Path<'a> {
    Room(&'a str, &'a str),
    Fixed(&'static str),
}

impl Route {
    /// Resolves a request's method and URL path (still percent-encoded, as the Worker sees it).
    pub fn resolve(method: &str, path: &str) -> Result<Route, ApiError> {
        let target = match path {
            "/" | "" => Path::Fixed("demo"),
            "/healthz" => Path::Fixed("healthz"),
            "/broadcast" => Path::Fixed("broadcast"),
            "/client/roomcast.js" => Path::Fixed("client"),
            "/dev/token" => Path::Fixed("dev_token"),
            _ => {
                let rest = path.strip_prefix("/rooms/").ok_or(ApiError::NotFound)?;
                let (room, action) = rest.rsplit_once('/').ok_or(ApiError::NotFound)?;
                match action {
                    "subscribe" | "broadcast" | "history" | "health" | "presence" => {
                        Path::Room(room, action)
                    }
                    _ => return Err(ApiError::NotFound),
                }
            }
        };
        let allow = match target {
            Path::Room(_, "broadcast") | Path::Fixed("broadcast" | "dev_token") => "POST, OPTIONS",
            _ => "GET, HEAD, OPTIONS",
        };
        let is_get = matches!(method, "GET" | "HEAD");
        let is_post = method == "POST";
        if method == "OPTIONS" {
            return Ok(Route::Preflight { allow });
        }
        if !(if allow.starts_with("POST") {
            is_post
        } else {
            is_get
        }) {
            return Err(ApiError::MethodNotAllowed { allow });
        }
        Ok(match target {
            Path::Fixed("demo") => Route::Demo,
            Path::Fixed("healthz") => Route::Healthz,
            Path::Fixed("broadcast") => Route::Broadcast,
            Path::Fixed("client") => Route::ClientScript,
            Path::Fixed(_) => Route::DevToken,
            Path::Room(room, action) => {
                let room = RoomId::parse(room).map_err(|_| ApiError::InvalidRoomId)?;
                match action {
                    "subscribe" => Route::Subscribe(room),
                    "broadcast" => Route::RoomBroadcast(room),
                    "history" => Route::History(room),
                    "presence" => Route::Presence(room),
                    _ => Route::RoomHealth(room),
                }
            }
        })
    }
}

/// Query of `GET /rooms/{roomId}/subscribe`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SubscribeQuery {
    /// `token=`: for browsers, which cannot set headers on a WebSocket.
    pub token: Option<String>,
    /// `since=`: resume after this seq.
    pub since: Option<u64>,
    /// `types=`: the initial type filter.
    pub types: TypeFilter,
    /// `presence=1`: send this connection presence frames.
    pub presence: bool,
    /// `batch=1`: frames queued for this connection may come as one `batch` frame.
    pub batch: bool,
}

impl SubscribeQuery {
    /// Parses decoded query pairs; unknown parameters are ignored, the first of a repeated one wins.
    pub fn parse<'a>(
        pairs: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<SubscribeQuery, ApiError> {
        let mut q = SubscribeQuery::default();
        let (mut seen_since, mut seen_types, mut seen_presence) = (false, false, false);
        let mut seen_batch = false;
        for (k, v) in pairs {
            match k {
                "token" if q.token.is_none() => q.token = Some(v.to_owned()),
                "presence" if !seen_presence => {
                    seen_presence = true;
                    q.presence = match v {
                        "1" | "true" => true,
                        "0" | "false" => false,
                        _ => return Err(ApiError::InvalidQuery("presence must be 1 or 0".into())),
                    };
                }
                "batch" if !seen_batch => {
                    seen_batch = true;
                    q.batch = match v {
                        "1" | "true" => true,
                        "0" | "false" => false,
                        _ => return Err(ApiError::InvalidQuery("batch must be 1 or 0".into())),
                    };
                }
                "since" if !seen_since => {
                    seen_since = true;
                    q.since = Some(seq_param("since", v)?);
                }
                "types" if !seen_types => {
                    seen_types = true;
                    q.types = TypeFilter::from_query(v).map_err(ApiError::InvalidQuery)?;
                }
                _ => {}
            }
        }
        Ok(q)
    }
}

/// Most notifications one history page returns; larger `limit`s are clamped.
pub const MAX_HISTORY_LIMIT: u32 = 1000;

/// Query of `GET /rooms/{roomId}/history`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryQuery {
    pub since: u64,
    pub limit: u32,
    /// `token=`, as on subscribe, for a browser reading history.
    pub token: Option<String>,
}

impl HistoryQuery {
    pub fn parse<'a>(
        pairs: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<HistoryQuery, ApiError> {
        let mut q = HistoryQuery {
            since: 0,
            limit: 100,
            token: None,
        };
        let (mut seen_since, mut seen_limit) = (false, false);
        for (k, v) in pairs {
            match k {
                "since" if !seen_since => {
                    seen_since = true;
                    q.since = seq_param("since", v)?;
                }
                "limit" if !seen_limit => {
                    seen_limit = true;
                    q.limit = limit_param(v, MAX_HISTORY_LIMIT)?;
                }
                "token" if q.token.is_none() => q.token = Some(v.to_owned()),
                _ => {}
            }
        }
        Ok(q)
    }
}

/// Query of `GET /rooms/{roomId}/presence`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PresenceQuery {
    /// Most users listed (default and maximum [`crate::presence::MAX_LIMIT`]; more is clamped).
    pub limit: u32,
    /// `token=`, as on subscribe.
    pub token: Option<String>,
}

impl PresenceQuery {
    pub fn parse<'a>(
        pairs: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<PresenceQuery, ApiError> {
        let max = crate::presence::MAX_LIMIT;
        let mut q = PresenceQuery {
            limit: max,
            token: None,
        };
        let mut seen_limit = false;
        for (k, v) in pairs {
            match k {
                "limit" if !seen_limit => {
                    seen_limit = true;
                    q.limit = limit_param(v, max)?;
                }
                "token" if q.token.is_none() => q.token = Some(v.to_owned()),
                _ => {}
            }
        }
        Ok(q)
    }
}

/// Largest integer a JavaScript client can hold exactly.
const MAX_SAFE_INTEGER: u64 = (1 << 53) - 1;

/// A page size: at least 1, clamped to `max`.
fn limit_param(raw: &str, max: u32) -> Result<u32, ApiError> {
    match seq_param("limit", raw)? {
        0 => Err(ApiError::InvalidQuery("limit must be at least 1".into())),
        n => Ok(n.min(u64::from(max)) as u32),
    }
}

fn seq_param(name: &str, raw: &str) -> Result<u64, ApiError> {
    match raw.parse::<u64>() {
        Ok(n) if n <= MAX_SAFE_INTEGER && !raw.starts_with('+') => Ok(n),
        _ => Err(ApiError::InvalidQuery(format!(
            "{name} must be a whole number from 0 to {MAX_SAFE_INTEGER}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn room(s: &str) -> RoomId {
        RoomId::parse(s).unwrap()
    }

    #[test]
    fn resolves_every_route() {
        let cases = [
            (
                "GET",
                "/rooms/user_1/subscribe",
                Route::Subscribe(room("user_1")),
            ),
            (
                "POST",
                "/rooms/r/broadcast",
                Route::RoomBroadcast(room("r")),
            ),
            ("POST", "/broadcast", Route::Broadcast),
            ("GET", "/rooms/r/history", Route::History(room("r"))),
            ("HEAD", "/rooms/r/health", Route::RoomHealth(room("r"))),
            ("GET", "/healthz", Route::Healthz),
            ("GET", "/", Route::Demo),
            ("GET", "/client/roomcast.js", Route::ClientScript),
            ("POST", "/dev/token", Route::DevToken),
        ];
        for (m, p, want) in cases {
            assert_eq!(Route::resolve(m, p), Ok(want), "{m} {p}");
        }
        assert_eq!(
            Route::resolve("OPTIONS", "/broadcast"),
            Ok(Route::Preflight {
                allow: "POST, OPTIONS"
            })
        );
    }

    #[test]
    fn checks_run_in_spec_order() {
        fn code(m: &str, p: &str) -> &'static str {
            Route::resolve(m, p).unwrap_err().code()
        }
        assert_eq!(code("GET", "/nope"), "not_found");
        assert_eq!(code("GET", "/rooms/r/unknown"), "not_found");
        assert_eq!(code("GET", "/rooms/r/subscribe/"), "not_found");
        assert_eq!(code("GET", "/rooms/r"), "not_found");
        assert_eq!(code("GET", "/healthz/"), "not_found");
        // 405 before 400: a bad room id with a wrong method is a 405.
        assert_eq!(code("DELETE", "/rooms/%2F/subscribe"), "method_not_allowed");
        assert_eq!(code("GET", "/rooms/r/broadcast"), "method_not_allowed");
        assert_eq!(code("POST", "/rooms/r/subscribe"), "method_not_allowed");
        assert_eq!(code("GET", "/broadcast"), "method_not_allowed");
        for bad in ["%2F", "a%2Fb", "..", ".", "", "a/b", "_x"] {
            assert_eq!(
                code("GET", &format!("/rooms/{bad}/subscribe")),
                "invalid_room_id",
                "{bad}"
            );
        }
        let long = format!("/rooms/{}/health", "a".repeat(129));
        assert_eq!(code("GET", &long), "invalid_room_id");
    }

    #[test]
    fn subscribe_query() {
        let q = SubscribeQuery::parse([
            ("since", "5"),
            ("types", "note.*"),
            ("token", "t"),
            ("x", "y"),
        ])
        .unwrap();
        assert_eq!((q.since, q.token.as_deref()), (Some(5), Some("t")));
        assert!(q.types.matches("note.a") && !q.types.matches("task"));
        for bad in [
            ("since", "-1"),
            ("since", "x"),
            ("since", "9007199254740992"),
            ("types", "a b"),
        ] {
            assert_eq!(
                SubscribeQuery::parse([bad]).unwrap_err().code(),
                "invalid_query",
                "{bad:?}"
            );
        }
        assert_eq!(
            SubscribeQuery::parse([]).unwrap(),
            SubscribeQuery::default()
        );
    }

    #[test]
    fn presence_queries() {
        let q = PresenceQuery::parse([]).unwrap();
        assert_eq!((q.limit, q.token), (1000, None));
        let q = PresenceQuery::parse([("limit", "5000"), ("token", "t")]).unwrap();
        assert_eq!((q.limit, q.token.as_deref()), (1000, Some("t")));
        assert!(PresenceQuery::parse([("limit", "0")]).is_err());
        assert!(SubscribeQuery::parse([("presence", "1")]).unwrap().presence);
        assert!(!SubscribeQuery::parse([("presence", "0")]).unwrap().presence);
        assert_eq!(
            SubscribeQuery::parse([("presence", "yes")])
                .unwrap_err()
                .code(),
            "invalid_query"
        );
        assert_eq!(
            Route::resolve("GET", "/rooms/r/presence"),
            Ok(Route::Presence(RoomId::parse("r").unwrap()))
        );
        assert_eq!(
            Route::resolve("POST", "/rooms/r/presence")
                .unwrap_err()
                .code(),
            "method_not_allowed"
        );
    }

    #[test]
    fn history_query() {
        let q = HistoryQuery::parse([]).unwrap();
        assert_eq!((q.since, q.limit), (0, 100));
        let q = HistoryQuery::parse([("since", "3"), ("limit", "5000")]).unwrap();
        assert_eq!((q.since, q.limit), (3, 1000));
        assert!(HistoryQuery::parse([("limit", "0")]).is_err());
        assert!(HistoryQuery::parse([("limit", "ten")]).is_err());
    }
}
