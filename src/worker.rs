//! The Worker entry point: resolves the route, authenticates, validates, and forwards to the
//! room's Durable Object through the internal API. Nothing reaches a room before these checks.

use crate::auth::{api_key_allowed, bearer, sign_hs256, AuthError, Claims, TokenVerifier};
use crate::bindings::{describe, namespace, on_settle, Js};
use crate::config::Settings;
use crate::error::ApiError;
use crate::internal::Call;
use crate::notification::Draft;
use crate::query::{pairs, split_url};
use crate::room_id::RoomId;
use crate::routing::{HistoryQuery, Route, SubscribeQuery};
use crate::runtime::{event, log, now_ms, random_id, settings};
use crate::{http, webcrypto, CLIENT_SCRIPT, DEMO_PAGE};
use js_sys::{Array, Promise, Uint8Array};
use serde_json::{json, Value};
use std::rc::Rc;
use wasm_bindgen::prelude::*;
use web_sys::{Headers, Request, RequestInit, Response};

/// Durable Object binding of `NotificationRoom` in `wrangler.toml`.
const ROOMS_BINDING: &str = "ROOMS";

/// A request's answer: ready, or later (a promise of a `Response`: the room's, passed on
/// unread, or one made once the body has arrived).
enum Answer {
    Ready(Response),
    Later(Promise),
}

impl From<Answer> for JsValue {
    fn from(a: Answer) -> JsValue {
        match a {
            Answer::Ready(r) => r.into(),
            Answer::Later(p) => p.into(),
        }
    }
}

/// The Worker's `fetch` handler (the runtime calls it with `env` and `ctx`). It returns a
/// `Response`, or a promise of one, without a Rust future: see [`on_settle`].
#[wasm_bindgen]
pub fn fetch(req: Request, env: JsValue, _ctx: JsValue) -> Js<JsValue> {
    let url = req.url();
    let (path, query) = split_url(&url);
    let method = req.method();
    let route = Route::resolve(&method, path);
    let inc = Incoming {
        headers: req.headers(),
        req: &req,
        query,
        env: &env,
        refusal: Refusal::new(&method, path),
    };
    let cors = cors_headers(inc.header("origin").as_deref(), route.as_ref().ok(), &env);
    let answer = match &route {
        Ok(route) => handle(route, &inc),
        Err(e) => Err(e.clone()),
    };
    let answer = answer.or_else(|e| inc.refusal.answer(&e).map(Answer::Ready))?;
    Ok(match (cors, answer) {
        (None, answer) => answer.into(),
        (Some(cors), Answer::Ready(r)) => http::with_headers(r, &cors)?.into(),
        (Some(cors), Answer::Later(p)) => on_settle(&p, move |r| {
            Ok(http::with_headers(r?.unchecked_into(), &cors)?.into())
        })
        .into(),
    })
}

/// One request as the handlers see it: its headers read once.
struct Incoming<'a> {
    req: &'a Request,
    headers: Headers,
    /// The query string, without `?`.
    query: &'a str,
    env: &'a JsValue,
    refusal: Rc<Refusal>,
}

impl Incoming<'_> {
    fn header(&self, name: &str) -> Option<String> {
        self.headers.get(name).ok().flatten()
    }
}

/// Answers errors with SPEC's error shape, logging refusals (never the query string: it may
/// hold a token).
struct Refusal {
    method: String,
    path: String,
}

impl Refusal {
    fn new(method: &str, path: &str) -> Rc<Refusal> {
        Rc::new(Refusal {
            method: method.to_owned(),
            path: path.to_owned(),
        })
    }

    fn answer(&self, e: &ApiError) -> Js<Response> {
        if matches!(e.status(), 401 | 403 | 429 | 503) {
            log(event("refused")
                .str("method", &self.method)
                .str("path", &self.path)
                .num("status", e.status())
                .str("code", e.code()));
        }
        http::error(e)
    }

    /// The answer of a continuation: its own, or the error's.
    fn settle(&self, answer: Result<impl Into<JsValue>, ApiError>) -> Js<JsValue> {
        match answer {
            Ok(a) => Ok(a.into()),
            Err(e) => Ok(self.answer(&e)?.into()),
        }
    }
}

