//! Everything about the other nodes of a cluster: who the members are and
//! which of them own each segment of each cache. The grid below knows only
//! the owner tables it is handed (`grid::owners`); this module decides them.
//!
//! The layers, from the bottom: [`wire`] (frames and handshake), [`link`]
//! (one connection per pair of members, requests and replies both ways),
//! [`topology`] (members, epochs and owner tables as a value, changed only
//! by agreed [`topology::Change`]s), [`assignment`] (balanced,
//! minimal-movement owner tables), [`consensus`] (the topology log on
//! openraft), [`messages`] (what members say over the link) and [`member`]
//! (this node in a cluster: founding or joining it, proposing changes,
//! removing members [`gossip`] (chitchat) has given up on, keeping the
//! majority-backed [`lease`] it acts under). [`placement`] keeps the grid
//! placed by the agreed tables; [`relay`] carries events to the members
//! whose subscribers watch their cache ([`watchers`]).
//! [`membership::Membership`] is the actor the rest of the node asks about
//! members and owners; a node started without a cluster address is its own
//! one-member cluster there.

pub mod assignment;
pub mod consensus;
pub mod gossip;
pub mod lease;
pub mod link;
pub mod member;
pub mod membership;
pub mod messages;
pub mod placement;
pub mod relay;
pub mod topology;
pub mod watchers;
pub mod wire;
