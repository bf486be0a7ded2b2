//! Who a WebSocket connection is, and which rooms it may join.
//!
//! This module owns the realtime auth contract of `GET /v1/ws` (PROTOCOL.md, "WebSocket") and the
//! token that `herald token` prints (PROTOCOL.md, "CLI and config"):
//!
//! - [`identify`] turns an upgrade request into an [`Identity`]. With `auth.jwt_secret` set, the
//!   token comes from `Authorization: Bearer <jwt>` (the scheme is matched case-insensitively) or,
//!   when there is no Bearer header, from the `token` query parameter; the header wins when both
//!   are given. Without a secret (development) the `user_id` query parameter names the user and
//!   no token is looked at. With repeated query parameters the first one counts.
//! - [`verify`] checks an HS256 JWT; [`issue`] makes one; [`parse_ttl`] reads `--ttl`.
//! - [`Identity::may_join`] is the room policy.
//!
//! # Tokens
//! HS256 only: the header's `alg` must be `HS256`, so `none`, `HS512`, RS*/ES* and unknown
//! algorithms are refused before any claim is read (no algorithm confusion). Claims:
//! - `sub` (required): the user id, 1–[`MAX_USER_ID_BYTES`] bytes, no control characters — the
//!   same rule as the development `user_id`, because both name the `user:<id>` room.
//! - `exp` (required): unix seconds, an integer. A token is expired once `exp` is more than
//!   [`LEEWAY_SECS`] in the past (5 s of allowance for clock skew between issuer and server).
//! - `rooms` (optional): at most [`MAX_ROOM_PATTERNS`] patterns, each 1–[`MAX_ROOM_PATTERN_BYTES`]
//!   bytes without control characters. A trailing `*` makes a prefix wildcard (`project:*`);
//!   a `*` anywhere else is an ordinary character.
//! - `iat` (optional): unix seconds, an integer; [`issue`] sets it, [`verify`] does not judge it.
//! - Other claims are ignored, except `aud`: a token carrying an audience is refused, as RFC 7519
//!   §4.1.3 asks of a recipient that does not identify itself with one (Herald has none).
//!
//! # Invariants
//! - Whatever [`issue`] returns, [`verify`] with the same secret accepts until it expires: both
//!   apply the same claim rules, and [`issue`] refuses a token longer than [`MAX_TOKEN_BYTES`].
//! - An [`Identity`] always has a valid user id; its `rooms`, when present, are valid patterns.
//! - An empty secret never signs or verifies anything (the config refuses one too), so a
//!   misconfiguration fails closed.
//!
//! # Room policy
//! A connection may always join its own `user:<its id>` room. With a `rooms` claim, any other
//! room must match one of its patterns — an explicit `user:*` does grant other users' rooms, since
//! the token's issuer asked for it, and an empty list grants nothing but the own room. Without the
//! claim, every room is allowed except other users' `user:` rooms. Whether a room name is well
//! formed (`<kind>:<id>`) is the caller's check, not this policy's.
//!
//! # Failure modes
//! Every failure is an [`AuthError`], which the server answers with HTTP 401 before the upgrade:
//! [`AuthError::Missing`] (no token at all), [`AuthError::Invalid`] (malformed, bad signature, wrong
//! algorithm, bad or missing claims, unusable secret), [`AuthError::Expired`],
//! [`AuthError::MissingUser`] and [`AuthError::BadUser`] (development mode only, and [`issue`]).
//! Nothing here panics on input.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

/// Longest user id (`sub` claim or `?user_id=`), in bytes.
pub const MAX_USER_ID_BYTES: usize = 256;
/// Most room patterns a token may carry.
pub const MAX_ROOM_PATTERNS: usize = 256;
/// Longest room pattern, in bytes (room kind and id are at most 256 bytes each, plus the `:`).
pub const MAX_ROOM_PATTERN_BYTES: usize = 513;
/// Longest token accepted or issued, in bytes; checked before any decoding work.
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;
/// How long after `exp` a token is still accepted, for clock skew between issuer and server.
pub const LEEWAY_SECS: u64 = 5;
/// Longest TTL that [`parse_ttl`] and [`issue`] accept: 3650 days (about ten years).
pub const MAX_TTL: Duration = Duration::from_secs(3650 * 86_400);

