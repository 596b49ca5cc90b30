//! The socket under a WebSocket session. Not actix-web-actors, which
//! queues outgoing frames in a private buffer with no way to see how much
//! is waiting, so a session could not tell a slow client from a fast one.
//! actix-ws does the handshake and reads the client's frames; writing is
//! done here: a session encodes a
//! whole batch of frames into one buffer ([`FrameBatch`]) and hands it to the
//! HTTP response body through a small bounded channel ([`FrameWriter`]).
//! One channel operation per batch instead of one per frame is what lets a
//! session keep up with a busy fan-out; the channel being full is how it
//! sees a client that is not reading.
//!
//! Only the WebSocket endpoint and its session use this; the rest of the
//! crate never sees the transport.

use std::convert::Infallible;
use std::time::Duration;

use actix_web::body::{BodyStream, MessageBody};
use actix_web::{web, HttpRequest, HttpResponse};
use actix_ws::{AggregatedMessageStream, CloseCode};
use bytes::{BufMut, Bytes, BytesMut};
use tokio::sync::mpsc;

use crate::protocol::codec::{Format, WireFrame};
use crate::protocol::ws::ServerMessage;
use crate::push::feed::{Feed, Item};
use crate::push::Health;

/// Batches waiting between a session and its socket. With up to
/// `WRITE_BATCH` frames each, a client that stops reading
/// holds at most this many batches here before the session's outbox takes
/// over.
const BATCHES_IN_FLIGHT: usize = 4;

/// Frames encoded into one buffer for the socket.
const WRITE_BATCH: usize = 64;

/// How long a close frame may wait for a socket that is not draining. A
/// stopped session holds only its socket and the few batches meanwhile; a
/// stalled client that resumes reading within this gets its close code
/// (1013) instead of a bare disconnect.
const CLOSE_GRACE: Duration = Duration::from_secs(30);

/// RFC 6455: a control frame's payload is at most 125 bytes, so a close
/// reason (after the 2-byte code) at most 123.
const MAX_CLOSE_REASON_BYTES: usize = 123;

/// The socket of the connection a request came on, noted when it was
/// accepted (see [`note_socket`]).
///
/// Once a session has written its close frame, the server is to close the
/// TCP connection (RFC 6455 §7.1.1). The HTTP server would instead linger
/// after the response, reading until the client closes or a timer fires
/// (a second by default), since the upgraded request's body never ends.
/// Shutting the socket's read half when the last frame is handed over makes
/// that read end at once: the server flushes the close frame and then
/// closes its side, promptly.
#[derive(Clone, Copy, Debug)]
pub struct ConnectionSocket(std::os::fd::RawFd);

/// For `HttpServer::on_connect`: notes each TCP connection's socket in the
/// connection's data, for the WebSocket endpoint.
pub fn note_socket(connection: &dyn std::any::Any, data: &mut actix_web::dev::Extensions) {
    use std::os::fd::AsRawFd;
    if let Some(tcp) = connection.downcast_ref::<actix_web::rt::net::TcpStream>() {
        data.insert(ConnectionSocket(tcp.as_raw_fd()));
    }
}

impl ConnectionSocket {
    /// Ends reading from the socket; writing goes on.
    fn stop_reading(self) {
        // SAFETY: called only from the response body, which the
        // connection's own dispatcher polls while it owns the socket, so
        // the descriptor is open and is this connection's.
        let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(self.0) };
        // A peer that already closed makes this fail; nothing to do then.
        let _ = socket2::SockRef::from(&fd).shutdown(std::net::Shutdown::Read);
    }
}

/// An upgraded connection: the 101 response to return, the writer for
/// outgoing frames, and the client's messages.
pub struct Upgraded {
    pub response: HttpResponse,
    pub writer: FrameWriter,
    pub incoming: AggregatedMessageStream,
}

