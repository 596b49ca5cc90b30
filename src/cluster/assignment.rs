//! The assignment of a cache's segments to members, as a pure function:
//! given the members, the segment count and `num_owners`, which members own
//! each segment (the first of them is the primary). The membership actor
//! computes one table per cache with it; the grid creates its partition
//! actors from the table.
//!
//! Assignment is deterministic (every member that knows the same inputs
//! computes the same table without talking), balanced (each member holds
//! `floor` or `ceil` of its share of the copies, and likewise of the
//! primaries wherever a promotion can reach it) and moves little: a new
//! table is computed from the previous one, keeping every copy it can, so a
//! member joining an `n`-member cluster takes about `1/(n+1)` of the copies
//! and a member leaving hands over only its own.

use std::collections::BTreeMap;

use crate::grid::owners::{MemberId, SegmentOwners};
use crate::grid::SegmentId;

/// A fresh table: `segments` spread over `members`, `num_owners` copies
/// each on distinct members (every member owns every segment when there
/// are fewer members than that).
pub fn assign(members: &[MemberId], segments: u32, num_owners: u32) -> SegmentOwners {
    reassign(None, members, segments, num_owners)
}

/// The table for `members` that keeps as much of `previous` as balance
/// allows: owners that left are dropped, the segments short of owners
/// are filled by the members furthest below their share, and copies move
/// from members above their share to members below it only as far as
/// balance needs.
pub fn reassign(
    previous: Option<&SegmentOwners>,
    members: &[MemberId],
    segments: u32,
    num_owners: u32,
) -> SegmentOwners {
    let mut sorted = members.to_vec();
    sorted.sort();
    sorted.dedup();
    if sorted.is_empty() {
        return SegmentOwners::from_rows(vec![Vec::new(); segments as usize]);
    }
    let copies = (num_owners as usize).clamp(1, sorted.len());
    let mut table = Table::keep(previous, &sorted, segments as usize, copies);
    table.fill(copies);
    table.balance_copies();
    table.balance_primaries();
    SegmentOwners::from_rows(table.owners)
}

/// A table being computed, with each member's count of copies and of
/// primaries.
struct Table {
    owners: Vec<Vec<MemberId>>,
    /// The previous table's owners, by segment (empty for a fresh table).
    before: Vec<Vec<MemberId>>,
    copies: BTreeMap<MemberId, usize>,
    primaries: BTreeMap<MemberId, usize>,
    /// The members, sorted, and how many segments each pair of them owns
    /// together (by index into `members`): spread evenly, so that a member
    /// that leaves leaves its segments with owners all over the cluster, who
    /// can share out its copies without moving others.
    members: Vec<MemberId>,
    together: Vec<Vec<usize>>,
}

/// Which copies [`Table::balance_copies`] may move in one pass.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Movable {
    /// Copies new in this table: re-pointing one transfers nothing more.
    New,
    /// Backups: the primary stays put.
    Backups,
    Any,
}

impl Table {
    /// The previous owners that are still members, at most `copies` per
    /// segment, in their order.
    fn keep(previous: Option<&SegmentOwners>, members: &[MemberId], segments: usize, copies: usize) -> Table {
        let before: Vec<Vec<MemberId>> = (0..segments)
            .map(|s| {
                previous
                    .map_or(&[][..], |p| p.owners(SegmentId(s as u32)))
                    .to_vec()
            })
            .collect();
        let owners = before
            .iter()
            .map(|owners| {
                owners
                    .iter()
                    .filter(|m| members.binary_search(m).is_ok())
                    .take(copies)
                    .cloned()
                    .collect()
            })
            .collect();
        let mut table = Table {
            owners,
            before,
            members: members.to_vec(),
            together: vec![vec![0; members.len()]; members.len()],
            copies: members.iter().map(|m| (m.clone(), 0)).collect(),
            primaries: members.iter().map(|m| (m.clone(), 0)).collect(),
        };
        table.recount();
        table
    }

    fn recount(&mut self) {
        self.copies.values_mut().for_each(|c| *c = 0);
        self.primaries.values_mut().for_each(|c| *c = 0);
        for owners in &self.owners {
            for (i, member) in owners.iter().enumerate() {
                *self.copies.get_mut(member).expect("owners are members") += 1;
                if i == 0 {
                    *self.primaries.get_mut(member).expect("owners are members") += 1;
                }
            }
            for a in owners {
                for b in owners {
                    let (a, b) = (self.index(a), self.index(b));
                    self.together[a][b] += 1;
                }
            }
        }
    }

    fn index(&self, member: &MemberId) -> usize {
        self.members.binary_search(member).expect("owners are members")
    }

    /// How many segments `member` owns together with `owners`.
    fn owned_with(&self, member: &MemberId, owners: &[MemberId]) -> usize {
        let m = self.index(member);
        owners.iter().map(|o| self.together[self.index(o)][m]).sum()
    }