/// Who a connection is and which rooms it may join.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    pub user_id: String,
    pub rooms: Option<Vec<String>>,
}

impl Identity {
    /// Whether this identity may subscribe to `room` (`<kind>:<id>`): with `rooms`, some pattern must match (exact, or prefix when it ends in `*`);
    /// without, any room except another user's `user:<id>` room. Its own `user:<its id>` room is always allowed.
    pub fn may_join(&self, room: &str) -> bool {
        let own_room = room.strip_prefix("user:").map(|id| id == self.user_id);
        if own_room == Some(true) {
            return true;
        }
        match &self.rooms {
            Some(patterns) => patterns.iter().any(|pattern| pattern_matches(pattern, room)),
            // Some(false): another user's room.
            None => own_room.is_none(),
        }
    }
}

/// Whether `pattern` admits `room`: a trailing `*` matches any rest (including none), otherwise
/// the two must be equal.
fn pattern_matches(pattern: &str, room: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => room.starts_with(prefix),
        None => pattern == room,
    }
}

/// Why a connection was refused; each maps to HTTP 401 before the upgrade.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    #[error("a token is required: Authorization: Bearer <jwt> or ?token=<jwt>")]
    Missing,
    /// Bad signature, malformed, wrong algorithm, bad claims, unusable secret.
    #[error("the token is not valid: {0}")]
    Invalid(String),
    #[error("the token has expired")]
    Expired,
    #[error("user_id is required (?user_id=…) when no jwt_secret is configured")]
    MissingUser,
    #[error("invalid user id: {0}")]
    BadUser(String),
}

/// The JWT payload Herald reads and writes. Unknown claims are ignored when reading.
#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    sub: String,
    exp: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    iat: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    rooms: Option<Vec<String>>,
}

/// Checks a user id: 1–[`MAX_USER_ID_BYTES`] bytes, no control characters. The error text says
/// why without echoing the id (it may be huge or unprintable).
fn check_user_id(user_id: &str) -> Result<(), String> {
    if user_id.is_empty() || user_id.len() > MAX_USER_ID_BYTES {
        return Err(format!("must be 1–{MAX_USER_ID_BYTES} bytes, got {}", user_id.len()));
    }
    if let Some(control) = user_id.chars().find(|c| c.is_control()) {
        return Err(format!("contains a control character (U+{:04X})", u32::from(control)));
    }
    Ok(())
}

/// Checks a `rooms` claim against the bounds in the module doc.
fn check_rooms(rooms: &[String]) -> Result<(), String> {
    if rooms.len() > MAX_ROOM_PATTERNS {
        return Err(format!("claim `rooms`: at most {MAX_ROOM_PATTERNS} patterns, got {}", rooms.len()));
    }
    for (index, pattern) in rooms.iter().enumerate() {
        if pattern.is_empty() || pattern.len() > MAX_ROOM_PATTERN_BYTES {
            return Err(format!(
                "claim `rooms`: pattern {index} must be 1–{MAX_ROOM_PATTERN_BYTES} bytes, got {}",
                pattern.len()
            ));
        }
        if pattern.chars().any(char::is_control) {
            return Err(format!("claim `rooms`: pattern {index} contains a control character"));
        }
    }
    Ok(())
}

/// Turns a jsonwebtoken failure into ours, with a short reason a client can act on.
fn from_jwt_error(error: &jsonwebtoken::errors::Error) -> AuthError {
    let reason = match error.kind() {
        ErrorKind::ExpiredSignature => return AuthError::Expired,
        ErrorKind::InvalidSignature => "bad signature".to_owned(),
        ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => "the algorithm must be HS256".to_owned(),
        ErrorKind::InvalidToken => "malformed: expected three dot-separated parts".to_owned(),
        ErrorKind::MissingRequiredClaim(claim) => format!("missing claim `{claim}`"),
        ErrorKind::InvalidAudience => "the `aud` claim is not accepted".to_owned(),
        ErrorKind::Base64(_) => "malformed: bad base64url".to_owned(),
        // The header's `alg: none` (or any unknown algorithm) lands here too: it is not an
        // `Algorithm` variant, so the header does not parse.
        ErrorKind::Json(inner) => format!("malformed: {inner}"),
        ErrorKind::Utf8(_) => "malformed: not UTF-8".to_owned(),
        _ => error.to_string(),
    };
    AuthError::Invalid(reason)
}