/// A runtime failure: logged with its detail, answered as a plain 500.
fn internal(err: JsValue) -> ApiError {
    log(event("internal_error").str("error", &describe(&err)));
    ApiError::Internal
}

fn ready(resp: Js<Response>) -> Result<Answer, ApiError> {
    resp.map(Answer::Ready).map_err(internal)
}

fn handle(route: &Route, inc: &Incoming) -> Result<Answer, ApiError> {
    match route {
        Route::Healthz => ready(http::json(
            200,
            &json!({"ok": true, "version": env!("CARGO_PKG_VERSION")}).to_string(),
        )),
        Route::Demo => ready(http::text("text/html; charset=utf-8", DEMO_PAGE)),
        Route::ClientScript => ready(http::text("text/javascript; charset=utf-8", CLIENT_SCRIPT)),
        Route::Preflight { allow } => ready(http::no_content(&[("allow", allow)])),
        Route::Subscribe(room) => subscribe(room, inc),
        Route::RoomBroadcast(room) => {
            let (env, room) = (inc.env.clone(), room.clone());
            publish_body(inc, move |body, key| {
                let draft = Draft::from_json(body, key.as_deref(), None, now_ms(), random_id)?;
                // The room's answer is already SPEC's response: pass it through unread.
                Ok(publish(&env, &room, &draft)?.into())
            })
        }
        Route::Broadcast => {
            let env = inc.env.clone();
            publish_body(inc, move |body, key| broadcast(body, key, &env))
        }
        Route::History(room) => history(room, inc),
        Route::RoomHealth(room) => health(room, inc),
        Route::DevToken => dev_token(inc),
    }
}

/// Checks `Authorization: Bearer <key>` against `BROADCAST_API_KEYS`.
fn require_api_key(inc: &Incoming, s: &Settings) -> Result<(), ApiError> {
    if s.broadcast_api_keys.is_empty() {
        return Err(ApiError::NotConfigured("BROADCAST_API_KEYS"));
    }
    let presented = inc.header("authorization");
    match presented.as_deref().and_then(bearer) {
        Some(key) if api_key_allowed(&s.broadcast_api_keys, key) => Ok(()),
        Some(_) => Err(ApiError::Unauthorized("invalid API key".into())),
        None => Err(ApiError::Unauthorized(
            "missing API key: send Authorization: Bearer <key>".into(),
        )),
    }
}

/// Once the request body has arrived, `then(bytes)`: its answer (a `Response`, or a promise of
/// one), errors answered in SPEC's shape.
fn with_body(
    inc: &Incoming,
    then: impl FnOnce(Vec<u8>) -> Result<JsValue, ApiError> + 'static,
) -> Result<Answer, ApiError> {
    let refusal = Rc::clone(&inc.refusal);
    let body = inc.req.array_buffer().map_err(internal)?;
    Ok(Answer::Later(on_settle(&body, move |buf| {
        let answer = buf
            .map_err(internal)
            .and_then(|buf| then(Uint8Array::new(&buf).to_vec()));
        refusal.settle(answer)
    })))
}

/// Authenticates a publish, then reads its JSON body (415, 413, 400 in that order) and hands
/// it, with its `Idempotency-Key`, to `then`.
fn publish_body(
    inc: &Incoming,
    then: impl FnOnce(Value, Option<String>) -> Result<JsValue, ApiError> + 'static,
) -> Result<Answer, ApiError> {
    let s = settings(inc.env)?;
    require_api_key(inc, &s)?;
    let content_type = inc.header("content-type").unwrap_or_default();
    let essence = content_type.split(';').next().unwrap_or("").trim();
    if !essence.eq_ignore_ascii_case("application/json") {
        return Err(ApiError::UnsupportedMediaType);
    }
    let too_large = ApiError::PayloadTooLarge {
        limit: s.max_message_bytes,
    };
    let declared = inc
        .header("content-length")
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > s.max_message_bytes) {
        return Err(too_large);
    }
    let key = inc.header("idempotency-key");
    with_body(inc, move |bytes| {
        if bytes.len() > s.max_message_bytes {
            return Err(too_large);
        }
        let body: Value =
            serde_json::from_slice(&bytes).map_err(|e| ApiError::InvalidJson(e.to_string()))?;
        then(body, key)
    })
}

