//! The frames of the inter-node link (`../shared/spec/CLUSTER.md`,
//! "Inter-node traffic"), as pure functions: each frame is a 4-byte
//! big-endian length, a version byte and a MessagePack (rmp-serde) body;
//! and the link's handshake, in which both ends name their cluster, node,
//! generation and epoch and, when the cluster has a shared secret, prove
//! they hold it without sending it.
//!
//! A frame's length counts the version byte and the body. A reader refuses
//! a length past [`MAX_FRAME_BYTES`] before buffering it, and a version it
//! does not speak, so a stray or hostile peer costs a closed connection,
//! not memory.

use bytes::{Buf, BufMut, BytesMut};
use hmac::{Hmac, Mac};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sha2::Sha256;

/// The frame format this build speaks.
pub const WIRE_VERSION: u8 = 1;
/// The largest frame accepted: a state transfer is sent in chunks below it.
pub const MAX_FRAME_BYTES: usize = 16 * 1024 * 1024;

const LENGTH_BYTES: usize = 4;

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("a frame of {0} bytes is over the limit of {MAX_FRAME_BYTES}")]
    TooLarge(usize),
    #[error("an empty frame (no version byte)")]
    Empty,
    #[error("frame version {0} (this node speaks {WIRE_VERSION})")]
    UnknownVersion(u8),
    #[error("a frame that does not decode: {0}")]
    Malformed(String),
}

/// Appends `message` to `out` as one frame.
pub fn encode<T: Serialize>(message: &T, out: &mut BytesMut) {
    let body = rmp_serde::to_vec_named(message).expect("link messages always encode");
    let length = 1 + body.len();
    assert!(length <= MAX_FRAME_BYTES, "a link message over the frame limit");
    out.reserve(LENGTH_BYTES + length);
    out.put_u32(length as u32);
    out.put_u8(WIRE_VERSION);
    out.put_slice(&body);
}

/// Takes the next whole frame off the front of `buf`: `Ok(None)` until one
/// has arrived whole.
pub fn decode<T: DeserializeOwned>(buf: &mut BytesMut) -> Result<Option<T>, WireError> {
    let Some(header) = buf.get(..LENGTH_BYTES) else {
        return Ok(None);
    };
    let length = u32::from_be_bytes(header.try_into().expect("four bytes")) as usize;
    if length > MAX_FRAME_BYTES {
        return Err(WireError::TooLarge(length));
    }
    if length == 0 {
        return Err(WireError::Empty);
    }
    if buf.len() < LENGTH_BYTES + length {
        buf.reserve(LENGTH_BYTES + length - buf.len());
        return Ok(None);
    }
    buf.advance(LENGTH_BYTES);
    let frame = buf.split_to(length);
    if frame[0] != WIRE_VERSION {
        return Err(WireError::UnknownVersion(frame[0]));
    }
    rmp_serde::from_slice(&frame[1..])
        .map(Some)
        .map_err(|e| WireError::Malformed(e.to_string()))
}

/// What each end of a new link says first.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    pub cluster_id: String,
    pub node_id: String,
    /// Which run of the node this is: a restarted node has a higher one,
    /// so its peers can tell it from the run they knew.
    pub generation: u64,
    /// The highest topology epoch the node has agreed to.
    pub epoch: u64,
    /// A fresh random challenge the other end must answer.
    pub nonce: [u8; 16],
    /// Whether the dialer opens the pair's bulk lane (whole segments),
    /// kept apart so that acknowledgements never queue behind a transfer.
    #[serde(default)]
    pub bulk: bool,
}

/// The answer to the other end's [`Hello`] when the cluster has a secret:
/// an HMAC-SHA256 of the challenge and of who answers it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proof {
    pub mac: [u8; 32],
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum HandshakeError {
    #[error("the peer is of cluster {theirs:?}, not {ours:?}")]
    OtherCluster { ours: String, theirs: String },
    #[error("the peer is this node itself")]
    Itself,
    #[error("the peer does not hold the cluster's secret")]
    BadProof,
}

/// Whether a peer that said `theirs` may be linked with a node that said
/// `ours`.
pub fn check_hello(ours: &Hello, theirs: &Hello) -> Result<(), HandshakeError> {
    if theirs.cluster_id != ours.cluster_id {
        return Err(HandshakeError::OtherCluster {
            ours: ours.cluster_id.clone(),
            theirs: theirs.cluster_id.clone(),
        });
    }
    if theirs.node_id == ours.node_id {
        return Err(HandshakeError::Itself);
    }
    Ok(())
}

