//! The in-process group coordinator: Kafka's classic group protocol for consumers that
//! `subscribe` (eager rebalancing), kept inside `Log`.
//!
//! A group moves `Empty` → `PreparingRebalance` (members (re)join) → `Stable` (generation
//! bumped, assignment computed by the leader's assignor) → `PreparingRebalance` again when a member
//! joins, leaves, changes its subscription or misses its session timeout. In one process the
//! join and sync rounds collapse into one call: a member's `join` reports `Pending` until
//! every member has rejoined (or the rebalance timeout removed the ones that did not), and the
//! call that completes the round computes every member's assignment at once.
//!
//! Liveness is driven by the consumers' own calls: each `poll` heartbeats (there is no
//! background heartbeat thread), so a member that does not poll within `session_timeout_ms`
//! is removed. Time comes from the log's clock, so tests run on a `ManualClock`.
//!
//! Invariants: within a generation each partition has at most one owner (the assignors
//! guarantee it and the assignment only changes when the generation does); a member that is
//! not in the group, or is in another generation, gets `UnknownMemberId` /
//! `IllegalGeneration` and its commits are refused.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use crate::error::{Error, Result};
use crate::group::admin::GroupState;
use crate::group::assignor::{Assignor, RebalanceProtocol, Subscription};
use crate::offsets::{GroupMeta, MemberMeta};
use crate::types::TopicPartition;

/// How long a waiter sleeps between looks at the clock (a `ManualClock` may move).
const CLOCK_POLL: Duration = Duration::from_millis(10);

/// What a member sends when it joins.
#[derive(Debug, Clone)]
pub(crate) struct JoinRequest {
    /// The member id from an earlier join; `None` for a new member.
    pub member_id: Option<String>,
    /// Static membership (`group_instance_id`): a member that comes back under the same
    /// instance id takes the old member's place and assignment without a rebalance.
    pub instance_id: Option<String>,
    pub topics: Vec<String>,
    /// Assignors in preference order.
    pub assignors: Vec<Arc<dyn Assignor>>,
    pub session_timeout_ms: u64,
    pub rebalance_timeout_ms: u64,
    /// Partitions the member still holds (cooperative rebalancing; empty when eager).
    pub owned: Vec<TopicPartition>,
}

/// The answer to a join.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum JoinOutcome {
    /// The round is not complete yet; join again (with this id) to see.
    Pending { member_id: String },
    /// The member is in `generation` with this assignment.
    Joined {
        member_id: String,
        generation: i32,
        assignment: Vec<TopicPartition>,
        /// Eager, or cooperative: then partitions moving between members are withheld for
        /// a round, and a member that gave some up rejoins at once.
        protocol: RebalanceProtocol,
    },
}

#[derive(Debug)]
struct Member {
    instance_id: Option<String>,
    topics: Vec<String>,
    assignors: Vec<Arc<dyn Assignor>>,
    session_timeout_ms: i64,
    rebalance_timeout_ms: i64,
    last_heartbeat_ms: i64,
    /// Joined the current round.
    joined: bool,
    /// Its assignment in the last generation.
    owned: Vec<TopicPartition>,
    /// What it said it still holds when it last joined (sorted).
    claimed: Vec<TopicPartition>,
}

#[derive(Debug)]
struct Group {
    state: GroupState,
    generation: i32,
    protocol: Option<&'static str>,
    rebalance_protocol: RebalanceProtocol,
    leader: Option<String>,
    members: BTreeMap<String, Member>,
    /// When a round in progress completes even if some members have not rejoined.
    rebalance_deadline_ms: i64,
    /// When the group last became empty (log clock), for the expiry of its offsets.
    empty_since_ms: i64,
    /// A round completed or the group became empty: its metadata is to be written.
    dirty: bool,
    /// A round of an empty group does not complete before this (Kafka's
    /// `group.initial.rebalance.delay.ms`), so that members starting together join one
    /// generation.
    initial_delay_until_ms: i64,
}

