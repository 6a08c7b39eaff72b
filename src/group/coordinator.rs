//! The in-process group coordinator: Kafka's classic group protocol for consumers that
//! `subscribe` (eager rebalancing), kept inside `Log`.
//!
//! A group moves `Empty` → `PreparingRebalance` (members (re)join) → `Stable` (generation
//! bumped, assignment computed by the leader's assignor) → `PreparingRebalance` again when a member
//! joins, leaves, changes its subscription or its session ends (see liveness below). In one process the
//! join and sync rounds collapse into one call: a member's `join` reports `Pending` until
//! every member has rejoined (or the rebalance timeout removed the ones that did not), and the
//! call that completes the round computes every member's assignment at once.
//!
//! Liveness follows Kafka's consumer (KIP-62): its background heartbeat thread keeps the
//! session alive while the consumer is open, until `max_poll_interval_ms` (the rebalance
//! timeout) passes without a `poll`; then a dynamic member leaves the group and a static
//! one stops heartbeating, its session ending `session_timeout_ms` later, as it does after
//! a static member's consumer closes. In one process there is no thread: a member joined
//! by a consumer says so ([`JoinRequest::background_heartbeat`]) and the coordinator works
//! out when those heartbeats stop from its last poll. A member without it (the coordinator's
//! own tests, Kafka's broker tests) lives by its heartbeats alone. Time comes from the
//! log's clock, so tests run on a `ManualClock`.
//!
//! Invariants: within a generation each partition has at most one owner (the assignors
//! guarantee it and the assignment only changes when the generation does); a member that is
//! not in the group, or is in another generation, gets `UnknownMemberId` /
//! `IllegalGeneration` and its commits are refused.

use std::collections::{BTreeMap, BTreeSet, HashMap};
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

/// What the coordinator knows of a subscribed topic: its partition count and which
/// incarnation of the name it is (a topic deleted and created again is another one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TopicShape {
    pub partitions: u32,
    pub incarnation: u64,
}

/// Looks a topic up by name (`None`: it does not exist).
pub(crate) type TopicLookup<'a> = &'a dyn Fn(&str) -> Option<TopicShape>;

/// Who is committing, for [`Coordinator::fence`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct MemberRef<'a> {
    pub member_id: &'a str,
    pub generation: i32,
    /// The member's `group_instance_id`, if static: a member id the group does not know
    /// under an instance id another member holds is fenced, not merely unknown.
    pub instance_id: Option<&'a str>,
}

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
    /// Also the longest gap between polls of a member with a background heartbeat.
    pub rebalance_timeout_ms: u64,
    /// The member's client heartbeats on its own while it is open (Kafka's consumer thread,
    /// KIP-62) until `rebalance_timeout_ms` passes without a join or heartbeat from its
    /// `poll`, or it [`stops heartbeating`](Coordinator::stop_heartbeats).
    pub background_heartbeat: bool,
    /// Partitions the member still holds (cooperative rebalancing; empty when eager).
    pub owned: Vec<TopicPartition>,
    /// The generation in which it got `owned` (`None` when it holds nothing).
    pub generation: Option<i32>,
    /// The member asks for a rebalance of a stable group even if nothing it says changed
    /// (Kafka's `enforceRebalance`, KIP-568); ignored while one is already in progress.
    pub force_rebalance: bool,
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

/// Whether a member rebalances cooperatively: as Kafka's client decides, only when every
/// assignor it offers supports it.
pub(crate) fn cooperative(assignors: &[Arc<dyn Assignor>]) -> bool {
    !assignors.is_empty()
        && assignors
            .iter()
            .all(|a| a.protocol() == RebalanceProtocol::Cooperative)
}

/// The generation after `generation`, wrapping past `i32::MAX` to 1 (a generation read
/// from disk may be anything).
fn next_generation(generation: i32) -> i32 {
    generation.checked_add(1).filter(|g| *g > 0).unwrap_or(1)
}

#[derive(Debug)]
struct Member {
    instance_id: Option<String>,
    topics: Vec<String>,
    assignors: Vec<Arc<dyn Assignor>>,
    /// Every assignor it offers is cooperative: it keeps its partitions across rounds.
    cooperative: bool,
    session_timeout_ms: i64,
    rebalance_timeout_ms: i64,
    last_heartbeat_ms: i64,
    /// The last join or heartbeat (with a background heartbeat, those come from `poll`).
    last_poll_ms: i64,
    /// Who keeps its session alive.
    heartbeats: Heartbeats,
    /// Joined the current round.
    joined: bool,
    /// Its assignment in the last generation.
    owned: Vec<TopicPartition>,
    /// What it said it still holds when it last joined (sorted), and since which generation.
    claimed: Vec<TopicPartition>,
    claimed_generation: Option<i32>,
    /// The generation of the last round completed with it.
    round: Option<i32>,
}

/// Who keeps a member's session alive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Heartbeats {
    /// Its own calls (Kafka's broker view of any client).
    Calls,
    /// Its client's background thread, until its poll timer runs out (KIP-62).
    Background,
    /// Nobody any more: its client closed, or its poll timer ran out (a static member);
    /// its session ends a session timeout after its last heartbeat, and a call under its
    /// member id is refused (the client dropped that id).
    Stopped,
}

impl Heartbeats {
    /// As a join's [`background_heartbeat`](JoinRequest::background_heartbeat) says.
    fn of(background: bool) -> Heartbeats {
        if background {
            Heartbeats::Background
        } else {
            Heartbeats::Calls
        }
    }
}

impl Member {
    /// When its client's background heartbeats stop: its poll timer running out.
    fn poll_timeout_ms(&self) -> i64 {
        self.last_poll_ms.saturating_add(self.rebalance_timeout_ms)
    }

    /// The last moment it is a member. With a background heartbeat (KIP-62), a dynamic
    /// member leaves when its poll timer runs out (Kafka's heartbeat thread sends
    /// `LeaveGroup` then); a static one stops heartbeating and its session ends a session
    /// timeout later. Otherwise, a session timeout after its last heartbeat.
    fn session_end_ms(&self) -> i64 {
        let last = match self.heartbeats {
            Heartbeats::Background if self.instance_id.is_none() => return self.poll_timeout_ms(),
            Heartbeats::Background => self.poll_timeout_ms().max(self.last_heartbeat_ms),
            Heartbeats::Calls | Heartbeats::Stopped => self.last_heartbeat_ms,
        };
        last.saturating_add(self.session_timeout_ms)
    }

    /// Its client no longer speaks for it at `now`: it stopped heartbeating, or its poll
    /// timer ran out (which stops it: only a static member outlives that, a dynamic one
    /// has left). Kafka's client resets its generation and member id then; its calls
    /// under the old id are refused (`UnknownMemberId`), and it rejoins.
    fn dropped_by_client(&mut self, now: i64) -> bool {
        if self.heartbeats == Heartbeats::Background && now > self.poll_timeout_ms() {
            self.stop_heartbeats(now);
        }
        self.heartbeats == Heartbeats::Stopped
    }

