//! The Worker's entry point on workers-rs: resolves the route, authenticates, validates, and
//! calls the room's Durable Object. Nothing reaches a room before these checks.
//!
//! The handler takes the runtime's `web_sys::Request` and returns a `web_sys::Response` (both
//! supported by `#[event(fetch)]` as they are, with no conversion), and reads the request
//! through web-sys: one call per header, the URL split by [`crate::query`].

use super::env::{describe, log, now_ms, random_id, settings};
use super::{http, webcrypto};
use crate::answer::{self, Answer, RoomAnswer};
use crate::auth::{sign_hs256, AuthError, Claims, Credentials, OriginPolicy, TokenVerifier};
use crate::codes::LogEvent;
use crate::config::Settings;
use crate::error::ApiError;
use crate::internal::{Call, Subscription, INLINE_MAX};
use crate::notification::{Broadcast, Draft};
use crate::query::{encoded_len, pairs, split_url};
use crate::room_id::RoomId;
use crate::routing::{HistoryQuery, PresenceQuery, Route, SubscribeQuery};
use crate::{CLIENT_SCRIPT, DEMO_PAGE};
use js_sys::Uint8Array;
use serde_json::Value;
use std::rc::Rc;
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;
use web_sys::{Headers, Request, Response};
use worker::{event, wasm_bindgen_futures, Context, Env};

/// Installs `console_error_panic_hook` in front of the hook workers-rs sets (which marks the
/// instance for re-initialisation after a panic): the panic's message and stack reach the log,
/// and a bad event still cannot wedge the isolate.
#[event(start)]
fn start() {
    let workers_rs_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        console_error_panic_hook::hook(info);
        workers_rs_hook(info);
    }));
}

/// Every request; every failure is answered in the protocol's error shape, never as an exception.
#[event(fetch)]
async fn fetch(req: Request, env: Env, _ctx: Context) -> worker::Result<Response> {
    Ok(handle(req, env).await)
}

/// One request as the handlers see it: its headers read once.
struct Incoming {
    req: Request,
    /// When the request arrived (ms).
    received_at: i64,
    headers: Headers,
    method: String,
    path: String,
    /// The query string, without `?`.
    query: String,
    env: Env,
}

impl Incoming {
    fn header(&self, name: &str) -> Option<String> {
        self.headers.get(name).ok().flatten()
    }

    fn pairs(&self) -> Vec<(String, String)> {
        pairs(&self.query)
    }

    fn settings(&self) -> Result<Rc<Settings>, ApiError> {
        settings(&self.env)
    }

    fn credentials(&self, query_token: Option<&str>) -> Credentials {
        Credentials::new(self.header("authorization").as_deref(), query_token)
    }

    fn is_upgrade(&self) -> bool {
        self.header("upgrade")
            .is_some_and(|u| u.eq_ignore_ascii_case("websocket"))
    }
}

async fn handle(req: Request, env: Env) -> Response {
    let url = req.url();
    let (path, query) = split_url(&url);
    let inc = Incoming {
        received_at: now_ms(),
        headers: req.headers(),
        method: req.method(),
        path: path.to_owned(),
        query: query.to_owned(),
        req,
        env,
    };
    let route = Route::resolve(&inc.method, &inc.path);
    let answer = match &route {
        Ok(route) => dispatch(route, &inc).await,
        Err(e) => Err(e.clone()),
    };
    let resp = answer.unwrap_or_else(|e| refuse(&inc, &e));
    match route.ok().and_then(|r| cors_origin(&r, &inc)) {
        Some(origin) => http::with_cors(resp, &origin),
        None => resp,
    }
}

/// Answers an error in the protocol's shape, logging refusals (never the query string: it may hold a
/// token).
fn refuse(inc: &Incoming, e: &ApiError) -> Response {
    if matches!(e.status(), 401 | 403 | 429 | 503) {
        log(LogEvent::Refused
            .line()
            .str("method", &inc.method)
            .str("path", &inc.path)
            .num("status", e.status())
            .str("code", e.code()));
    }
    http::answer(&Answer::from(e))
}

