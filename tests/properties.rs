//! Property and fuzz tests over the crate's pure API: thousands of random and mutated inputs to
//! everything that parses what a client, a publisher or an operator sends, asserting that
//! nothing panics and that the invariants the rest of the service relies on hold.
//!
//! Deterministic: a tiny SplitMix64 generator with fixed seeds, so a failure reproduces exactly
//! (the failing case is printed). `ROOMCAST_FUZZ_ITERS=<n>` runs longer (default 4000 per
//! target); `ROOMCAST_FUZZ_SEED=<n>` tries other inputs.

use roomcast::auth::{api_key_allowed, bearer, sign_hs256, Claims, TokenVerifier, LEEWAY_SECS};
use roomcast::codes::Close;
use roomcast::config::Settings;
use roomcast::error::ApiError;
use roomcast::limits::{Admission, ConnectionGuard, Rates};
use roomcast::notification::{render_frame, render_payload, Draft};
use roomcast::protocol::{
    is_reserved, is_valid_type, ClientFrame, TypeFilter, TypePattern, MAX_LIST_LEN,
};
use roomcast::room_id::RoomId;
use roomcast::routing::{HistoryQuery, Route, SubscribeQuery, MAX_HISTORY_LIMIT};
use roomcast::time::normalize_iso;
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};
use std::collections::HashMap;

// ---------------------------------------------------------------------------------------------
// The generator.

struct Rng(u64);

