//! The Worker entry point: resolves the route, authenticates, validates, and forwards to the
//! room's Durable Object through the internal API. Nothing reaches a room before these checks.

use crate::auth::{api_key_allowed, bearer, sign_hs256, TokenVerifier};
use crate::config::Settings;
use crate::error::ApiError;
use crate::internal::{self, header, path};
use crate::notification::Draft;
use crate::room_id::RoomId;
use crate::routing::{HistoryQuery, Route, SubscribeQuery};
use crate::runtime::{log, now_ms, random_id, settings};
use crate::{http, CLIENT_SCRIPT, DEMO_PAGE};
use serde_json::{json, Value};
use worker::{event, Context, Env, Headers, Method, Request, RequestInit, Response, Result};

/// Durable Object binding of `NotificationRoom` in `wrangler.toml`.
const ROOMS_BINDING: &str = "ROOMS";

#[event(fetch)]
pub async fn fetch(req: Request, env: Env, _ctx: Context) -> Result<Response> {
    console_error_panic_hook::set_once();
    let origin = req.headers().get("origin").ok().flatten();
    let method = req.method().to_string();
    let path = req.path();
    let route = Route::resolve(&method, &path);
    let result = match &route {
        Ok(route) => handle(route, req, &env).await,
        Err(e) => Err(e.clone()),
    };
    let resp = match result {
        Ok(resp) => resp,
        Err(e) => {
            if matches!(e.status(), 401 | 403 | 429 | 503) {
                // Never the query string: it may hold a token.
                log(
                    "refused",
                    json!({"method": method, "path": path, "status": e.status(), "code": e.code()}),
                );
            }
            http::error(&e)?
        }
    };
    cors(resp, origin.as_deref(), route.ok().as_ref(), &env)
}

/// A runtime failure: logged with its detail, answered as a plain 500.
fn internal(err: worker::Error) -> ApiError {
    log("internal_error", json!({"error": err.to_string()}));
    ApiError::Internal
}

async fn handle(route: &Route, req: Request, env: &Env) -> std::result::Result<Response, ApiError> {
    match route {
        Route::Healthz => http::json(
            200,
            json!({"ok": true, "version": env!("CARGO_PKG_VERSION")}).to_string(),
        )
        .map_err(internal),
        Route::Demo => http::text("text/html; charset=utf-8", DEMO_PAGE).map_err(internal),
        Route::ClientScript => {
            http::text("text/javascript; charset=utf-8", CLIENT_SCRIPT).map_err(internal)
        }
        Route::Preflight { allow } => {
            let resp = Response::empty().map_err(internal)?.with_status(204);
            resp.headers().set("allow", allow).map_err(internal)?;
            Ok(resp)
        }
        Route::Subscribe(room) => subscribe(room, req, env).await,
        Route::RoomBroadcast(room) => {
            let s = settings(env)?;
            let (body, key) = publish_body(req, &s).await?;
            let draft = Draft::from_json(body, key.as_deref(), None, now_ms(), random_id)?;
            // The room's answer is already SPEC's response: pass it through unread.
            publish(env, room, &draft).await
        }
        Route::Broadcast => broadcast(req, env).await,
        Route::History(room) => history(room, req, env).await,
        Route::RoomHealth(room) => health(room, req, env).await,
        Route::DevToken => dev_token(req, env).await,
    }
}

fn header_value(req: &Request, name: &str) -> Option<String> {
    req.headers().get(name).ok().flatten()
}

fn query_pairs(req: &Request) -> std::result::Result<Vec<(String, String)>, ApiError> {
    let url = req.url().map_err(internal)?;
    Ok(url.query_pairs().into_owned().collect())
}

/// Checks `Authorization: Bearer <key>` against `BROADCAST_API_KEYS`.
fn require_api_key(req: &Request, s: &Settings) -> std::result::Result<(), ApiError> {
    if s.broadcast_api_keys.is_empty() {
        return Err(ApiError::NotConfigured("BROADCAST_API_KEYS"));
    }
    let presented = header_value(req, "authorization");
    match presented.as_deref().and_then(bearer) {
        Some(key) if api_key_allowed(&s.broadcast_api_keys, key) => Ok(()),
        Some(_) => Err(ApiError::Unauthorized("invalid API key".into())),
        None => Err(ApiError::Unauthorized(
            "missing API key: send Authorization: Bearer <key>".into(),
        )),
    }
}

/// Authenticates a publish and reads its JSON body (415, 413, 400 in that order).
async fn publish_body(
    mut req: Request,
    s: &Settings,
) -> std::result::Result<(Value, Option<String>), ApiError> {
    require_api_key(&req, s)?;
    let content_type = header_value(&req, "content-type").unwrap_or_default();
    let essence = content_type.split(';').next().unwrap_or("").trim();
    if !essence.eq_ignore_ascii_case("application/json") {
        return Err(ApiError::UnsupportedMediaType);
    }
    let too_large = ApiError::PayloadTooLarge {
        limit: s.max_message_bytes,
    };
    let declared = header_value(&req, "content-length").and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > s.max_message_bytes) {
        return Err(too_large);
    }
    let bytes = req.bytes().await.map_err(internal)?;
    if bytes.len() > s.max_message_bytes {
        return Err(too_large);
    }
    let body: Value =
        serde_json::from_slice(&bytes).map_err(|e| ApiError::InvalidJson(e.to_string()))?;
    Ok((body, header_value(&req, "idempotency-key")))
}