/// Unix seconds now; a clock before 1970 is a broken host, reported rather than panicking.
fn unix_now_secs() -> Result<u64, AuthError> {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|since| since.as_secs())
        .map_err(|_| AuthError::Invalid("the system clock is before 1970".to_owned()))
}

/// Verifies an HS256 token with `secret` now.
pub fn verify(token: &str, secret: &[u8]) -> Result<Identity, AuthError> {
    if secret.is_empty() {
        return Err(AuthError::Invalid("no secret to verify with".to_owned()));
    }
    if token.len() > MAX_TOKEN_BYTES {
        return Err(AuthError::Invalid(format!("longer than {MAX_TOKEN_BYTES} bytes")));
    }
    let mut validation = Validation::new(Algorithm::HS256);
    validation.leeway = LEEWAY_SECS;
    validation.set_required_spec_claims(&["exp", "sub"]);
    let data = jsonwebtoken::decode::<Claims>(token, &DecodingKey::from_secret(secret), &validation)
        .map_err(|error| from_jwt_error(&error))?;
    let claims = data.claims;
    check_user_id(&claims.sub).map_err(|reason| AuthError::Invalid(format!("claim `sub`: {reason}")))?;
    if let Some(rooms) = &claims.rooms {
        check_rooms(rooms).map_err(AuthError::Invalid)?;
    }
    Ok(Identity { user_id: claims.sub, rooms: claims.rooms })
}

/// Makes a token for `user_id`, valid for `ttl`, with optional room patterns (`herald token`).
pub fn issue(
    user_id: &str,
    rooms: Option<Vec<String>>,
    ttl: std::time::Duration,
    secret: &[u8],
) -> Result<String, AuthError> {
    if secret.is_empty() {
        return Err(AuthError::Invalid("no secret to sign with".to_owned()));
    }
    check_user_id(user_id).map_err(AuthError::BadUser)?;
    if let Some(rooms) = &rooms {
        check_rooms(rooms).map_err(AuthError::Invalid)?;
    }
    if ttl < Duration::from_secs(1) || ttl > MAX_TTL {
        return Err(AuthError::Invalid(format!("ttl must be 1 s to {} days", MAX_TTL.as_secs() / 86_400)));
    }
    let now = unix_now_secs()?;
    // Cannot overflow: `now` is far below u64::MAX and `ttl` is at most MAX_TTL.
    let exp = now.saturating_add(ttl.as_secs());
    let claims = Claims { sub: user_id.to_owned(), exp, iat: Some(now), rooms };
    let token = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &EncodingKey::from_secret(secret))
        .map_err(|error| AuthError::Invalid(format!("cannot sign: {error}")))?;
    if token.len() > MAX_TOKEN_BYTES {
        return Err(AuthError::Invalid(format!(
            "the token would be {} bytes, over {MAX_TOKEN_BYTES}; use fewer or shorter room patterns",
            token.len()
        )));
    }
    Ok(token)
}

/// Parses a TTL like `1h`, `30m`, `45s`, `2d`, or bare seconds `3600` (for `herald token --ttl`).
pub fn parse_ttl(text: &str) -> Result<std::time::Duration, String> {
    let trimmed = text.trim();
    let (digits, unit_secs) = match trimmed.char_indices().last() {
        Some((at, 's')) => (&trimmed[..at], 1),
        Some((at, 'm')) => (&trimmed[..at], 60),
        Some((at, 'h')) => (&trimmed[..at], 3_600),
        Some((at, 'd')) => (&trimmed[..at], 86_400),
        _ => (trimmed, 1),
    };
    let usage =
        || format!("invalid ttl `{text}`: expected a number with an optional unit s, m, h or d (e.g. 1h, 3600)");
    // Digits only: `u64::from_str` alone would also take a leading `+`.
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(usage());
    }
    let count: u64 = digits.parse().map_err(|_| usage())?;
    let secs = count.checked_mul(unit_secs).ok_or_else(|| format!("invalid ttl `{text}`: too long"))?;
    let ttl = Duration::from_secs(secs);
    if ttl.is_zero() {
        return Err(format!("invalid ttl `{text}`: must be positive"));
    }
    if ttl > MAX_TTL {
        return Err(format!("invalid ttl `{text}`: at most {} days", MAX_TTL.as_secs() / 86_400));
    }
    Ok(ttl)
}