/// A runtime failure: logged with its detail, answered as a plain 500.
fn internal(err: impl Into<JsValue>) -> ApiError {
    log(LogEvent::InternalError
        .line()
        .str("error", &describe(&err.into())));
    ApiError::Internal
}

type Handled = Result<Response, ApiError>;

async fn dispatch(route: &Route, inc: &Incoming) -> Handled {
    match route {
        Route::Healthz => Ok(http::answer(&answer::healthz())),
        Route::Demo => Ok(http::text("text/html; charset=utf-8", DEMO_PAGE)),
        Route::ClientScript => Ok(http::text("text/javascript; charset=utf-8", CLIENT_SCRIPT)),
        Route::Preflight { allow } => Ok(http::no_content(&[("allow", allow)])),
        Route::Subscribe(room) => subscribe(room, inc).await,
        Route::RoomBroadcast(room) => {
            let (body, key) = publish_body(inc).await?;
            let draft = Draft::from_json(body, key.as_deref(), None, now_ms(), random_id)?;
            // The room's answer is already the protocol's response: passed on unread.
            publish(&inc.env, room, &draft, inc.received_at)?.await
        }
        Route::Broadcast => {
            let (body, key) = publish_body(inc).await?;
            broadcast(body, key, inc).await
        }
        Route::History(room) => history(room, inc).await,
        Route::Presence(room) => presence(room, inc).await,
        Route::RoomHealth(room) => health(room, inc).await,
        Route::DevToken => dev_token(inc).await,
    }
}

/// The request body, once it has arrived.
async fn body(inc: &Incoming) -> Result<Vec<u8>, ApiError> {
    let buf = JsFuture::from(inc.req.array_buffer().map_err(internal)?)
        .await
        .map_err(internal)?;
    Ok(Uint8Array::new(&buf).to_vec())
}

/// Authenticates a publish, then reads its JSON body (415, 413, 400 in that order); the body
/// and its `Idempotency-Key`.
async fn publish_body(inc: &Incoming) -> Result<(Value, Option<String>), ApiError> {
    let s = inc.settings()?;
    inc.credentials(None)
        .require_api_key(&s.broadcast_api_keys)?;
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
    let bytes = body(inc).await?;
    if bytes.len() > s.max_message_bytes {
        return Err(too_large);
    }
    let body = serde_json::from_slice(&bytes).map_err(|e| ApiError::InvalidJson(e.to_string()))?;
    Ok((body, key))
}

/// Sends a call to its room; resolves to the room's `Response`.
fn call_room(env: &Env, call: &Call, body: Option<&str>) -> Result<JsFuture, ApiError> {
    super::rooms::call(env, call, body).map_err(internal)
}

/// The room's answer to a call.
async fn answered(call: JsFuture) -> Handled {
    Ok(call.await.map_err(internal)?.unchecked_into())
}

/// Publishes a validated notification to one room.
fn publish(
    env: &Env,
    room: &RoomId,
    d: &Draft,
    received_at: i64,
) -> Result<impl std::future::Future<Output = Handled>, ApiError> {
    // Small notifications ride in the call's URL: the room then answers without waiting for
    // a body.
    let inline = encoded_len(&d.members) <= INLINE_MAX;
    let call = Call::Publish {
        room: room.clone(),
        envelope: d.envelope.clone(),
        members: inline.then(|| d.members.clone()),
        received_at,
    };
    let body = (!inline).then_some(d.members.as_str());
    Ok(answered(call_room(env, &call, body)?))
}

