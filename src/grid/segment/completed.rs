//! The writes a segment remembers by their client's op id ([`OpId`]): what
//! each did, so that the same write sent again (its reply was lost, or its
//! primary failed over) is answered with that outcome instead of being
//! applied twice. Every owner remembers them, as it applies the writes, so
//! a promoted backup answers a retry as its primary would have. Bounded:
//! the last [`REMEMBERED_OPS`] per segment, the oldest forgotten first.

use std::collections::{HashMap, VecDeque};

use serde::{Deserialize, Serialize};

use super::PutOutcome;
use crate::grid::{GridError, OpId, Version};

/// How many op ids a segment remembers.
pub const REMEMBERED_OPS: usize = 1024;

/// What a write named by an op id did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Completed {
    Put(PutOutcome),
    Removed(Version),
}

impl Completed {
    /// The outcome for a put sent again with the same op id.
    pub fn as_put(self, op: &OpId) -> Result<PutOutcome, GridError> {
        match self {
            Completed::Put(outcome) => Ok(outcome),
            Completed::Removed(_) => Err(reused(op)),
        }
    }

    /// The outcome for a remove sent again with the same op id.
    pub fn as_remove(self, op: &OpId) -> Result<Version, GridError> {
        match self {
            Completed::Removed(version) => Ok(version),
            Completed::Put(_) => Err(reused(op)),
        }
    }
}

fn reused(op: &OpId) -> GridError {
    GridError::Conflict(format!("op id {op} named another kind of write"))
}

#[derive(Debug, Default)]
pub struct CompletedOps {
    /// Op ids, oldest first.
    order: VecDeque<OpId>,
    outcomes: HashMap<OpId, Completed>,
}

impl CompletedOps {
    pub fn get(&self, op: &OpId) -> Option<Completed> {
        self.outcomes.get(op).copied()
    }

    pub fn remember(&mut self, op: OpId, outcome: Completed) {
        if self.outcomes.insert(op.clone(), outcome).is_none() {
            self.order.push_back(op);
            if self.order.len() > REMEMBERED_OPS {
                if let Some(oldest) = self.order.pop_front() {
                    self.outcomes.remove(&oldest);
                }
            }
        }
    }

    /// Every remembered op, oldest first: for a segment image.
    pub fn export(&self) -> Vec<(OpId, Completed)> {
        self.order
            .iter()
            .filter_map(|op| Some((op.clone(), self.get(op)?)))
            .collect()
    }

    /// Remembers exactly `ops` (oldest first), forgetting the rest.
    pub fn import(&mut self, ops: Vec<(OpId, Completed)>) {
        self.order.clear();
        self.outcomes.clear();
        for (op, outcome) in ops {
            self.remember(op, outcome);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(n: usize) -> OpId {
        OpId::parse(&format!("op{n}")).unwrap()
    }

    #[test]
    fn the_last_ops_are_remembered_with_their_outcome() {
        let mut ops = CompletedOps::default();
        for n in 0..REMEMBERED_OPS + 10 {
            ops.remember(op(n), Completed::Removed(Version(n as u64)));
        }
        assert_eq!(ops.get(&op(9)), None, "the oldest are forgotten");
        assert_eq!(ops.get(&op(10)), Some(Completed::Removed(Version(10))));
        assert_eq!(ops.export().len(), REMEMBERED_OPS);
        assert!(
            ops.get(&op(10)).unwrap().as_put(&op(10)).is_err(),
            "another kind of write"
        );

        let mut copy = CompletedOps::default();
        copy.import(ops.export());
        assert_eq!(copy.export(), ops.export());
    }
}