impl Rng {
    fn new(salt: u64) -> Rng {
        let seed = std::env::var("ROOMCAST_FUZZ_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0x5EED_0FC0_FFEE_u64);
        Rng(seed ^ salt.wrapping_mul(0x9E37_79B9_7F4A_7C15))
    }
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
    fn chance(&mut self, one_in: usize) -> bool {
        self.below(one_in) == 0
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
    /// A character, biased toward the ones parsers care about.
    fn char(&mut self) -> char {
        const SPECIAL: &[char] = &[
            '_', '.', ':', '-', '*', '/', '%', '"', '\\', ',', ' ', '\t', '\n', '\r', '\0', '+',
            '=', '?', '&', '#', '{', '}', '[', ']', 'é', 'ß', '\u{2028}', '\u{202e}', '\u{feff}',
            '\u{a0}', '😀', '\u{7f}', '\u{1}',
        ];
        match self.below(4) {
            0 => *self.pick(SPECIAL),
            1 => (b'0' + self.below(10) as u8) as char,
            _ => {
                let c = b'a' + self.below(26) as u8;
                if self.chance(3) {
                    c.to_ascii_uppercase() as char
                } else {
                    c as char
                }
            }
        }
    }
    fn string(&mut self, max: usize) -> String {
        let len = self.below(max + 1);
        (0..len).map(|_| self.char()).collect()
    }
    /// A string made of pieces that mean something to the parser under test.
    fn of_pieces(&mut self, pieces: &[&str], max_pieces: usize) -> String {
        let n = self.below(max_pieces + 1);
        let mut s = String::new();
        for _ in 0..n {
            if self.chance(4) {
                s.push(self.char());
            } else {
                let piece: &&str = self.pick(pieces);
                s.push_str(piece);
            }
        }
        s
    }
    fn number(&mut self) -> Value {
        match self.below(8) {
            0 => json!(0),
            1 => json!(-(self.below(1000) as i64)),
            2 => json!(u64::MAX),
            3 => json!(i64::MIN),
            4 => json!(self.next() as f64 / 7.0),
            5 => json!(-1.5e300),
            6 => json!(1_700_000_000 + self.below(1000) as i64),
            _ => json!(self.below(100)),
        }
    }
    fn json(&mut self, depth: u32) -> Value {
        const KEYS: &[&str] = &[
            "type",
            "data",
            "status",
            "timestamp",
            "requestId",
            "error",
            "requiresAck",
            "id",
            "ids",
            "notificationId",
            "types",
            "sub",
            "exp",
            "nbf",
            "rooms",
            "keys",
            "kty",
            "__proto__",
            "",
        ];
        let top = if depth == 0 { 5 } else { 7 };
        match self.below(top) {
            0 => Value::Null,
            1 => Value::Bool(self.chance(2)),
            2 => self.number(),
            3 | 4 => Value::String(self.string(12)),
            5 => Value::Array((0..self.below(4)).map(|_| self.json(depth - 1)).collect()),
            _ => {
                let mut m = Map::new();
                for _ in 0..self.below(5) {
                    let k = if self.chance(4) {
                        self.string(6)
                    } else {
                        self.pick(KEYS).to_string()
                    };
                    m.insert(k, self.json(depth - 1));
                }
                Value::Object(m)
            }
        }
    }
    /// `s` with a few random byte-level edits (kept valid UTF-8).
    fn mutate(&mut self, s: &str) -> String {
        let mut chars: Vec<char> = s.chars().collect();
        for _ in 0..1 + self.below(3) {
            let at = self.below(chars.len() + 1);
            match self.below(4) {
                0 if at < chars.len() => {
                    chars.remove(at);
                }
                1 if at < chars.len() => chars[at] = self.char(),
                2 if at < chars.len() => {
                    let other = self.below(chars.len());
                    chars.swap(at, other);
                }
                _ => chars.insert(at, self.char()),
            }
        }
        chars.into_iter().collect()
    }
}

fn iterations() -> usize {
    std::env::var("ROOMCAST_FUZZ_ITERS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(4000)
}

/// `^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$`, written independently of `RoomId::parse`.
fn room_id_oracle(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && b[0].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || b"_.:-".contains(c))
}

// ---------------------------------------------------------------------------------------------
// Room ids and routes.

#[test]
fn room_id_parses_exactly_the_spec_regex() {
    let mut rng = Rng::new(1);
    let pieces = [
        "user_", "request_", "a", "Z9", ".", "..", ":", "-", "_", "%2F", "/", " ",
    ];
    for i in 0..iterations() * 5 {
        let s = match i % 3 {
            0 => rng.string(20),
            1 => rng.of_pieces(&pieces, 8),
            _ => "a".repeat(120 + rng.below(16)),
        };
        let parsed = RoomId::parse(&s);
        assert_eq!(parsed.is_ok(), room_id_oracle(&s), "{s:?}");
        if let Ok(id) = parsed {
            assert_eq!(id.as_str(), s);
            assert_eq!(id.to_string(), s);
        }
    }
}

#[test]
fn route_resolve_never_yields_an_invalid_room_and_follows_spec_order() {
    let mut rng = Rng::new(2);
    let methods = [
        "GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH", "get", "", "CONNECT",
    ];
    let pieces = [
        "/rooms/",
        "/",
        "rooms",
        "user_1",
        "subscribe",
        "broadcast",
        "history",
        "health",
        "healthz",
        "%2F",
        "%2e",
        "..",
        ".",
        "dev",
        "token",
        "client",
        "roomcast.js",
    ];
    let actions = ["subscribe", "broadcast", "history", "health"];
    for i in 0..iterations() * 5 {
        let method = *rng.pick(&methods);
        let path = match i % 3 {
            0 => rng.of_pieces(&pieces, 6),
            1 => format!(
                "/rooms/{}/{}",
                rng.of_pieces(&pieces[3..], 3),
                rng.pick(&actions)
            ),
            _ => {
                let p = format!("/rooms/user_{}/{}", rng.below(99), rng.pick(&actions));
                rng.mutate(&p)
            }
        };
        let result = Route::resolve(method, &path);
        // The shape `/rooms/{room}/{action}` with a known action: the protocol's order applies.
        let shape = path
            .strip_prefix("/rooms/")
            .and_then(|rest| rest.rsplit_once('/'))
            .filter(|(_, a)| actions.contains(a));
        match &result {
            Ok(Route::Subscribe(r) | Route::History(r) | Route::RoomHealth(r)) => {
                assert!(room_id_oracle(r.as_str()), "{method} {path:?}");
                assert!(matches!(method, "GET" | "HEAD"), "{method} {path:?}");
                assert_eq!(Some(r.as_str()), shape.map(|(room, _)| room));
            }
            Ok(Route::RoomBroadcast(r)) => {
                assert!(room_id_oracle(r.as_str()), "{method} {path:?}");
                assert_eq!(method, "POST");
                assert_eq!(Some(r.as_str()), shape.map(|(room, _)| room));
            }
            Ok(Route::Preflight { .. }) => assert_eq!(method, "OPTIONS"),
            Ok(_) => assert!(!path.starts_with("/rooms/"), "{method} {path:?}"),
            Err(e) => {
                assert!(
                    matches!(
                        e.code(),
                        "not_found" | "method_not_allowed" | "invalid_room_id"
                    ),
                    "{method} {path:?}: {e:?}"
                );
                if e.code() == "invalid_room_id" {
                    let (room, _) = shape.expect("invalid_room_id only for room routes");
                    assert!(!room_id_oracle(room), "{path:?}");
                }
                if let Some((room, action)) = shape {
                    // Never 404 for a known shape; the method is checked before the room id.
                    assert_ne!(e.code(), "not_found", "{method} {path:?}");
                    let method_ok = if action == "broadcast" {
                        method == "POST"
                    } else {
                        matches!(method, "GET" | "HEAD")
                    };
                    let want = if !method_ok {
                        "method_not_allowed"
                    } else {
                        assert!(!room_id_oracle(room));
                        "invalid_room_id"
                    };
                    assert_eq!(e.code(), want, "{method} {path:?}");
                }
            }
        }
        assert!(result.as_ref().err().is_none_or(|e| e.status() < 500));
    }
}

// ---------------------------------------------------------------------------------------------
// Query strings.

const MAX_SAFE: u64 = (1 << 53) - 1;

/// What `since=`/`limit=` must accept: plain decimal digits up to 2^53-1.
fn seq_oracle(raw: &str) -> Option<u64> {
    if raw.is_empty() || !raw.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    raw.parse::<u64>().ok().filter(|n| *n <= MAX_SAFE)
}

fn random_query(rng: &mut Rng) -> Vec<(String, String)> {
    let keys = ["since", "limit", "types", "token", "x", "SINCE", ""];
    let values = [
        "0",
        "1",
        "007",
        "-1",
        "+5",
        "1e3",
        " 5",
        "9007199254740991",
        "9007199254740992",
        "18446744073709551616",
        "note.*",
        "*",
        "a,b",
        ",,",
        "a b",
        "note.**",
        "",
    ];
    (0..rng.below(5))
        .map(|_| {
            let k = rng.pick(&keys).to_string();
            let v = if rng.chance(3) {
                rng.string(10)
            } else {
                rng.pick(&values).to_string()
            };
            (k, v)
        })
        .collect()
}

#[test]
fn query_parsers_accept_exactly_valid_numbers_and_bound_them() {
    let mut rng = Rng::new(3);
    for _ in 0..iterations() * 2 {
        let pairs = random_query(&mut rng);
        let borrowed = || pairs.iter().map(|(k, v)| (k.as_str(), v.as_str()));
        let first = |name: &str| pairs.iter().find(|(k, _)| k == name).map(|(_, v)| v);

        let sub = SubscribeQuery::parse(borrowed());
        let since_ok = first("since").is_none_or(|v| seq_oracle(v).is_some());
        let types_ok = first("types").is_none_or(|v| TypeFilter::from_query(v).is_ok());
        assert_eq!(sub.is_ok(), since_ok && types_ok, "{pairs:?}");
        if let Ok(q) = &sub {
            assert_eq!(q.since, first("since").and_then(|v| seq_oracle(v)));
            assert_eq!(q.token.as_ref(), first("token"));
            assert!(q.types.patterns().len() <= MAX_LIST_LEN);
        } else if let Err(e) = &sub {
            assert_eq!((e.status(), e.code()), (400, "invalid_query"), "{pairs:?}");
        }

        let hist = HistoryQuery::parse(borrowed());
        let limit_ok = first("limit").is_none_or(|v| seq_oracle(v).is_some_and(|n| n > 0));
        assert_eq!(hist.is_ok(), since_ok && limit_ok, "{pairs:?}");
        if let Ok(q) = hist {
            assert!((1..=MAX_HISTORY_LIMIT).contains(&q.limit));
            assert!(q.since <= MAX_SAFE);
            let want = first("limit")
                .and_then(|v| seq_oracle(v))
                .map_or(100, |n| n.min(u64::from(MAX_HISTORY_LIMIT)) as u32);
            assert_eq!(q.limit, want, "{pairs:?}");
        }
    }
}

#[test]
fn type_filters_round_trip_and_match_consistently() {
    let mut rng = Rng::new(4);
    let pieces = [
        "note", ".", "*", ",", " ", "task", "created", ".*", "a:b", "-", "_",
    ];
    let kinds = [
        "note.created",
        "note.a.b",
        "notes.x",
        "note",
        "task.created",
        "x",
    ];
    for _ in 0..iterations() * 2 {
        let raw = if rng.chance(3) {
            rng.string(20)
        } else {
            rng.of_pieces(&pieces, 10)
        };
        let Ok(f) = TypeFilter::from_query(&raw) else {
            continue;
        };
        let patterns = f.patterns();
        assert!(patterns.len() <= MAX_LIST_LEN);
        for p in &patterns {
            let parsed = TypePattern::parse(p).expect("a kept pattern is valid");
            assert_eq!(parsed.as_str(), p);
            assert!(!p.contains(',') && p.trim() == p);
        }
        // Stored (socket attachment) and re-queried forms give the same filter.
        assert_eq!(TypeFilter::from_stored(&patterns), f, "{raw:?}");
        assert_eq!(TypeFilter::from_query(&patterns.join(",")).unwrap(), f);
        for k in kinds {
            let any = patterns
                .iter()
                .any(|p| TypePattern::parse(p).unwrap().matches(k));
            assert_eq!(f.matches(k), patterns.is_empty() || any, "{raw:?} {k}");
        }
        // A pattern `prefix.*` never matches across a non-dot boundary.
        for p in &patterns {
            if let Some(prefix) = p.strip_suffix(".*") {
                assert!(!TypePattern::parse(p)
                    .unwrap()
                    .matches(&format!("{prefix}s.x")));
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Client frames.

/// The canonical JSON of an accepted frame.
fn frame_json(f: &ClientFrame) -> Option<String> {
    let patterns =
        |ps: &[TypePattern]| ps.iter().map(|p| p.as_str().to_owned()).collect::<Vec<_>>();
    Some(match f {
        ClientFrame::TextPing => return None,
        ClientFrame::Ping => json!({"type":"ping"}).to_string(),
        ClientFrame::Ack(ids) => json!({"type":"ack","ids":ids}).to_string(),
        ClientFrame::Subscribe(p) => {
            json!({"type":"subscribe","data":{"types":patterns(p)}}).to_string()
        }
        ClientFrame::Unsubscribe(p) => {
            json!({"type":"unsubscribe","data":{"types":patterns(p)}}).to_string()
        }
        ClientFrame::PresenceSet(state) => format!(r#"{{"type":"presence.set","data":{state}}}"#),
        ClientFrame::Emit { event, data } => {
            format!(
                r#"{{"type":"emit","event":{},"data":{data}}}"#,
                json!(event)
            )
        }
        ClientFrame::Sync { since } => json!({"type":"sync","since":since}).to_string(),
    })
}

#[test]
fn client_frames_never_panic_and_accepted_ones_are_stable() {
    let mut rng = Rng::new(5);
    let valid = [
        r#"{"type":"ping"}"#,
        r#"{"type":"ack","notificationId":"n1"}"#,
        r#"{"type":"ack","ids":["a","b"]}"#,
        r#"{"type":"subscribe","data":{"types":["note.*","x"]}}"#,
        r#"{"type":"unsubscribe","data":{"types":["*"]}}"#,
        r#"{"type":"presence.set","data":{"status":"away"}}"#,
        r#"{"type":"emit","event":"typing.start","data":{"to":"b"}}"#,
        r#"{"type":"sync","since":12}"#,
        "ping",
    ];
    let mut accepted = 0;
    for i in 0..iterations() * 3 {
        let text = match i % 4 {
            0 => rng.string(30),
            1 => rng.json(3).to_string(),
            2 => {
                let v = *rng.pick(&valid);
                rng.mutate(v)
            }
            _ => {
                let mut v: Value = {
                    let text: &&str = rng.pick(&valid[..8]);
                    serde_json::from_str(text).unwrap()
                };
                let obj = v.as_object_mut().unwrap();
                let key = *rng.pick(&[
                    "type",
                    "ids",
                    "notificationId",
                    "data",
                    "extra",
                    "event",
                    "since",
                ]);
                obj.insert(key.into(), rng.json(2));
                v.to_string()
            }
        };
        let Ok(frame) = ClientFrame::parse(&text) else {
            continue;
        };
        accepted += 1;
        match &frame {
            ClientFrame::TextPing => assert_eq!(text, "ping"),
            ClientFrame::Ack(ids) => assert!((1..=MAX_LIST_LEN).contains(&ids.len()), "{text}"),
            ClientFrame::Subscribe(p) | ClientFrame::Unsubscribe(p) => {
                assert!(p.len() <= MAX_LIST_LEN);
                for pat in p {
                    assert!(TypePattern::parse(pat.as_str()).is_ok());
                }
            }
            ClientFrame::PresenceSet(state) => {
                assert!(serde_json::from_str::<Value>(state).is_ok_and(|v| v.is_object()));
            }
            ClientFrame::Emit { event, data } => {
                assert!(is_valid_type(event), "{text}");
                assert!(serde_json::from_str::<Value>(data).is_ok_and(|v| v.is_object()));
            }
            ClientFrame::Sync { since } => assert!(*since < 1 << 53),
            ClientFrame::Ping => {}
        }
        if let Some(canonical) = frame_json(&frame) {
            assert_eq!(ClientFrame::parse(&canonical), Ok(frame.clone()), "{text}");
        }
    }
    assert!(
        accepted > iterations() / 20,
        "the generator reaches valid frames ({accepted})"
    );
}

// ---------------------------------------------------------------------------------------------
// Publish bodies.

#[test]
fn drafts_render_valid_json_whose_type_is_the_input_type() {
    let mut rng = Rng::new(6);
    let valid = json!({"type":"note.creation.completed","data":{"entityId":"note-456","title":"My Note"},
        "status":"success","timestamp":"2026-01-20T10:00:00.000Z","requestId":"req-abc",
        "error":null,"requiresAck":true,"id":"optional-client-chosen-id"});
    let fields = [
        "type",
        "data",
        "status",
        "timestamp",
        "requestId",
        "error",
        "requiresAck",
        "id",
        "ephemeral",
    ];
    let mut accepted = 0;
    for i in 0..iterations() * 3 {
        let body = match i % 3 {
            0 => rng.json(3),
            1 => {
                let mut v = valid.clone();
                let obj = v.as_object_mut().unwrap();
                for _ in 0..1 + rng.below(3) {
                    let key = *rng.pick(&fields);
                    match rng.below(4) {
                        0 => {
                            obj.remove(key);
                        }
                        1 => {
                            obj.insert(key.into(), rng.json(2));
                        }
                        2 => {
                            obj.insert(key.into(), Value::String(rng.string(10)));
                        }
                        _ => {
                            obj.insert(rng.string(5), rng.json(1));
                        }
                    }
                }
                v
            }
            _ => serde_json::from_str(&rng.mutate(&valid.to_string())).unwrap_or(Value::Null),
        };
        let header = match rng.below(5) {
            0 => Some(rng.string(8)),
            1 => Some("key-1".to_owned()),
            _ => None,
        };
        let result = Draft::from_json(
            body.clone(),
            header.as_deref(),
            None,
            1_768_903_200_000,
            || "generated".into(),
        );
        let draft = match result {
            Err(e) => {
                assert_eq!(e.status(), 400, "{body}");
                assert!(
                    matches!(e.code(), "invalid_body" | "reserved_type"),
                    "{e:?}"
                );
                continue;
            }
            Ok(d) => d,
        };
        accepted += 1;
        let obj = body.as_object().expect("only objects are accepted");
        assert!(obj.keys().all(|k| fields.contains(&k.as_str())), "{body}");
        let input_type = obj["type"].as_str().expect("type is a string");
        assert_eq!(draft.envelope.kind, input_type);
        assert!(is_valid_type(&draft.envelope.kind) && !is_reserved(input_type));
        assert!(!(draft.envelope.ephemeral && draft.envelope.requires_ack));
        let seq = 1 + rng.below(1 << 20) as u64;
        let payload: Value =
            serde_json::from_str(&render_payload(&draft.envelope.id, seq, &draft.members))
                .unwrap_or_else(|e| panic!("payload is not JSON ({e}) for {body}"));
        assert_eq!(payload["type"], input_type);
        assert_eq!(payload["id"], draft.envelope.id.as_str());
        assert_eq!(payload["seq"], seq);
        assert!(payload["data"].is_object());
        assert!(["success", "error", "pending"].contains(&payload["status"].as_str().unwrap()));
        assert_eq!(payload["status"], draft.envelope.status.as_str());
        assert_eq!(payload["requiresAck"], draft.envelope.requires_ack);
        let ts = payload["timestamp"].as_str().unwrap();
        assert!(ts.ends_with('Z'), "{ts}");
        assert_eq!(
            normalize_iso(ts).as_deref(),
            Some(ts),
            "timestamps are canonical"
        );
        if let Some(Value::String(id)) = obj.get("id") {
            assert_eq!(&draft.envelope.id, id);
        } else if let Some(key) = &draft.envelope.key {
            assert_eq!(
                &draft.envelope.id, key,
                "a keyed publish without an id takes the key as id"
            );
        } else {
            assert_eq!(draft.envelope.id, "generated");
        }
        // Internal header values: printable ASCII only.
        for v in [
            draft.envelope.id.as_str(),
            draft.envelope.kind.as_str(),
            draft.envelope.status.as_str(),
        ] {
            assert!(v.bytes().all(|b| (0x21..0x7f).contains(&b)), "{v:?}");
        }
        if let Some(k) = &draft.envelope.key {
            assert!(!k.is_empty() && k.bytes().all(|b| (0x21..0x7f).contains(&b)));
        }
        let frame: Value = serde_json::from_str(&render_frame(
            &render_payload(&draft.envelope.id, seq, &draft.members),
            3,
        ))
        .unwrap();
        assert_eq!(frame["attempt"], 3);
        assert_eq!(frame["type"], input_type);
    }
    assert!(
        accepted > iterations() / 10,
        "the generator reaches valid bodies ({accepted})"
    );
}

#[test]
fn publisher_timestamps_normalise_to_canonical_utc() {
    let mut rng = Rng::new(7);
    let seeds = [
        "2026-01-20T10:00:00.000Z",
        "2026-01-20T12:00:00+02:00",
        "9999-12-31T23:59:59-23:59",
        "0000-01-01T00:00:00+23:59",
        "2026-02-29T00:00:00Z",
        "2026-01-20T10:00:00.123456789Z",
        "2026-01-20t10:00:00z",
        "2026-01-20 10:00:00Z",
    ];
    for seed in seeds {
        check_timestamp(seed);
    }
    for _ in 0..iterations() * 2 {
        let seed = *rng.pick(&seeds);
        check_timestamp(&rng.mutate(seed));
    }
}

fn check_timestamp(raw: &str) {
    if let Some(ts) = normalize_iso(raw) {
        assert!(ts.ends_with('Z'), "{raw:?} -> {ts}");
        assert_eq!(ts.len(), 24, "{raw:?} -> {ts}: YYYY-MM-DDTHH:MM:SS.mmmZ");
        assert_eq!(normalize_iso(&ts).as_deref(), Some(ts.as_str()), "{raw:?}");
    }
}

// ---------------------------------------------------------------------------------------------
// Tokens and keys.

const SECRET: &str = "property-test-secret-0123456789abcdef";
const NOW: i64 = 1_700_000_000;

fn b64url(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &b)| n | u32::from(b) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

fn hmac_sha256(key: &[u8], msg: &[u8]) -> Vec<u8> {
    let mut k = [0u8; 64];
    if key.len() > 64 {
        k[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        k[..key.len()].copy_from_slice(key);
    }
    let pad = |byte: u8| k.iter().map(|b| b ^ byte).collect::<Vec<u8>>();
    let inner = Sha256::new()
        .chain_update(pad(0x36))
        .chain_update(msg)
        .finalize();
    Sha256::new()
        .chain_update(pad(0x5c))
        .chain_update(inner)
        .finalize()
        .to_vec()
}

/// A compact JWS over any header and payload text, HMAC-signed with `key`.
fn jws(header: &str, payload: &str, key: &[u8]) -> String {
    let signed = format!(
        "{}.{}",
        b64url(header.as_bytes()),
        b64url(payload.as_bytes())
    );
    let sig = hmac_sha256(key, signed.as_bytes());
    format!("{signed}.{}", b64url(&sig))
}

fn verifier(jwks: Option<&str>, secret: Option<&str>) -> TokenVerifier {
    TokenVerifier::from_settings(&Settings {
        jwt_secret: secret.map(str::to_owned),
        jwt_jwks: jwks.map(str::to_owned),
        ..Settings::default()
    })
    .expect("a usable verifier")
}

/// What `check_claims` must decide for a correctly signed HS256 token (no iss/aud configured).
fn claims_oracle(claims: &Value, now: i64) -> Option<Claims> {
    let obj = claims.as_object()?;
    let sub = obj
        .get("sub")?
        .as_str()
        .filter(|s| !s.is_empty())?
        .to_owned();
    let seconds = |v: &Value| -> Option<i64> {
        let n = v.as_number()?;
        Some(if let Some(i) = n.as_i64() {
            i
        } else if n.as_u64().is_some() {
            i64::MAX
        } else {
            n.as_f64()?.floor() as i64
        })
    };
    let exp = seconds(obj.get("exp")?)?;
    if now >= exp.saturating_add(LEEWAY_SECS) {
        return None;
    }
    if let Some(nbf) = obj.get("nbf") {
        if now.saturating_add(LEEWAY_SECS) < seconds(nbf)? {
            return None;
        }
    }
    let rooms = match obj.get("rooms") {
        None => vec![],
        Some(Value::Array(a)) => a
            .iter()
            .map(|r| r.as_str().map(str::to_owned))
            .collect::<Option<Vec<_>>>()?,
        Some(_) => return None,
    };
    Some(Claims { sub, exp, rooms })
}

#[test]
fn signed_tokens_are_accepted_exactly_when_their_claims_are_valid() {
    let mut rng = Rng::new(8);
    let v = verifier(None, Some(SECRET));
    let header = r#"{"alg":"HS256","typ":"JWT"}"#;
    for _ in 0..iterations() {
        let mut claims = match rng.json(2) {
            Value::Object(m) => m,
            _ => Map::new(),
        };
        if rng.chance(2) {
            claims.insert("sub".into(), json!(rng.string(6)));
        }
        if rng.chance(2) {
            claims.insert("exp".into(), json!(NOW - 10 + rng.below(20) as i64));
        }
        if rng.chance(4) {
            claims.insert("nbf".into(), json!(NOW - 10 + rng.below(20) as i64));
        }
        let text = Value::Object(claims).to_string();
        // The oracle sees the claims as the verifier parses them (serde_json's float parsing
        // is not bit-exact for huge exponents).
        let claims: Value = serde_json::from_str(&text).unwrap();
        let token = jws(header, &text, SECRET.as_bytes());
        let got = v.verify(&token, NOW).ok();
        assert_eq!(got, claims_oracle(&claims, NOW), "{claims}");
        if let Some(c) = got {
            let room = RoomId::for_user(&c.sub);
            if let Ok(room) = room {
                assert!(
                    c.may_enter(&room),
                    "a token always enters its own user room"
                );
            }
        }
    }
}

#[test]
fn tokens_with_other_headers_or_keys_are_refused() {
    let mut rng = Rng::new(9);
    let v = verifier(None, Some(SECRET));
    let claims = json!({"sub":"u1","exp":NOW + 600}).to_string();
    let algs = [
        "HS256", "none", "None", "HS384", "HS512", "RS256", "ES256", "EdDSA", "hs256", "", "HS256 ",
    ];
    for _ in 0..iterations() {
        let mut header = Map::new();
        if !rng.chance(8) {
            let alg = if rng.chance(5) {
                rng.json(1)
            } else {
                json!(rng.pick(&algs))
            };
            header.insert("alg".into(), alg);
        }
        if rng.chance(3) {
            header.insert("kid".into(), rng.json(1));
        }
        let crit = rng.chance(6);
        if crit {
            header.insert("crit".into(), json!(["exp"]));
        }
        let extra = rng.chance(4);
        if extra {
            let (k, v) = (rng.string(4), rng.json(1));
            header.insert(k, v);
        }
        let wrong_key = rng.chance(4);
        let key = if wrong_key { "another-secret" } else { SECRET };
        let header = Value::Object(header);
        let token = jws(&header.to_string(), &claims, key.as_bytes());
        let ok = v.verify(&token, NOW).is_ok();
        let should = header["alg"] == "HS256"
            && !crit
            && !wrong_key
            && header
                .get("kid")
                .is_none_or(|k| k.is_string() || k.is_null());
        if ok {
            assert!(should, "accepted {header}");
        }
        if !extra {
            // (A random extra member may collide with a registered one and be malformed.)
            assert_eq!(ok, should, "{header}");
        }
    }
}

#[test]
fn mutated_tokens_never_verify_to_other_claims() {
    let mut rng = Rng::new(10);
    let v = verifier(None, Some(SECRET));
    let rooms = vec!["team_1_*".to_owned()];
    let original = sign_hs256(SECRET, "user-1", &rooms, NOW + 600, NOW);
    let want = v.verify(&original, NOW).expect("the original verifies");
    for i in 0..iterations() * 2 {
        let token = if i % 5 == 0 {
            rng.string(60)
        } else {
            rng.mutate(&original)
        };
        if let Ok(c) = v.verify(&token, NOW) {
            assert_eq!(c, want, "a mutation {token:?} verified to other claims");
        }
        // bearer extraction of whatever the header carried.
        let header_value = format!(
            "{} {token}",
            rng.pick(&["Bearer", "bearer", "BEARER", "Basic", ""])
        );
        if let Some(t) = bearer(&header_value) {
            assert!(!t.is_empty() && !t.contains(char::is_whitespace));
            assert!(header_value.contains(t));
        }
    }
    // Signatures of every length never panic (HS256 and EdDSA check the length first).
    let jwks = r#"{"keys":[{"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo","kid":"ed"}]}"#;
    let both = verifier(Some(jwks), Some(SECRET));
    for alg in ["HS256", "EdDSA", "Ed25519", "RS256", "ES256"] {
        let signed = format!(
            "{}.{}",
            b64url(json!({"alg":alg}).to_string().as_bytes()),
            b64url(json!({"sub":"u","exp":NOW + 60}).to_string().as_bytes())
        );
        for len in 0..100 {
            let sig: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
            assert!(both
                .verify(&format!("{signed}.{}", b64url(&sig)), NOW)
                .is_err());
        }
    }
}

#[test]
fn jwks_settings_never_panic() {
    let mut rng = Rng::new(11);
    let valid = r#"{"keys":[{"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo","kid":"ed"},{"kty":"EC","crv":"P-256","x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0","kid":"ec"}]}"#;
    assert!(TokenVerifier::from_settings(&Settings {
        jwt_jwks: Some(valid.into()),
        ..Settings::default()
    })
    .is_ok());
    for i in 0..iterations() / 2 {
        let raw = match i % 3 {
            0 => rng.mutate(valid),
            1 => json!({ "keys": [rng.json(2), rng.json(2)] }).to_string(),
            _ => rng.json(3).to_string(),
        };
        let s = Settings {
            jwt_jwks: Some(raw.clone()),
            ..Settings::default()
        };
        match TokenVerifier::from_settings(&s) {
            Ok(v) => {
                let token = jws(
                    r#"{"alg":"EdDSA","kid":"ed"}"#,
                    r#"{"sub":"u","exp":1}"#,
                    b"x",
                );
                assert!(v.verify(&token, NOW).is_err());
            }
            Err(e) => {
                assert_eq!((e.status(), e.code()), (503, "misconfigured"), "{raw}");
                assert!(e.message().contains("JWT_JWKS"));
                // The message never quotes the key material.
                assert!(!e.message().contains("11qYAYKx"), "{}", e.message());
            }
        }
    }
}

#[test]
fn bearer_and_api_keys_match_their_definitions() {
    let mut rng = Rng::new(12);
    let keys = vec!["k-old".to_owned(), "k-new".to_owned()];
    let schemes = [
        "Bearer", "bearer", "BeArEr", "Basic", "Bearer:", "", "Token",
    ];
    for _ in 0..iterations() * 2 {
        let candidate = match rng.below(3) {
            0 => rng.pick(&keys).clone(),
            1 => {
                let k = rng.pick(&keys).clone();
                rng.mutate(&k)
            }
            _ => rng.string(8),
        };
        let sep = *rng.pick(&[" ", "  ", "\t", "", " \u{a0}"]);
        let value = format!(
            "{}{}{sep}{candidate}{}",
            rng.pick(&[" ", ""]),
            rng.pick(&schemes),
            rng.pick(&[" ", "", "\n"])
        );
        let got = bearer(&value);
        if let Some(t) = got {
            assert!(
                !t.is_empty() && !t.contains(char::is_whitespace),
                "{value:?}"
            );
            assert!(value.contains(t));
            assert_eq!(bearer(&format!("Bearer {t}")), Some(t));
        }
        let presented = got.unwrap_or("");
        assert_eq!(
            api_key_allowed(&keys, presented),
            !presented.is_empty() && keys.iter().any(|k| k == presented),
            "{presented:?}"
        );
    }
    assert!(!api_key_allowed(&[String::new()], ""));
    assert!(!api_key_allowed(&[], "k-old"));
}

#[test]
fn rooms_claims_admit_what_they_name_and_nothing_else() {
    let mut rng = Rng::new(13);
    for _ in 0..iterations() * 2 {
        let sub = rng.of_pieces(&["u", "1", "_", "x"], 4);
        let rooms: Vec<String> = (0..rng.below(3))
            .map(|_| rng.of_pieces(&["team_", "1", "*", "user_", "u", "request_"], 4))
            .collect();
        let c = Claims {
            sub: sub.clone(),
            exp: NOW,
            rooms: rooms.clone(),
        };
        let raw = rng.of_pieces(&["team_", "1", "user_", "u", "request_", "x"], 4);
        let Ok(room) = RoomId::parse(&raw) else {
            continue;
        };
        let want = raw == format!("user_{sub}")
            || rooms.iter().any(|r| match r.strip_suffix('*') {
                Some(prefix) => raw.starts_with(prefix),
                None => *r == raw,
            });
        assert_eq!(c.may_enter(&room), want, "{sub:?} {rooms:?} {raw:?}");
    }
}

// ---------------------------------------------------------------------------------------------
// Settings and limits.

#[test]
fn settings_parse_or_name_the_bad_setting() {
    let mut rng = Rng::new(14);
    let names = [
        "JWT_SECRET",
        "JWT_JWKS",
        "JWT_ISSUER",
        "JWT_AUDIENCE",
        "BROADCAST_API_KEYS",
        "ALLOWED_ORIGINS",
        "MAX_MESSAGE_BYTES",
        "MAX_CONNECTIONS_PER_ROOM",
        "MAX_CONNECTIONS_PER_USER",
        "RATE_LIMIT_PER_MINUTE",
        "ACK_RETRY_INTERVAL_MS",
        "ACK_MAX_ATTEMPTS",
        "HISTORY_LIMIT",
        "HISTORY_TTL_SECONDS",
        "DEV_MODE",
    ];
    let values = [
        "1",
        " 42 ",
        "0",
        "-1",
        "4294967295",
        "4294967296",
        "1.5",
        "abc",
        "",
        "  ",
        "a, b ,,c",
        "https://a.example/,https://b.example",
        "true",
        "1e3",
    ];
    for _ in 0..iterations() {
        let mut map: HashMap<&str, String> = HashMap::new();
        for n in names {
            if rng.chance(3) {
                let v = if rng.chance(4) {
                    rng.string(10)
                } else {
                    rng.pick(&values).to_string()
                };
                map.insert(n, v);
            }
        }
        match Settings::from_lookup(|k| map.get(k).cloned()) {
            Ok(s) => {
                for n in [
                    s.max_message_bytes as u64,
                    s.max_connections_per_room.into(),
                    s.max_connections_per_user.into(),
                    s.rate_limit_per_minute.into(),
                    s.ack_retry_interval_ms,
                    s.ack_max_attempts.into(),
                    s.history_limit.into(),
                    s.history_ttl_seconds,
                ] {
                    assert!((1..=u64::from(u32::MAX)).contains(&n), "{map:?}");
                }
                for item in s.broadcast_api_keys.iter().chain(&s.allowed_origins) {
                    assert!(!item.is_empty() && item.trim() == item && !item.contains(','));
                }
                for o in &s.allowed_origins {
                    assert!(!o.ends_with('/'), "{o}");
                }
                for secret in [&s.jwt_secret, &s.jwt_jwks, &s.jwt_issuer, &s.jwt_audience] {
                    assert!(secret.as_ref().is_none_or(|v| !v.trim().is_empty()));
                }
                if let Some(v) = map.get("MAX_MESSAGE_BYTES").map(|v| v.trim()) {
                    if !v.is_empty() {
                        assert_eq!(v.parse::<usize>().ok(), Some(s.max_message_bytes));
                    }
                }
            }
            Err(e) => {
                assert_eq!((e.status(), e.code()), (503, "misconfigured"));
                let msg = e.message();
                let named: Vec<_> = names.iter().filter(|n| msg.contains(*n)).collect();
                assert!(!named.is_empty(), "{msg}");
                assert!(named.iter().all(|n| map.contains_key(*n)), "{msg} {map:?}");
            }
        }
    }
}

#[test]
fn connection_guard_bounds_frames_and_closes_as_specified() {
    let mut rng = Rng::new(15);
    for _ in 0..iterations() / 10 {
        let per_minute = 1 + rng.below(50) as u32;
        let max = 16 + rng.below(100);
        let mut g = ConnectionGuard::new(
            Rates {
                per_minute,
                presence_sets: 3,
                events: 20,
                window_ms: 10_000,
            },
            0,
        );
        let monotone = rng.chance(2);
        let (mut now, mut latest) = (0i64, 0i64);
        let (mut accepted, mut refused_recent) = (0u64, Vec::<i64>::new());
        for _ in 0..300 {
            now += match rng.below(10) {
                0 => 5_000 + rng.below(60_000) as i64,
                1 if !monotone => -(rng.below(1000) as i64), // a clock step backwards
                _ => rng.below(50) as i64,
            };
            latest = latest.max(now);
            let len = if rng.chance(40) {
                max + 1
            } else {
                rng.below(max + 1)
            };
            match g.admit(len, max, now) {
                Admission::Close(code) if len > max => assert_eq!(code, Close::TooBig),
                _ if len > max => panic!("an oversize frame must close with 1009"),
                Admission::Accept => {
                    accepted += 1;
                    // Never more than the bucket plus what the elapsed time refilled.
                    let ceiling = f64::from(per_minute)
                        + (latest as f64) * f64::from(per_minute) / 60_000.0
                        + 1.0;
                    assert!((accepted as f64) <= ceiling, "{accepted} > {ceiling}");
                }
                Admission::Refuse => refused_recent.push(now),
                Admission::Close(code) => {
                    assert_eq!(code, Close::RateLimited);
                    if monotone {
                        refused_recent.retain(|t| now - t < 60_000);
                    }
                    assert!(refused_recent.len() >= 9, "closed after {refused_recent:?}");
                    break;
                }
            }
        }
    }
}

#[test]
fn api_errors_are_spec_shaped_for_any_message() {
    let mut rng = Rng::new(16);
    for _ in 0..iterations() / 2 {
        let why = rng.string(30);
        for e in [
            ApiError::InvalidBody(why.clone()),
            ApiError::InvalidJson(why.clone()),
            ApiError::Unauthorized(why.clone()),
            ApiError::ReservedType(why.clone()),
            ApiError::DuplicateId(why.clone()),
        ] {
            let v: Value = serde_json::from_str(&e.body()).expect("error bodies are JSON");
            assert_eq!(v["success"], false);
            assert_eq!(v["error"]["code"], e.code());
            assert!(v["error"]["message"].is_string());
            assert!(e
                .code()
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b == b'_'));
        }
    }
}
