//! A verified token's claims, and the checks they must pass: `sub`, `exp` and `nbf` (with
//! [`LEEWAY_SECS`]), `iss` and `aud` when configured, `rooms`.

use serde_json::{Map, Value};

use super::base64url;
use super::AuthError;
use crate::room_id::RoomId;

/// Clock leeway for exp/nbf in seconds.
pub const LEEWAY_SECS: i64 = 5;

/// A verified client token's claims.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claims {
    /// The user id; never empty.
    pub sub: String,
    /// Expiry, unix seconds.
    pub exp: i64,
    /// The `rooms` claim: exact room ids, or prefixes ending in `*`. Empty when absent.
    pub rooms: Vec<String>,
}

impl Claims {
    /// Whether this token may enter `room`:
    ///
    /// - `user_{sub}`, the token's own user room;
    /// - an exact entry of `rooms`;
    /// - an entry ending in `*` whose rest is a prefix of the room id (`"team_42_*"` admits
    ///   `team_42_a` and `team_42_` followed by anything, but not `team_420`).
    ///
    /// A lone `"*"` is the empty prefix, so it admits **every** room: that is how an issuer grants
    /// an admin or a back-office dashboard access to all rooms. A `*` anywhere but at the end is
    /// literal, and since room ids never contain `*`, such an entry matches nothing.
    pub fn may_enter(&self, room: &RoomId) -> bool {
        let room = room.as_str();
        if room.strip_prefix("user_") == Some(self.sub.as_str()) {
            return true;
        }
        self.rooms
            .iter()
            .any(|entry| match entry.strip_suffix('*') {
                Some(prefix) => room.starts_with(prefix),
                None => entry == room,
            })
    }
}

/// The claims of a token's payload (base64url JSON), checked at `now` (unix seconds), with
/// `iss` and `aud` required to match `issuer` and `audience` when those are configured.
pub(super) fn check(
    payload: &str,
    now: i64,
    issuer: Option<&str>,
    audience: Option<&str>,
) -> Result<Claims, AuthError> {
    let payload = base64url::decode(payload).ok_or(AuthError::Malformed)?;
    let claims: Map<String, Value> =
        serde_json::from_slice(&payload).map_err(|_| AuthError::Malformed)?;
    let sub = match claims.get("sub") {
        None => return Err(AuthError::MissingClaim("sub")),
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        Some(_) => return Err(AuthError::InvalidClaim("sub")),
    };
    let exp = match claims.get("exp") {
        None => return Err(AuthError::MissingClaim("exp")),
        Some(v) => unix_seconds(v).ok_or(AuthError::InvalidClaim("exp"))?,
    };
    // RFC 7519: valid only while now < exp.
    if now >= exp.saturating_add(LEEWAY_SECS) {
        return Err(AuthError::Expired);
    }
    if let Some(v) = claims.get("nbf") {
        let nbf = unix_seconds(v).ok_or(AuthError::InvalidClaim("nbf"))?;
        // RFC 7519: valid from nbf on.
        if now.saturating_add(LEEWAY_SECS) < nbf {
            return Err(AuthError::NotYetValid);
        }
    }
    if let Some(expected) = issuer {
        match claims.get("iss") {
            None => return Err(AuthError::MissingClaim("iss")),
            Some(Value::String(iss)) if iss == expected => {}
            Some(Value::String(_)) => return Err(AuthError::WrongIssuer),
            Some(_) => return Err(AuthError::InvalidClaim("iss")),
        }
    }
    if let Some(expected) = audience {
        let found = match claims.get("aud") {
            None => return Err(AuthError::MissingClaim("aud")),
            Some(Value::String(aud)) => aud == expected,
            Some(Value::Array(auds)) => {
                let mut found = false;
                for aud in auds {
                    match aud {
                        Value::String(aud) => found |= aud == expected,
                        _ => return Err(AuthError::InvalidClaim("aud")),
                    }
                }
                found
            }
            Some(_) => return Err(AuthError::InvalidClaim("aud")),
        };
        if !found {
            return Err(AuthError::WrongAudience);
        }
    }
    let rooms = match claims.get("rooms") {
        None => Vec::new(),
        Some(Value::Array(entries)) => entries
            .iter()
            .map(|e| e.as_str().map(str::to_owned))
            .collect::<Option<Vec<String>>>()
            .ok_or(AuthError::InvalidClaim("rooms"))?,
        Some(_) => return Err(AuthError::InvalidClaim("rooms")),
    };
    Ok(Claims { sub, exp, rooms })
}