impl Group {
    fn new() -> Group {
        Group {
            state: GroupState::Empty,
            generation: 0,
            protocol: None,
            rebalance_protocol: RebalanceProtocol::Eager,
            leader: None,
            members: BTreeMap::new(),
            rebalance_deadline_ms: 0,
            initial_delay_until_ms: 0,
            empty_since_ms: 0,
            dirty: false,
        }
    }

    /// The metadata `__consumer_offsets` keeps for the group.
    fn meta(&self, now: i64) -> GroupMeta {
        let state_timestamp = if self.members.is_empty() {
            self.empty_since_ms
        } else {
            now
        };
        GroupMeta {
            generation: self.generation,
            protocol: self.protocol.map(str::to_owned),
            leader: self.leader.clone(),
            state_timestamp,
            members: self
                .members
                .iter()
                .map(|(id, m)| MemberMeta {
                    member_id: id.clone(),
                    instance_id: m.instance_id.clone(),
                    rebalance_timeout_ms: m.rebalance_timeout_ms.min(i64::from(i32::MAX)) as i32,
                    session_timeout_ms: m.session_timeout_ms.min(i64::from(i32::MAX)) as i32,
                })
                .collect(),
        }
    }

    /// Starts a round: every member must join again.
    fn prepare_rebalance(&mut self, now: i64, initial_delay_ms: i64) {
        let was_empty = self.state == GroupState::Empty;
        self.state = GroupState::PreparingRebalance;
        for member in self.members.values_mut() {
            member.joined = false;
        }
        let timeout = self
            .members
            .values()
            .map(|m| m.rebalance_timeout_ms)
            .max()
            .unwrap_or(0);
        self.rebalance_deadline_ms = now.saturating_add(timeout);
        if was_empty {
            self.initial_delay_until_ms = now.saturating_add(initial_delay_ms);
        }
    }

    /// Removes members whose session expired; a removal starts a round.
    fn expire(&mut self, now: i64, initial_delay_ms: i64) {
        let before = self.members.len();
        self.members
            .retain(|_, m| now.saturating_sub(m.last_heartbeat_ms) <= m.session_timeout_ms);
        if self.members.len() != before {
            self.after_removal(now, initial_delay_ms);
        }
    }

    fn after_removal(&mut self, now: i64, initial_delay_ms: i64) {
        if self.members.is_empty() {
            self.state = GroupState::Empty;
            self.leader = None;
            self.generation += 1;
            self.empty_since_ms = now;
            self.dirty = true;
        } else if self.state == GroupState::Stable {
            self.prepare_rebalance(now, initial_delay_ms);
        }
    }

    /// Completes the round when every member joined (after the initial delay), or when its
    /// deadline passed (dropping the members that did not join).
    fn maybe_complete(&mut self, now: i64, partitions: &dyn Fn(&str) -> Option<u32>) -> bool {
        if self.state != GroupState::PreparingRebalance {
            return false;
        }
        let all_joined = self.members.values().all(|m| m.joined);
        let timed_out = now >= self.rebalance_deadline_ms;
        if !(timed_out || all_joined && now >= self.initial_delay_until_ms) {
            return false;
        }
        self.members.retain(|_, m| m.joined);
        self.generation += 1;
        self.dirty = true;
        if self.members.is_empty() {
            self.state = GroupState::Empty;
            self.leader = None;
            self.empty_since_ms = now;
            return true;
        }
        let leader = match &self.leader {
            Some(leader) if self.members.contains_key(leader) => leader.clone(),
            _ => self
                .members
                .keys()
                .next()
                .cloned()
                .unwrap_or_else(|| unreachable!("the group has members")),
        };
        let assignor = self.choose_assignor(&leader);
        self.protocol = Some(assignor.name());
        let cooperative = assignor.protocol() == RebalanceProtocol::Cooperative;
        self.rebalance_protocol = assignor.protocol();
        let mut counts = BTreeMap::new();
        for topic in self.members.values().flat_map(|m| m.topics.iter()) {
            if let Some(count) = partitions(topic) {
                counts.insert(topic.clone(), count);
            }
        }
        let subscriptions: BTreeMap<String, Subscription> = self
            .members
            .iter()
            .map(|(id, m)| {
                // Cooperative members report what they still hold; eager ones gave all up,
                // and sticky assignors remember their last assignment instead.
                let held = if cooperative { &m.claimed } else { &m.owned };
                let subscription = Subscription::new(m.topics.iter().cloned())
                    .owning(held.iter().cloned(), self.generation - 1);
                (id.clone(), subscription)
            })
            .collect();
        let mut assignment = assignor.assign(&counts, &subscriptions);
        for (id, member) in &mut self.members {
            member.owned = assignment.remove(id).unwrap_or_default();
        }
        self.leader = Some(leader);
        self.state = GroupState::Stable;
        true
    }

