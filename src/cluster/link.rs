//! The inter-node link: one TCP connection per pair of members, carrying
//! requests and their replies both ways, in [`wire`](super::wire) frames
//! after a handshake (cluster id, node id, generation, epoch and, with a
//! cluster secret, a proof of it). Bulk state transfer (a whole segment,
//! and the request for one) goes on a second connection of the pair, its
//! bulk [`Lane`], so that a segment of many megabytes never holds up the
//! acknowledgements, heartbeats and events queued behind it.
//!
//! [`Links`] is a node's end of all its links: it accepts connections on the
//! cluster address and dials peers from that same address (so a test can
//! cut two nodes apart by address). A [`Peer`] is the handle callers keep
//! for one other member; its requests use whichever connection to that
//! member is up, dialing one when none is. When both ends dial at once, both
//! keep the connection dialed by the lower node id and close the other, so a
//! pair settles on one connection.
//!
//! Each connection has a bounded queue of frames to write: a caller waits
//! for room (back-pressure) up to its request's timeout, and a slow or dead
//! peer costs only the requests sent to it. Replies are matched to requests
//! by id, so one slow request never holds up the others.

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use bytes::{Bytes, BytesMut};
use prometheus::IntCounter;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{mpsc, oneshot};

use super::wire::{self, Hello, Proof};

/// Frames waiting to be written on one connection, at most.
const QUEUE_FRAMES: usize = 4096;
/// How long dialing and the handshake may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Who this node is on its links.
#[derive(Clone, Debug)]
pub struct Identity {
    pub cluster_id: String,
    pub node_id: String,
    pub generation: u64,
    /// The shared cluster secret peers must prove they hold.
    pub secret: Option<Arc<[u8]>>,
}

/// Why a request got no reply.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LinkError {
    #[error("peer {0} is unreachable: {1}")]
    Unreachable(String, String),
    #[error("peer {0} did not answer in time")]
    Timeout(String),
}

type Reply<'a, Resp> = Pin<Box<dyn Future<Output = Resp> + Send + 'a>>;

/// What the link asks of the messages it carries: whether one is bulk state
/// transfer (a whole segment), counted apart from the rest of the traffic,
/// and whether a request goes on the bulk lane (a transfer, or a request
/// whose reply is one).
pub trait Carried {
    fn is_transfer(&self) -> bool {
        false
    }

    fn is_bulk(&self) -> bool {
        self.is_transfer()
    }
}

/// Which of a pair's two connections a request travels on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lane {
    /// Everything but bulk transfer: replication batches and their
    /// acknowledgements, forwarded requests, events, consensus.
    Control = 0,
    /// Whole segments.
    Bulk = 1,
}

impl Lane {
    fn of(bulk: bool) -> Lane {
        if bulk {
            Lane::Bulk
        } else {
            Lane::Control
        }
    }
}

/// Bytes a node's links moved: every frame both ways, and the frames of
/// state transfer among them. Counters of the node's `/metrics` once
/// registered there ([`super::metrics::ClusterMetrics`]).
#[derive(Clone)]
pub struct LinkTraffic {
    pub sent: IntCounter,
    pub received: IntCounter,
    pub transfer_sent: IntCounter,
}

impl std::fmt::Debug for LinkTraffic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LinkTraffic")
            .field("sent", &self.sent.get())
            .field("received", &self.received.get())
            .field("transfer_sent", &self.transfer_sent.get())
            .finish()
    }
}

impl Default for LinkTraffic {
    fn default() -> Self {
        let counter =
            |name: &str, help: &str| IntCounter::new(name, help).expect("metric definition is valid");
        LinkTraffic {
            sent: counter(
                "pushgrid_cluster_link_sent_bytes_total",
                "Bytes this node sent other members over its links",
            ),
            received: counter(
                "pushgrid_cluster_link_received_bytes_total",
                "Bytes this node received from other members over its links",
            ),
            transfer_sent: counter(
                "pushgrid_cluster_transfer_sent_bytes_total",
                "Bytes of whole segments (state transfer) this node sent, part of the link's sent bytes",
            ),
        }
    }
}

/// What a node does with the requests its peers send it.
pub trait Service<Req, Resp>: Send + Sync + 'static {
    /// Answers `request` from the peer named `from`.
    fn serve(&self, from: Arc<str>, request: Req) -> Reply<'static, Resp>;
}