/// Verifies a client token. HS256 is checked at once; RS256, ES256 and EdDSA go through the
/// runtime's WebCrypto ([`webcrypto`]).
async fn verify(s: &Settings, token: &str) -> Result<Claims, ApiError> {
    let verifier = TokenVerifier::from_settings(s)?;
    let inspected = verifier.inspect(token)?;
    let now = now_ms() / 1000;
    if !inspected.keys.is_empty() && !webcrypto::verify(&inspected).await {
        return Err(AuthError::BadSignature.into());
    }
    Ok(verifier.claims(&inspected, now)?)
}

/// `GET /rooms/{id}/subscribe`: the upgrade, or without `Upgrade` the status the upgrade would
/// get (426 when it would be accepted: the room checks its connection limits), so a browser,
/// which never sees a refused upgrade's status, can ask.
async fn subscribe(room: &RoomId, inc: &Incoming) -> Handled {
    let s = inc.settings()?;
    let pairs = inc.pairs();
    let token = pairs
        .iter()
        .find(|(k, _)| k == "token")
        .map(|(_, v)| v.as_str());
    let creds = inc.credentials(token);
    let claims = verify(&s, creds.client_token()?).await?;
    if !claims.may_enter(room) {
        return Err(ApiError::Forbidden(format!(
            "this token may not enter room {room}"
        )));
    }
    if !OriginPolicy(&s.allowed_origins).allows(inc.header("origin").as_deref()) {
        return Err(ApiError::OriginNotAllowed);
    }
    let q = SubscribeQuery::parse(pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())))?;
    let call = if inc.is_upgrade() {
        Call::Subscribe {
            room: room.clone(),
            asked: Subscription {
                sub: claims.sub,
                exp: claims.exp,
                since: q.since,
                types: q.types.patterns(),
                presence: q.presence,
                batch: q.batch,
                received_at: inc.received_at,
            },
        }
    } else {
        Call::Probe {
            room: room.clone(),
            sub: claims.sub,
        }
    };
    answered(call_room(&inc.env, &call, None)?).await
}

/// `POST /broadcast`: one notification to `user_{userId}` (or every `user_{id}` of `userIds`)
/// and, with a `requestId`, `request_{requestId}`, with the same `id` in every room.
async fn broadcast(body: Value, key: Option<String>, inc: &Incoming) -> Handled {
    let b = Broadcast::from_json(body)?;
    let draft = Draft::from_json(
        b.message,
        key.as_deref(),
        b.request_id.as_deref(),
        now_ms(),
        random_id,
    )?;
    // Every room's call is in flight before the first answer is awaited.
    let calls: Vec<_> = b
        .rooms
        .iter()
        .map(|room| publish(&inc.env, room, &draft, inc.received_at))
        .collect();
    let mut answers = Vec::with_capacity(b.rooms.len());
    for (room, call) in b.rooms.iter().zip(calls) {
        answers.push(read_answer(room, call).await);
    }
    Ok(http::answer(&answer::broadcast(&answers)))
}

/// One room's answer, read; a room that could not be reached answers its error.
async fn read_answer(
    room: &RoomId,
    call: Result<impl std::future::Future<Output = Handled>, ApiError>,
) -> RoomAnswer {
    let failed = |e: ApiError| RoomAnswer {
        room: room.to_string(),
        status: e.status(),
        body: e.body(),
    };
    let resp = match call {
        Ok(call) => match call.await {
            Ok(r) => r,
            Err(e) => return failed(e),
        },
        Err(e) => return failed(e),
    };
    let text = match resp.text() {
        Ok(p) => JsFuture::from(p).await,
        Err(e) => Err(e),
    };
    match text {
        Ok(t) => RoomAnswer {
            room: room.to_string(),
            status: resp.status(),
            body: t.as_string().unwrap_or_default(),
        },
        Err(e) => failed(internal(e)),
    }
}

/// `GET /rooms/{id}/history` with an API key, or a token allowed in the room.
async fn history(room: &RoomId, inc: &Incoming) -> Handled {
    let q = HistoryQuery::parse(inc.pairs().iter().map(|(k, v)| (k.as_str(), v.as_str())))?;
    let call = Call::History {
        room: room.clone(),
        since: q.since,
        limit: q.limit,
    };
    read_room(room, inc, q.token.as_deref(), &call).await
}