    /// The leader's most preferred assignor that every member supports (Kafka picks the
    /// protocol all members vote for); the leader's first one if there is none in common.
    fn choose_assignor(&self, leader: &str) -> Arc<dyn Assignor> {
        let leader = &self.members[leader];
        leader
            .assignors
            .iter()
            .find(|a| {
                self.members
                    .values()
                    .all(|m| m.assignors.iter().any(|b| b.name() == a.name()))
            })
            .or_else(|| leader.assignors.first())
            .cloned()
            .unwrap_or_else(|| Arc::new(crate::group::assignor::RangeAssignor))
    }

    fn outcome(&self, member_id: &str) -> JoinOutcome {
        match (self.state, self.members.get(member_id)) {
            (GroupState::Stable, Some(member)) if member.joined => JoinOutcome::Joined {
                member_id: member_id.to_owned(),
                generation: self.generation,
                assignment: member.owned.clone(),
                protocol: self.rebalance_protocol,
            },
            _ => JoinOutcome::Pending {
                member_id: member_id.to_owned(),
            },
        }
    }
}

/// A member's view of its group, for `describe_group`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MemberView {
    pub member_id: String,
    pub assignment: Vec<TopicPartition>,
}

/// All groups with members.
#[derive(Debug)]
pub(crate) struct Coordinator {
    groups: Mutex<HashMap<String, Group>>,
    /// Group metadata to write to `__consumer_offsets`, oldest first.
    changes: Mutex<Vec<(String, GroupMeta)>>,
    changed: Condvar,
    next_member: AtomicU64,
    initial_delay_ms: i64,
}

impl Coordinator {
    pub(crate) fn new(initial_delay_ms: u64) -> Coordinator {
        Coordinator {
            groups: Mutex::new(HashMap::new()),
            changes: Mutex::new(Vec::new()),
            changed: Condvar::new(),
            next_member: AtomicU64::new(1),
            initial_delay_ms: initial_delay_ms.min(i64::MAX as u64) as i64,
        }
    }