/// A NumericDate (RFC 7519): any JSON number, fractions dropped, saturating at the `i64` range.
fn unix_seconds(v: &Value) -> Option<i64> {
    let n = v.as_number()?;
    if let Some(i) = n.as_i64() {
        Some(i)
    } else if n.as_u64().is_some() {
        Some(i64::MAX)
    } else {
        // `as` saturates; JSON has no NaN or infinity.
        n.as_f64().map(|f| f.floor() as i64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::test_support::{claims, hs, settings, verifier, NOW, SECRET};
    use crate::auth::TokenVerifier;
    use serde_json::json;

    #[test]
    fn expiry_honours_the_leeway() {
        let v = verifier(Some(SECRET), None);
        let at = |exp: i64| hs(SECRET.as_bytes(), &json!({"sub": "u1", "exp": exp}));
        assert_eq!(v.verify(&at(NOW - 3600), NOW), Err(AuthError::Expired));
        assert_eq!(
            v.verify(&at(NOW - LEEWAY_SECS), NOW),
            Err(AuthError::Expired)
        );
        assert!(v.verify(&at(NOW - LEEWAY_SECS + 1), NOW).is_ok());
        assert!(v.verify(&at(NOW - 1), NOW).is_ok());
        assert!(v.verify(&at(NOW), NOW).is_ok());
        // Extreme values saturate instead of overflowing.
        assert!(v.verify(&at(i64::MAX), NOW).is_ok());
        assert_eq!(v.verify(&at(i64::MIN), NOW), Err(AuthError::Expired));
        let huge = hs(SECRET.as_bytes(), &json!({"sub": "u1", "exp": 1e300}));
        assert_eq!(v.verify(&huge, NOW).unwrap().exp, i64::MAX);
        let big_u64 = hs(SECRET.as_bytes(), &json!({"sub": "u1", "exp": u64::MAX}));
        assert!(v.verify(&big_u64, NOW).is_ok());
        let fraction = hs(
            SECRET.as_bytes(),
            &json!({"sub": "u1", "exp": NOW as f64 + 10.7}),
        );
        assert_eq!(v.verify(&fraction, NOW).unwrap().exp, NOW + 10);
    }

    #[test]
    fn not_before_is_honoured() {
        let v = verifier(Some(SECRET), None);
        let nbf = |nbf: Value| {
            hs(
                SECRET.as_bytes(),
                &json!({"sub": "u1", "exp": NOW + 600, "nbf": nbf}),
            )
        };
        assert_eq!(
            v.verify(&nbf(json!(NOW + 60)), NOW),
            Err(AuthError::NotYetValid)
        );
        assert_eq!(
            v.verify(&nbf(json!(NOW + LEEWAY_SECS + 1)), NOW),
            Err(AuthError::NotYetValid)
        );
        assert!(v.verify(&nbf(json!(NOW + LEEWAY_SECS)), NOW).is_ok());
        assert!(v.verify(&nbf(json!(NOW - 60)), NOW).is_ok());
        assert_eq!(
            v.verify(&nbf(json!("soon")), NOW),
            Err(AuthError::InvalidClaim("nbf"))
        );
    }

    #[test]
    fn sub_is_required_and_a_non_empty_string() {
        let v = verifier(Some(SECRET), None);
        let with = |c: Value| v.verify(&hs(SECRET.as_bytes(), &c), NOW);
        assert_eq!(
            with(json!({"exp": NOW + 60})),
            Err(AuthError::MissingClaim("sub"))
        );
        assert_eq!(
            with(json!({"sub": "", "exp": NOW + 60})),
            Err(AuthError::InvalidClaim("sub"))
        );
        assert_eq!(
            with(json!({"sub": 42, "exp": NOW + 60})),
            Err(AuthError::InvalidClaim("sub"))
        );
        assert_eq!(
            with(json!({"sub": null, "exp": NOW + 60})),
            Err(AuthError::InvalidClaim("sub"))
        );
    }

    #[test]
    fn exp_is_required_and_a_number() {
        let v = verifier(Some(SECRET), None);
        let with = |c: Value| v.verify(&hs(SECRET.as_bytes(), &c), NOW);
        assert_eq!(
            with(json!({"sub": "u1"})),
            Err(AuthError::MissingClaim("exp"))
        );
        assert_eq!(
            with(json!({"sub": "u1", "exp": "1700000600"})),
            Err(AuthError::InvalidClaim("exp"))
        );
        assert_eq!(
            with(json!({"sub": "u1", "exp": null})),
            Err(AuthError::InvalidClaim("exp"))
        );
    }

    #[test]
    fn claims_must_be_a_json_object() {
        let v = verifier(Some(SECRET), None);
        for c in [json!([1, 2]), json!("sub"), json!(null)] {
            assert_eq!(
                v.verify(&hs(SECRET.as_bytes(), &c), NOW),
                Err(AuthError::Malformed)
            );
        }
    }

    #[test]
    fn issuer_and_audience_are_checked_when_configured() {
        let mut s = settings(Some(SECRET), None);
        s.jwt_issuer = Some("https://auth.example".into());
        s.jwt_audience = Some("roomcast".into());
        let v = TokenVerifier::from_settings(&s).unwrap();
        let with = |extra: Value| {
            let mut c = claims("u1");
            c.as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            v.verify(&hs(SECRET.as_bytes(), &c), NOW)
        };
        assert!(with(json!({"iss": "https://auth.example", "aud": "roomcast"})).is_ok());
        assert!(with(json!({"iss": "https://auth.example", "aud": ["other", "roomcast"]})).is_ok());
        assert_eq!(
            with(json!({"iss": "https://evil.example", "aud": "roomcast"})),
            Err(AuthError::WrongIssuer)
        );
        assert_eq!(
            with(json!({"aud": "roomcast"})),
            Err(AuthError::MissingClaim("iss"))
        );
        assert_eq!(
            with(json!({"iss": 1, "aud": "roomcast"})),
            Err(AuthError::InvalidClaim("iss"))
        );
        assert_eq!(
            with(json!({"iss": "https://auth.example", "aud": "other"})),
            Err(AuthError::WrongAudience)
        );
        assert_eq!(
            with(json!({"iss": "https://auth.example", "aud": ["a", "b"]})),
            Err(AuthError::WrongAudience)
        );
        assert_eq!(
            with(json!({"iss": "https://auth.example", "aud": []})),
            Err(AuthError::WrongAudience)
        );
        assert_eq!(
            with(json!({"iss": "https://auth.example"})),
            Err(AuthError::MissingClaim("aud"))
        );
        assert_eq!(
            with(json!({"iss": "https://auth.example", "aud": 5})),
            Err(AuthError::InvalidClaim("aud"))
        );
        assert_eq!(
            with(json!({"iss": "https://auth.example", "aud": ["roomcast", 5]})),
            Err(AuthError::InvalidClaim("aud"))
        );
        // Not configured: iss and aud are ignored whatever they hold.
        let plain = verifier(Some(SECRET), None);
        let c = json!({"sub": "u1", "exp": NOW + 60, "iss": 5, "aud": {"x": 1}});
        assert!(plain.verify(&hs(SECRET.as_bytes(), &c), NOW).is_ok());
    }

    #[test]
    fn rooms_claim_is_an_array_of_strings() {
        let v = verifier(Some(SECRET), None);
        let with = |rooms: Value| {
            v.verify(
                &hs(
                    SECRET.as_bytes(),
                    &json!({"sub": "u1", "exp": NOW + 60, "rooms": rooms}),
                ),
                NOW,
            )
        };
        let got = with(json!(["request_abc", "team_42_*"])).unwrap();
        assert_eq!(got.rooms, vec!["request_abc", "team_42_*"]);
        assert!(got.may_enter(&RoomId::parse("request_abc").unwrap()));
        assert!(got.may_enter(&RoomId::parse("team_42_x").unwrap()));
        assert!(!got.may_enter(&RoomId::parse("request_abcd").unwrap()));
        assert!(!got.may_enter(&RoomId::parse("team_420").unwrap()));
        assert_eq!(with(json!([])).unwrap().rooms, Vec::<String>::new());
        for bad in [
            json!("request_abc"),
            json!({"a": 1}),
            json!(["ok", 1]),
            json!(null),
            json!(true),
        ] {
            assert_eq!(
                with(bad.clone()),
                Err(AuthError::InvalidClaim("rooms")),
                "{bad}"
            );
        }
    }

    #[test]
    fn may_enter_rules() {
        let room = |r: &str| RoomId::parse(r).unwrap();
        let c = Claims {
            sub: "u1".into(),
            exp: 0,
            rooms: vec!["request_r1".into(), "team_42_*".into(), "a*b".into()],
        };
        assert!(c.may_enter(&room("user_u1")));
        assert!(!c.may_enter(&room("user_u2")));
        assert!(!c.may_enter(&room("user_u10")));
        assert!(!c.may_enter(&room("user_")));
        assert!(!c.may_enter(&room("u1")));
        assert!(c.may_enter(&room("request_r1")));
        assert!(!c.may_enter(&room("request_r2")));
        assert!(c.may_enter(&room("team_42_")));
        assert!(c.may_enter(&room("team_42_chat")));
        assert!(!c.may_enter(&room("team_43_chat")));
        assert!(!c.may_enter(&room("team_42")));
        assert!(!c.may_enter(&room("ab")));
        let none = Claims {
            sub: "u1".into(),
            exp: 0,
            rooms: vec![],
        };
        assert!(!none.may_enter(&room("request_r1")));
        let all = Claims {
            sub: "u1".into(),
            exp: 0,
            rooms: vec!["*".into()],
        };
        assert!(all.may_enter(&room("anything")) && all.may_enter(&room("user_u2")));
        let empty_entry = Claims {
            sub: "u1".into(),
            exp: 0,
            rooms: vec![String::new()],
        };
        assert!(!empty_entry.may_enter(&room("a")));
    }
}
