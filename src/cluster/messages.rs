//! What members say to each other over the inter-node link: the requests
//! one member sends another and their replies. Each layer of the cluster
//! adds its own variants; the link carries them without looking inside.

use serde::{Deserialize, Serialize};

use super::consensus::{ProposeError, RaftReply, RaftRequest};
use super::lease::LeaseGrant;
use super::link::Carried;
use super::topology::{Applied, Change};
use crate::grid::forward::{Forwarded, ForwardedReply};
use crate::grid::replication::{ReplicaMessage, ReplicaReply};
use crate::grid::{Interests, Relayed};

#[derive(Debug, Serialize, Deserialize)]
pub enum PeerRequest {
    /// A message of the topology log's consensus.
    Raft(RaftRequest),
    /// A change for the topology log, to append if the receiver leads or
    /// to pass on to the leader.
    Propose(Change),
    /// A member asks the leader for a lease.
    Lease,
    /// A segment's primary (or new primary) to another owner.
    Replica(ReplicaMessage),
    /// A request for a segment the receiver leads.
    Forward(Forwarded),
    /// The caches the sender's subscribers watch, each with the union of
    /// their filters: send it the events those match.
    Watch(Interests),
    /// Answered once the receiver serves the named cache (it applied the
    /// entry that created it), or refused after a while: a cache's
    /// creator waits for every member, so the cache is there wherever a
    /// client goes next.
    HasCache(String),
    /// Events of caches the receiver watches (matching its filters), and
    /// the versions skipped as not matching, in the order the sender's
    /// partitions published them.
    Events(Relayed),
}

#[derive(Debug, Serialize, Deserialize)]
pub enum PeerReply {
    Raft(RaftReply),
    Proposed(Result<Applied, ProposeError>),
    /// The lease granted, or none: the receiver does not lead, or a
    /// majority no longer backs it, or the asker is not a member.
    Lease(Option<LeaseGrant>),
    Replica(ReplicaReply),
    Forwarded(ForwardedReply),
    /// The receiver cannot take this request now (still starting, say).
    Refused(String),
    /// Taken (a watch list, events).
    Done,
}

impl Carried for PeerRequest {
    fn is_transfer(&self) -> bool {
        matches!(self, PeerRequest::Replica(ReplicaMessage::Image { .. }))
    }

    /// A whole segment, or the request for one (its reply is the segment).
    fn is_bulk(&self) -> bool {
        matches!(
            self,
            PeerRequest::Replica(ReplicaMessage::Image { .. } | ReplicaMessage::Fetch { .. })
        )
    }
}

impl Carried for PeerReply {
    fn is_transfer(&self) -> bool {
        matches!(self, PeerReply::Replica(ReplicaReply::Image(_)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::grid::{CacheName, SegmentId};

    #[test]
    fn whole_segments_and_requests_for_them_go_on_the_bulk_lane() {
        let (cache, segment, epoch) = (CacheName::parse("c").unwrap(), SegmentId(3), 2);
        let fetch = PeerRequest::Replica(ReplicaMessage::Fetch {
            cache: cache.clone(),
            segment,
            epoch,
        });
        let batch = PeerRequest::Replica(ReplicaMessage::Batch {
            cache,
            segment,
            epoch,
            batch: 1,
            ops: Vec::new(),
        });
        assert!(
            fetch.is_bulk() && !fetch.is_transfer(),
            "its reply is the segment"
        );
        assert!(
            !batch.is_bulk(),
            "batches and their acknowledgements stay on the control lane"
        );
        assert!(!PeerRequest::Lease.is_bulk());
    }
}