/// Sends a call to its room; the promise of the room's `Response`.
fn call_room(env: &JsValue, call: &Call, body: Option<&str>) -> Result<Promise, ApiError> {
    let init = RequestInit::new();
    match body {
        Some(b) => {
            init.set_method("POST");
            init.set_body(&JsValue::from_str(b));
        }
        None if matches!(call, Call::Subscribe { .. }) => {
            let headers = crate::bindings::object(&[("upgrade", "websocket")]);
            init.set_headers(&headers);
        }
        None => {}
    }
    let stub = namespace(env, ROOMS_BINDING)
        .and_then(|ns| ns.get_by_name(call.room().as_str()))
        .map_err(internal)?;
    Ok(stub.fetch(&call.url(), &init))
}

/// Publishes a validated notification to one room; the promise of the room's answer.
fn publish(env: &JsValue, room: &RoomId, d: &Draft) -> Result<Promise, ApiError> {
    let call = Call::Publish {
        room: room.clone(),
        id: d.id.clone(),
        kind: d.kind.clone(),
        status: d.status.clone(),
        requires_ack: d.requires_ack,
        key: d.idempotency_key.clone(),
    };
    call_room(env, &call, Some(&d.members))
}

/// Publishes to one room of `POST /broadcast`: a promise of `[status, body]` of the room's
/// answer, which never rejects (a failure is a `500` body), so one room cannot hide the other's.
fn publish_read(env: &JsValue, room: &RoomId, d: &Draft) -> Promise {
    let failed = |e: &ApiError| Array::of2(&JsValue::from(e.status()), &e.body().into()).into();
    let answer = match publish(env, room, d) {
        Ok(p) => p,
        Err(e) => return Promise::resolve(&failed(&e)),
    };
    on_settle(&answer, move |resp| {
        let resp: Response = match resp {
            Ok(r) => r.unchecked_into(),
            Err(e) => return Ok(failed(&internal(e))),
        };
        let status = resp.status();
        let text = match resp.text() {
            Ok(t) => t,
            Err(e) => return Ok(failed(&internal(e))),
        };
        Ok(on_settle(&text, move |t| {
            Ok(match t {
                Ok(t) => Array::of2(&JsValue::from(status), &t).into(),
                Err(e) => failed(&internal(e)),
            })
        })
        .into())
    })
}

/// Verifies a client token, then answers with `then(claims)`. An HS256 token is checked at
/// once; RS256, ES256 and EdDSA go through the runtime's WebCrypto ([`webcrypto`]).
fn with_claims(
    verifier: TokenVerifier,
    token: &str,
    refusal: &Rc<Refusal>,
    then: impl FnOnce(Claims) -> Result<Answer, ApiError> + 'static,
) -> Result<Answer, ApiError> {
    let token = verifier.inspect(token)?;
    let now = now_ms() / 1000;
    if token.keys.is_empty() {
        return then(verifier.claims(&token, now)?);
    }
    let refusal = Rc::clone(refusal);
    Ok(Answer::Later(on_settle(
        &webcrypto::verify(&token),
        move |verified| {
            let answer = if verified? == JsValue::TRUE {
                verifier
                    .claims(&token, now)
                    .map_err(ApiError::from)
                    .and_then(then)
            } else {
                Err(AuthError::BadSignature.into())
            };
            refusal.settle(answer)
        },
    )))
}

