//! Owner routing: for every segment of a cache, where a request for it
//! goes. The node's own partition actor when this member owns the segment,
//! or the member that does. The [`Grid`](super::Grid) routes every request
//! through a cache's [`RoutingTable`]; nothing else knows where a segment
//! lives.

use actix::dev::{Request, ToEnvelope};
use actix::{Addr, Handler, Message};

use super::owners::MemberId;
use super::partition::Partition;
use super::{GridError, SegmentId};

/// Where one segment's requests go.
#[derive(Clone, Debug)]
pub enum Route {
    /// This node's partition actor owns the segment.
    Local(Addr<Partition>),
    /// Another member owns it.
    Remote(MemberId),
    /// Its data went with every owner: nobody serves it until an operator
    /// declares it lost.
    Lost,
}

/// Every segment's [`Route`], by segment number, and the node's own copy
/// of each segment it owns (as primary or backup), at one epoch.
#[derive(Clone, Debug)]
pub struct RoutingTable {
    routes: Vec<Route>,
    copies: Vec<Option<Addr<Partition>>>,
    epoch: u64,
}

impl RoutingTable {
    pub fn new(routes: Vec<Route>, copies: Vec<Option<Addr<Partition>>>, epoch: u64) -> Self {
        debug_assert_eq!(routes.len(), copies.len());
        RoutingTable {
            routes,
            copies,
            epoch,
        }
    }

    /// The epoch of the owner table the routes follow.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// This node's copy of `segment`, primary or backup.
    pub fn copy(&self, segment: SegmentId) -> Option<&Addr<Partition>> {
        self.copies.get(segment.0 as usize)?.as_ref()
    }

    /// Every copy this node holds.
    pub fn copies(&self) -> impl Iterator<Item = &Addr<Partition>> {
        self.copies.iter().flatten()
    }

    /// The copies this node holds of segments another member leads: its
    /// backups and, on a member leaving the cluster, the copies it keeps
    /// until their new owners have taken them.
    pub fn held_for_others(&self) -> impl Iterator<Item = (SegmentId, &Addr<Partition>)> {
        self.copies
            .iter()
            .zip(&self.routes)
            .enumerate()
            .filter_map(|(s, (copy, route))| match (copy, route) {
                (Some(copy), Route::Remote(_)) => Some((SegmentId(s as u32), copy)),
                _ => None,
            })
    }

    pub fn segments(&self) -> u32 {
        self.routes.len() as u32
    }

    pub fn route(&self, segment: SegmentId) -> Option<&Route> {
        self.routes.get(segment.0 as usize)
    }

    /// The local partitions, in segment order.
    pub fn local(&self) -> impl Iterator<Item = (SegmentId, &Addr<Partition>)> {
        self.routes
            .iter()
            .enumerate()
            .filter_map(|(s, route)| match route {
                Route::Local(partition) => Some((SegmentId(s as u32), partition)),
                Route::Remote(_) | Route::Lost => None,
            })
    }

    /// The segments whose data is lost.
    pub fn lost(&self) -> impl Iterator<Item = SegmentId> + '_ {
        self.routes
            .iter()
            .enumerate()
            .filter(|(_, route)| matches!(route, Route::Lost))
            .map(|(s, _)| SegmentId(s as u32))
    }

    /// Queues `message` at the owner of `segment` now, and returns the reply
    /// to await. A segment another member owns is `unavailable` from this
    /// node: requests are not forwarded between members.
    pub fn send<M>(&self, segment: SegmentId, message: M) -> Result<Request<Partition, M>, GridError>
    where
        M: Message + Send + 'static,
        M::Result: Send,
        Partition: Handler<M>,
        <Partition as actix::Actor>::Context: ToEnvelope<Partition, M>,
    {
        match self.route(segment) {
            Some(Route::Local(partition)) => Ok(partition.send(message)),
            Some(Route::Remote(member)) => Err(not_forwarded(segment, member)),
            Some(Route::Lost) => Err(lost(segment)),
            None => Err(GridError::BadRequest(format!("no segment {}", segment.0))),
        }
    }

    /// Queues one message per segment (made by `message`) at every owner,
    /// for reads that gather the whole cache; none is sent unless every
    /// segment can be reached, so a cache is never read in part.
    pub fn send_all<M>(
        &self,
        message: impl Fn(SegmentId) -> M,
    ) -> Result<Vec<Request<Partition, M>>, GridError>
    where
        M: Message + Send + 'static,
        M::Result: Send,
        Partition: Handler<M>,
        <Partition as actix::Actor>::Context: ToEnvelope<Partition, M>,
    {
        let unreachable = self.routes.iter().enumerate().find_map(|(s, route)| match route {
            Route::Remote(member) => Some(not_forwarded(SegmentId(s as u32), member)),
            Route::Lost => Some(lost(SegmentId(s as u32))),
            Route::Local(_) => None,
        });
        if let Some(refused) = unreachable {
            return Err(refused);
        }
        Ok(self
            .local()
            .map(|(segment, partition)| partition.send(message(segment)))
            .collect())
    }
}

/// The refusal of a request for a segment whose data went with every
/// owner.
pub fn lost(segment: SegmentId) -> GridError {
    GridError::Unavailable(format!(
        "segment {} lost every owner; it is unavailable until an operator declares its data lost \
         (POST /api/v1/caches/<cache>/lost)",
        segment.0
    ))
}

fn not_forwarded(segment: SegmentId, member: &MemberId) -> GridError {
    GridError::Unavailable(format!(
        "segment {} is owned by member {}, and this node does not forward requests",
        segment.0, member.0
    ))
}
