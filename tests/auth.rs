//! Token authentication against a real node: tokens from the config grant
//! reading and writing per cache; REST takes `Authorization: Bearer`, the
//! WebSocket an `access_token` query parameter or an `auth` op. Everything
//! not granted is `unauthorized` (403), on every path.

mod common;

use awc::error::WsClientError;
use awc::http::StatusCode;
use common::ws::WsClient;
use common::{send, Rest, TestNode};
use serde_json::json;

const CONFIG: &str = r#"
[caches.scores]
[caches.secret]

[auth]
jwt_secret = "a-long-hmac-secret"

[[auth.tokens]]
token = "admin"
read = ["*"]
write = ["*"]

[[auth.tokens]]
token = "scorer"
read = ["scores"]
write = ["scores"]

[[auth.tokens]]
token = "viewer"
read = ["scores"]
"#;

fn bearer(token: &str) -> (&'static str, String) {
    ("Authorization", format!("Bearer {token}"))
}

#[actix_web::test]
async fn rest_reads_and_writes_need_a_token_that_grants_them() {
    let node = TestNode::start_with(CONFIG, &[]);
    let rest = Rest::new(&node);
    let url = rest.entry_url("scores", "match/1");

    let anonymous = send(rest.http.put(&url), "1").await;
    assert_eq!(
        (anonymous.status, anonymous.error_code()),
        (StatusCode::FORBIDDEN, "unauthorized")
    );
    assert_eq!(
        rest.get_entry("scores", "match/1").await.error_code(),
        "unauthorized"
    );
    let wrong = send(rest.http.get(&url).insert_header(bearer("guess")), "").await;
    assert_eq!(
        (wrong.status, wrong.error_code()),
        (StatusCode::FORBIDDEN, "unauthorized")
    );

    let written = send(rest.http.put(&url).insert_header(bearer("scorer")), "1").await;
    assert_eq!(written.status, StatusCode::CREATED);
    let read = send(rest.http.get(&url).insert_header(bearer("viewer")), "").await;
    assert_eq!((read.status, read.body.clone()), (StatusCode::OK, json!(1)));
    let viewer_write = send(rest.http.put(&url).insert_header(bearer("viewer")), "2").await;
    assert_eq!(viewer_write.error_code(), "unauthorized");
    let viewer_delete = send(rest.http.delete(&url).insert_header(bearer("viewer")), "").await;
    assert_eq!(viewer_delete.error_code(), "unauthorized");

    let secret = rest.entry_url("secret", "k");
    assert_eq!(
        send(rest.http.put(&secret).insert_header(bearer("scorer")), "1")
            .await
            .error_code(),
        "unauthorized"
    );
    assert_eq!(
        send(rest.http.get(&secret).insert_header(bearer("scorer")), "")
            .await
            .error_code(),
        "unauthorized"
    );
    let listing = rest.node.url("/api/v1/caches/secret/entries");
    assert_eq!(
        send(rest.http.get(&listing).insert_header(bearer("viewer")), "")
            .await
            .error_code(),
        "unauthorized"
    );
    assert_eq!(
        send(rest.http.put(&secret).insert_header(bearer("admin")), "1")
            .await
            .status,
        StatusCode::CREATED
    );

    let create = rest.node.url("/api/v1/caches/new");
    assert_eq!(
        send(rest.http.put(&create).insert_header(bearer("scorer")), "{}")
            .await
            .error_code(),
        "unauthorized"
    );
    assert_eq!(
        send(rest.http.put(&create).insert_header(bearer("admin")), "{}")
            .await
            .status,
        StatusCode::CREATED
    );

    // The list of caches shows only what the token may read.
    let caches = send(
        rest.http
            .get(rest.node.url("/api/v1/caches"))
            .insert_header(bearer("viewer")),
        "",
    )
    .await;
    let names: Vec<&str> = caches.body["caches"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["scores"]);
    // Health and metrics stay open for operators.
    assert_eq!(rest.get("/healthz").await.status, StatusCode::OK);
}

#[actix_web::test]
async fn websocket_access_comes_from_the_query_or_an_auth_op() {
    let node = TestNode::start_with(CONFIG, &[]);
    match WsClient::connect_to(&format!("{}?access_token=guess", node.ws_url()), &[], None).await {
        Err(WsClientError::InvalidResponseStatus(status)) => assert_eq!(status, StatusCode::FORBIDDEN),
        other => panic!("expected 403, got {:?}", other.map(|c| c.protocol)),
    }

    let mut viewer = WsClient::connect_to(&format!("{}?access_token=viewer", node.ws_url()), &[], None)
        .await
        .unwrap();
    let (_, entries, _) = viewer.subscribe("scores", json!({})).await;
    assert!(entries.is_empty());
    let denied = viewer.request(json!({"op":"subscribe","cache":"secret"})).await;
    assert_eq!(denied["code"], "unauthorized");
    let denied = viewer
        .request(json!({"op":"put","cache":"scores","key":"k","value":1}))
        .await;
    assert_eq!(denied["code"], "unauthorized");
    let denied = viewer
        .request(json!({"op":"remove","cache":"scores","key":"k"}))
        .await;
    assert_eq!(denied["code"], "unauthorized");
    let denied = viewer
        .request(json!({"op":"get","cache":"secret","key":"k"}))
        .await;
    assert_eq!(denied["code"], "unauthorized");

    // Anonymous until an auth op presents a token.
    let mut client = WsClient::connect(&node).await;
    let denied = client
        .request(json!({"op":"get","cache":"scores","key":"k"}))
        .await;
    assert_eq!(denied["code"], "unauthorized");
    let wrong = client.request(json!({"op":"auth","token":"guess"})).await;
    assert_eq!(wrong["code"], "unauthorized");
    let ok = client.request(json!({"op":"auth","token":"scorer"})).await;
    assert_eq!(ok["type"], "authenticated");
    let put = client
        .request(json!({"op":"put","cache":"scores","key":"k","value":7}))
        .await;
    assert_eq!(put["type"], "ok");
    // The viewer's subscription sees the scorer's write.
    assert_eq!(viewer.next_event().await["value"], 7);
}