/// Performs the handshake, choosing `protocol`; client frames and messages
/// may be at most `max_message_bytes`.
pub fn upgrade(
    req: &HttpRequest,
    body: web::Payload,
    protocol: &str,
    max_message_bytes: usize,
) -> Result<Upgraded, actix_web::Error> {
    let (response, unused_session, incoming) = actix_ws::handle_with_protocols(req, body, &[protocol])?;
    drop(unused_session);
    let (tx, mut rx) = mpsc::channel::<Bytes>(BATCHES_IN_FLIGHT);
    let socket = req.conn_data::<ConnectionSocket>().copied();
    // actix-ws's own body is kept, unpolled, for as long as the response
    // lives: dropping it tells the message stream the connection is gone.
    let response = response.map_body(|_, actix_ws_body| {
        let batches = futures_util::stream::poll_fn(move |cx| {
            let _keep = &actix_ws_body;
            let batch = std::task::ready!(rx.poll_recv(cx));
            if batch.is_none() {
                if let Some(socket) = socket {
                    socket.stop_reading();
                }
            }
            std::task::Poll::Ready(batch.map(Ok::<_, Infallible>))
        });
        BodyStream::new(batches).boxed()
    });
    let incoming = incoming
        .max_frame_size(max_message_bytes)
        .aggregate_continuations()
        .max_continuation_size(max_message_bytes);
    Ok(Upgraded {
        response,
        writer: FrameWriter { tx },
        incoming,
    })
}

/// The connection's outgoing side. Cloning shares it; once every clone is
/// dropped, the socket is closed after what was written.
#[derive(Clone)]
pub struct FrameWriter {
    tx: mpsc::Sender<Bytes>,
}

/// The connection is gone.
#[derive(Debug)]
pub struct Closed;

pub enum Written {
    Done,
    /// The client is not reading: the batch is handed back.
    Full(Bytes),
}

impl FrameWriter {
    /// Hands `batch` to the socket if there is room.
    pub fn try_write(&self, batch: Bytes) -> Result<Written, Closed> {
        match self.tx.try_send(batch) {
            Ok(()) => Ok(Written::Done),
            Err(mpsc::error::TrySendError::Full(batch)) => Ok(Written::Full(batch)),
            Err(mpsc::error::TrySendError::Closed(_)) => Err(Closed),
        }
    }

    /// Encodes what `feed` holds into batches of frames in `format` and
    /// hands them to the socket, until the feed is drained (`Done`) or the
    /// socket is full (`Full`, with the batch that did not fit).
    pub fn write_from(&self, feed: &mut Feed, format: Format) -> Result<Written, Closed> {
        let mut batch = FrameBatch::default();
        loop {
            // Items that write nothing (events of a closed subscription)
            // take no room in the batch.
            while batch.frames() < WRITE_BATCH {
                let room = WRITE_BATCH - batch.frames();
                if feed.drain(room, |item| batch.item(format, item)) == 0 {
                    break;
                }
            }
            if batch.frames() == 0 {
                return Ok(Written::Done);
            }
            if let Written::Full(frames) = self.try_write(batch.take())? {
                return Ok(Written::Full(frames));
            }
        }
    }

    /// Hands `batch` to the socket once there is room.
    pub async fn write(&self, batch: Bytes) -> Result<(), Closed> {
        self.tx.send(batch).await.map_err(|_| Closed)
    }

    /// Sends a close frame as soon as the socket takes it (for a while);
    /// the socket closes once it is written and every writer is dropped.
    pub fn close(&self, code: CloseCode, reason: &str) {
        let mut frame = FrameBatch::default();
        frame.close(code, reason);
        let (socket, frame) = (self.clone(), frame.take());
        actix_web::rt::spawn(async move {
            let _ = actix_web::rt::time::timeout(CLOSE_GRACE, socket.write(frame)).await;
        });
    }
}

/// The close code and reason for a client frame the reader refused.
pub fn close_for(err: &actix_ws::ProtocolError) -> (CloseCode, String) {
    match err {
        actix_ws::ProtocolError::Overflow => (CloseCode::Size, "message too large".into()),
        actix_ws::ProtocolError::Io(err) if err.kind() == std::io::ErrorKind::InvalidData => {
            (CloseCode::Invalid, "text frame is not valid UTF-8".into())
        }
        err => (CloseCode::Protocol, err.to_string()),
    }
}

/// Server frames (unmasked, final) encoded one after another.
#[derive(Default)]
pub struct FrameBatch {
    buf: BytesMut,
    frames: usize,
}

const TEXT: u8 = 0x1;
const BINARY: u8 = 0x2;
const CLOSE: u8 = 0x8;
const PING: u8 = 0x9;
const PONG: u8 = 0xA;

