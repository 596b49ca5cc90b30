//! Values come back exactly as written, over every transport and both
//! codecs: every digit of a 17-significant-digit float, integers past 2^64,
//! in reads, listings, snapshots and events. A number no `f64` can hold is
//! refused, with the request's id echoed. These read raw frames and bodies:
//! a parse into `serde_json::Value` would itself round the numbers.

mod common;

use std::time::Duration;

use common::sse::SseClient;
use common::{Rest, TestNode};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

type Socket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

const READ_TIMEOUT: Duration = Duration::from_secs(15);

/// A value no `f64` parse would give back as written: random floats with 17
/// significant digits, the issue's own examples, integers past 2^64.
fn exact_value(seed: u64) -> String {
    format!(
        r#"{{"a":0.22941408906430394,"c":12345678901234567890123,"f":[{}],"neg":-98765432109876543210987,"u":18446744073709551615}}"#,
        floats(seed).join(",")
    )
}

/// Twenty random floats written with 17 significant digits.
fn floats(seed: u64) -> Vec<String> {
    let mut rng = fastrand::Rng::with_seed(seed);
    (0..20)
        .map(|_| {
            let x = rng.f64() * 10f64.powi(rng.i32(-20..20));
            format!("{x:.16e}")
        })
        .collect()
}

fn node() -> TestNode {
    TestNode::start_with("[caches.c]\nsegments = 8\n", &[])
}

async fn connect(node: &TestNode, protocol: &str) -> Socket {
    let mut request = node.ws_url().into_client_request().unwrap();
    request
        .headers_mut()
        .insert("Sec-WebSocket-Protocol", protocol.parse().unwrap());
    tokio_tungstenite::connect_async(request)
        .await
        .expect("handshake")
        .0
}

/// The next data frame (pings and pongs skipped).
async fn next_data(socket: &mut Socket) -> Message {
    loop {
        let frame = tokio::time::timeout(READ_TIMEOUT, socket.next())
            .await
            .expect("a frame in time")
            .expect("open")
            .expect("a frame");
        if !matches!(frame, Message::Ping(_) | Message::Pong(_)) {
            return frame;
        }
    }
}

/// The next text frame, as sent.
async fn next_text(socket: &mut Socket) -> String {
    match next_data(socket).await {
        Message::Text(text) => text.to_string(),
        other => panic!("expected a text frame, got {other:?}"),
    }
}

/// The next binary frame, decoded.
async fn next_msgpack(socket: &mut Socket) -> Value {
    match next_data(socket).await {
        Message::Binary(bytes) => rmp_serde::from_slice(&bytes).expect("MessagePack"),
        other => panic!("expected a binary frame, got {other:?}"),
    }
}

/// `value` as a MessagePack reader gets it: each number of the JSON text as
/// the nearest it can carry (integers within 64 bits exactly, the rest as
/// the `f64` the text parses to).
fn as_msgpack_carries(text: &str) -> Value {
    serde_json::from_str(text).unwrap()
}

#[actix_web::test]
async fn rest_reads_and_listings_return_the_exact_text() {
    let node = node();
    let rest = Rest::new(&node);
    let value = exact_value(1);
    let put = rest.put_entry("c", "a", &value).await;
    assert_eq!(put.status, 201, "{}", put.text);
    assert_eq!(rest.get_entry("c", "a").await.text, value);
    let listing = rest.get("/api/v1/caches/c/entries").await;
    assert!(listing.text.contains(&value), "{}", listing.text);

    let spaced = r#"{ "a" : 0.22941408906430394 , "c" : [ 12345678901234567890123 ] }"#;
    rest.put_entry("c", "spaced", spaced).await;
    assert_eq!(
        rest.get_entry("c", "spaced").await.text,
        r#"{"a":0.22941408906430394,"c":[12345678901234567890123]}"#,
        "kept exactly, without the whitespace between tokens"
    );
}

#[actix_web::test]
async fn sse_and_long_poll_carry_the_exact_text_in_snapshots_and_events() {
    let node = node();
    let rest = Rest::new(&node);
    let first = exact_value(2);
    rest.put_entry("c", "a", &first).await;

    let mut stream = SseClient::open(&node, "/api/v1/caches/c/events", None).await;
    let snapshot = stream.next().await;
    assert_eq!(snapshot.event, "snapshot");
    assert!(snapshot.data.contains(&first), "{}", snapshot.data);
    let poll = rest.get("/api/v1/caches/c/poll").await;
    assert!(poll.text.contains(&first), "{}", poll.text);
    let position = poll.body["position"].as_str().unwrap().to_string();

    let second = exact_value(3);
    rest.put_entry("c", "b", &second).await;
    let event = stream.next().await;
    assert_eq!(event.event, "event");
    assert!(event.data.contains(&second), "{}", event.data);
    let poll = rest
        .get(&format!("/api/v1/caches/c/poll?after={position}&timeout_ms=5000"))
        .await;
    assert!(poll.text.contains(&second), "{}", poll.text);
}