    /// Its client heartbeats no more from `now` (or from when its poll timer ran out, if
    /// earlier): its session ends a session timeout after that.
    fn stop_heartbeats(&mut self, now: i64) {
        if self.heartbeats == Heartbeats::Background {
            self.last_heartbeat_ms = self.last_heartbeat_ms.max(now.min(self.poll_timeout_ms()));
            self.heartbeats = Heartbeats::Stopped;
        }
    }
}

#[derive(Debug)]
struct Group {
    state: GroupState,
    generation: i32,
    protocol: Option<&'static str>,
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
    /// Kafka's `InitialDelayedJoin`: a member new to a group of generation 0 joined during
    /// the initial delay, which then runs once more (by the delay, or what is left of the
    /// rebalance timeout, `initial_remaining_ms`) when it ends.
    new_member_added: bool,
    initial_delay_ms: i64,
    initial_remaining_ms: i64,
    /// Commits and admin changes checked against the current generation and not yet in the
    /// log: no round completes while there are any, so a fenced write can never land after
    /// a later generation began.
    in_flight: u32,
    /// Deleted while a fence held it: removed when the last fence ends (if still empty).
    deleted: bool,
    /// Each subscribed topic as it was when the last round completed (`None`: it did not
    /// exist); a change (created, deleted, grown, deleted and created again) starts a round,
    /// as Kafka's leader does when the metadata of a subscribed topic changes.
    topics: BTreeMap<String, Option<TopicShape>>,
}