fn subscribe(room: &RoomId, inc: &Incoming) -> Result<Answer, ApiError> {
    let s = settings(inc.env)?;
    let pairs = pairs(inc.query);
    let verifier = TokenVerifier::from_settings(&s)?;
    let from_header = inc.header("authorization");
    let token = from_header
        .as_deref()
        .and_then(bearer)
        .map(str::to_owned)
        .or_else(|| {
            pairs
                .iter()
                .find(|(k, _)| k == "token")
                .map(|(_, v)| v.clone())
        })
        .ok_or_else(|| {
            ApiError::Unauthorized(
                "missing token: send Authorization: Bearer <jwt> or ?token=<jwt>".into(),
            )
        })?;
    let origin = inc.header("origin");
    let upgrade = inc.header("upgrade").unwrap_or_default();
    let (room, env) = (room.clone(), inc.env.clone());
    with_claims(verifier, &token, &inc.refusal, move |claims| {
        if !claims.may_enter(&room) {
            return Err(ApiError::Forbidden(format!(
                "this token may not enter room {room}"
            )));
        }
        if let Some(origin) = origin {
            let origin = origin.trim_end_matches('/');
            if !s.allowed_origins.is_empty() && !s.allowed_origins.iter().any(|o| o == origin) {
                return Err(ApiError::OriginNotAllowed);
            }
        }
        if !upgrade.eq_ignore_ascii_case("websocket") {
            return Err(ApiError::UpgradeRequired);
        }
        let q = SubscribeQuery::parse(pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())))?;
        let call = Call::Subscribe {
            room,
            sub: claims.sub,
            exp: claims.exp,
            since: q.since,
            types: q.types.patterns(),
        };
        Ok(Answer::Later(call_room(&env, &call, None)?))
    })
}

/// `POST /broadcast {"userId","requestId"?,"message"}`: the same notification to `user_{userId}`
/// and, with a `requestId`, `request_{requestId}`, at once.
fn broadcast(body: Value, key: Option<String>, env: &JsValue) -> Result<JsValue, ApiError> {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Body {
        #[serde(rename = "userId")]
        user_id: String,
        #[serde(rename = "requestId")]
        request_id: Option<String>,
        message: Value,
    }
    let body: Body = serde_json::from_value(body).map_err(|e| {
        ApiError::InvalidBody(format!(
            "expected {{\"userId\",\"requestId\"?,\"message\":{{…}}}}: {e}"
        ))
    })?;
    let user_room = RoomId::for_user(&body.user_id).map_err(|_| {
        ApiError::InvalidBody("userId makes an invalid room id user_{userId}".into())
    })?;
    let request_room = match &body.request_id {
        Some(r) => Some(RoomId::for_request(r).map_err(|_| {
            ApiError::InvalidBody("requestId makes an invalid room id request_{requestId}".into())
        })?),
        None => None,
    };
    let draft = Draft::from_json(
        body.message,
        key.as_deref(),
        body.request_id.as_deref(),
        now_ms(),
        random_id,
    )?;
    let mut rooms = vec![user_room];
    rooms.extend(request_room);
    let answers: Array = rooms.iter().map(|r| publish_read(env, r, &draft)).collect();
    Ok(on_settle(&Promise::all(&answers), move |answers| {
        let answers: Array = answers?.unchecked_into();
        let mut out = serde_json::Map::new();
        let mut all_ok = true;
        for (room, answer) in rooms.iter().zip(answers.iter()) {
            let answer: Array = answer.unchecked_into();
            let status = answer.get(0).as_f64().unwrap_or(0.0) as u16;
            let body = answer.get(1).as_string().unwrap_or_default();
            all_ok &= status == 200;
            out.insert(
                room.to_string(),
                serde_json::from_str(&body).unwrap_or(Value::Null),
            );
        }
        // One room failing is reported, with the others' results: a retry with the same
        // Idempotency-Key (or id) completes it without notifying the rooms that succeeded twice.
        let status = if all_ok { 200 } else { 502 };
        let mut body = json!({"success": all_ok, "rooms": out});
        if !all_ok {
            body["error"] = json!({"code": "partial_failure",
                "message": "publishing to at least one room failed; retry with the same Idempotency-Key"});
        }
        Ok(http::json(status, &body.to_string())?.into())
    })
    .into())
}