#[derive(Serialize, Deserialize)]
enum Frame<Req, Resp> {
    Request { id: u64, body: Req },
    Reply { id: u64, body: Resp },
}

type PeersByName<Req, Resp> = HashMap<Arc<str>, Arc<Peer<Req, Resp>>>;

/// A node's end of its links to every peer.
pub struct Links<Req, Resp> {
    identity: Identity,
    /// The address outgoing connections leave from (port chosen by the OS).
    source: IpAddr,
    /// The highest epoch this node has agreed to, said in every hello.
    epoch: Arc<AtomicU64>,
    service: Arc<dyn Service<Req, Resp>>,
    peers: Mutex<PeersByName<Req, Resp>>,
    stopping: tokio::sync::watch::Sender<bool>,
    traffic: LinkTraffic,
}

/// One other member, as this node reaches it.
pub struct Peer<Req, Resp> {
    name: Arc<str>,
    address: Mutex<SocketAddr>,
    /// The connection of each [`Lane`].
    lanes: [ArcSwapOption<Connection<Resp>>; 2],
    dialing: [tokio::sync::Mutex<()>; 2],
    links: std::sync::Weak<Links<Req, Resp>>,
}

/// One established connection: the queue its writer drains, and the
/// requests sent on it that await a reply.
struct Connection<Resp> {
    outgoing: mpsc::Sender<Bytes>,
    pending: Mutex<HashMap<u64, oneshot::Sender<Resp>>>,
    next_id: AtomicU64,
    closed: AtomicBool,
    /// The node that dialed it: on a duplicate, the lower one's is kept.
    dialed_by: Arc<str>,
    /// Told when the connection is dropped in favour of another.
    close: tokio::sync::Notify,
    traffic: LinkTraffic,
}

impl<Resp> Connection<Resp> {
    fn is_open(&self) -> bool {
        !self.closed.load(Ordering::Acquire)
    }

    /// Marks the connection closed and fails every request still waiting.
    fn shut(&self) {
        self.closed.store(true, Ordering::Release);
        self.pending.lock().expect("pending lock").clear();
        self.close.notify_waiters();
    }
}