impl Group {
    fn new() -> Group {
        Group {
            state: GroupState::Empty,
            generation: 0,
            protocol: None,
            leader: None,
            members: BTreeMap::new(),
            rebalance_deadline_ms: 0,
            initial_delay_until_ms: 0,
            new_member_added: false,
            initial_delay_ms: 0,
            initial_remaining_ms: 0,
            empty_since_ms: 0,
            dirty: false,
            in_flight: 0,
            deleted: false,
            topics: BTreeMap::new(),
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

    /// `FencedInstanceId` when `member_id` is not a member but another member holds its
    /// static `instance_id`: it was replaced (KIP-345).
    fn check_fenced(&self, member_id: &str, instance_id: Option<&str>) -> Result<()> {
        let Some(instance) = instance_id else {
            return Ok(());
        };
        let taken = !self.members.contains_key(member_id)
            && self
                .members
                .values()
                .any(|m| m.instance_id.as_deref() == Some(instance));
        if taken {
            return Err(Error::FencedInstanceId {
                instance: instance.to_owned(),
            });
        }
        Ok(())
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
            self.initial_delay_ms = initial_delay_ms;
            self.initial_remaining_ms = timeout.saturating_sub(initial_delay_ms).max(0);
            self.new_member_added = false;
        }
    }

    /// Removes members whose session expired; a removal starts a round.
    fn expire(&mut self, now: i64, initial_delay_ms: i64) {
        let before = self.members.len();
        self.members.retain(|_, m| now <= m.session_end_ms());
        if self.members.len() != before {
            self.after_removal(now, initial_delay_ms);
        }
    }

    fn after_removal(&mut self, now: i64, initial_delay_ms: i64) {
        if self.members.is_empty() {
            self.become_empty(now);
        } else if self.state == GroupState::Stable {
            self.prepare_rebalance(now, initial_delay_ms);
        }
    }

    fn become_empty(&mut self, now: i64) {
        self.state = GroupState::Empty;
        self.leader = None;
        self.generation = next_generation(self.generation);
        self.empty_since_ms = now;
        self.dirty = true;
    }

    /// A stable group whose subscribed topics changed partition count (created, deleted,
    /// grown) since its round starts a new one.
    fn check_topics(&mut self, now: i64, initial_delay_ms: i64, lookup: TopicLookup<'_>) {
        if self.state == GroupState::Stable
            && self
                .topics
                .iter()
                .any(|(topic, shape)| lookup(topic) != *shape)
        {
            self.prepare_rebalance(now, initial_delay_ms);
        }
    }

    /// Completes the round when every member joined (after the initial delay), or when its
    /// deadline passed (dropping the members that did not join) — but never while a commit
    /// checked against the current generation is in flight.
    fn maybe_complete(&mut self, now: i64, lookup: TopicLookup<'_>) -> bool {
        if self.state != GroupState::PreparingRebalance || self.in_flight > 0 {
            return false;
        }
        let all_joined = self.members.values().all(|m| m.joined);
        let timed_out = now >= self.rebalance_deadline_ms;
        // The initial delay runs again (from where it ended) while new members came during
        // it and the rebalance timeout leaves room (Kafka's `InitialDelayedJoin`).
        while !timed_out
            && now >= self.initial_delay_until_ms
            && self.new_member_added
            && self.initial_remaining_ms > 0
        {
            let delay = self.initial_delay_ms.min(self.initial_remaining_ms);
            self.initial_remaining_ms -= delay;
            self.initial_delay_until_ms = self.initial_delay_until_ms.saturating_add(delay);
            self.new_member_added = false;
        }
        if !(timed_out || all_joined && now >= self.initial_delay_until_ms) {
            return false;
        }
        self.members.retain(|_, m| m.joined);
        if self.members.is_empty() {
            self.become_empty(now);
            return true;
        }
        let previous = self.generation;
        self.generation = next_generation(self.generation);
        self.dirty = true;
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
        let cooperative_assignor = assignor.protocol() == RebalanceProtocol::Cooperative;
        self.topics = self
            .members
            .values()
            .flat_map(|m| m.topics.iter())
            .map(|topic| (topic.clone(), lookup(topic)))
            .collect();
        let counts: BTreeMap<String, u32> = self
            .topics
            .iter()
            .filter_map(|(topic, shape)| Some((topic.clone(), shape.as_ref()?.partitions)))
            .collect();
        let subscriptions: BTreeMap<String, Subscription> = self
            .members
            .iter()
            .map(|(id, m)| {
                let mut subscription = Subscription::new(m.topics.iter().cloned());
                if m.cooperative {
                    // It still holds these; a cooperative assignor withholds the ones that move.
                    if let Some(generation) = m.claimed_generation {
                        subscription = subscription.owning(m.claimed.iter().cloned(), generation);
                    }
                } else if !cooperative_assignor {
                    // It gave everything up; sticky assignors use its last assignment.
                    subscription = subscription.owning(m.owned.iter().cloned(), previous);
                }
                if let Some(instance) = &m.instance_id {
                    subscription = subscription.with_group_instance_id(instance.clone());
                }
                (id.clone(), subscription)
            })
            .collect();
        let mut assignment = assignor.assign(&counts, &subscriptions);
        for (id, member) in &mut self.members {
            member.owned = assignment.remove(id).unwrap_or_default();
            member.round = Some(self.generation);
        }
        self.leader = Some(leader);
        self.state = GroupState::Stable;
        true
    }

    /// Kafka's `selectProtocol`: of the assignors every member supports, each member votes
    /// for its own most preferred, and the one with the most votes is used; a tie goes to
    /// the leader's preference (Kafka leaves it to a hash map's order). `join` admits no
    /// member without one in common.
    fn choose_assignor(&self, leader: &str) -> Arc<dyn Assignor> {
        let everyone = |a: &Arc<dyn Assignor>| {
            self.members
                .values()
                .all(|m| m.assignors.iter().any(|b| b.name() == a.name()))
        };
        let mut votes: BTreeMap<&'static str, usize> = BTreeMap::new();
        for member in self.members.values() {
            if let Some(choice) = member.assignors.iter().find(|a| everyone(a)) {
                *votes.entry(choice.name()).or_default() += 1;
            }
        }
        let most = votes.values().copied().max().unwrap_or(0);
        let leader = &self.members[leader];
        leader
            .assignors
            .iter()
            .find(|a| most > 0 && votes.get(a.name()) == Some(&most))
            .or_else(|| leader.assignors.first())
            .cloned()
            .unwrap_or_else(|| Arc::new(crate::group::assignor::RangeAssignor))
    }

    /// A static member came back under a new member id: it takes the old member's place and
    /// inherits what it held (so nothing moves); the old id is fenced from then on.
    fn replace_static(&mut self, old: &str, id: &str, now: i64) {
        if let Some(mut member) = self.members.remove(old) {
            member.last_heartbeat_ms = now;
            member.last_poll_ms = now;
            member.claimed.clone_from(&member.owned);
            member.claimed_generation = Some(self.generation);
            self.members.insert(id.to_owned(), member);
        }
        if self.leader.as_deref() == Some(old) {
            self.leader = Some(id.to_owned());
        }
        self.dirty = true;
    }

    /// Records a join's subscription for `member_id`, adding the member if new; whether it
    /// changed anything a round must settle.
    fn upsert_member(
        &mut self,
        member_id: &str,
        request: JoinRequest,
        replaced: bool,
        now: i64,
    ) -> bool {
        let to_ms = |ms: u64| ms.min(i64::MAX as u64) as i64;
        let cooperative = cooperative(&request.assignors);
        let mut claimed = request.owned;
        claimed.sort();
        if let Some(member) = self.members.get_mut(member_id) {
            // A cooperative member that gave partitions up rejoins holding less: that asks
            // for the round that hands them to their new owners. A static replacement
            // holds nothing yet and inherits the old member's partitions instead.
            let mut changed = member.topics != request.topics;
            if !replaced {
                changed |= member.claimed != claimed;
                member.claimed = claimed;
                // A member that took part in a later round than the one it claims at never
                // learned of it (another round began before it asked again): it has held
                // what it claims since that round, as Kafka's JoinGroup response would have
                // told it. Taken for stale, its claims would let the assignor give its
                // partitions to another member while it still holds them.
                member.claimed_generation = request.generation.map(|g| member.round.unwrap_or(g));
            }
            member.topics = request.topics;
            member.assignors = request.assignors;
            member.cooperative = cooperative;
            member.session_timeout_ms = to_ms(request.session_timeout_ms);
            member.rebalance_timeout_ms = to_ms(request.rebalance_timeout_ms);
            member.heartbeats = Heartbeats::of(request.background_heartbeat);
            member.last_heartbeat_ms = now;
            member.last_poll_ms = now;
            return changed;
        }
        // Kafka's `addMemberAndRebalance`: a new member of a group still in its first
        // round extends the initial delay.
        if self.state == GroupState::PreparingRebalance && self.generation == 0 {
            self.new_member_added = true;
        }
        self.members.insert(
            member_id.to_owned(),
            Member {
                instance_id: request.instance_id,
                topics: request.topics,
                assignors: request.assignors,
                cooperative,
                session_timeout_ms: to_ms(request.session_timeout_ms),
                rebalance_timeout_ms: to_ms(request.rebalance_timeout_ms),
                last_heartbeat_ms: now,
                last_poll_ms: now,
                heartbeats: Heartbeats::of(request.background_heartbeat),
                joined: false,
                owned: Vec::new(),
                claimed,
                claimed_generation: request.generation,
                round: None,
            },
        );
        true
    }

    /// `InconsistentGroupProtocol` unless `assignors` share a name with every other member.
    fn check_protocol(
        &self,
        member_id: Option<&str>,
        assignors: &[Arc<dyn Assignor>],
    ) -> Result<()> {
        let common = assignors.iter().any(|a| {
            self.members
                .iter()
                .filter(|(id, _)| Some(id.as_str()) != member_id)
                .all(|(_, m)| m.assignors.iter().any(|b| b.name() == a.name()))
        });
        if common {
            return Ok(());
        }
        Err(Error::InconsistentGroupProtocol {
            offered: assignors.iter().map(|a| a.name().to_owned()).collect(),
        })
    }

    fn outcome(&self, member_id: &str) -> JoinOutcome {
        match (self.state, self.members.get(member_id)) {
            (GroupState::Stable, Some(member)) if member.joined => JoinOutcome::Joined {
                member_id: member_id.to_owned(),
                generation: self.generation,
                assignment: member.owned.clone(),
                protocol: if member.cooperative {
                    RebalanceProtocol::Cooperative
                } else {
                    RebalanceProtocol::Eager
                },
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

/// A commit or admin change checked against a group (see [`Coordinator::fence`]): while it
/// lives no round of the group completes. Dropping it ends the hold.
#[derive(Debug)]
pub(crate) struct Fence<'a> {
    coordinator: &'a Coordinator,
    group: String,
    /// The group entry was made for this fence (a group the coordinator did not know).
    created: bool,
    /// Remove the group on drop if it still has no members (it was deleted).
    forget: bool,
    /// When the group became empty (`i64::MIN` if it never had members here); only for
    /// fences taken from outside the group.
    pub empty_since_ms: i64,
    /// The time the fence was taken at.
    now: i64,
}

impl Fence<'_> {
    /// The group was deleted: its queued metadata is dropped now (the caller holds the
    /// offsets store's commit lock, which metadata writes take), and the group is forgotten
    /// once no fence holds it, unless a member joined meanwhile.
    pub(crate) fn forget(&mut self) {
        self.forget = true;
        self.coordinator
            .changes
            .lock()
            .retain(|(name, _)| *name != self.group);
    }
}

impl Drop for Fence<'_> {
    fn drop(&mut self) {
        let c = self.coordinator;
        let mut groups = c.groups.lock();
        let Some(g) = groups.get_mut(&self.group) else {
            return;
        };
        g.in_flight = g.in_flight.saturating_sub(1);
        g.deleted |= self.forget;
        let unused = self.created && g.generation == 0;
        if g.in_flight == 0 && g.members.is_empty() && (g.deleted || unused) {
            groups.remove(&self.group);
        } else if !g.members.is_empty() {
            // A member joined while the group was being deleted: it lives on, and a later
            // fence from outside must not remove it once its members leave. Its metadata
            // (dropped with the deleted group's by `forget`) is queued again, to be written
            // after the deletion's tombstone.
            if self.forget {
                g.dirty = true;
                c.collect(&self.group, g, self.now);
            }
            g.deleted = false;
        }
        c.changed.notify_all();
    }
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

    fn new_member_id(&self, group: &str) -> String {
        let n = self.next_member.fetch_add(1, Ordering::Relaxed);
        format!("{group}-member-{n}")
    }

    /// Joins (or rejoins) `group`. `lookup` finds a subscribed topic.
    ///
    /// The leader's assignor runs here, under the coordinator's lock: an assignor must not
    /// call back into the log's groups.
    pub(crate) fn join(
        &self,
        group: &str,
        request: JoinRequest,
        now: i64,
        lookup: TopicLookup<'_>,
    ) -> Result<JoinOutcome> {
        let mut groups = self.groups.lock();
        let result = self.join_locked(&mut groups, group, request, now, lookup);
        // A group made for a join that failed is not kept.
        if groups
            .get(group)
            .is_some_and(|g| g.members.is_empty() && g.generation == 0 && g.in_flight == 0)
        {
            groups.remove(group);
        }
        result
    }

    fn join_locked(
        &self,
        groups: &mut HashMap<String, Group>,
        group: &str,
        request: JoinRequest,
        now: i64,
        lookup: TopicLookup<'_>,
    ) -> Result<JoinOutcome> {
        if request.member_id.is_some() && !groups.contains_key(group) {
            return Err(Error::UnknownMemberId);
        }
        let g = groups.entry(group.to_owned()).or_insert_with(Group::new);
        g.expire(now, self.initial_delay_ms);
        if let Some(id) = &request.member_id {
            g.check_fenced(id, request.instance_id.as_deref())?;
        }
        if let Some(id) = &request.member_id
            && g.members
                .get_mut(id)
                .is_some_and(|member| member.dropped_by_client(now))
        {
            // A static member past its poll timer rejoining under its old id: Kafka's client
            // dropped that id (and heard its partitions lost); it rejoins without one.
            return Err(Error::UnknownMemberId);
        }
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
        let existing = if known {
            request.member_id.as_deref()
        } else {
            static_id.as_deref()
        };
        g.check_protocol(existing, &request.assignors)?;
        let mut replaced = false;
        let member_id = match (request.member_id.clone(), static_id) {
            (Some(id), _) if known => id,
            // A member id the group does not know, under an instance id another member
            // holds: that member replaced this one (KIP-345).
            (Some(_), Some(_)) => {
                return Err(Error::FencedInstanceId {
                    instance: request.instance_id.unwrap_or_default(),
                });
            }
            // A static member back under its instance id takes its old place: a new member
            // id (the old one is fenced), the same generation and assignment.
            (None, Some(old)) => {
                let id = self.new_member_id(group);
                g.replace_static(&old, &id, now);
                replaced = true;
                id
            }
            (Some(_), None) => return Err(Error::UnknownMemberId),
            (None, None) => self.new_member_id(group),
        };
        let forced = request.force_rebalance;
        let changed = g.upsert_member(&member_id, request, replaced, now) || forced;
        g.check_topics(now, self.initial_delay_ms, lookup);
        if changed && g.state != GroupState::PreparingRebalance {
            g.prepare_rebalance(now, self.initial_delay_ms);
        } else if !changed && g.state == GroupState::Stable {
            // A member rejoining a stable group unchanged (e.g. after a revocation it
            // thought was needed, or a static member back) gets the current assignment.
            if let Some(member) = g.members.get_mut(&member_id) {
                member.joined = true;
            }
            let outcome = g.outcome(&member_id);
            self.collect(group, g, now);
            return Ok(outcome);
        }
        if let Some(member) = g.members.get_mut(&member_id) {
            member.joined = true;
        }
        if g.maybe_complete(now, lookup) {
            self.changed.notify_all();
        }
        let outcome = g.outcome(&member_id);
        self.collect(group, g, now);
        Ok(outcome)
    }

    /// Records that a member is alive. `RebalanceInProgress` means it must rejoin;
    /// `UnknownMemberId` that it was removed; `FencedInstanceId` that a static member
    /// replaced it; `IllegalGeneration` that it is behind.
    pub(crate) fn heartbeat(
        &self,
        group: &str,
        member: MemberRef<'_>,
        now: i64,
        lookup: TopicLookup<'_>,
    ) -> Result<()> {
        let MemberRef {
            member_id,
            generation,
            instance_id,
        } = member;
        let mut groups = self.groups.lock();
        let Some(g) = groups.get_mut(group) else {
            return Err(Error::UnknownMemberId);
        };
        g.expire(now, self.initial_delay_ms);
        g.check_fenced(member_id, instance_id)?;
        g.check_topics(now, self.initial_delay_ms, lookup);
        if g.maybe_complete(now, lookup) {
            self.changed.notify_all();
        }
        let Some(member) = g.members.get_mut(member_id) else {
            self.collect(group, g, now);
            return Err(Error::UnknownMemberId);
        };
        if member.dropped_by_client(now) {
            // A static member whose poll timer ran out: its partitions are lost to it; it
            // rejoins under its instance id, taking its own place back while its session
            // lasts.
            self.collect(group, g, now);
            return Err(Error::UnknownMemberId);
        }
        member.last_heartbeat_ms = now;
        member.last_poll_ms = now;
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
        self.collect(group, g, now);
        result
    }

    /// A static member's client closed (its consumer does not leave the group, KIP-345):
    /// its background heartbeats stop now, or stopped already when its poll timer ran out,
    /// and its session ends a session timeout later, unless a consumer under its instance
    /// id takes its place first.
    pub(crate) fn stop_heartbeats(&self, group: &str, member_id: &str, now: i64) {
        let mut groups = self.groups.lock();
        if let Some(g) = groups.get_mut(group)
            && let Some(member) = g.members.get_mut(member_id)
        {
            member.stop_heartbeats(now);
        }
    }

    /// Removes a member at once (close, or drop); the others rebalance.
    pub(crate) fn leave(&self, group: &str, member_id: &str, now: i64) {
        let mut groups = self.groups.lock();
        if let Some(g) = groups.get_mut(group)
            && g.members.remove(member_id).is_some()
        {
            g.after_removal(now, self.initial_delay_ms);
            self.changed.notify_all();
            self.collect(group, g, now);
        }
    }

    /// Checks a commit or admin change against `group`: from a member of the current
    /// generation, or from a client outside the group (`None`) only while the group has no
    /// members. The returned fence holds off the group's next round until it is dropped,
    /// so the write it guards lands before any later generation can read offsets. Callers
    /// take it under the offsets store's commit lock and write before releasing both, so
    /// fenced writes land in the order they were checked.
    pub(crate) fn fence(
        &self,
        group: &str,
        member: Option<MemberRef<'_>>,
        now: i64,
    ) -> Result<Fence<'_>> {
        let mut groups = self.groups.lock();
        let created = !groups.contains_key(group);
        if created && member.is_some() {
            return Err(Error::UnknownMemberId);
        }
        let g = groups.entry(group.to_owned()).or_insert_with(Group::new);
        g.expire(now, self.initial_delay_ms);
        let result = match member {
            None if g.members.is_empty() => Ok(()),
            None => Err(Error::UnknownMemberId),
            Some(m) => match g.check_fenced(m.member_id, m.instance_id) {
                Err(error) => Err(error),
                Ok(()) if !g.members.contains_key(m.member_id) => Err(Error::UnknownMemberId),
                // A static member whose poll timer ran out has no generation any more in
                // Kafka's client (its commits fail there): refused, so that the commit
                // does not lengthen its session either.
                Ok(())
                    if g.members
                        .get_mut(m.member_id)
                        .is_some_and(|member| member.dropped_by_client(now)) =>
                {
                    Err(Error::UnknownMemberId)
                }
                Ok(()) if m.generation != g.generation => Err(Error::IllegalGeneration {
                    generation: m.generation,
                    current: g.generation,
                }),
                Ok(()) => {
                    // A member's commit keeps its session alive, as Kafka's coordinator
                    // schedules the next heartbeat expiration at an offset commit.
                    if let Some(member) = g.members.get_mut(m.member_id) {
                        member.last_heartbeat_ms = member.last_heartbeat_ms.max(now);
                    }
                    Ok(())
                }
            },
        };
        let empty_since_ms = if created { i64::MIN } else { g.empty_since_ms };
        g.in_flight += 1;
        self.collect(group, g, now);
        drop(groups);
        // From here the fence's drop undoes the hold, on error too.
        let fence = Fence {
            coordinator: self,
            group: group.to_owned(),
            created,
            forget: false,
            empty_since_ms,
            now,
        };
        result.map(|()| fence)
    }

    /// Waits until a group changes, `deadline` passes or a short while (for clock moves).
    pub(crate) fn wait(&self, deadline: Instant) {
        let mut groups = self.groups.lock();
        let until = deadline.min(Instant::now() + CLOCK_POLL);
        self.changed.wait_until(&mut groups, until);
    }

    /// Removes the members of `group` (of every group, with `None`) whose session ended by
    /// `now`, as Kafka's session timers would have, so that views show what Kafka's would.
    pub(crate) fn expire(&self, group: Option<&str>, now: i64) {
        let mut groups = self.groups.lock();
        for (name, g) in groups
            .iter_mut()
            .filter(|(name, _)| group.is_none_or(|group| group == name.as_str()))
        {
            g.expire(now, self.initial_delay_ms);
            self.collect(name, g, now);
        }
    }

    /// A group's state, generation and members (`None` for a group this process does not
    /// know).
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
        self.collect(group, g, now);
        idle
    }

