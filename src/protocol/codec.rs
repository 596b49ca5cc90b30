//! The two codecs of the contract: JSON text frames (`pushgrid.v1.json`)
//! and MessagePack binary frames (`pushgrid.v1.msgpack`), with the same
//! field names and values, and [`WireFrame`], a server frame ready for a
//! socket.

use bytes::Bytes;
use bytestring::ByteString;
use serde::Serialize;

/// A connection's codec, chosen by subprotocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Format {
    Json,
    MsgPack,
}

impl Format {
    pub const ALL: [Format; 2] = [Format::Json, Format::MsgPack];

    pub fn subprotocol(self) -> &'static str {
        match self {
            Format::Json => "pushgrid.v1.json",
            Format::MsgPack => "pushgrid.v1.msgpack",
        }
    }

    pub fn from_subprotocol(name: &str) -> Option<Format> {
        Format::ALL.into_iter().find(|f| f.subprotocol() == name)
    }

    /// Encodes one message as a frame's payload.
    pub fn encode(self, message: &impl Serialize) -> Bytes {
        match self {
            Format::Json => serde_json::to_vec(message)
                .expect("server messages always encode")
                .into(),
            Format::MsgPack => rmp_serde::to_vec_named(message)
                .expect("server messages always encode")
                .into(),
        }
    }

    /// Encodes one message as a whole frame.
    pub fn frame(self, message: &impl Serialize) -> WireFrame {
        self.wrap(self.encode(message))
    }

    /// A payload of this format as its frame: text for JSON, binary for
    /// MessagePack.
    fn wrap(self, payload: Bytes) -> WireFrame {
        match self {
            Format::Json => WireFrame::Text(ByteString::try_from(payload).expect("JSON is UTF-8")),
            Format::MsgPack => WireFrame::Binary(payload),
        }
    }
}

/// A server frame ready for the socket; cloning shares the bytes.
#[derive(Clone, Debug)]
pub enum WireFrame {
    Text(ByteString),
    Binary(Bytes),
}

impl WireFrame {
    pub fn len(&self) -> usize {
        match self {
            WireFrame::Text(text) => text.len(),
            WireFrame::Binary(bytes) => bytes.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn payload(&self) -> &[u8] {
        match self {
            WireFrame::Text(text) => text.as_bytes(),
            WireFrame::Binary(bytes) => bytes,
        }
    }
}