/// The start of an internal request to a room: its method, and headers naming the room (the
/// only headers a room ever sees are the ones the Worker sets).
fn room_request(
    room: &RoomId,
    method: Method,
) -> std::result::Result<(RequestInit, Headers), ApiError> {
    let headers = Headers::new();
    headers.set(header::ROOM, room.as_str()).map_err(internal)?;
    let mut init = RequestInit::new();
    init.with_method(method);
    Ok((init, headers))
}

/// Sends an internal request to a room and returns its response.
async fn call_room(
    env: &Env,
    room: &RoomId,
    route: &str,
    mut init: RequestInit,
    headers: Headers,
) -> std::result::Result<Response, ApiError> {
    init.with_headers(headers);
    let req =
        Request::new_with_init(&format!("{}{route}", internal::BASE), &init).map_err(internal)?;
    let stub = env
        .durable_object(ROOMS_BINDING)
        .and_then(|ns| ns.get_by_name(room.as_str()))
        .map_err(internal)?;
    stub.fetch_with_request(req).await.map_err(internal)
}

/// Publishes a validated notification to one room; returns the room's answer.
async fn publish(env: &Env, room: &RoomId, d: &Draft) -> std::result::Result<Response, ApiError> {
    let (mut init, headers) = room_request(room, Method::Post)?;
    let set = |k, v: &str| headers.set(k, v).map_err(internal);
    set(header::ID, &d.id)?;
    set(header::TYPE, &d.kind)?;
    set(header::STATUS, &d.status)?;
    set(header::ACK, if d.requires_ack { "1" } else { "0" })?;
    if let Some(k) = &d.idempotency_key {
        set(header::KEY, k)?;
    }
    init.with_body(Some(d.members.clone().into()));
    call_room(env, room, path::PUBLISH, init, headers).await
}

/// Publishes to one room of `POST /broadcast`: `(status, body)` of the room's answer.
async fn publish_read(
    env: &Env,
    room: &RoomId,
    d: &Draft,
) -> std::result::Result<(u16, String), ApiError> {
    let mut resp = publish(env, room, d).await?;
    let body = resp.text().await.map_err(internal)?;
    Ok((resp.status_code(), body))
}

async fn subscribe(
    room: &RoomId,
    req: Request,
    env: &Env,
) -> std::result::Result<Response, ApiError> {
    let s = settings(env)?;
    let pairs = query_pairs(&req)?;
    let verifier = TokenVerifier::from_settings(&s)?;
    let from_header = header_value(&req, "authorization");
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
    let claims = verifier.verify(&token, now_ms() / 1000)?;
    if !claims.may_enter(room) {
        return Err(ApiError::Forbidden(format!(
            "this token may not enter room {room}"
        )));
    }
    if let Some(origin) = header_value(&req, "origin") {
        let origin = origin.trim_end_matches('/');
        if !s.allowed_origins.is_empty() && !s.allowed_origins.iter().any(|o| o == origin) {
            return Err(ApiError::OriginNotAllowed);
        }
    }
    let upgrade = header_value(&req, "upgrade").unwrap_or_default();
    if !upgrade.eq_ignore_ascii_case("websocket") {
        return Err(ApiError::UpgradeRequired);
    }
    let q = SubscribeQuery::parse(pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())))?;

    let (init, headers) = room_request(room, Method::Get)?;
    let set = |k, v: &str| headers.set(k, v).map_err(internal);
    set("upgrade", "websocket")?;
    set(header::SUB, &claims.sub)?;
    set(header::EXP, &claims.exp.to_string())?;
    if let Some(since) = q.since {
        set(header::SINCE, &since.to_string())?;
    }
    set(header::TYPES, &q.types.patterns().join(","))?;
    call_room(env, room, path::SUBSCRIBE, init, headers).await
}