/// The first value of query parameter `name`, if any.
fn query_param<'q>(query: &'q [(String, String)], name: &str) -> Option<&'q str> {
    query.iter().find(|(key, _)| key == name).map(|(_, value)| value.as_str())
}

/// The token of an `Authorization` value when its scheme is Bearer (case-insensitive, RFC 7235).
fn bearer_token(authorization: &str) -> Option<&str> {
    let value = authorization.trim();
    // `Bearer` with nothing after it is still a Bearer header, just an empty one.
    let (scheme, rest) = value.split_once(' ').unwrap_or((value, ""));
    scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
}

/// The identity of an upgrade request: `jwt_secret` Some → token from `authorization` (a `Bearer ` value) or else the `token` query parameter, verified;
/// None (development) → the `user_id` query parameter (1–256 bytes, no control characters), rooms None.
pub fn identify(
    authorization: Option<&str>,
    query: &[(String, String)],
    jwt_secret: Option<&str>,
) -> Result<Identity, AuthError> {
    let Some(secret) = jwt_secret else {
        let user_id = query_param(query, "user_id").ok_or(AuthError::MissingUser)?;
        check_user_id(user_id).map_err(AuthError::BadUser)?;
        return Ok(Identity { user_id: user_id.to_owned(), rooms: None });
    };
    let from_header = authorization.and_then(bearer_token).filter(|token| !token.is_empty());
    let from_query = query_param(query, "token").filter(|token| !token.is_empty());
    match from_header.or(from_query) {
        Some(token) => verify(token, secret.as_bytes()),
        // A header with another scheme (e.g. Basic) deserves a precise answer.
        None if authorization.is_some_and(|value| bearer_token(value).is_none()) => {
            Err(AuthError::Invalid("the Authorization header is not `Bearer <jwt>`".to_owned()))
        }
        None => Err(AuthError::Missing),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"test-secret-32-bytes-long-enough";

    fn identity(user_id: &str, rooms: Option<&[&str]>) -> Identity {
        Identity {
            user_id: user_id.to_owned(),
            rooms: rooms.map(|patterns| patterns.iter().map(|p| (*p).to_owned()).collect()),
        }
    }

    /// Signs arbitrary claims with any algorithm, for tokens `issue` would never make.
    fn sign(alg: Algorithm, claims: &serde_json::Value, secret: &[u8]) -> String {
        jsonwebtoken::encode(&Header::new(alg), claims, &EncodingKey::from_secret(secret)).expect("test token signs")
    }

    fn now() -> u64 {
        unix_now_secs().expect("clock after 1970")
    }

    fn query(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    // A token from `issue` verifies back to the same user and rooms.
    #[test]
    fn issue_then_verify_round_trips() {
        let rooms = Some(vec!["project:*".to_owned(), "team:a".to_owned()]);
        let token = issue("u1", rooms.clone(), Duration::from_secs(3600), SECRET).expect("issue");
        assert_eq!(verify(&token, SECRET), Ok(Identity { user_id: "u1".to_owned(), rooms }));
        let token = issue("u2", None, Duration::from_secs(60), SECRET).expect("issue");
        assert_eq!(verify(&token, SECRET), Ok(identity("u2", None)));
    }

    // The issued payload carries sub, exp = iat + ttl and iat, and no rooms key when there are none.
    #[test]
    fn issued_claims_have_the_expected_shape() {
        let token = issue("u1", None, Duration::from_secs(90), SECRET).expect("issue");
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 0;
        let data = jsonwebtoken::decode::<serde_json::Value>(&token, &DecodingKey::from_secret(SECRET), &validation)
            .expect("decode");
        let claims = data.claims;
        assert_eq!(claims["sub"], "u1");
        let iat = claims["iat"].as_u64().expect("iat");
        assert_eq!(claims["exp"].as_u64(), Some(iat + 90));
        assert!(claims.get("rooms").is_none(), "{claims}");
    }

    // A token signed with another secret is refused as invalid (bad signature).
    #[test]
    fn wrong_secret_is_invalid() {
        let token = issue("u1", None, Duration::from_secs(60), b"another-secret").expect("issue");
        assert_eq!(verify(&token, SECRET), Err(AuthError::Invalid("bad signature".to_owned())));
    }

    // A token whose payload was altered after signing is refused.
    #[test]
    fn tampered_payload_is_invalid() {
        let token = issue("u1", None, Duration::from_secs(60), SECRET).expect("issue");
        let other = issue("admin", None, Duration::from_secs(60), b"attacker").expect("issue");
        let parts: Vec<&str> = token.split('.').collect();
        let other_parts: Vec<&str> = other.split('.').collect();
        let forged = format!("{}.{}.{}", parts[0], other_parts[1], parts[2]);
        assert!(matches!(verify(&forged, SECRET), Err(AuthError::Invalid(_))));
    }

    // A token whose exp is well past the leeway is refused as expired.
    #[test]
    fn expired_token_is_refused() {
        let claims = serde_json::json!({"sub": "u1", "exp": now() - 60, "iat": now() - 120});
        assert_eq!(verify(&sign(Algorithm::HS256, &claims, SECRET), SECRET), Err(AuthError::Expired));
    }

    // A token that expired within the leeway is still accepted, and one just past it is not.
    #[test]
    fn leeway_is_honoured() {
        let fresh = serde_json::json!({"sub": "u1", "exp": now() - 1});
        assert!(verify(&sign(Algorithm::HS256, &fresh, SECRET), SECRET).is_ok());
        let stale = serde_json::json!({"sub": "u1", "exp": now() - LEEWAY_SECS - 2});
        assert_eq!(verify(&sign(Algorithm::HS256, &stale, SECRET), SECRET), Err(AuthError::Expired));
    }

    // An unsigned `alg: none` token is refused, with or without a signature part.
    #[test]
    fn alg_none_is_refused() {
        let token = issue("u1", None, Duration::from_secs(60), SECRET).expect("issue");
        let parts: Vec<&str> = token.split('.').collect();
        // base64url of {"alg":"none","typ":"JWT"}
        let none_header = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0";
        for forged in [format!("{none_header}.{}.", parts[1]), format!("{none_header}.{}.{}", parts[1], parts[2])] {
            assert!(matches!(verify(&forged, SECRET), Err(AuthError::Invalid(_))), "{forged}");
        }
    }

    // A token signed with HS512, even with the right secret, is refused as the wrong algorithm.
    #[test]
    fn hs512_is_refused() {
        let claims = serde_json::json!({"sub": "u1", "exp": now() + 600});
        let token = sign(Algorithm::HS512, &claims, SECRET);
        assert_eq!(verify(&token, SECRET), Err(AuthError::Invalid("the algorithm must be HS256".to_owned())));
    }

    // Missing or ill-typed claims are refused as invalid, not accepted with defaults.
    #[test]
    fn bad_claims_are_invalid() {
        let later = now() + 600;
        let cases = [
            serde_json::json!({"sub": "u1"}),
            serde_json::json!({"exp": later}),
            serde_json::json!({"sub": "", "exp": later}),
            serde_json::json!({"sub": "x".repeat(MAX_USER_ID_BYTES + 1), "exp": later}),
            serde_json::json!({"sub": "u\n1", "exp": later}),
            serde_json::json!({"sub": 7, "exp": later}),
            serde_json::json!({"sub": "u1", "exp": "soon"}),
            serde_json::json!({"sub": "u1", "exp": later, "rooms": "project:*"}),
            serde_json::json!({"sub": "u1", "exp": later, "rooms": [""]}),
            serde_json::json!({"sub": "u1", "exp": later, "aud": "someone"}),
        ];
        for claims in cases {
            let result = verify(&sign(Algorithm::HS256, &claims, SECRET), SECRET);
            assert!(matches!(result, Err(AuthError::Invalid(_))), "{claims} → {result:?}");
        }
    }

    // Garbage, oversized tokens and an empty secret are refused without panicking.
    #[test]
    fn malformed_input_is_invalid() {
        let huge = "a".repeat(MAX_TOKEN_BYTES + 1);
        for token in ["", "abc", "a.b", "a.b.c", "....", "é.é.é", huge.as_str()] {
            assert!(matches!(verify(token, SECRET), Err(AuthError::Invalid(_))), "{token:.20}");
        }
        let token = issue("u1", None, Duration::from_secs(60), SECRET).expect("issue");
        assert!(matches!(verify(&token, b""), Err(AuthError::Invalid(_))));
    }

    // `issue` refuses what `verify` would refuse: bad user ids, bad rooms, bad ttl, empty secret.
    #[test]
    fn issue_refuses_bad_input() {
        let hour = Duration::from_secs(3600);
        assert!(matches!(issue("", None, hour, SECRET), Err(AuthError::BadUser(_))));
        assert!(matches!(issue("u\u{7}", None, hour, SECRET), Err(AuthError::BadUser(_))));
        assert!(matches!(issue("u1", Some(vec![String::new()]), hour, SECRET), Err(AuthError::Invalid(_))));
        let many = Some(vec!["team:a".to_owned(); MAX_ROOM_PATTERNS + 1]);
        assert!(matches!(issue("u1", many, hour, SECRET), Err(AuthError::Invalid(_))));
        assert!(matches!(issue("u1", None, Duration::ZERO, SECRET), Err(AuthError::Invalid(_))));
        assert!(matches!(issue("u1", None, MAX_TTL + hour, SECRET), Err(AuthError::Invalid(_))));
        assert!(matches!(issue("u1", None, hour, b""), Err(AuthError::Invalid(_))));
        // Within every per-pattern bound, but too long a token in total.
        let long = Some(vec!["r".repeat(MAX_ROOM_PATTERN_BYTES); 64]);
        assert!(matches!(issue("u1", long, hour, SECRET), Err(AuthError::Invalid(_))));
    }

    // The room policy table: patterns, exact rooms, no claim, and the own user room.
    #[test]
    fn may_join_table() {
        let scoped = identity("u1", Some(&["project:*", "team:a"]));
        let open = identity("u1", None);
        let none = identity("u1", Some(&[]));
        let cases: &[(&Identity, &str, bool)] = &[
            (&scoped, "project:p1", true),
            (&scoped, "project:", true),
            (&scoped, "projects:p1", false),
            (&scoped, "team:a", true),
            (&scoped, "team:ab", false),
            (&scoped, "team:b", false),
            (&scoped, "user:u1", true),
            (&scoped, "user:u9", false),
            (&open, "user:u9", false),
            (&open, "user:u1", true),
            (&open, "user:u1x", false),
            (&open, "user:", false),
            (&open, "project:p1", true),
            (&open, "team:a", true),
            (&none, "user:u1", true),
            (&none, "project:p1", false),
        ];
        for (who, room, allowed) in cases {
            assert_eq!(who.may_join(room), *allowed, "{who:?} joining {room}");
        }
    }

    // A `*` only wildcards at the end; elsewhere it is literal, and `user:*` grants user rooms.
    #[test]
    fn wildcard_only_at_the_end() {
        let who = identity("u1", Some(&["a*b", "user:*", "*x:y"]));
        assert!(who.may_join("a*b"));
        assert!(!who.may_join("axb"));
        assert!(who.may_join("user:u9"));
        assert!(who.may_join("*x:y"));
        assert!(!who.may_join("zx:y"));
        assert!(identity("u1", Some(&["*"])).may_join("anything:at-all"));
    }

    // With a secret, the Bearer header is used, else ?token=; the header wins over the query.
    #[test]
    fn identify_with_a_secret_takes_header_then_query() {
        let secret = std::str::from_utf8(SECRET).expect("utf-8 secret");
        let t1 = issue("u1", None, Duration::from_secs(60), SECRET).expect("issue");
        let t2 = issue("u2", None, Duration::from_secs(60), SECRET).expect("issue");
        let header = format!("Bearer {t1}");
        assert_eq!(identify(Some(&header), &[], Some(secret)), Ok(identity("u1", None)));
        let lower = format!("bearer  {t1}");
        assert_eq!(identify(Some(&lower), &[], Some(secret)), Ok(identity("u1", None)));
        assert_eq!(identify(None, &query(&[("token", &t2)]), Some(secret)), Ok(identity("u2", None)));
        assert_eq!(identify(Some(&header), &query(&[("token", &t2)]), Some(secret)), Ok(identity("u1", None)));
        // A non-Bearer header falls back to the query token.
        assert_eq!(identify(Some("Basic dTE6cA=="), &query(&[("token", &t2)]), Some(secret)), Ok(identity("u2", None)));
        // The development user_id is ignored once a secret is configured.
        assert_eq!(identify(None, &query(&[("user_id", "u1")]), Some(secret)), Err(AuthError::Missing));
    }

    // With a secret: nothing → Missing, an empty or non-Bearer value → the right error, a bad token → Invalid.
    #[test]
    fn identify_with_a_secret_reports_the_right_error() {
        let secret = std::str::from_utf8(SECRET).expect("utf-8 secret");
        assert_eq!(identify(None, &[], Some(secret)), Err(AuthError::Missing));
        assert_eq!(identify(Some("Bearer "), &[], Some(secret)), Err(AuthError::Missing));
        assert_eq!(identify(None, &query(&[("token", "")]), Some(secret)), Err(AuthError::Missing));
        assert!(matches!(identify(Some("Basic dTE6cA=="), &[], Some(secret)), Err(AuthError::Invalid(_))));
        assert!(matches!(identify(Some("Bearer nope"), &[], Some(secret)), Err(AuthError::Invalid(_))));
        let expired = sign(Algorithm::HS256, &serde_json::json!({"sub": "u1", "exp": now() - 60}), SECRET);
        assert_eq!(identify(None, &query(&[("token", &expired)]), Some(secret)), Err(AuthError::Expired));
        // An empty configured secret fails closed.
        let token = issue("u1", None, Duration::from_secs(60), SECRET).expect("issue");
        assert!(matches!(identify(Some(&format!("Bearer {token}")), &[], Some("")), Err(AuthError::Invalid(_))));
    }

    // Without a secret, ?user_id= names the user (rooms None); missing or bad ids are refused.
    #[test]
    fn identify_in_development_uses_user_id() {
        assert_eq!(identify(None, &query(&[("user_id", "u1")]), None), Ok(identity("u1", None)));
        let first = query(&[("user_id", "u1"), ("user_id", "u2")]);
        assert_eq!(identify(None, &first, None), Ok(identity("u1", None)));
        assert_eq!(identify(Some("Bearer whatever"), &query(&[("token", "x")]), None), Err(AuthError::MissingUser));
        assert!(matches!(identify(None, &query(&[("user_id", "")]), None), Err(AuthError::BadUser(_))));
        let long = "x".repeat(MAX_USER_ID_BYTES + 1);
        assert!(matches!(identify(None, &query(&[("user_id", &long)]), None), Err(AuthError::BadUser(_))));
        let exact = "x".repeat(MAX_USER_ID_BYTES);
        assert!(identify(None, &query(&[("user_id", &exact)]), None).is_ok());
        assert!(matches!(identify(None, &query(&[("user_id", "u\t1")]), None), Err(AuthError::BadUser(_))));
    }

    // parse_ttl reads each unit and bare seconds, and refuses junk, zero, signs and overflow.
    #[test]
    fn parse_ttl_cases() {
        let ok = [
            ("1h", 3_600),
            ("30m", 1_800),
            ("45s", 45),
            ("2d", 172_800),
            ("3600", 3_600),
            (" 1h ", 3_600),
            ("3650d", 3650 * 86_400),
        ];
        for (text, secs) in ok {
            assert_eq!(parse_ttl(text), Ok(Duration::from_secs(secs)), "{text}");
        }
        let bad =
            ["", "h", "0", "0s", "-1", "+5", "1.5h", "1x", "1h30m", "1 h", "1H", "3651d", "99999999999999999999", "é"];
        for text in bad {
            assert!(parse_ttl(text).is_err(), "{text}");
        }
    }
}