fn history(room: &RoomId, inc: &Incoming) -> Result<Answer, ApiError> {
    let s = settings(inc.env)?;
    let pairs = pairs(inc.query);
    let q = HistoryQuery::parse(pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())))?;
    let auth = inc.header("authorization");
    let from_header = auth.as_deref().and_then(bearer).map(str::to_owned);
    // An API key counts only in the Authorization header: `?token=` is for client tokens, and a
    // key in a URL ends up in logs and browser history.
    let by_key = from_header.as_deref().is_some_and(|k| {
        !s.broadcast_api_keys.is_empty() && api_key_allowed(&s.broadcast_api_keys, k)
    });
    let presented = from_header.or(q.token.clone()).ok_or_else(|| {
        ApiError::Unauthorized(
            "missing credentials: an API key or a token allowed in this room".into(),
        )
    })?;
    let call = Call::History {
        room: room.clone(),
        since: q.since,
        limit: q.limit,
    };
    if by_key {
        return Ok(Answer::Later(call_room(inc.env, &call, None)?));
    }
    let verifier = match TokenVerifier::from_settings(&s) {
        Ok(v) => v,
        Err(ApiError::NotConfigured(_)) if !s.broadcast_api_keys.is_empty() => {
            return Err(ApiError::Unauthorized("invalid API key".into()))
        }
        Err(e) => return Err(e),
    };
    let env = inc.env.clone();
    with_claims(verifier, &presented, &inc.refusal, move |claims| {
        let room = call.room();
        if !claims.may_enter(room) {
            return Err(ApiError::Forbidden(format!(
                "this token may not read room {room}"
            )));
        }
        Ok(Answer::Later(call_room(&env, &call, None)?))
    })
}

fn health(room: &RoomId, inc: &Incoming) -> Result<Answer, ApiError> {
    if inc.header("authorization").is_none() {
        // Anonymous liveness never wakes (or creates) a room.
        return ready(http::json(
            200,
            &json!({"ok": true, "roomId": room.as_str()}).to_string(),
        ));
    }
    let s = settings(inc.env)?;
    require_api_key(inc, &s)?;
    let call = Call::Health { room: room.clone() };
    Ok(Answer::Later(call_room(inc.env, &call, None)?))
}

/// `POST /dev/token {"sub","rooms"?,"ttlSeconds"?}`: a token for local development, only with
/// `DEV_MODE` on (404 otherwise, as if the route did not exist).
fn dev_token(inc: &Incoming) -> Result<Answer, ApiError> {
    let s = settings(inc.env)?;
    if !s.dev_mode {
        return Err(ApiError::NotFound);
    }
    if s.jwt_secret.is_none() {
        return Err(ApiError::NotConfigured("JWT_SECRET"));
    }
    #[derive(serde::Deserialize)]
    struct Body {
        sub: String,
        #[serde(default)]
        rooms: Vec<String>,
        #[serde(rename = "ttlSeconds", default)]
        ttl_seconds: Option<i64>,
    }
    with_body(inc, move |bytes| {
        let secret = s.jwt_secret.as_deref().unwrap_or_default();
        let body: Body = serde_json::from_slice(&bytes).map_err(|e| {
            ApiError::InvalidBody(format!(
                "expected {{\"sub\",\"rooms\"?,\"ttlSeconds\"?}}: {e}"
            ))
        })?;
        if body.sub.is_empty() {
            return Err(ApiError::InvalidBody("sub must not be empty".into()));
        }
        let now = now_ms() / 1000;
        let exp = now + body.ttl_seconds.unwrap_or(3600).clamp(1, 86_400);
        let token = sign_hs256(secret, &body.sub, &body.rooms, exp, now);
        let answer = json!({"token": token, "exp": exp}).to_string();
        Ok(http::json(200, &answer).map_err(internal)?.into())
    })
}

/// Cross-origin access: only reading routes (history, health, healthz), only for origins in
/// `ALLOWED_ORIGINS`. Publishing is server-to-server and never gets CORS headers. `None` when
/// the answer gets none.
fn cors_headers(
    origin: Option<&str>,
    route: Option<&Route>,
    env: &JsValue,
) -> Option<Vec<(&'static str, String)>> {
    let readable = matches!(
        route,
        Some(Route::History(_) | Route::RoomHealth(_) | Route::Healthz)
            | Some(Route::Preflight {
                allow: "GET, HEAD, OPTIONS"
            })
    );
    let origin = origin?;
    if !readable {
        return None;
    }
    let allowed = settings(env)
        .map(|s| {
            s.allowed_origins
                .iter()
                .any(|o| o == origin.trim_end_matches('/'))
        })
        .unwrap_or(false);
    allowed.then(|| {
        vec![
            ("access-control-allow-origin", origin.to_owned()),
            ("access-control-allow-methods", "GET, HEAD, OPTIONS".into()),
            ("access-control-allow-headers", "authorization".into()),
            ("access-control-max-age", "600".into()),
            ("vary", "Origin".into()),
        ]
    })
}