impl<Req, Resp> Links<Req, Resp>
where
    Req: Serialize + DeserializeOwned + Carried + Send + 'static,
    Resp: Serialize + DeserializeOwned + Carried + Send + 'static,
{
    pub fn new(
        identity: Identity,
        source: IpAddr,
        epoch: Arc<AtomicU64>,
        service: Arc<dyn Service<Req, Resp>>,
        traffic: LinkTraffic,
    ) -> Arc<Self> {
        Arc::new(Links {
            identity,
            source,
            epoch,
            service,
            peers: Mutex::new(HashMap::new()),
            stopping: tokio::sync::watch::channel(false).0,
            traffic,
        })
    }

    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    /// Accepts peers' connections on `listener` until the runtime stops.
    pub fn accept(self: &Arc<Self>, listener: TcpListener) {
        let links = Arc::downgrade(self);
        let mut stopping = self.stopping.subscribe();
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    accepted = listener.accept() => accepted,
                    _ = stopping.wait_for(|stop| *stop) => return,
                };
                let Ok((stream, from)) = accepted else {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                };
                let Some(links) = links.upgrade() else { return };
                tokio::spawn(async move {
                    match tokio::time::timeout(CONNECT_TIMEOUT, links.handshake(stream, None)).await {
                        Ok(Ok((name, lane, read, write))) => {
                            let peer = links.peer_named(&name, from);
                            peer.adopt(read, write, name.clone(), lane);
                        }
                        Ok(Err(reason)) => log::warn!("link from {from} refused: {reason}"),
                        Err(_) => log::warn!("link from {from}: no handshake in time"),
                    }
                });
            }
        });
    }

    /// The handle for the member `name`, reached at `address`.
    pub fn peer(self: &Arc<Self>, name: &str, address: SocketAddr) -> Arc<Peer<Req, Resp>> {
        let peer = self.peer_named(name, address);
        *peer.address.lock().expect("address lock") = address;
        peer
    }

    fn peer_named(self: &Arc<Self>, name: &str, address: SocketAddr) -> Arc<Peer<Req, Resp>> {
        let mut peers = self.peers.lock().expect("peers lock");
        peers
            .entry(Arc::from(name))
            .or_insert_with(|| {
                Arc::new(Peer {
                    name: Arc::from(name),
                    address: Mutex::new(address),
                    lanes: Default::default(),
                    dialing: Default::default(),
                    links: Arc::downgrade(self),
                })
            })
            .clone()
    }

    /// The peer named `name`, if this node has linked with it before.
    pub fn known(&self, name: &str) -> Option<Arc<Peer<Req, Resp>>> {
        self.peers.lock().expect("peers lock").get(name).cloned()
    }

    /// Dials `address` and links with whichever member answers there: how
    /// a node that knows only its seeds' addresses meets them.
    pub async fn introduce(self: &Arc<Self>, address: SocketAddr) -> Result<Arc<Peer<Req, Resp>>, LinkError> {
        let unreachable = |why: String| LinkError::Unreachable(address.to_string(), why);
        let (name, _, read, write) = tokio::time::timeout(CONNECT_TIMEOUT, self.dial(address, Lane::Control))
            .await
            .map_err(|_| unreachable("connect timed out".into()))?
            .map_err(unreachable)?;
        let peer = self.peer(&name, address);
        peer.adopt(
            read,
            write,
            Arc::from(self.identity.node_id.as_str()),
            Lane::Control,
        );
        Ok(peer)
    }

    /// Stops accepting and closes every connection.
    pub fn stop(&self) {
        self.stopping.send_replace(true);
        let peers: Vec<_> = self.peers.lock().expect("peers lock").drain().collect();
        for (_, peer) in peers {
            peer.shut();
        }
    }

    /// Forgets a member that left: its connections close.
    pub fn forget(&self, name: &str) {
        let peer = self.peers.lock().expect("peers lock").remove(name);
        if let Some(peer) = peer {
            peer.shut();
        }
    }

    fn hello(&self, lane: Lane) -> Hello {
        Hello {
            cluster_id: self.identity.cluster_id.clone(),
            node_id: self.identity.node_id.clone(),
            generation: self.identity.generation,
            epoch: self.epoch.load(Ordering::Acquire),
            nonce: uuid::Uuid::new_v4().into_bytes(),
            bulk: lane == Lane::Bulk,
        }
    }

    /// Both ends say hello and, with a secret, prove it; returns the peer's
    /// name, the connection's lane (the dialer's `dialing`, which the
    /// accepting end, passing `None`, learns from its hello) and the
    /// stream's halves.
    async fn handshake(
        &self,
        stream: TcpStream,
        dialing: Option<Lane>,
    ) -> Result<(Arc<str>, Lane, ReadHalf, OwnedWriteHalf), String> {
        stream.set_nodelay(true).map_err(|e| e.to_string())?;
        let (read, mut write) = stream.into_split();
        let mut read = ReadHalf::new(read);
        let ours = self.hello(dialing.unwrap_or(Lane::Control));
        write_frame(&mut write, &ours).await?;
        let theirs: Hello = read.next().await?;
        wire::check_hello(&ours, &theirs).map_err(|e| e.to_string())?;
        if let Some(secret) = &self.identity.secret {
            write_frame(&mut write, &wire::prove(secret, &theirs, &ours)).await?;
            let proof: Proof = read.next().await?;
            wire::verify(secret, &ours, &theirs, &proof).map_err(|e| e.to_string())?;
        }
        let lane = dialing.unwrap_or(Lane::of(theirs.bulk));
        Ok((Arc::from(theirs.node_id.as_str()), lane, read, write))
    }

    async fn dial(
        &self,
        address: SocketAddr,
        lane: Lane,
    ) -> Result<(Arc<str>, Lane, ReadHalf, OwnedWriteHalf), String> {
        let socket = match self.source {
            IpAddr::V4(_) => TcpSocket::new_v4(),
            IpAddr::V6(_) => TcpSocket::new_v6(),
        }
        .map_err(|e| e.to_string())?;
        socket
            .bind(SocketAddr::new(self.source, 0))
            .map_err(|e| format!("binding {}: {e}", self.source))?;
        let stream = socket.connect(address).await.map_err(|e| e.to_string())?;
        self.handshake(stream, Some(lane)).await
    }
}