    /// Queues the group's metadata if its state changed, for `take_changes`.
    fn collect(&self, name: &str, g: &mut Group, now: i64) {
        if std::mem::take(&mut g.dirty) {
            self.changes.lock().push((name.to_owned(), g.meta(now)));
        }
    }

    /// Group metadata changed since the last call, to be written by the caller.
    pub(crate) fn take_changes(&self) -> Vec<(String, GroupMeta)> {
        std::mem::take(&mut self.changes.lock())
    }

    /// Puts back changes the caller could not write, ahead of newer ones.
    pub(crate) fn requeue(&self, mut unwritten: Vec<(String, GroupMeta)>) {
        let mut changes = self.changes.lock();
        unwritten.append(&mut changes);
        *changes = unwritten;
    }

    /// Brings back a group known from `__consumer_offsets` after a restart, at `now`: empty
    /// (its members were in the process that wrote it). A group that had members became
    /// empty now, a generation later, as in Kafka when their sessions expire.
    pub(crate) fn restore(&self, group: &str, meta: &GroupMeta, now: i64) {
        if self.groups.lock().contains_key(group) {
            // Known already (a late replay of its offsets partition finds it in use).
            return;
        }
        let mut g = Group::new();
        g.generation = meta.generation.max(0);
        g.empty_since_ms = meta.state_timestamp;
        if !meta.members.is_empty() {
            g.become_empty(now);
        }
        self.collect(group, &mut g, now);
        self.groups.lock().insert(group.to_owned(), g);
    }