    /// Joins (or rejoins) `group`. `partitions` gives a topic's partition count.
    pub(crate) fn join(
        &self,
        group: &str,
        request: JoinRequest,
        now: i64,
        partitions: &dyn Fn(&str) -> Option<u32>,
    ) -> Result<JoinOutcome> {
        let mut groups = self.groups.lock();
        let g = groups.entry(group.to_owned()).or_insert_with(Group::new);
        g.expire(now, self.initial_delay_ms);
        let known = request
            .member_id
            .as_ref()
            .is_some_and(|id| g.members.contains_key(id));
        let static_id = request.instance_id.as_ref().and_then(|instance| {
            g.members
                .iter()
                .find(|(_, m)| m.instance_id.as_ref() == Some(instance))
                .map(|(id, _)| id.clone())
        });
        let member_id = match (request.member_id, static_id) {
            (Some(id), _) if known => id,
            // A static member back under its instance id takes its old place: a new member
            // id (the old one is fenced), the same generation and assignment.
            (_, Some(old)) => {
                let n = self.next_member.fetch_add(1, Ordering::Relaxed);
                let id = format!("{group}-member-{n}");
                if let Some(mut member) = g.members.remove(&old) {
                    member.last_heartbeat_ms = now;
                    g.members.insert(id.clone(), member);
                }
                if g.leader.as_deref() == Some(old.as_str()) {
                    g.leader = Some(id.clone());
                }
                id
            }
            (Some(_), None) => return Err(Error::UnknownMemberId),
            (None, None) => {
                let n = self.next_member.fetch_add(1, Ordering::Relaxed);
                format!("{group}-member-{n}")
            }
        };
        let to_ms = |ms: u64| ms.min(i64::MAX as u64) as i64;
        let mut claimed = request.owned;
        claimed.sort();
        let changed = if let Some(member) = g.members.get_mut(&member_id) {
            // A cooperative member that gave partitions up rejoins holding less: that asks
            // for the round that hands them to their new owners.
            let changed = member.topics != request.topics || member.claimed != claimed;
            member.claimed = claimed;
            member.topics = request.topics;
            member.assignors = request.assignors;
            member.session_timeout_ms = to_ms(request.session_timeout_ms);
            member.rebalance_timeout_ms = to_ms(request.rebalance_timeout_ms);
            member.last_heartbeat_ms = now;
            changed
        } else {
            g.members.insert(
                member_id.clone(),
                Member {
                    instance_id: request.instance_id,
                    topics: request.topics,
                    assignors: request.assignors,
                    session_timeout_ms: to_ms(request.session_timeout_ms),
                    rebalance_timeout_ms: to_ms(request.rebalance_timeout_ms),
                    last_heartbeat_ms: now,
                    joined: false,
                    owned: Vec::new(),
                    claimed,
                },
            );
            true
        };
        if changed && g.state != GroupState::PreparingRebalance {
            g.prepare_rebalance(now, self.initial_delay_ms);
        } else if !changed && g.state == GroupState::Stable {
            // A member rejoining a stable group unchanged (e.g. after a revocation it
            // thought was needed) gets the current assignment back.
            if let Some(member) = g.members.get_mut(&member_id) {
                member.joined = true;
            }
            return Ok(g.outcome(&member_id));
        }
        if let Some(member) = g.members.get_mut(&member_id) {
            member.joined = true;
        }
        if g.maybe_complete(now, partitions) {
            self.changed.notify_all();
        }
        let outcome = g.outcome(&member_id);
        self.collect(&mut groups, now);
        Ok(outcome)
    }

    /// Records that a member is alive. `RebalanceInProgress` means it must rejoin;
    /// `UnknownMemberId` that it was removed; `IllegalGeneration` that it is behind.
    pub(crate) fn heartbeat(
        &self,
        group: &str,
        member_id: &str,
        generation: i32,
        now: i64,
        partitions: &dyn Fn(&str) -> Option<u32>,
    ) -> Result<()> {
        let mut groups = self.groups.lock();
        let Some(g) = groups.get_mut(group) else {
            return Err(Error::UnknownMemberId);
        };
        g.expire(now, self.initial_delay_ms);
        if g.maybe_complete(now, partitions) {
            self.changed.notify_all();
        }
        let Some(member) = g.members.get_mut(member_id) else {
            self.collect(&mut groups, now);
            return Err(Error::UnknownMemberId);
        };
        member.last_heartbeat_ms = now;
        let result = if g.state == GroupState::PreparingRebalance {
            Err(Error::RebalanceInProgress)
        } else if generation != g.generation {
            Err(Error::IllegalGeneration {
                generation,
                current: g.generation,
            })
        } else {
            Ok(())
        };
        self.collect(&mut groups, now);
        result
    }