impl<Req, Resp> Peer<Req, Resp>
where
    Req: Serialize + DeserializeOwned + Carried + Send + 'static,
    Resp: Serialize + DeserializeOwned + Carried + Send + 'static,
{
    pub fn name(&self) -> &Arc<str> {
        &self.name
    }

    /// Sends `request` on its lane and waits up to `timeout` for the
    /// reply, dialing the peer first when no connection of that lane is up.
    pub async fn request(&self, request: &Req, timeout: Duration) -> Result<Resp, LinkError> {
        let deadline = tokio::time::Instant::now() + timeout;
        let call = async {
            let connection = self.connected(Lane::of(request.is_bulk())).await?;
            let id = connection.next_id.fetch_add(1, Ordering::Relaxed);
            let (reply, answer) = oneshot::channel();
            connection.pending.lock().expect("pending lock").insert(id, reply);
            let mut frame = BytesMut::new();
            wire::encode(&Frame::<&Req, ()>::Request { id, body: request }, &mut frame);
            if request.is_transfer() {
                connection.traffic.transfer_sent.inc_by(frame.len() as u64);
            }
            if connection.outgoing.send(frame.freeze()).await.is_err() || !connection.is_open() {
                connection.pending.lock().expect("pending lock").remove(&id);
                return Err(self.unreachable("connection closed"));
            }
            answer.await.map_err(|_| self.unreachable("connection closed"))
        };
        match tokio::time::timeout_at(deadline, call).await {
            Ok(result) => result,
            Err(_) => Err(LinkError::Timeout(self.name.to_string())),
        }
    }

    fn unreachable(&self, why: impl ToString) -> LinkError {
        LinkError::Unreachable(self.name.to_string(), why.to_string())
    }

    async fn connected(&self, lane: Lane) -> Result<Arc<Connection<Resp>>, LinkError> {
        if let Some(connection) = self.open_connection(lane) {
            return Ok(connection);
        }
        let _dialing = self.dialing[lane as usize].lock().await;
        if let Some(connection) = self.open_connection(lane) {
            return Ok(connection);
        }
        let links = self
            .links
            .upgrade()
            .ok_or_else(|| self.unreachable("node stopping"))?;
        let address = *self.address.lock().expect("address lock");
        let dialed = tokio::time::timeout(CONNECT_TIMEOUT, links.dial(address, lane))
            .await
            .map_err(|_| self.unreachable("connect timed out"))?
            .map_err(|e| self.unreachable(e))?;
        let (name, _, read, write) = dialed;
        if name != self.name {
            return Err(self.unreachable(format!("{address} is node {name}")));
        }
        let dialer = Arc::from(links.identity.node_id.as_str());
        self.adopt(read, write, dialer, lane);
        self.open_connection(lane)
            .ok_or_else(|| self.unreachable("connection closed at once"))
    }

    fn open_connection(&self, lane: Lane) -> Option<Arc<Connection<Resp>>> {
        self.lanes[lane as usize].load_full().filter(|c| c.is_open())
    }

    /// Whether a connection of `lane` to this peer is up.
    pub fn is_linked(&self, lane: Lane) -> bool {
        self.open_connection(lane).is_some()
    }

    /// Closes every connection to this peer.
    fn shut(&self) {
        for lane in &self.lanes {
            if let Some(connection) = lane.swap(None) {
                connection.shut();
            }
        }
    }

    /// Starts a handshaken connection's reader and writer, and makes it
    /// this peer's connection of `lane` unless an open one dialed by a
    /// lower node id is already.
    fn adopt(&self, read: ReadHalf, write: OwnedWriteHalf, dialed_by: Arc<str>, lane: Lane) {
        let Some(links) = self.links.upgrade() else { return };
        let (outgoing, queue) = mpsc::channel(QUEUE_FRAMES);
        let connection = Arc::new(Connection {
            outgoing,
            pending: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            closed: AtomicBool::new(false),
            dialed_by,
            close: tokio::sync::Notify::new(),
            traffic: links.traffic.clone(),
        });
        let keep_existing = self
            .open_connection(lane)
            .is_some_and(|existing| existing.dialed_by < connection.dialed_by);
        tokio::spawn(write_frames(write, queue, connection.clone()));
        tokio::spawn(read_frames(read, connection.clone(), links, self.name.clone()));
        if keep_existing {
            connection.shut();
        } else if let Some(replaced) = self.lanes[lane as usize].swap(Some(connection)) {
            replaced.shut();
        }
    }
}