    /// Gives every segment `copies` owners: a missing primary is the member
    /// with the fewest primaries, a missing backup the one with the fewest
    /// copies, among those not owning it yet (ties: the fewest segments owned
    /// with this one's owners, then fewer copies, then the lower id).
    fn fill(&mut self, copies: usize) {
        for s in 0..self.owners.len() {
            while self.owners[s].len() < copies {
                let owners = &self.owners[s];
                let primary = owners.is_empty();
                let member = self
                    .members
                    .iter()
                    .filter(|m| !owners.contains(m))
                    .min_by_key(|m| {
                        let held = self.copies[*m];
                        let first = if primary { self.primaries[*m] } else { held };
                        (first, self.owned_with(m, owners), held, (*m).clone())
                    })
                    .expect("fewer owners than members leaves a member to add")
                    .clone();
                self.count(&member, primary, 1);
                let m = self.index(&member);
                for owner in &self.owners[s] {
                    let o = self.index(owner);
                    self.together[o][m] += 1;
                    self.together[m][o] += 1;
                }
                self.together[m][m] += 1;
                self.owners[s].push(member);
            }
        }
    }

    /// Each member's share of `total`: `total / n`, one more for the first
    /// `total % n` of them, ranked by how many they hold now (so the extra
    /// goes where it moves nothing), ties by id.
    fn targets(held: &BTreeMap<MemberId, usize>, total: usize) -> BTreeMap<MemberId, usize> {
        let n = held.len();
        let mut ranked: Vec<(&MemberId, usize)> = held.iter().map(|(m, c)| (m, *c)).collect();
        ranked.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(b.0)));
        ranked
            .into_iter()
            .enumerate()
            .map(|(i, (m, _))| (m.clone(), total / n + usize::from(i < total % n)))
            .collect()
    }

    /// Moves copies from members above their share to members below it:
    /// first copies new in this table (re-pointing them transfers nothing
    /// more), then backups (so primaries stay put), then any. The last pass
    /// suffices on its own: a member still above its share at the
    /// end holds a segment that a member still below lacks (it holds more),
    /// and when that segment was visited the first was already above and the
    /// second already below (counts of givers only fall, of takers only
    /// rise), so a copy would have moved there.
    fn balance_copies(&mut self) {
        let total = self.owners.iter().map(Vec::len).sum();
        let targets = Table::targets(&self.copies, total);
        for movable in [Movable::New, Movable::Backups, Movable::Any] {
            for s in 0..self.owners.len() {
                for at in 0..self.owners[s].len() {
                    let giver = &self.owners[s][at];
                    let allowed = match movable {
                        Movable::New => !self.before[s].contains(giver),
                        Movable::Backups => at > 0,
                        Movable::Any => true,
                    };
                    if !allowed || self.copies[giver] <= targets[giver] {
                        continue;
                    }
                    let owners = &self.owners[s];
                    let taker = self
                        .copies
                        .iter()
                        .find(|(m, c)| **c < targets[*m] && !owners.contains(m))
                        .map(|(m, _)| m.clone());
                    if let Some(taker) = taker {
                        let giver = std::mem::replace(&mut self.owners[s][at], taker.clone());
                        self.count(&giver, at == 0, -1);
                        self.count(&taker, at == 0, 1);
                    }
                }
            }
        }
    }

    /// Evens out primaries by promoting a backup in place of a primary that
    /// holds more than its share: no copy moves. Best effort: where no
    /// segment of an over-served primary has an under-served backup, it
    /// stays (the copies are balanced regardless).
    fn balance_primaries(&mut self) {
        let targets = Table::targets(&self.primaries, self.owners.len());
        for _ in 0..self.copies.len() {
            let mut promoted = false;
            for s in 0..self.owners.len() {
                let owners = &self.owners[s];
                let Some(primary) = owners.first() else {
                    continue;
                };
                if self.primaries[primary] <= targets[primary] {
                    continue;
                }
                let Some(backup) =
                    (1..owners.len()).find(|i| self.primaries[&owners[*i]] < targets[&owners[*i]])
                else {
                    continue;
                };
                self.owners[s].swap(0, backup);
                let (now, before) = (self.owners[s][0].clone(), self.owners[s][backup].clone());
                *self.primaries.get_mut(&before).expect("a member") -= 1;
                *self.primaries.get_mut(&now).expect("a member") += 1;
                promoted = true;
            }
            if !promoted {
                break;
            }
        }
    }

    /// Adds `delta` to `member`'s copies, and to its primaries if `primary`.
    fn count(&mut self, member: &MemberId, primary: bool, delta: isize) {
        let apply = |count: &mut usize| *count = count.checked_add_signed(delta).expect("counts stay >= 0");
        apply(self.copies.get_mut(member).expect("a member"));
        if primary {
            apply(self.primaries.get_mut(member).expect("a member"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn ids(names: &[&str]) -> Vec<MemberId> {
        names.iter().map(|n| MemberId(Arc::from(*n))).collect()
    }

    fn members(n: usize) -> Vec<MemberId> {
        (0..n).map(|i| MemberId(Arc::from(format!("n{i:02}")))).collect()
    }

    /// Every segment has `copies` distinct owners, and every member holds
    /// floor..ceil of its share of the copies and of the primaries.
    fn assert_balanced(table: &SegmentOwners, members: &[MemberId], copies: usize) {
        let segments = table.segments() as usize;
        for s in 0..table.segments() {
            let owners = table.owners(SegmentId(s));
            assert_eq!(owners.len(), copies, "segment {s}");
            let mut distinct = owners.to_vec();
            distinct.sort();
            distinct.dedup();
            assert_eq!(distinct.len(), copies, "segment {s} has distinct owners");
        }
        let n = members.len();
        let total = segments * copies;
        for m in members {
            let held = table.owned_by(m).count();
            assert!(
                (total / n..=total.div_ceil(n)).contains(&held),
                "{m:?} holds {held} of {total} copies over {n} members"
            );
            let primaries = (0..table.segments())
                .filter(|s| table.owners(SegmentId(*s)).first() == Some(m))
                .count();
            assert!(
                (segments / n..=segments.div_ceil(n)).contains(&primaries),
                "{m:?} is primary for {primaries} of {segments} segments over {n} members"
            );
        }
    }

    #[test]
    fn a_single_member_owns_every_segment() {
        let me = ids(&["n1"]);
        let table = assign(&me, 256, 2);
        assert_eq!(table.segments(), 256);
        assert!((0..256).all(|s| table.owners(SegmentId(s)) == me.as_slice()));
        assert_eq!(table.owned_by(&me[0]).count(), 256);
    }

    #[test]
    fn owners_are_distinct_and_spread_evenly() {
        let members = ids(&["c", "a", "b"]);
        let table = assign(&members, 300, 2);
        for s in 0..300 {
            let owners = table.owners(SegmentId(s));
            assert_eq!(owners.len(), 2);
            assert_ne!(owners[0], owners[1]);
        }
        for m in &members {
            assert_eq!(
                table.owned_by(m).count(),
                200,
                "each member holds 2/3 of 300 copies"
            );
        }
    }

    #[test]
    fn assignment_does_not_depend_on_member_order() {
        let a = assign(&ids(&["x", "y", "z"]), 64, 2);
        let b = assign(&ids(&["z", "x", "y"]), 64, 2);
        assert_eq!(a, b);
    }

    #[test]
    fn out_of_range_segments_have_no_owner() {
        let table = assign(&ids(&["n1"]), 4, 1);
        assert!(table.owners(SegmentId(4)).is_empty());
    }

    #[test]
    fn fresh_tables_are_balanced_for_any_cluster_size() {
        for n in 1..=9 {
            for copies in 1..=3.min(n) {
                for segments in [1, 7, 64, 256, 1000] {
                    let all = members(n);
                    let table = assign(&all, segments, copies as u32);
                    if segments as usize >= n {
                        assert_balanced(&table, &all, copies);
                    }
                }
            }
        }
    }

    #[test]
    fn a_join_moves_only_the_newcomers_share() {
        for n in 1..=8 {
            for copies in [1usize, 2, 3] {
                let before_members = members(n);
                let before = assign(&before_members, 256, copies as u32);
                let after_members = members(n + 1);
                let after = reassign(Some(&before), &after_members, 256, copies as u32);
                let copies_now = copies.min(n + 1);
                assert_balanced(&after, &after_members, copies_now);
                // The newcomer's share, plus the copies a cluster smaller
                // than num_owners must add anyway.
                let share = (256 * copies_now).div_ceil(n + 1);
                let added = 256 * (copies_now - copies.min(n));
                let moved = after.copies_moved_from(&before);
                assert!(
                    moved <= share.max(added),
                    "join of member {} with {copies} owners moved {moved} copies; its share is {share}",
                    n + 1
                );
            }
        }
    }

    #[test]
    fn a_leave_moves_only_the_leavers_copies() {
        for n in 2..=9 {
            for copies in [1usize, 2, 3] {
                let all = members(n);
                let before = assign(&all, 256, copies as u32);
                let leaver = &all[n / 2];
                let held = before.owned_by(leaver).count();
                let rest: Vec<MemberId> = all.iter().filter(|m| *m != leaver).cloned().collect();
                let after = reassign(Some(&before), &rest, 256, copies as u32);
                let copies_now = copies.min(n - 1);
                assert_balanced(&after, &rest, copies_now);
                assert!(
                    after.copies_moved_from(&before) <= held,
                    "{n} members, {copies} owners: only the leaver's {held} copies move"
                );
            }
        }
    }

    #[test]
    fn the_largest_cache_is_assigned_and_rebalanced_in_linear_passes() {
        let all = members(5);
        let table = assign(&all, 65_536, 2);
        assert_balanced(&table, &all, 2);
        let grown = members(6);
        let after = reassign(Some(&table), &grown, 65_536, 2);
        assert_balanced(&after, &grown, 2);
        assert!(after.copies_moved_from(&table) <= (65_536 * 2usize).div_ceil(6));
    }

    #[test]
    fn an_unchanged_membership_moves_nothing() {
        let all = members(5);
        let table = assign(&all, 256, 2);
        assert_eq!(reassign(Some(&table), &all, 256, 2), table);
    }
}