    /// Removes a member at once (close, or drop); the others rebalance.
    pub(crate) fn leave(&self, group: &str, member_id: &str, now: i64) {
        let mut groups = self.groups.lock();
        if let Some(g) = groups.get_mut(group)
            && g.members.remove(member_id).is_some()
        {
            g.after_removal(now, self.initial_delay_ms);
            self.changed.notify_all();
        }
        self.collect(&mut groups, now);
    }

    /// Whether a commit may be applied: from a member of the current generation, or from a
    /// client outside the group (`None`) only while the group has no members.
    pub(crate) fn check_commit(
        &self,
        group: &str,
        member: Option<(&str, i32)>,
        now: i64,
    ) -> Result<()> {
        let mut groups = self.groups.lock();
        let Some(g) = groups.get_mut(group) else {
            return match member {
                None => Ok(()),
                Some(_) => Err(Error::UnknownMemberId),
            };
        };
        g.expire(now, self.initial_delay_ms);
        let result = match member {
            None if g.members.is_empty() => Ok(()),
            None => Err(Error::UnknownMemberId),
            Some((id, _)) if !g.members.contains_key(id) => Err(Error::UnknownMemberId),
            Some(_) if g.state == GroupState::CompletingRebalance => {
                Err(Error::RebalanceInProgress)
            }
            Some((_, generation)) if generation != g.generation => Err(Error::IllegalGeneration {
                generation,
                current: g.generation,
            }),
            Some(_) => Ok(()),
        };
        self.collect(&mut groups, now);
        result
    }

    /// Waits until a group changes, `deadline` passes or a short while (for clock moves).
    pub(crate) fn wait(&self, deadline: Instant) {
        let mut groups = self.groups.lock();
        let until = deadline.min(Instant::now() + CLOCK_POLL);
        self.changed.wait_until(&mut groups, until);
    }

    /// A group's state, generation and members (`None` for a group without members).
    pub(crate) fn describe(&self, group: &str) -> Option<(GroupState, i32, Vec<MemberView>)> {
        let groups = self.groups.lock();
        let g = groups.get(group)?;
        let members = g
            .members
            .iter()
            .map(|(id, m)| MemberView {
                member_id: id.clone(),
                assignment: if g.state == GroupState::Stable {
                    m.owned.clone()
                } else {
                    Vec::new()
                },
            })
            .collect();
        Some((g.state, g.generation, members))
    }

    /// When `group` became empty in this process (`i64::MIN` if it never had members here),
    /// or `None` while it has members (after expiring dead ones).
    pub(crate) fn idle_since(&self, group: &str, now: i64) -> Option<i64> {
        let mut groups = self.groups.lock();
        let Some(g) = groups.get_mut(group) else {
            return Some(i64::MIN);
        };
        g.expire(now, self.initial_delay_ms);
        let idle = g.members.is_empty().then_some(g.empty_since_ms);
        self.collect(&mut groups, now);
        idle
    }

    /// Queues the metadata of groups whose state changed, for `take_changes`.
    fn collect(&self, groups: &mut HashMap<String, Group>, now: i64) {
        let mut changes = self.changes.lock();
        for (name, g) in groups.iter_mut() {
            if std::mem::take(&mut g.dirty) {
                changes.push((name.clone(), g.meta(now)));
            }
        }
    }

    /// Group metadata changed since the last call, to be written by the caller.
    pub(crate) fn take_changes(&self) -> Vec<(String, GroupMeta)> {
        std::mem::take(&mut self.changes.lock())
    }

    /// Brings back a group known from `__consumer_offsets` after a restart: empty (its
    /// members were in this process), with its generation.
    pub(crate) fn restore(&self, group: &str, meta: &GroupMeta) {
        let mut g = Group::new();
        g.generation = meta.generation;
        g.empty_since_ms = meta.state_timestamp;
        self.groups.lock().insert(group.to_owned(), g);
    }

    /// Forgets an empty group (deleted).
    pub(crate) fn forget(&self, group: &str) {
        let mut groups = self.groups.lock();
        if groups.get(group).is_some_and(|g| g.members.is_empty()) {
            groups.remove(group);
        }
    }