/// Writes queued frames, several per system call when they pile up, until
/// the connection closes.
async fn write_frames<Resp>(
    mut write: OwnedWriteHalf,
    mut queue: mpsc::Receiver<Bytes>,
    connection: Arc<Connection<Resp>>,
) {
    let mut batch = BytesMut::new();
    let closing = connection.close.notified();
    tokio::pin!(closing);
    closing.as_mut().enable();
    while connection.is_open() {
        let first = tokio::select! {
            frame = queue.recv() => frame,
            _ = &mut closing => None,
        };
        let Some(first) = first else { break };
        batch.extend_from_slice(&first);
        while batch.len() < 256 * 1024 {
            match queue.try_recv() {
                Ok(frame) => batch.extend_from_slice(&frame),
                Err(_) => break,
            }
        }
        if write.write_all(&batch).await.is_err() || !connection.is_open() {
            break;
        }
        connection.traffic.sent.inc_by(batch.len() as u64);
        batch.clear();
    }
    connection.shut();
    let _ = write.shutdown().await;
}

/// Reads frames until the connection closes: replies complete their
/// requests, requests are served each in its own task.
async fn read_frames<Req, Resp>(
    mut read: ReadHalf,
    connection: Arc<Connection<Resp>>,
    links: Arc<Links<Req, Resp>>,
    peer: Arc<str>,
) where
    Req: Serialize + DeserializeOwned + Carried + Send + 'static,
    Resp: Serialize + DeserializeOwned + Carried + Send + 'static,
{
    let service = links.service.clone();
    drop(links);
    let closing = connection.close.notified();
    tokio::pin!(closing);
    closing.as_mut().enable();
    while connection.is_open() {
        let frame = tokio::select! {
            frame = read.next::<Frame<Req, Resp>>() => frame,
            _ = &mut closing => break,
        };
        connection.traffic.received.inc_by(read.take_read() as u64);
        match frame {
            Ok(Frame::Reply { id, body }) => {
                let waiting = connection.pending.lock().expect("pending lock").remove(&id);
                if let Some(waiting) = waiting {
                    let _ = waiting.send(body);
                }
            }
            Ok(Frame::Request { id, body }) => {
                let reply = service.serve(peer.clone(), body);
                let outgoing = connection.outgoing.clone();
                let traffic = connection.traffic.clone();
                tokio::spawn(async move {
                    let body = reply.await;
                    let transfer = body.is_transfer();
                    let mut frame = BytesMut::new();
                    wire::encode(&Frame::<(), Resp>::Reply { id, body }, &mut frame);
                    if transfer {
                        traffic.transfer_sent.inc_by(frame.len() as u64);
                    }
                    let _ = outgoing.send(frame.freeze()).await;
                });
            }
            Err(reason) => {
                if connection.is_open() {
                    log::info!("link with {peer} closed: {reason}");
                }
                break;
            }
        }
    }
    connection.shut();
}

/// A connection's read half with the bytes read but not yet decoded.
struct ReadHalf {
    stream: OwnedReadHalf,
    buffer: BytesMut,
    /// Bytes read since the last [`ReadHalf::take_read`].
    read: usize,
}

impl ReadHalf {
    fn new(stream: OwnedReadHalf) -> Self {
        ReadHalf {
            stream,
            buffer: BytesMut::with_capacity(64 * 1024),
            read: 0,
        }
    }

    fn take_read(&mut self) -> usize {
        std::mem::take(&mut self.read)
    }

    async fn next<T: DeserializeOwned>(&mut self) -> Result<T, String> {
        loop {
            if let Some(message) = wire::decode(&mut self.buffer).map_err(|e| e.to_string())? {
                return Ok(message);
            }
            match self.stream.read_buf(&mut self.buffer).await {
                Ok(0) => return Err("closed by the peer".into()),
                Ok(n) => self.read += n,
                Err(e) => return Err(e.to_string()),
            }
        }
    }
}

