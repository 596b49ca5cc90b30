//! Everything about the other nodes of a cluster: who the members are and
//! which of them own each segment of each cache. The grid below knows only
//! the owner tables it is handed (`grid::owners`); this module decides them.
//!
//! Today a node is its own one-member cluster: [`membership::Membership`]
//! knows only the local member, and [`assignment`] spreads segments over the
//! members it is given, balanced and moving as little as it can when they
//! change. [`wire`] is the inter-node link's frame format and handshake,
//! ready for the link between members.

pub mod assignment;
pub mod link;
pub mod membership;
pub mod wire;