#[actix_web::test]
async fn without_tokens_everything_is_open() {
    let node = TestNode::start_with("[caches.c]\n", &[]);
    let rest = Rest::new(&node);
    assert_eq!(rest.put_entry("c", "k", "1").await.status, StatusCode::CREATED);
    let mut client = WsClient::connect(&node).await;
    assert_eq!(
        client.request(json!({"op":"get","cache":"c","key":"k"})).await["value"],
        1
    );
}

#[actix_web::test]
async fn signed_jwts_carry_their_grants() {
    let node = TestNode::start_with(CONFIG, &[]);
    let rest = Rest::new(&node);
    let exp = pushgrid::grid::now_ms() / 1000 + 600;
    let sign = |secret: &str| {
        jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
            &json!({"read":["scores"],"write":["scores"],"exp":exp}),
            &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
        )
        .unwrap()
    };
    let url = rest.entry_url("scores", "jwt");
    let ok = send(
        rest.http
            .put(&url)
            .insert_header(bearer(&sign("a-long-hmac-secret"))),
        "1",
    )
    .await;
    assert_eq!(ok.status, StatusCode::CREATED);
    let secret = rest.entry_url("secret", "jwt");
    let denied = send(
        rest.http
            .put(&secret)
            .insert_header(bearer(&sign("a-long-hmac-secret"))),
        "1",
    )
    .await;
    assert_eq!(denied.error_code(), "unauthorized");
    let forged = send(rest.http.put(&url).insert_header(bearer(&sign("guessed"))), "2").await;
    assert_eq!(
        (forged.status, forged.error_code()),
        (StatusCode::FORBIDDEN, "unauthorized")
    );
    let mut client = WsClient::connect(&node).await;
    let authed = client
        .request(json!({"op":"auth","token":sign("a-long-hmac-secret")}))
        .await;
    assert_eq!(authed["type"], "authenticated");
    assert_eq!(
        client
            .request(json!({"op":"get","cache":"scores","key":"jwt"}))
            .await["value"],
        1
    );
}

#[actix_web::test]
async fn the_http_fallbacks_take_a_bearer_header_or_an_access_token_parameter() {
    let node = TestNode::start_with(CONFIG, &[]);
    let http = common::client();
    for transport in ["events", "poll"] {
        let status = |path: String, header: Option<&str>| {
            let mut request = http.get(node.url(&path));
            if let Some(token) = header {
                request = request.insert_header(bearer(token));
            }
            async move { request.send().await.expect("request").status() }
        };
        let base = format!("/api/v1/caches/scores/{transport}");
        assert_eq!(
            status(base.clone(), None).await,
            StatusCode::FORBIDDEN,
            "{transport}: no token"
        );
        assert_eq!(
            status(base.clone(), Some("viewer")).await,
            StatusCode::OK,
            "{transport}: header"
        );
        let query = format!("{base}?access_token=viewer");
        assert_eq!(
            status(query, None).await,
            StatusCode::OK,
            "{transport}: parameter"
        );
        let secret = format!("/api/v1/caches/secret/{transport}?access_token=viewer");
        assert_eq!(
            status(secret, None).await,
            StatusCode::FORBIDDEN,
            "{transport}: not granted"
        );
    }
}

#[actix_web::test]
async fn tokens_may_come_from_an_auth_file_given_on_the_command_line() {
    let mut file = tempfile::NamedTempFile::new().unwrap();
    std::io::Write::write_all(
        &mut file,
        b"[[tokens]]\ntoken = \"from-file\"\nread = [\"scores\"]\nwrite = [\"scores\"]\n",
    )
    .unwrap();
    let node = TestNode::start_with(
        "[caches.scores]\n",
        &["--auth-file", file.path().to_str().unwrap()],
    );
    let rest = Rest::new(&node);
    let anonymous = rest.put_entry("scores", "k", "1").await;
    assert_eq!(anonymous.status, StatusCode::FORBIDDEN);
    let url = rest.entry_url("scores", "k");
    let granted = send(rest.http.put(url).insert_header(bearer("from-file")), "1").await;
    assert_eq!(granted.status, StatusCode::CREATED, "{}", granted.text);
}