    /// Groups that have members, sorted.
    pub(crate) fn active_groups(&self) -> Vec<String> {
        let groups = self.groups.lock();
        let mut names: Vec<String> = groups
            .iter()
            .filter(|(_, g)| !g.members.is_empty())
            .map(|(name, _)| name.clone())
            .collect();
        names.sort();
        names
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::group::assignor::RangeAssignor;

    fn request(member_id: Option<&str>) -> JoinRequest {
        JoinRequest {
            member_id: member_id.map(str::to_owned),
            instance_id: None,
            owned: Vec::new(),
            topics: vec!["t".into()],
            assignors: vec![Arc::new(RangeAssignor)],
            session_timeout_ms: 10_000,
            rebalance_timeout_ms: 60_000,
        }
    }

    fn four(topic: &str) -> Option<u32> {
        (topic == "t").then_some(4)
    }

    fn joined(outcome: JoinOutcome) -> (String, i32, Vec<TopicPartition>) {
        match outcome {
            JoinOutcome::Joined {
                member_id,
                generation,
                assignment,
                ..
            } => (member_id, generation, assignment),
            JoinOutcome::Pending { member_id } => panic!("{member_id} still pending"),
        }
    }

    fn pending(outcome: JoinOutcome) -> String {
        match outcome {
            JoinOutcome::Pending { member_id } => member_id,
            joined @ JoinOutcome::Joined { .. } => panic!("joined early: {joined:?}"),
        }
    }

    /// `GroupCoordinatorTest.testGenerationIdIncrementsOnRebalance`: join → generation 1;
    /// a rejoin round → generation 2.
    #[test]
    fn generation_increments_on_rebalance() {
        let c = Coordinator::new(0);
        let (a, generation, assignment) = joined(c.join("g", request(None), 0, &four).unwrap());
        assert_eq!(generation, 1);
        assert_eq!(assignment.len(), 4);
        c.heartbeat("g", &a, 1, 1, &four).unwrap();
        // A second member starts a round; the first learns it from its heartbeat.
        let b = pending(c.join("g", request(None), 2, &four).unwrap());
        assert!(matches!(
            c.heartbeat("g", &a, 1, 3, &four),
            Err(Error::RebalanceInProgress)
        ));
        let (_, generation, a_parts) = joined(c.join("g", request(Some(&a)), 4, &four).unwrap());
        assert_eq!(generation, 2);
        let (_, generation, b_parts) = joined(c.join("g", request(Some(&b)), 5, &four).unwrap());
        assert_eq!(generation, 2);
        assert_eq!(a_parts.len() + b_parts.len(), 4);
        assert!(a_parts.iter().all(|p| !b_parts.contains(p)));
    }

    /// `GroupCoordinatorTest.testSessionTimeout`: no heartbeat for the session timeout →
    /// the next heartbeat is `UnknownMemberId`.
    #[test]
    fn session_timeout_removes_the_member() {
        let c = Coordinator::new(0);
        let (a, generation, _) = joined(c.join("g", request(None), 0, &four).unwrap());
        c.heartbeat("g", &a, generation, 10_000, &four).unwrap();
        assert!(matches!(
            c.heartbeat("g", &a, generation, 20_001, &four),
            Err(Error::UnknownMemberId)
        ));
        let (state, _, members) = c.describe("g").unwrap();
        assert_eq!(state, GroupState::Empty);
        assert!(members.is_empty(), "the group is empty");
    }

    /// `ConsumerCoordinatorTest.testCommitOffsetIllegalGeneration` and the commit rules: a
    /// stale generation, an unknown member, and a client outside a group with members are
    /// all refused.
    #[test]
    fn commits_are_fenced_by_member_and_generation() {
        let c = Coordinator::new(0);
        let (a, generation, _) = joined(c.join("g", request(None), 0, &four).unwrap());
        c.check_commit("g", Some((&a, generation)), 1).unwrap();
        assert!(matches!(
            c.check_commit("g", Some((&a, generation - 1)), 1),
            Err(Error::IllegalGeneration { .. })
        ));
        assert!(matches!(
            c.check_commit("g", Some(("stranger", generation)), 1),
            Err(Error::UnknownMemberId)
        ));
        assert!(matches!(
            c.check_commit("g", None, 1),
            Err(Error::UnknownMemberId)
        ));
        // During a round the current generation may still commit (Kafka allows commits in
        // PreparingRebalance, so revocation callbacks can commit).
        pending(c.join("g", request(None), 2, &four).unwrap());
        c.check_commit("g", Some((&a, generation)), 3).unwrap();
        c.leave("g", &a, 4);
        // Unknown groups, and groups without members, take simple commits.
        c.check_commit("other", None, 5).unwrap();
    }

    #[test]
    fn a_round_completes_without_members_that_miss_the_deadline() {
        let c = Coordinator::new(0);
        let long = |id: Option<&str>| JoinRequest {
            session_timeout_ms: 100_000,
            ..request(id)
        };
        let (a, _, _) = joined(c.join("g", long(None), 0, &four).unwrap());
        let b = pending(c.join("g", long(None), 1, &four).unwrap());
        // `a` never rejoins; the rebalance timeout (60 s) ends the round without it.
        assert_eq!(
            pending(c.join("g", long(Some(&b)), 30_000, &four).unwrap()),
            b
        );
        let (_, generation, parts) = joined(c.join("g", long(Some(&b)), 60_001, &four).unwrap());
        assert_eq!((generation, parts.len()), (2, 4));
        assert!(matches!(
            c.heartbeat("g", &a, 1, 60_002, &four),
            Err(Error::UnknownMemberId)
        ));
    }

    #[test]
    fn the_initial_delay_holds_the_first_round() {
        let c = Coordinator::new(3_000);
        let a = pending(c.join("g", request(None), 0, &four).unwrap());
        let b = pending(c.join("g", request(None), 1_000, &four).unwrap());
        pending(c.join("g", request(Some(&a)), 2_000, &four).unwrap());
        let (_, generation, a_parts) =
            joined(c.join("g", request(Some(&a)), 3_000, &four).unwrap());
        let (_, _, b_parts) = joined(c.join("g", request(Some(&b)), 3_001, &four).unwrap());
        assert_eq!(generation, 1, "both started in one generation");
        assert_eq!((a_parts.len(), b_parts.len()), (2, 2));
    }

    /// `GroupCoordinatorTest.staticMemberRejoinAsFollowerWithUnknownMemberId`: a static
    /// follower rejoining with an unknown member id in a stable group gets a new member id,
    /// the same generation and its previous assignment; the group stays stable and the old
    /// member id is fenced.
    #[test]
    fn a_static_member_rejoins_without_a_rebalance() {
        let c = Coordinator::new(0);
        let static_request = |id: Option<&str>| JoinRequest {
            instance_id: Some("instance-a".into()),
            ..request(id)
        };
        let (leader, _, _) = joined(c.join("g", request(None), 0, &four).unwrap());
        let follower = pending(c.join("g", static_request(None), 1, &four).unwrap());
        let (_, generation, _) = joined(c.join("g", request(Some(&leader)), 2, &four).unwrap());
        let (_, _, before) = joined(
            c.join("g", static_request(Some(&follower)), 3, &four)
                .unwrap(),
        );
        // The follower restarts: no member id, same instance id.
        let (new_id, again, after) = joined(c.join("g", static_request(None), 4, &four).unwrap());
        assert_ne!(new_id, follower);
        assert_eq!((again, &after), (generation, &before));
        assert_eq!(c.describe("g").unwrap().0, GroupState::Stable);
        c.heartbeat("g", &leader, generation, 5, &four).unwrap();
        assert!(matches!(
            c.heartbeat("g", &follower, generation, 5, &four),
            Err(Error::UnknownMemberId)
        ));
    }
}
