//! A segment's lineage: the epoch each run of its versions was written
//! under, as the first version written under each epoch (Kafka's
//! leader-epoch cache). Versions continue across failover, so a version
//! alone does not say which write it was: after a double failure a new
//! primary may write version 12 again, under its own epoch, over a version
//! 12 that did not survive. A client's [`Position`] names both, and the
//! lineage tells one it can replay (its version was written under its
//! epoch here) from one whose last events are not in this copy (reset).
//!
//! The lineage travels with the segment (in each replicated write and in
//! images) and forgets the epochs its history no longer reaches.

use serde::{Deserialize, Serialize};

use crate::grid::Version;

/// Where a client stands in one segment: the last version it has, and the
/// epoch that version was written under (`None` when the client did not
/// say, as older clients and tokens do: then only the version is checked).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Position {
    pub version: Version,
    pub epoch: Option<u64>,
}

impl Position {
    /// A version with no epoch named.
    pub fn at(version: Version) -> Self {
        Position { version, epoch: None }
    }
}

/// The first version written under `epoch`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EpochStart {
    pub epoch: u64,
    pub first: Version,
}

#[derive(Debug, Default)]
pub struct Lineage {
    /// Oldest first; epochs and first versions both strictly grow.
    starts: Vec<EpochStart>,
}

impl Lineage {
    /// Notes that `version` was written under `epoch`. Epochs never run
    /// back on an owner the cluster still takes writes from (fencing), so
    /// a lower epoch changes nothing.
    pub fn wrote(&mut self, epoch: u64, version: Version) {
        if self.starts.last().is_none_or(|last| last.epoch < epoch) {
            self.starts.push(EpochStart {
                epoch,
                first: version,
            });
        }
    }

    /// The epoch `version` was written under, if the lineage still says.
    pub fn epoch_of(&self, version: Version) -> Option<u64> {
        let after = self.starts.partition_point(|start| start.first <= version);
        after.checked_sub(1).map(|i| self.starts[i].epoch)
    }

    /// Whether `position` is one of this copy's: version 0, or a version
    /// written here under the epoch it names (or names none).
    pub fn holds(&self, position: Position) -> bool {
        match position.epoch {
            Some(epoch) if position.version.0 > 0 => self.epoch_of(position.version) == Some(epoch),
            _ => true,
        }
    }

    /// Forgets the epochs that ended before `oldest`, the oldest position
    /// a client could still be replayed from.
    pub fn forget_before(&mut self, oldest: Version) {
        let ended = self.starts.partition_point(|start| start.first <= oldest);
        if ended > 1 {
            self.starts.drain(..ended - 1);
        }
    }

    pub fn export(&self) -> Vec<EpochStart> {
        self.starts.clone()
    }

    pub fn import(&mut self, starts: Vec<EpochStart>) {
        self.starts = starts;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(version: u64, epoch: u64) -> Position {
        Position {
            version: Version(version),
            epoch: Some(epoch),
        }
    }

    #[test]
    fn each_version_belongs_to_the_epoch_it_was_written_under() {
        let mut lineage = Lineage::default();
        for v in 1..=10 {
            lineage.wrote(3, Version(v));
        }
        for v in 11..=12 {
            lineage.wrote(5, Version(v));
        }
        lineage.wrote(4, Version(13)); // a fenced epoch: ignored
        assert_eq!(lineage.epoch_of(Version(0)), None);
        assert_eq!(lineage.epoch_of(Version(1)), Some(3));
        assert_eq!(lineage.epoch_of(Version(10)), Some(3));
        assert_eq!(lineage.epoch_of(Version(11)), Some(5));
        assert_eq!(lineage.epoch_of(Version(99)), Some(5));
        assert!(lineage.holds(at(10, 3)) && lineage.holds(at(12, 5)));
        assert!(lineage.holds(Position::at(Version(11))), "no epoch named");
        assert!(lineage.holds(at(0, 9)), "version 0 is everyone's");
        // Version 11 under epoch 4 was written by a primary whose writes
        // this copy does not have; so were 11 and 12 under epoch 3.
        assert!(!lineage.holds(at(11, 4)));
        assert!(!lineage.holds(at(12, 3)));
        assert!(!lineage.holds(at(5, 5)));
    }

    #[test]
    fn epochs_before_the_oldest_replayable_version_are_forgotten() {
        let mut lineage = Lineage::default();
        lineage.wrote(1, Version(1));
        lineage.wrote(2, Version(5));
        lineage.wrote(4, Version(9));
        lineage.forget_before(Version(4));
        assert_eq!(lineage.export().len(), 3, "epoch 1 still holds version 4");
        lineage.forget_before(Version(6));
        assert_eq!(lineage.epoch_of(Version(6)), Some(2));
        assert_eq!(lineage.epoch_of(Version(4)), None, "forgotten");
        lineage.forget_before(Version(100));
        assert_eq!(
            lineage.export(),
            vec![EpochStart {
                epoch: 4,
                first: Version(9)
            }]
        );
    }
}