impl FrameBatch {
    /// Frames what a session's feed hands out, in the connection's `format`.
    pub fn item(&mut self, format: Format, item: Item<'_>) {
        match item {
            Item::Message(WireFrame::Text(text)) => self.text(text.as_bytes()),
            Item::Message(WireFrame::Binary(bytes)) => self.binary(&bytes),
            Item::Event {
                sub,
                event,
                conflated,
                ..
            } => {
                let payload = event.frame(format, sub, conflated);
                match format {
                    Format::Json => self.text(&payload),
                    Format::MsgPack => self.binary(&payload),
                }
            }
            Item::Ended { sub, cache } => match format.frame(&ServerMessage::CacheDeleted { sub, cache }) {
                WireFrame::Text(text) => self.text(text.as_bytes()),
                WireFrame::Binary(bytes) => self.binary(&bytes),
            },
            Item::Health(health) => {
                let message = match health {
                    Health::Degraded => ServerMessage::Degraded,
                    Health::Recovered => ServerMessage::Recovered,
                };
                match format.frame(&message) {
                    WireFrame::Text(text) => self.text(text.as_bytes()),
                    WireFrame::Binary(bytes) => self.binary(&bytes),
                }
            }
            Item::Heartbeat => self.ping(b""),
            Item::Pong(bytes) => self.pong(&bytes),
        }
    }

    pub fn text(&mut self, payload: &[u8]) {
        self.frame(TEXT, payload);
    }

    pub fn binary(&mut self, payload: &[u8]) {
        self.frame(BINARY, payload);
    }

    pub fn ping(&mut self, payload: &[u8]) {
        self.frame(PING, &payload[..payload.len().min(125)]);
    }

    pub fn pong(&mut self, payload: &[u8]) {
        self.frame(PONG, &payload[..payload.len().min(125)]);
    }

    pub fn close(&mut self, code: CloseCode, reason: &str) {
        let mut end = reason.len().min(MAX_CLOSE_REASON_BYTES);
        while !reason.is_char_boundary(end) {
            end -= 1;
        }
        let mut payload = Vec::with_capacity(2 + end);
        payload.extend_from_slice(&u16::from(code).to_be_bytes());
        payload.extend_from_slice(&reason.as_bytes()[..end]);
        self.frame(CLOSE, &payload);
    }

    pub fn frames(&self) -> usize {
        self.frames
    }

    pub fn take(&mut self) -> Bytes {
        self.frames = 0;
        self.buf.split().freeze()
    }

    fn frame(&mut self, opcode: u8, payload: &[u8]) {
        let len = payload.len();
        self.buf.reserve(len + 10);
        self.buf.put_u8(0x80 | opcode);
        if len < 126 {
            self.buf.put_u8(len as u8);
        } else if len <= usize::from(u16::MAX) {
            self.buf.put_u8(126);
            self.buf.put_u16(len as u16);
        } else {
            self.buf.put_u8(127);
            self.buf.put_u64(len as u64);
        }
        self.buf.put_slice(payload);
        self.frames += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_codec::Decoder;
    use awc::ws::{Codec, Frame};

    /// What a client's decoder reads from a batch.
    fn decode(mut bytes: BytesMut) -> Vec<Frame> {
        let mut codec = Codec::new().client_mode().max_size(1 << 20);
        std::iter::from_fn(|| codec.decode(&mut bytes).unwrap()).collect()
    }

    #[test]
    fn frames_of_every_size_and_kind_decode_as_sent() {
        let mut batch = FrameBatch::default();
        let medium = "m".repeat(300);
        let large = vec![7u8; 70_000];
        batch.text(b"{}");
        batch.text(medium.as_bytes());
        batch.binary(&large);
        batch.ping(b"");
        batch.pong(b"hi");
        batch.close(CloseCode::Again, &"é".repeat(100));
        assert_eq!(batch.frames(), 6);
        let frames = decode(BytesMut::from(&batch.take()[..]));
        assert_eq!(batch.frames(), 0);
        assert!(matches!(&frames[0], Frame::Text(t) if &t[..] == b"{}"));
        assert!(matches!(&frames[1], Frame::Text(t) if t.len() == 300));
        assert!(matches!(&frames[2], Frame::Binary(b) if b.len() == 70_000));
        assert!(matches!(&frames[3], Frame::Ping(p) if p.is_empty()));
        assert!(matches!(&frames[4], Frame::Pong(p) if &p[..] == b"hi"));
        match &frames[5] {
            Frame::Close(Some(reason)) => {
                assert_eq!(reason.code, CloseCode::Again);
                let description = reason.description.as_deref().unwrap();
                assert!(description.len() <= MAX_CLOSE_REASON_BYTES && description.starts_with('é'));
            }
            other => panic!("{other:?}"),
        }
    }
}