/// `GET /rooms/{id}/presence`, with the same credentials as history.
async fn presence(room: &RoomId, inc: &Incoming) -> Handled {
    let q = PresenceQuery::parse(inc.pairs().iter().map(|(k, v)| (k.as_str(), v.as_str())))?;
    let call = Call::Presence {
        room: room.clone(),
        limit: q.limit,
    };
    read_room(room, inc, q.token.as_deref(), &call).await
}

/// A reading call, allowed with an API key or a token allowed in the room.
async fn read_room(room: &RoomId, inc: &Incoming, token: Option<&str>, call: &Call) -> Handled {
    let s = inc.settings()?;
    let creds = inc.credentials(token);
    if !creds.has_api_key(&s.broadcast_api_keys) {
        let token = creds.client_token().map_err(|_| {
            ApiError::Unauthorized(
                "missing credentials: an API key or a token allowed in this room".into(),
            )
        })?;
        let claims = match verify(&s, token).await {
            Err(ApiError::NotConfigured(_)) if !s.broadcast_api_keys.is_empty() => {
                return Err(ApiError::Unauthorized("invalid API key".into()))
            }
            other => other?,
        };
        if !claims.may_enter(room) {
            return Err(ApiError::Forbidden(format!(
                "this token may not read room {room}"
            )));
        }
    }
    answered(call_room(&inc.env, call, None)?).await
}

async fn health(room: &RoomId, inc: &Incoming) -> Handled {
    if inc.header("authorization").is_none() {
        // Anonymous liveness never wakes (or creates) a room.
        return Ok(http::answer(&answer::liveness(room.as_str())));
    }
    let s = inc.settings()?;
    inc.credentials(None)
        .require_api_key(&s.broadcast_api_keys)?;
    let call = Call::Health { room: room.clone() };
    answered(call_room(&inc.env, &call, None)?).await
}

/// `POST /dev/token {"sub","rooms"?,"ttlSeconds"?}`: a token for local development, only with
/// `DEV_MODE` on (404 otherwise, as if the route did not exist).
async fn dev_token(inc: &Incoming) -> Handled {
    let s = inc.settings()?;
    if !s.dev_mode {
        return Err(ApiError::NotFound);
    }
    let Some(secret) = s.jwt_secret.as_deref() else {
        return Err(ApiError::NotConfigured("JWT_SECRET"));
    };
    #[derive(serde::Deserialize)]
    struct Body {
        sub: String,
        #[serde(default)]
        rooms: Vec<String>,
        #[serde(rename = "ttlSeconds", default)]
        ttl_seconds: Option<i64>,
    }
    let bytes = body(inc).await?;
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
    let answer = crate::json::Object::new()
        .str("token", &token)
        .num("exp", exp)
        .finish();
    Ok(http::answer(&Answer::ok(answer)))
}

/// The origin granted cross-origin access (see [`OriginPolicy`]): on the reading routes
/// (history, health, healthz) and the subscribe probe. Publishing is server-to-server and
/// never gets CORS headers; nor does an upgrade (a `101` cannot be copied).
fn cors_origin(route: &Route, inc: &Incoming) -> Option<String> {
    let readable = match route {
        Route::History(_) | Route::Presence(_) | Route::RoomHealth(_) | Route::Healthz => true,
        Route::Subscribe(_) => !inc.is_upgrade(),
        Route::Preflight { allow } => *allow == "GET, HEAD, OPTIONS",
        _ => false,
    };
    if !readable {
        return None;
    }
    let origin = inc.header("origin");
    let s = inc.settings().ok()?;
    OriginPolicy(&s.allowed_origins)
        .cors(origin.as_deref())
        .map(str::to_owned)
}
