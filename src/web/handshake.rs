//! The checks a WebSocket handshake passes before it is upgraded: the
//! `Origin` against the allow-list, and the subprotocol the client asked for.

use actix_web::http::header::{self, HeaderMap};
use actix_web::http::Uri;

use super::error::ApiError;
use crate::protocol::codec::Format;
use crate::protocol::ErrorCode;

/// Whether a handshake from `origin` may proceed. No `Origin` header (not a
/// browser) is allowed, as is the server's own origin (the `Host` the
/// request came to). An `allowed` entry is either a whole origin
/// (`https://app.example.com`) or a bare host name (`localhost`), which
/// allows it on any scheme and port.
pub fn origin_allowed(headers: &HeaderMap, allowed: &[String]) -> bool {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return true;
    };
    let Ok(origin) = origin.to_str() else {
        return false;
    };
    if allowed.iter().any(|a| a == origin || a == "*") {
        return true;
    }
    let Ok(uri) = origin.parse::<Uri>() else {
        return false;
    };
    if uri.host().is_some_and(|host| allowed.iter().any(|a| a == host)) {
        return true;
    }
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
    uri.authority()
        .is_some_and(|authority| Some(authority.as_str()) == host)
}

/// The `host:port` of the handshake's `Origin`, if it has one.
pub fn origin_authority(headers: &HeaderMap) -> Option<String> {
    let origin = headers.get(header::ORIGIN)?.to_str().ok()?;
    let uri = origin.parse::<Uri>().ok()?;
    uri.authority().map(|a| a.as_str().to_string())
}

/// The format of the first subprotocol the client offers that pushgrid
/// speaks; JSON when it offers none. Offering only unknown ones is an error.
pub fn negotiate_format(headers: &HeaderMap) -> Result<Format, ApiError> {
    let offered: Vec<&str> = headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .collect();
    if offered.is_empty() {
        return Ok(Format::Json);
    }
    offered
        .iter()
        .find_map(|p| Format::from_subprotocol(p))
        .ok_or_else(|| {
            ApiError::new(
                ErrorCode::BadRequest,
                format!(
                    "no supported subprotocol in {offered:?}; use {} or {}",
                    Format::Json.subprotocol(),
                    Format::MsgPack.subprotocol()
                ),
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::test::TestRequest;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        pairs
            .iter()
            .fold(TestRequest::default(), |req, (k, v)| req.append_header((*k, *v)))
            .to_http_request()
            .headers()
            .clone()
    }

    fn defaults() -> Vec<String> {
        vec!["localhost".into(), "127.0.0.1".into()]
    }

    #[test]
    fn local_and_own_origins_are_allowed_by_default() {
        let allowed = defaults();
        assert!(origin_allowed(&headers(&[]), &allowed));
        assert!(origin_allowed(
            &headers(&[("origin", "http://localhost:3000")]),
            &allowed
        ));
        assert!(origin_allowed(
            &headers(&[("origin", "http://127.0.0.1:8080")]),
            &allowed
        ));
        assert!(origin_allowed(
            &headers(&[
                ("origin", "https://grid.example.com"),
                ("host", "grid.example.com")
            ]),
            &allowed
        ));
        assert!(!origin_allowed(
            &headers(&[("origin", "https://evil.example"), ("host", "grid.example.com")]),
            &allowed
        ));
        assert!(!origin_allowed(&headers(&[("origin", "null")]), &allowed));
    }

    #[test]
    fn configured_origins_are_allowed() {
        let allowed = vec!["https://app.example.com".to_string()];
        assert!(origin_allowed(
            &headers(&[("origin", "https://app.example.com")]),
            &allowed
        ));
        assert!(!origin_allowed(
            &headers(&[("origin", "http://localhost:1")]),
            &allowed
        ));
    }

    #[test]
    fn subprotocols_pick_the_first_known_one() {
        assert_eq!(negotiate_format(&headers(&[])).unwrap(), Format::Json);
        let both = headers(&[(
            "sec-websocket-protocol",
            "x, pushgrid.v1.msgpack, pushgrid.v1.json",
        )]);
        assert_eq!(negotiate_format(&both).unwrap(), Format::MsgPack);
        assert!(negotiate_format(&headers(&[("sec-websocket-protocol", "chat, v2")])).is_err());
    }
}
