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
}

impl Carried for PeerReply {
    fn is_transfer(&self) -> bool {
        matches!(self, PeerReply::Replica(ReplicaReply::Image(_)))
    }
}