#[actix_web::test]
async fn websocket_json_carries_the_exact_text_in_replies_snapshots_and_events() {
    let node = node();
    let first = exact_value(4);
    Rest::new(&node).put_entry("c", "a", &first).await;

    let mut socket = connect(&node, "pushgrid.v1.json").await;
    socket
        .send(Message::text(r#"{"op":"subscribe","id":1,"cache":"c"}"#))
        .await
        .unwrap();
    assert!(next_text(&mut socket).await.contains("subscribed"));
    let snapshot = next_text(&mut socket).await;
    assert!(snapshot.contains(&first), "{snapshot}");

    let second = exact_value(5);
    let put = format!(r#"{{"op":"put","id":2,"cache":"c","key":"b","value":{second}}}"#);
    socket.send(Message::text(put)).await.unwrap();
    let (mut reply, mut event) = (None, None);
    while reply.is_none() || event.is_none() {
        let frame = next_text(&mut socket).await;
        if frame.contains(r#""type":"event""#) {
            event = Some(frame);
        } else {
            reply = Some(frame);
        }
    }
    assert!(reply.unwrap().contains(r#""type":"ok""#));
    assert!(event.as_ref().unwrap().contains(&second), "{event:?}");

    socket
        .send(Message::text(r#"{"op":"get","id":3,"cache":"c","key":"b"}"#))
        .await
        .unwrap();
    let entry = next_text(&mut socket).await;
    assert!(entry.contains(&second), "{entry}");
    assert_eq!(
        Rest::new(&node).get_entry("c", "b").await.text,
        second,
        "what a WebSocket client wrote reads back exactly over REST"
    );
}

#[actix_web::test]
async fn websocket_msgpack_gets_what_it_can_carry_and_its_own_numbers_exactly() {
    let node = node();
    let written = exact_value(6);
    Rest::new(&node).put_entry("c", "a", &written).await;

    let mut socket = connect(&node, "pushgrid.v1.msgpack").await;
    let get = json!({"op":"get","id":1,"cache":"c","key":"a"});
    socket
        .send(Message::binary(rmp_serde::to_vec_named(&get).unwrap()))
        .await
        .unwrap();
    let entry = next_msgpack(&mut socket).await;
    assert_eq!(entry["type"], "entry", "{entry}");
    assert_eq!(entry["value"], as_msgpack_carries(&written));
    let carried: Vec<u64> = entry["value"]["f"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f.as_f64().unwrap().to_bits())
        .collect();
    let nearest: Vec<u64> = floats(6)
        .iter()
        .map(|f| f.parse::<f64>().unwrap().to_bits())
        .collect();
    assert_eq!(carried, nearest, "each float as the double nearest its text");
    assert_eq!(
        entry["value"]["u"].as_u64(),
        Some(u64::MAX),
        "64-bit integers exactly"
    );

    // A MessagePack client's own numbers (u64, i64, any finite f64) are
    // stored exactly: a JSON reader parses them back to the same bits.
    let mut rng = fastrand::Rng::with_seed(7);
    let floats: Vec<f64> = (0..20)
        .map(|_| rng.f64() * 10f64.powi(rng.i32(-20..20)))
        .collect();
    let value = json!({"f": floats, "max": u64::MAX, "min": i64::MIN});
    let put = json!({"op":"put","id":2,"cache":"c","key":"m","value":value});
    socket
        .send(Message::binary(rmp_serde::to_vec_named(&put).unwrap()))
        .await
        .unwrap();
    assert_eq!(next_msgpack(&mut socket).await["type"], "ok");
    let text = Rest::new(&node).get_entry("c", "m").await.text;
    let read: Value = serde_json::from_str(&text).unwrap();
    let read_floats: Vec<u64> = read["f"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f.as_f64().unwrap().to_bits())
        .collect();
    assert_eq!(
        read_floats,
        floats.iter().map(|f| f.to_bits()).collect::<Vec<_>>()
    );
    assert!(
        text.contains("18446744073709551615") && text.contains("-9223372036854775808"),
        "{text}"
    );
}

#[actix_web::test]
async fn numbers_no_double_holds_are_refused_with_the_id_echoed() {
    let node = node();
    let rest = Rest::new(&node);
    let refused = rest.put_entry("c", "big", "[1e400]").await;
    assert_eq!(refused.status, 400);
    assert_eq!(refused.error_code(), "bad_request");

    let mut socket = connect(&node, "pushgrid.v1.json").await;
    let put = r#"{"op":"put","id":"h1","cache":"c","key":"big","value":1e400}"#;
    socket.send(Message::text(put)).await.unwrap();
    let reply: Value = serde_json::from_str(&next_text(&mut socket).await).unwrap();
    assert_eq!(
        (&reply["type"], &reply["code"], &reply["id"]),
        (&json!("error"), &json!("bad_request"), &json!("h1")),
        "{reply}"
    );

    // MessagePack can carry an infinite float, which JSON cannot write.
    #[derive(serde::Serialize)]
    struct Put {
        op: &'static str,
        id: &'static str,
        cache: &'static str,
        key: &'static str,
        value: f64,
    }
    let put = Put {
        op: "put",
        id: "h2",
        cache: "c",
        key: "big",
        value: f64::INFINITY,
    };
    let mut socket = connect(&node, "pushgrid.v1.msgpack").await;
    socket
        .send(Message::binary(rmp_serde::to_vec_named(&put).unwrap()))
        .await
        .unwrap();
    let reply = next_msgpack(&mut socket).await;
    assert_eq!(
        (&reply["type"], &reply["code"], &reply["id"]),
        (&json!("error"), &json!("bad_request"), &json!("h2")),
        "{reply}"
    );
    assert_eq!(rest.get_entry("c", "big").await.status, 404, "nothing was stored");
}