async fn write_frame<T: Serialize>(write: &mut OwnedWriteHalf, message: &T) -> Result<(), String> {
    let mut frame = BytesMut::new();
    wire::encode(message, &mut frame);
    write.write_all(&frame).await.map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Answers a number with its double, after waiting that many ms.
    struct Doubler;

    /// Numbers from 1000 on stand for bulk transfer.
    impl Carried for u64 {
        fn is_bulk(&self) -> bool {
            *self >= 1000
        }
    }

    impl Service<u64, u64> for Doubler {
        fn serve(&self, _: Arc<str>, n: u64) -> Reply<'static, u64> {
            Box::pin(async move {
                tokio::time::sleep(Duration::from_millis(n)).await;
                n * 2
            })
        }
    }

    async fn node(name: &str, secret: Option<&[u8]>) -> (Arc<Links<u64, u64>>, SocketAddr) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let links = Links::new(
            Identity {
                cluster_id: "c".into(),
                node_id: name.into(),
                generation: 1,
                secret: secret.map(Arc::from),
            },
            "127.0.0.1".parse().unwrap(),
            Arc::new(AtomicU64::new(0)),
            Arc::new(Doubler),
            LinkTraffic::default(),
        );
        links.accept(listener);
        (links, address)
    }

    #[tokio::test]
    async fn requests_both_ways_share_one_connection_and_replies_find_their_request() {
        let (a, a_address) = node("a", None).await;
        let (b, b_address) = node("b", None).await;
        let to_b = a.peer("b", b_address);
        // The slow request is answered last, the others are not held up by it.
        let (slow, fast, back) = tokio::join!(
            to_b.request(&200, Duration::from_secs(5)),
            to_b.request(&1, Duration::from_secs(5)),
            async {
                tokio::time::sleep(Duration::from_millis(50)).await;
                b.peer("a", a_address).request(&3, Duration::from_secs(5)).await
            }
        );
        assert_eq!((slow, fast, back), (Ok(400), Ok(2), Ok(6)));
        let from_b = b.peer("a", a_address).open_connection(Lane::Control).unwrap();
        let from_a = to_b.open_connection(Lane::Control).unwrap();
        assert_eq!(&*from_a.dialed_by, "a");
        assert_eq!(&*from_b.dialed_by, "a", "b answered on the connection a dialed");
        assert!(!to_b.is_linked(Lane::Bulk), "no bulk lane until a transfer");
    }

    #[tokio::test]
    async fn bulk_transfer_goes_on_a_connection_of_its_own() {
        let (a, _) = node("a", None).await;
        let (b, b_address) = node("b", None).await;
        let to_b = a.peer("b", b_address);
        let (bulk, control) = tokio::join!(
            to_b.request(&1000, Duration::from_secs(5)),
            to_b.request(&1, Duration::from_secs(5))
        );
        assert_eq!((bulk, control), (Ok(2000), Ok(2)));
        let (bulk_lane, control_lane) = (
            to_b.open_connection(Lane::Bulk).unwrap(),
            to_b.open_connection(Lane::Control).unwrap(),
        );
        assert!(!Arc::ptr_eq(&bulk_lane, &control_lane), "two connections");
        let from_b = b.known("a").unwrap();
        assert!(
            from_b.is_linked(Lane::Bulk) && from_b.is_linked(Lane::Control),
            "b adopted each on its lane"
        );
        // And b's own bulk request to a goes on the lane a dialed.
        assert_eq!(from_b.request(&1001, Duration::from_secs(5)).await, Ok(2002));
        assert_eq!(&*from_b.open_connection(Lane::Bulk).unwrap().dialed_by, "a");
    }

    #[tokio::test]
    async fn a_peer_without_the_secret_is_refused_and_a_dead_one_is_unreachable() {
        let (a, _) = node("a", Some(b"s3cret")).await;
        let (b, b_address) = node("b", Some(b"other")).await;
        let refused = a.peer("b", b_address).request(&1, Duration::from_secs(2)).await;
        assert!(matches!(refused, Err(LinkError::Unreachable(..))), "{refused:?}");
        drop(b);
        let (c, c_address) = node("c", Some(b"s3cret")).await;
        assert_eq!(
            a.peer("c", c_address).request(&2, Duration::from_secs(2)).await,
            Ok(4)
        );
        drop(c);
        let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let nobody = closed.local_addr().unwrap();
        drop(closed);
        let dead = a.peer("d", nobody).request(&1, Duration::from_secs(2)).await;
        assert!(matches!(dead, Err(LinkError::Unreachable(..))), "{dead:?}");
        let slow = a
            .peer("c", c_address)
            .request(&500, Duration::from_millis(50))
            .await;
        assert_eq!(slow, Err(LinkError::Timeout("c".into())));
    }
}