    /// The topics `group`'s members subscribe to while it is Stable (Kafka's
    /// `subscribedTopics`); `None` in any other state or for a group unknown here.
    pub(crate) fn stable_subscriptions(&self, group: &str) -> Option<BTreeSet<String>> {
        let groups = self.groups.lock();
        let g = groups.get(group)?;
        (g.state == GroupState::Stable && !g.members.is_empty()).then(|| {
            g.members
                .values()
                .flat_map(|m| m.topics.iter().cloned())
                .collect()
        })
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
            generation: None,
            topics: vec!["t".into()],
            assignors: vec![Arc::new(RangeAssignor)],
            session_timeout_ms: 10_000,
            rebalance_timeout_ms: 60_000,
            background_heartbeat: false,
            force_rebalance: false,
        }
    }

    fn shape(partitions: u32) -> TopicShape {
        TopicShape {
            partitions,
            incarnation: 1,
        }
    }

    fn four(topic: &str) -> Option<TopicShape> {
        (topic == "t").then_some(shape(4))
    }

    fn me(member_id: &str, generation: i32) -> MemberRef<'_> {
        MemberRef {
            member_id,
            generation,
            instance_id: None,
        }
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
        c.heartbeat("g", me(&a, 1), 1, &four).unwrap();
        // A second member starts a round; the first learns it from its heartbeat.
        let b = pending(c.join("g", request(None), 2, &four).unwrap());
        assert!(matches!(
            c.heartbeat("g", me(&a, 1), 3, &four),
            Err(Error::RebalanceInProgress)
        ));
        let (_, generation, a_parts) = joined(c.join("g", request(Some(&a)), 4, &four).unwrap());
        assert_eq!(generation, 2);
        let (_, generation, b_parts) = joined(c.join("g", request(Some(&b)), 5, &four).unwrap());
        assert_eq!(generation, 2);
        assert_eq!(a_parts.len() + b_parts.len(), 4);
        assert!(a_parts.iter().all(|p| !b_parts.contains(p)));
    }

    /// `force_rebalance` (a consumer's `enforce_rebalance`): a stable group's member rejoining
    /// unchanged starts a round with it; without the flag it gets the current generation
    /// back; during a round the flag adds nothing.
    #[test]
    fn a_forced_rejoin_starts_a_round_only_in_a_stable_group() {
        let c = Coordinator::new(0);
        let forced = |id: &str| JoinRequest {
            force_rebalance: true,
            ..request(Some(id))
        };
        let (a, _, _) = joined(c.join("g", request(None), 0, &four).unwrap());
        let b = pending(c.join("g", request(None), 0, &four).unwrap());
        joined(c.join("g", request(Some(&a)), 1, &four).unwrap());
        let (_, generation, _) = joined(c.join("g", request(Some(&b)), 1, &four).unwrap());
        assert_eq!(generation, 2);
        // Unchanged, not forced: the current generation.
        let (_, same, _) = joined(c.join("g", request(Some(&b)), 2, &four).unwrap());
        assert_eq!(same, generation);
        assert_eq!(c.describe("g").unwrap().0, GroupState::Stable);
        // Forced: a round; a learns it from its heartbeat.
        pending(c.join("g", forced(&b), 3, &four).unwrap());
        assert!(matches!(
            c.heartbeat("g", me(&a, generation), 3, &four),
            Err(Error::RebalanceInProgress)
        ));
        // Forced again during the round: the same round, which a's join completes.
        pending(c.join("g", forced(&b), 4, &four).unwrap());
        let (_, next, _) = joined(c.join("g", forced(&a), 5, &four).unwrap());
        assert_eq!(next, generation + 1);
        let (_, next, _) = joined(c.join("g", request(Some(&b)), 6, &four).unwrap());
        assert_eq!(next, generation + 1);
        assert_eq!(c.describe("g").unwrap().0, GroupState::Stable);
    }

    /// `GroupCoordinatorTest.testSessionTimeout`: no heartbeat for the session timeout →
    /// the next heartbeat is `UnknownMemberId`.
    #[test]
    fn session_timeout_removes_the_member() {
        let c = Coordinator::new(0);
        let (a, generation, _) = joined(c.join("g", request(None), 0, &four).unwrap());
        c.heartbeat("g", me(&a, generation), 10_000, &four).unwrap();
        assert!(matches!(
            c.heartbeat("g", me(&a, generation), 20_001, &four),
            Err(Error::UnknownMemberId)
        ));
        let (state, _, members) = c.describe("g").unwrap();
        assert_eq!(state, GroupState::Empty);
        assert!(members.is_empty(), "the group is empty");
    }

    /// KIP-62: a member whose client heartbeats in the background outlives its session
    /// timeout without calls, until its poll timer (the rebalance timeout) runs out; then
    /// a dynamic member is gone at once, a static one a session timeout later, or a
    /// session timeout after `stop_heartbeats` (its consumer closed).
    #[test]
    fn background_heartbeats_last_until_the_poll_timer_runs_out() {
        let c = Coordinator::new(0);
        let live = |id: Option<&str>, instance: Option<&str>| JoinRequest {
            background_heartbeat: true,
            instance_id: instance.map(str::to_owned),
            ..request(id)
        };
        let members = |at: i64| {
            c.expire(Some("g"), at);
            let mut ids: Vec<String> = c
                .describe("g")
                .unwrap()
                .2
                .into_iter()
                .map(|m| m.member_id)
                .collect();
            ids.sort();
            ids
        };
        // Session 10 s, rebalance timeout 60 s.
        let (dynamic, _, _) = joined(c.join("g", live(None, None), 0, &four).unwrap());
        assert_eq!(
            members(59_999),
            std::slice::from_ref(&dynamic),
            "alive past its session"
        );
        assert!(
            members(60_001).is_empty(),
            "gone when its poll timer ran out"
        );
        let (fixed, _, _) = joined(c.join("g", live(None, Some("w1")), 100_000, &four).unwrap());
        assert_eq!(
            members(169_999),
            std::slice::from_ref(&fixed),
            "static: a session more"
        );
        assert!(members(170_001).is_empty());
        let (closed, _, _) = joined(c.join("g", live(None, Some("w2")), 200_000, &four).unwrap());
        c.stop_heartbeats("g", &closed, 205_000);
        assert_eq!(members(214_999), std::slice::from_ref(&closed));
        assert!(
            members(215_001).is_empty(),
            "a session after its client closed"
        );
        // A static member past its poll timer: its client dropped its member id, so a
        // commit or a heartbeat under it is refused, and neither lengthens its session.
        let (stalled, generation, _) =
            joined(c.join("g", live(None, Some("w3")), 300_000, &four).unwrap());
        assert!(matches!(
            c.fence("g", Some(me(&stalled, generation)), 365_000),
            Err(Error::UnknownMemberId)
        ));
        assert!(matches!(
            c.heartbeat("g", me(&stalled, generation), 366_000, &four),
            Err(Error::UnknownMemberId)
        ));
        assert_eq!(members(369_999), std::slice::from_ref(&stalled));
        assert!(
            members(370_001).is_empty(),
            "a session after its poll timer"
        );
        // Nor does it rejoin under that id: it rejoins without one, into its own place.
        let (rejoining, generation, _) =
            joined(c.join("g", live(None, Some("w4")), 400_000, &four).unwrap());
        assert!(matches!(
            c.join("g", live(Some(&rejoining), Some("w4")), 465_000, &four),
            Err(Error::UnknownMemberId)
        ));
        let (back, again, _) = joined(c.join("g", live(None, Some("w4")), 466_000, &four).unwrap());
        assert_ne!(back, rejoining);
        assert_eq!(again, generation, "no rebalance");
    }

    /// `ConsumerCoordinatorTest.testCommitOffsetIllegalGeneration` and the commit rules: a
    /// stale generation, an unknown member, and a client outside a group with members are
    /// all refused.
    #[test]
    fn commits_are_fenced_by_member_and_generation() {
        let c = Coordinator::new(0);
        let (a, generation, _) = joined(c.join("g", request(None), 0, &four).unwrap());
        drop(c.fence("g", Some(me(&a, generation)), 1).unwrap());
        assert!(matches!(
            c.fence("g", Some(me(&a, generation - 1)), 1),
            Err(Error::IllegalGeneration { .. })
        ));
        assert!(matches!(
            c.fence("g", Some(me("stranger", generation)), 1),
            Err(Error::UnknownMemberId)
        ));
        assert!(matches!(c.fence("g", None, 1), Err(Error::UnknownMemberId)));
        // During a round the current generation may still commit (Kafka allows commits in
        // PreparingRebalance, so revocation callbacks can commit).
        pending(c.join("g", request(None), 2, &four).unwrap());
        drop(c.fence("g", Some(me(&a, generation)), 3).unwrap());
        c.leave("g", &a, 4);
        // Unknown groups, and groups without members, take simple commits.
        drop(c.fence("other", None, 5).unwrap());
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
            c.heartbeat("g", me(&a, 1), 60_002, &four),
            Err(Error::UnknownMemberId)
        ));
    }

    #[test]
    fn the_initial_delay_holds_the_first_round() {
        let c = Coordinator::new(3_000);
        let a = pending(c.join("g", request(None), 0, &four).unwrap());
        let b = pending(c.join("g", request(None), 1_000, &four).unwrap());
        pending(c.join("g", request(Some(&a)), 2_000, &four).unwrap());
        // `b` came during the delay: it runs once more (Kafka's `InitialDelayedJoin`).
        pending(c.join("g", request(Some(&a)), 3_000, &four).unwrap());
        pending(c.join("g", request(Some(&a)), 5_999, &four).unwrap());
        let (_, generation, a_parts) =
            joined(c.join("g", request(Some(&a)), 6_000, &four).unwrap());
        let (_, _, b_parts) = joined(c.join("g", request(Some(&b)), 6_001, &four).unwrap());
        assert_eq!(generation, 1, "both started in one generation");
        assert_eq!((a_parts.len(), b_parts.len()), (2, 2));
    }

    /// `GroupCoordinatorTest.shouldDelayRebalanceUptoRebalanceTimeout`: each delay that saw
    /// a new member runs again, but never past the rebalance timeout; a lone member, or a
    /// group past its first generation, waits one delay.
    #[test]
    fn the_initial_delay_extends_up_to_the_rebalance_timeout() {
        let group = Coordinator::new(50);
        let short = |id: Option<&str>| JoinRequest {
            rebalance_timeout_ms: 100,
            ..request(id)
        };
        let first = pending(group.join("g", short(None), 0, &four).unwrap());
        let second = pending(group.join("g", short(None), 0, &four).unwrap());
        let late = pending(group.join("g", short(None), 51, &four).unwrap());
        pending(group.join("g", short(Some(&first)), 99, &four).unwrap());
        let (_, generation, _) = joined(group.join("g", short(Some(&first)), 100, &four).unwrap());
        assert_eq!(generation, 1);
        for id in [&second, &late] {
            joined(group.join("g", short(Some(id)), 101, &four).unwrap());
        }
        // Alone: one delay.
        let alone = Coordinator::new(50);
        let lone = pending(alone.join("h", request(None), 0, &four).unwrap());
        joined(alone.join("h", request(Some(&lone)), 50, &four).unwrap());
        // Empty again, a later generation: new members do not extend it.
        alone.leave("h", &lone, 60);
        let again = pending(alone.join("h", request(None), 100, &four).unwrap());
        pending(alone.join("h", request(None), 120, &four).unwrap());
        joined(alone.join("h", request(Some(&again)), 150, &four).unwrap());
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
        c.heartbeat("g", me(&leader, generation), 5, &four).unwrap();
        let stale = MemberRef {
            instance_id: Some("instance-a"),
            ..me(&follower, generation)
        };
        assert!(matches!(
            c.heartbeat("g", stale, 5, &four),
            Err(Error::FencedInstanceId { instance }) if instance == "instance-a"
        ));
        // A stale id without the instance id is merely unknown.
        assert!(matches!(
            c.heartbeat("g", me(&follower, generation), 5, &four),
            Err(Error::UnknownMemberId)
        ));
        // The replaced member can neither rejoin under its old id nor commit.
        assert!(matches!(
            c.join("g", static_request(Some(&follower)), 6, &four),
            Err(Error::FencedInstanceId { .. })
        ));
        assert!(matches!(
            c.fence("g", Some(stale), 6),
            Err(Error::FencedInstanceId { .. })
        ));
        // The replacement's metadata (its new member id) is queued for the offsets topic.
        let changes = c.take_changes();
        let (_, meta) = changes.last().unwrap();
        assert!(meta.members.iter().any(|m| m.member_id == new_id));
    }

    fn cooperative_request(member_id: Option<&str>, owned: &[TopicPartition]) -> JoinRequest {
        JoinRequest {
            assignors: vec![Arc::new(crate::group::assignor::CooperativeStickyAssignor)],
            owned: owned.to_vec(),
            generation: (!owned.is_empty()).then_some(1),
            ..request(member_id)
        }
    }

    /// A cooperative member that missed a round's outcome (another round began before it
    /// asked again) rejoins claiming its partitions at an older generation. It still holds
    /// them: no round may give one to another member before it gave it up (Kafka's
    /// cooperative-sticky withholds a partition moving away from any member claiming it,
    /// whatever the claim's generation).
    #[test]
    fn a_partition_held_under_an_older_generation_is_not_given_to_another_member() {
        let c = Coordinator::new(0);
        let tp = |p| TopicPartition::new("t", p);
        let coop = |id: &str, owned: &[TopicPartition], generation: i32| JoinRequest {
            generation: Some(generation),
            ..cooperative_request(Some(id), owned)
        };
        let (b, _, all) = joined(
            c.join("g", cooperative_request(None, &[]), 0, &four)
                .unwrap(),
        );
        assert_eq!(all.len(), 4);
        let cm = pending(
            c.join("g", cooperative_request(None, &[]), 1, &four)
                .unwrap(),
        );
        let (_, generation, kept) = joined(c.join("g", coop(&b, &all, 1), 2, &four).unwrap());
        assert_eq!((generation, kept.clone()), (2, vec![tp(0), tp(1)]));
        // `b` gave 2 and 3 up; the round that hands them to `cm` completes when `cm` asks,
        // and `b` never learns of it: a new member starts the next round first.
        pending(c.join("g", coop(&b, &kept, 2), 3, &four).unwrap());
        let (_, generation, moved) = joined(c.join("g", coop(&cm, &[], 2), 4, &four).unwrap());
        assert_eq!((generation, moved.clone()), (3, vec![tp(2), tp(3)]));
        let d = pending(
            c.join("g", cooperative_request(None, &[]), 5, &four)
                .unwrap(),
        );
        pending(c.join("g", coop(&cm, &moved, 3), 6, &four).unwrap());
        let (_, generation, _) = joined(c.join("g", coop(&b, &kept, 2), 7, &four).unwrap());
        assert_eq!(generation, 4);
        let (_, _, given) = joined(c.join("g", coop(&d, &[], 4), 8, &four).unwrap());
        assert!(
            given
                .iter()
                .all(|tp| !kept.contains(tp) && !moved.contains(tp)),
            "{given:?} taken from members still holding them"
        );
    }

    /// A static cooperative member that restarts (owning nothing yet) inherits its old
    /// partitions: no round starts.
    #[test]
    fn a_static_cooperative_replacement_does_not_rebalance() {
        let c = Coordinator::new(0);
        let with_instance = |id: Option<&str>, owned: &[TopicPartition]| JoinRequest {
            instance_id: Some("i".into()),
            ..cooperative_request(id, owned)
        };
        let (a, generation, parts) =
            joined(c.join("g", with_instance(None, &[]), 0, &four).unwrap());
        assert_eq!((generation, parts.len()), (1, 4));
        let (b, again, same) = joined(c.join("g", with_instance(None, &[]), 1, &four).unwrap());
        assert_ne!(a, b);
        assert_eq!((again, same), (1, parts));
        c.heartbeat("g", me(&b, 1), 2, &four).unwrap();
    }

    #[test]
    fn a_member_without_a_common_assignor_is_refused() {
        let c = Coordinator::new(0);
        joined(c.join("g", request(None), 0, &four).unwrap());
        let error = c
            .join("g", cooperative_request(None, &[]), 1, &four)
            .unwrap_err();
        assert!(
            matches!(&error, Error::InconsistentGroupProtocol { offered } if offered == &["cooperative-sticky"]),
            "{error:?}"
        );
        assert_eq!(c.describe("g").unwrap().2.len(), 1, "not admitted");
        // Offering both is fine.
        let both = JoinRequest {
            assignors: vec![
                Arc::new(crate::group::assignor::CooperativeStickyAssignor),
                Arc::new(RangeAssignor),
            ],
            ..request(None)
        };
        pending(c.join("g", both, 2, &four).unwrap());
    }

    /// A subscribed topic's partition count changing (here: deleted, then back with more
    /// partitions) starts a round at the next heartbeat.
    #[test]
    fn a_topic_change_starts_a_round() {
        let c = Coordinator::new(0);
        let (a, generation, _) = joined(c.join("g", request(None), 0, &four).unwrap());
        let gone = |_: &str| None;
        assert!(matches!(
            c.heartbeat("g", me(&a, generation), 1, &gone),
            Err(Error::RebalanceInProgress)
        ));
        let (_, generation, parts) = joined(c.join("g", request(Some(&a)), 2, &gone).unwrap());
        assert_eq!((generation, parts.len()), (2, 0));
        let eight = |t: &str| (t == "t").then_some(shape(8));
        assert!(matches!(
            c.heartbeat("g", me(&a, generation), 3, &eight),
            Err(Error::RebalanceInProgress)
        ));
        let (_, _, parts) = joined(c.join("g", request(Some(&a)), 4, &eight).unwrap());
        assert_eq!(parts.len(), 8);
    }

    /// While a commit checked against generation 1 is in flight, no round completes; when
    /// it is done the round does.
    #[test]
    fn a_commit_in_flight_holds_off_the_next_generation() {
        let c = Coordinator::new(0);
        let (a, generation, _) = joined(c.join("g", request(None), 0, &four).unwrap());
        let fence = c.fence("g", Some(me(&a, generation)), 1).unwrap();
        let b = pending(c.join("g", request(None), 2, &four).unwrap());
        pending(c.join("g", request(Some(&a)), 3, &four).unwrap());
        pending(c.join("g", request(Some(&b)), 4, &four).unwrap());
        drop(fence);
        let (_, generation, _) = joined(c.join("g", request(Some(&b)), 5, &four).unwrap());
        assert_eq!(generation, 2);
    }

    /// A member that joined while the group was being deleted keeps it: its metadata is
    /// queued again after the deletion dropped the group's, and the deletion's mark goes,
    /// so a later fence from outside (a commit, the expiry pass) does not remove the live
    /// group once its members left (its generation would restart at 1).
    #[test]
    fn a_group_joined_during_its_deletion_is_not_removed_later() {
        let c = Coordinator::new(0);
        let mut fence = c.fence("g", None, 0).unwrap();
        let a = pending(c.join("g", request(None), 1, &four).unwrap());
        fence.forget();
        drop(fence);
        let queued = c.take_changes();
        assert!(
            queued.iter().any(|(g, _)| g == "g"),
            "metadata after the tombstone"
        );
        let (_, generation, _) = joined(c.join("g", request(Some(&a)), 2, &four).unwrap());
        c.leave("g", &a, 3);
        drop(c.fence("g", None, 4).unwrap());
        let (_, kept, _) = c.describe("g").expect("the group lives on");
        assert!(kept >= generation, "{kept} < {generation}");
    }

    /// Kafka's `doCommitOffsets` (`completeAndScheduleNextHeartbeatExpiration`): a
    /// member's commit counts as a heartbeat, so a member that commits while it processes
    /// keeps its session.
    #[test]
    fn a_members_commit_keeps_its_session() {
        let c = Coordinator::new(0);
        let (a, generation, _) = joined(c.join("g", request(None), 0, &four).unwrap());
        drop(c.fence("g", Some(me(&a, generation)), 9_000).unwrap());
        c.heartbeat("g", me(&a, generation), 15_000, &four).unwrap();
        assert!(matches!(
            c.heartbeat("g", me(&a, generation), 25_001, &four),
            Err(Error::UnknownMemberId)
        ));
    }

    #[test]
    fn a_deleted_group_leaves_no_queued_metadata() {
        let c = Coordinator::new(0);
        let (a, _, _) = joined(c.join("g", request(None), 0, &four).unwrap());
        c.leave("g", &a, 1);
        assert!(!c.changes.lock().is_empty());
        let mut fence = c.fence("g", None, 2).unwrap();
        fence.forget();
        drop(fence);
        assert!(c.take_changes().is_empty());
        assert!(c.describe("g").is_none());
    }

    #[test]
    fn a_stale_member_id_does_not_create_a_group() {
        let c = Coordinator::new(0);
        assert!(matches!(
            c.join("g", request(Some("ghost")), 0, &four),
            Err(Error::UnknownMemberId)
        ));
        assert!(c.describe("g").is_none());
        drop(c.fence("h", None, 0).unwrap());
        assert!(
            c.describe("h").is_none(),
            "an unused fence leaves nothing behind"
        );
    }

    /// A group restored with members became empty at open, a generation later; a
    /// generation read from disk at `i32::MAX` wraps to 1 instead of overflowing.
    #[test]
    fn restore_empties_groups_and_guards_the_generation() {
        let c = Coordinator::new(0);
        let meta = GroupMeta {
            generation: i32::MAX,
            protocol: Some("range".into()),
            leader: Some("old".into()),
            state_timestamp: 5,
            members: vec![MemberMeta {
                member_id: "old".into(),
                instance_id: None,
                rebalance_timeout_ms: 1,
                session_timeout_ms: 1,
            }],
        };
        c.restore("g", &meta, 1_000);
        assert_eq!(c.idle_since("g", 1_000), Some(1_000));
        let (state, generation, _) = c.describe("g").unwrap();
        assert_eq!((state, generation), (GroupState::Empty, 1));
        let changes = c.take_changes();
        assert_eq!(changes.len(), 1);
        assert!(changes[0].1.members.is_empty());
        let (_, generation, _) = joined(c.join("g", request(None), 1_001, &four).unwrap());
        assert_eq!(generation, 2);
    }

    #[test]
    fn requeued_changes_come_back_first() {
        let c = Coordinator::new(0);
        let (a, _, _) = joined(c.join("g", request(None), 0, &four).unwrap());
        let first = c.take_changes();
        assert_eq!(first.len(), 1);
        c.leave("g", &a, 1);
        c.requeue(first.clone());
        let all = c.take_changes();
        assert_eq!(all.len(), 2);
        assert_eq!(all[0], first[0]);
    }
}