async fn broadcast(req: Request, env: &Env) -> std::result::Result<Response, ApiError> {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Body {
        #[serde(rename = "userId")]
        user_id: String,
        #[serde(rename = "requestId")]
        request_id: Option<String>,
        message: Value,
    }
    let s = settings(env)?;
    let (body, key) = publish_body(req, &s).await?;
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
    let user = publish_read(env, &user_room, &draft);
    let results = match &request_room {
        Some(r) => {
            let (a, b) = futures_util::join!(user, publish_read(env, r, &draft));
            vec![(user_room.clone(), a), (r.clone(), b)]
        }
        None => vec![(user_room.clone(), user.await)],
    };
    let mut rooms = serde_json::Map::new();
    let mut all_ok = true;
    for (room, result) in results {
        let entry = match result {
            Ok((200, body)) => serde_json::from_str(&body).unwrap_or(Value::Null),
            Ok((_, body)) => {
                all_ok = false;
                serde_json::from_str(&body).unwrap_or(Value::Null)
            }
            Err(e) => {
                all_ok = false;
                serde_json::from_str(&e.body()).unwrap_or(Value::Null)
            }
        };
        rooms.insert(room.to_string(), entry);
    }
    // One room failing is reported, with the others' results: a retry with the same
    // Idempotency-Key (or id) completes it without notifying the rooms that succeeded twice.
    let status = if all_ok { 200 } else { 502 };
    let mut out = json!({"success": all_ok, "rooms": rooms});
    if !all_ok {
        out["error"] = json!({"code": "partial_failure",
            "message": "publishing to at least one room failed; retry with the same Idempotency-Key"});
    }
    http::json(status, out.to_string()).map_err(internal)
}

async fn history(
    room: &RoomId,
    req: Request,
    env: &Env,
) -> std::result::Result<Response, ApiError> {
    let s = settings(env)?;
    let pairs = query_pairs(&req)?;
    let q = HistoryQuery::parse(pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())))?;
    let auth = header_value(&req, "authorization");
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
    if !by_key {
        let verifier = match TokenVerifier::from_settings(&s) {
            Ok(v) => v,
            Err(ApiError::NotConfigured(_)) if !s.broadcast_api_keys.is_empty() => {
                return Err(ApiError::Unauthorized("invalid API key".into()))
            }
            Err(e) => return Err(e),
        };
        let claims = verifier.verify(&presented, now_ms() / 1000)?;
        if !claims.may_enter(room) {
            return Err(ApiError::Forbidden(format!(
                "this token may not read room {room}"
            )));
        }
    }
    let (init, headers) = room_request(room, Method::Get)?;
    headers
        .set(header::SINCE, &q.since.to_string())
        .map_err(internal)?;
    headers
        .set(header::LIMIT, &q.limit.to_string())
        .map_err(internal)?;
    call_room(env, room, path::HISTORY, init, headers).await
}

async fn health(room: &RoomId, req: Request, env: &Env) -> std::result::Result<Response, ApiError> {
    if header_value(&req, "authorization").is_none() {
        // Anonymous liveness never wakes (or creates) a room.
        return http::json(
            200,
            json!({"ok": true, "roomId": room.as_str()}).to_string(),
        )
        .map_err(internal);
    }
    let s = settings(env)?;
    require_api_key(&req, &s)?;
    let (init, headers) = room_request(room, Method::Get)?;
    call_room(env, room, path::HEALTH, init, headers).await
}

/// `POST /dev/token {"sub","rooms"?,"ttlSeconds"?}`: a token for local development, only with
/// `DEV_MODE` on (404 otherwise, as if the route did not exist).
async fn dev_token(mut req: Request, env: &Env) -> std::result::Result<Response, ApiError> {
    let s = settings(env)?;
    if !s.dev_mode {
        return Err(ApiError::NotFound);
    }
    let secret = s
        .jwt_secret
        .as_deref()
        .ok_or(ApiError::NotConfigured("JWT_SECRET"))?;
    #[derive(serde::Deserialize)]
    struct Body {
        sub: String,
        #[serde(default)]
        rooms: Vec<String>,
        #[serde(rename = "ttlSeconds", default)]
        ttl_seconds: Option<i64>,
    }
    let bytes = req.bytes().await.map_err(internal)?;
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
    http::json(200, json!({"token": token, "exp": exp}).to_string()).map_err(internal)
}

/// Cross-origin access: only reading routes (history, health, healthz), only for origins in
/// `ALLOWED_ORIGINS`. Publishing is server-to-server and never gets CORS headers.
fn cors(
    resp: Response,
    origin: Option<&str>,
    route: Option<&Route>,
    env: &Env,
) -> Result<Response> {
    let readable = matches!(
        route,
        Some(Route::History(_) | Route::RoomHealth(_) | Route::Healthz)
            | Some(Route::Preflight {
                allow: "GET, HEAD, OPTIONS"
            })
    );
    let Some(origin) = origin else {
        return Ok(resp);
    };
    let allowed = settings(env)
        .map(|s| {
            s.allowed_origins
                .iter()
                .any(|o| o == origin.trim_end_matches('/'))
        })
        .unwrap_or(false);
    if readable && allowed {
        // A room's answer (history, health) is a Durable Object response, whose headers are
        // immutable: setting one would throw (a 500). Copy them into fresh headers instead.
        let h = Headers::new();
        for (name, value) in resp.headers().entries() {
            h.append(&name, &value)?;
        }
        h.set("access-control-allow-origin", origin)?;
        h.set("access-control-allow-methods", "GET, HEAD, OPTIONS")?;
        h.set("access-control-allow-headers", "authorization")?;
        h.set("access-control-max-age", "600")?;
        h.set("vary", "Origin")?;
        return Ok(resp.with_headers(h));
    }
    Ok(resp)
}