/// The proof that `answering` (a node's own hello) holds `secret`, for the
/// challenge in `challenge` (the other end's hello). Binding the answerer's
/// identity means a proof cannot be replayed for another node, and the
/// fresh nonce that it cannot be replayed on another link.
pub fn prove(secret: &[u8], challenge: &Hello, answering: &Hello) -> Proof {
    Proof {
        mac: mac(secret, challenge, answering).finalize().into_bytes().into(),
    }
}

/// Checks the `proof` the other end (`answering`) sent for our `challenge`,
/// in constant time.
pub fn verify(
    secret: &[u8],
    challenge: &Hello,
    answering: &Hello,
    proof: &Proof,
) -> Result<(), HandshakeError> {
    mac(secret, challenge, answering)
        .verify_slice(&proof.mac)
        .map_err(|_| HandshakeError::BadProof)
}

fn mac(secret: &[u8], challenge: &Hello, answering: &Hello) -> Hmac<Sha256> {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes a key of any length");
    mac.update(b"pushgrid link v1\0");
    mac.update(&challenge.nonce);
    for field in [&answering.cluster_id, &answering.node_id] {
        mac.update(&(field.len() as u64).to_be_bytes());
        mac.update(field.as_bytes());
    }
    mac.update(&answering.generation.to_be_bytes());
    mac
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hello(node: &str, nonce: u8) -> Hello {
        Hello {
            cluster_id: "c1".into(),
            node_id: node.into(),
            generation: 7,
            bulk: false,
            epoch: 3,
            nonce: [nonce; 16],
        }
    }

    #[test]
    fn frames_arrive_whole_however_the_bytes_are_split() {
        let mut stream = BytesMut::new();
        encode(&hello("n1", 1), &mut stream);
        encode(&hello("n2", 2), &mut stream);
        let bytes = stream.freeze();
        for step in [1, 3, 7, bytes.len()] {
            let mut buf = BytesMut::new();
            let mut seen = Vec::new();
            for chunk in bytes.chunks(step) {
                buf.extend_from_slice(chunk);
                while let Some(message) = decode::<Hello>(&mut buf).unwrap() {
                    seen.push(message);
                }
            }
            assert_eq!(seen, [hello("n1", 1), hello("n2", 2)], "in chunks of {step}");
            assert!(buf.is_empty());
        }
    }

    #[test]
    fn a_bad_frame_is_refused_before_it_is_buffered() {
        let mut huge = BytesMut::from(&((MAX_FRAME_BYTES + 1) as u32).to_be_bytes()[..]);
        assert_eq!(
            decode::<Hello>(&mut huge),
            Err(WireError::TooLarge(MAX_FRAME_BYTES + 1))
        );
        let mut empty = BytesMut::from(&[0, 0, 0, 0][..]);
        assert_eq!(decode::<Hello>(&mut empty), Err(WireError::Empty));

        let mut future = BytesMut::new();
        encode(&hello("n1", 1), &mut future);
        future[LENGTH_BYTES] = WIRE_VERSION + 1;
        assert_eq!(
            decode::<Hello>(&mut future),
            Err(WireError::UnknownVersion(WIRE_VERSION + 1))
        );

        let mut garbage = BytesMut::from(&[0, 0, 0, 3, WIRE_VERSION, 0xc1, 0xc1][..]);
        assert!(matches!(
            decode::<Hello>(&mut garbage),
            Err(WireError::Malformed(_))
        ));
    }

    #[test]
    fn only_a_peer_of_the_same_cluster_that_is_not_itself_is_linked() {
        let ours = hello("n1", 1);
        assert_eq!(check_hello(&ours, &hello("n2", 2)), Ok(()));
        assert_eq!(check_hello(&ours, &hello("n1", 9)), Err(HandshakeError::Itself));
        let stranger = Hello {
            cluster_id: "c2".into(),
            ..hello("n2", 2)
        };
        assert!(matches!(
            check_hello(&ours, &stranger),
            Err(HandshakeError::OtherCluster { .. })
        ));
    }

    #[test]
    fn a_proof_holds_only_for_its_secret_challenge_and_answerer() {
        let (ours, theirs) = (hello("n1", 1), hello("n2", 2));
        let proof = prove(b"secret", &ours, &theirs);
        assert_eq!(verify(b"secret", &ours, &theirs, &proof), Ok(()));
        assert_eq!(
            verify(b"other", &ours, &theirs, &proof),
            Err(HandshakeError::BadProof),
            "another secret"
        );
        assert_eq!(
            verify(b"secret", &hello("n1", 5), &theirs, &proof),
            Err(HandshakeError::BadProof),
            "replayed on a link with another challenge"
        );
        assert_eq!(
            verify(b"secret", &ours, &hello("n3", 2), &proof),
            Err(HandshakeError::BadProof),
            "replayed by another node"
        );
    }
}
