//! [`RedisRouter`]: rooms spread over several nodes, with Redis as the only shared engine.
//!
//! `docs/scaling.md` is the design document; in short:
//!
//! - **One owner per room.** A node claims a room with an expiring lease (`SET NX PX`),
//!   fenced by a counter (`INCR`), and runs the room's state machine ([`Room`]) in one
//!   task, exactly as one node does. Members connected to the owner talk to that task
//!   directly; members connected to other nodes send their commands to the room's
//!   **command stream** (a Redis stream), which the owner reads.
//! - **Commits.** After each batch of commands the owner runs one Lua script that checks its
//!   lease is still its own, appends what the batch sends to members on other nodes to those
//!   nodes' **delivery streams**, and saves the room's snapshot and the position in its
//!   command stream. Only then does it deliver to its own members. A command is applied once,
//!   its effects leave once, in order; an owner that lost its lease sends nothing.
//! - **Failover.** Every node renews a liveness key; the owner renews its leases. When a
//!   lease lapses (the owner died), any node with a member in the room, or the janitor of
//!   any node, claims the room, restores it from the snapshot (members whose node is gone
//!   are reconnecting from then, for the grace period) and reads the command stream on from
//!   the saved position: nothing a member sent in between is lost or applied twice.
//! - **Privacy.** Everything put in Redis is sealed with ChaCha20-Poly1305 under a key that
//!   every node derives from the shared signing key: relayed SDP and candidates, resume
//!   token hashes and names are never in Redis in clear (nor on its disk, if it keeps one).

use crate::{
    EventSink, JoinGrant, SignalingConfig,
    local::record_events,
    protocol::{ClientMessage, ParticipantId},
    room::{Closing, Conn, ConnRef, ConnSink, Effect, Joined, Outbound, Room, RoomSnapshot},
    router::{
        JoinCmd, JoinFailure, JoinRequest, LinkError, LocalLink, RemoteLink, Reply, RevokeFn,
        RoomCmd, RoomLink, RoomTx, Router, apply,
    },
    stats,
};
use redis::{AsyncCommands as _, aio::ConnectionManager};
use serde::{Deserialize, Serialize};
use std::{
    collections::{HashMap, HashSet},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};
use tokio::sync::{oneshot, watch};
use uuid::Uuid;

/// How a [`RedisRouter`] is set up.
#[derive(Clone)]
pub struct ClusterConfig {
    /// This node's name (distinct per node).
    pub node: String,
    /// Prefix of every Redis key.
    pub prefix: String,
    /// How long a claim on a room lasts without renewal.
    pub lease: Duration,
    /// The keys that seal what goes into Redis (the same on every node): the first seals,
    /// every one opens (a rotation adds the new one first).
    pub secrets: Vec<[u8; 32]>,
}

impl std::fmt::Debug for ClusterConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterConfig")
            .field("node", &self.node)
            .field("prefix", &self.prefix)
            .field("lease", &self.lease)
            .finish_non_exhaustive()
    }
}

/// How long a join through the command stream waits for the owner's answer, beyond the
/// time a dead owner's lease takes to lapse and the room to be taken over (two leases):
/// then it is refused as unavailable, and the browser tries again with a new connection.
const JOIN_WAIT_EXTRA: Duration = Duration::from_secs(3);
/// Commands a room's owner applies before it commits them (a burst of signals goes out in
/// one commit).
const BATCH: usize = 64;
/// Entries a delivery or command stream keeps at most (trimmed as they are read).
const STREAM_MAX: usize = 10_000;
/// How long a delivery waits for room in a connection's full outbox (see
/// [`RedisRouter::to_local`]).
const DELIVERY_WAIT: Duration = Duration::from_secs(1);
/// Messages an owner holds for members on other nodes while Redis does not answer.
const UNSENT_MAX: usize = 1024;
/// How long closure marks are kept: longer than any join token lives.
const CLOSED_MARK_KEEP_SECS: u64 = 3600;

// ---- wire formats (sealed JSON) -----------------------------------------------------------

/// A member's command, on a room's command stream.
#[derive(Serialize, Deserialize)]
enum WireCmd {
    Join {
        grant: JoinGrant,
        conn: ConnRef,
        resume: Option<[u8; 32]>,
        reset: bool,
    },
    Msg {
        pid: ParticipantId,
        conn: ConnRef,
        msg: ClientMessage,
    },
    Disconnected {
        pid: ParticipantId,
        conn_id: u64,
    },
    SetAutoAdmit(bool),
    Remove(Uuid),
    Finish(String),
    /// A connection the room sends to is not on its node (any more).
    ConnGone {
        conn_id: u64,
    },
}

/// What an owner sends a connection on another node, on that node's delivery stream.
#[derive(Serialize, Deserialize)]
struct Delivery {
    /// The room it comes from.
    apt: Uuid,
    conn: u64,
    what: WireOut,
}

#[derive(Serialize, Deserialize)]
enum WireOut {
    Text(String),
    Close(Closing),
    Joined(Joined),
}

/// A room's saved state: its snapshot and how far its command stream was applied.
#[derive(Serialize, Deserialize)]
struct Saved {
    room: RoomSnapshot,
    /// Last applied entry of the command stream (`0-0`: none yet).
    pos: String,
}

// ---- sealing ---------------------------------------------------------------------------------

/// Seals what goes into Redis: ChaCha20-Poly1305 under a key of this process's own, derived
/// from the shared secret and a random salt, with a counter as the nonce, so that no two
/// processes ever share a (key, nonce) pair. A sealed value names the shared secret it was
/// sealed under (by an 8-byte id) and the salt, and is bound to where it is put (its Redis
/// key, as associated data): moved elsewhere it does not open. Opening tries every
/// configured secret: after a key rotation the current one seals and the older ones still
/// open.
///
/// Layout: secret id (8) | salt (16) | counter (8) | ciphertext and tag.
struct Sealer {
    /// (id, secret) of every configured secret; the first seals.
    secrets: Vec<([u8; 8], [u8; 32])>,
    salt: [u8; 16],
    key: ring::aead::LessSafeKey,
    counter: AtomicU64,
    /// Opening keys of the processes whose values this one has read, by (secret id, salt).
    opening: Mutex<HashMap<SealerId, Arc<ring::aead::LessSafeKey>>>,
}

/// Which secret, and which process's salt.
type SealerId = ([u8; 8], [u8; 16]);

const SEAL_HEAD: usize = 8 + 16 + 8;

fn seal_id(secret: &[u8; 32]) -> [u8; 8] {
    let tag = ring::hmac::sign(
        &ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret),
        b"alcove-seal-id",
    );
    tag.as_ref()[..8].try_into().expect("8 bytes")
}

fn seal_key(secret: &[u8; 32], salt: &[u8; 16]) -> ring::aead::LessSafeKey {
    let mut input = b"alcove-seal-v2".to_vec();
    input.extend_from_slice(salt);
    let tag = ring::hmac::sign(
        &ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret),
        &input,
    );
    let unbound = ring::aead::UnboundKey::new(&ring::aead::CHACHA20_POLY1305, tag.as_ref())
        .expect("a 32-byte key");
    ring::aead::LessSafeKey::new(unbound)
}

impl Sealer {
    fn new(secrets: &[[u8; 32]]) -> Self {
        assert!(!secrets.is_empty(), "at least one secret");
        let mut salt = [0u8; 16];
        getrandom::fill(&mut salt).expect("the system random source works");
        Self {
            secrets: secrets.iter().map(|s| (seal_id(s), *s)).collect(),
            salt,
            key: seal_key(&secrets[0], &salt),
            counter: AtomicU64::new(0),
            opening: Mutex::new(HashMap::new()),
        }
    }

    /// Seal `value` for the Redis key `place`.
    fn seal<T: Serialize>(&self, value: &T, place: &str) -> Vec<u8> {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let mut nonce = [0u8; 12];
        nonce[4..].copy_from_slice(&n.to_be_bytes());
        let mut out = Vec::with_capacity(SEAL_HEAD + 256);
        out.extend_from_slice(&self.secrets[0].0);
        out.extend_from_slice(&self.salt);
        out.extend_from_slice(&n.to_be_bytes());
        let body = out.len();
        serde_json::to_writer(&mut out, value).expect("wire values serialise");
        let tag = self
            .key
            .seal_in_place_separate_tag(
                ring::aead::Nonce::assume_unique_for_key(nonce),
                ring::aead::Aad::from(place.as_bytes()),
                &mut out[body..],
            )
            .expect("sealing cannot fail");
        out.extend_from_slice(tag.as_ref());
        out
    }

    /// Open a value sealed for the Redis key `place`; `None` if it was not sealed under a
    /// configured secret for that place, or was changed.
    fn open<T: for<'de> Deserialize<'de>>(&self, sealed: &[u8], place: &str) -> Option<T> {
        if sealed.len() < SEAL_HEAD + 16 {
            return None;
        }
        let id: [u8; 8] = sealed[..8].try_into().ok()?;
        let salt: [u8; 16] = sealed[8..24].try_into().ok()?;
        let mut nonce = [0u8; 12];
        nonce[4..].copy_from_slice(&sealed[24..32]);
        let key = {
            let mut cache = self.opening.lock().expect("opening lock");
            match cache.get(&(id, salt)) {
                Some(k) => k.clone(),
                None => {
                    let secret = self.secrets.iter().find(|(i, _)| *i == id)?.1;
                    // Processes come and go; the cache never grows past a few thousand.
                    if cache.len() >= 4096 {
                        cache.clear();
                    }
                    let k = Arc::new(seal_key(&secret, &salt));
                    cache.insert((id, salt), k.clone());
                    k
                }
            }
        };
        let mut data = sealed[SEAL_HEAD..].to_vec();
        let plain = key
            .open_in_place(
                ring::aead::Nonce::assume_unique_for_key(nonce),
                ring::aead::Aad::from(place.as_bytes()),
                &mut data,
            )
            .ok()?;
        serde_json::from_slice(plain).ok()
    }
}

// ---- keys ------------------------------------------------------------------------------------

struct Keys {
    prefix: String,
}

impl Keys {
    fn alive(&self, node: &str) -> String {
        format!("{}:node:{node}:alive", self.prefix)
    }
    fn out(&self, node: &str) -> String {
        format!("{}:node:{node}:out", self.prefix)
    }
    fn wake(&self, node: &str) -> String {
        format!("{}:node:{node}:wake", self.prefix)
    }
    fn owner(&self, apt: Uuid) -> String {
        format!("{}:room:{apt}:owner", self.prefix)
    }
    fn fence(&self, apt: Uuid) -> String {
        format!("{}:room:{apt}:fence", self.prefix)
    }
    fn state(&self, apt: Uuid) -> String {
        format!("{}:room:{apt}:state", self.prefix)
    }
    fn pos(&self, apt: Uuid) -> String {
        format!("{}:room:{apt}:pos", self.prefix)
    }
    fn commands(&self, apt: Uuid) -> String {
        format!("{}:room:{apt}:in", self.prefix)
    }
    fn closed(&self, apt: Uuid) -> String {
        format!("{}:room:{apt}:closed", self.prefix)
    }
    fn rooms(&self) -> String {
        format!("{}:rooms", self.prefix)
    }
    /// Revocations (an account's sign-ins ended), read by every node.
    fn revocations(&self) -> String {
        format!("{}:revocations", self.prefix)
    }
}

/// An account's sign-in (or every sign-in) ended: its connections on every node close.
#[derive(Debug, Serialize, Deserialize)]
struct Revocation {
    user_id: Uuid,
    sign_ins: crate::SignIns,
    /// The node that closed its own connections already.
    from: String,
}

/// How long revocations are kept in their stream after the last one (a node reads from
/// where it was, so entries need only outlive a reader's reconnection).
const REVOCATION_KEEP: Duration = Duration::from_secs(600);
/// How long a revocation that cannot reach Redis is tried again.
const REVOCATION_RETRY: Duration = Duration::from_secs(60);

// ---- scripts ---------------------------------------------------------------------------------

/// The owner's commit. KEYS: owner, state, commands, rooms, position, fence. ARGV: owner value,
/// lease ms, saved state ('' = unchanged), position ('' = unchanged), finished ('1' = delete
/// the room), apt, count, then (delivery stream, payload) pairs. 1 done, 0 when the lease is
/// another node's, -1 when it is gone (Redis restarted and lost it).
///
/// The snapshot is saved only when the room changed; a relayed signal moves the position
/// alone (a short key of its own), so that relaying costs no snapshot.
const COMMIT: &str = r"
local holder = redis.call('GET', KEYS[1])
if holder == false then return -1 end
if holder ~= ARGV[1] then return 0 end
local n = tonumber(ARGV[7])
for i = 0, n - 1 do
  redis.call('XADD', ARGV[8 + 2 * i], 'MAXLEN', '~', '10000', '*', 'd', ARGV[9 + 2 * i])
  redis.call('PEXPIRE', ARGV[8 + 2 * i], '600000')
end
if ARGV[5] == '1' then
  redis.call('DEL', KEYS[2], KEYS[3], KEYS[1], KEYS[5])
  redis.call('SREM', KEYS[4], ARGV[6])
  redis.call('PEXPIRE', KEYS[6], '86400000')
  return 1
end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
if ARGV[3] ~= '' then
  redis.call('SET', KEYS[2], ARGV[3])
  redis.call('SADD', KEYS[4], ARGV[6])
end
if ARGV[4] ~= '' then
  redis.call('SET', KEYS[5], ARGV[4])
  redis.call('XTRIM', KEYS[3], 'MINID', ARGV[4])
end
return 1
";

/// A member's command for a room owned elsewhere. KEYS: the room's command stream, its
/// owner key, its state key. ARGV: the sealed command, the prefix of node keys, apt, the
/// streams' length, how long a node's streams outlive their last write (ms). Nil when the
/// room has neither an owner nor a saved state (it ended, or Redis lost it).
/// The command waits in the room's stream for whichever node owns the room (now, or after
/// a takeover); the owner, if there is one, is woken through its wake stream, which names
/// the room. (The owner's key is read inside the script: Alcove uses one Redis, or a
/// primary with replicas, not Redis Cluster.)
const SEND: &str = r"
if redis.call('EXISTS', KEYS[2], KEYS[3]) == 0 then return false end
local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[4], '*', 'c', ARGV[1])
local owner = redis.call('GET', KEYS[2])
if owner then
  local node = string.match(owner, '^(.*):%d+$')
  if node then
    local wake = ARGV[2] .. node .. ':wake'
    redis.call('XADD', wake, 'MAXLEN', '~', ARGV[4], '*', 'r', ARGV[3])
    redis.call('PEXPIRE', wake, ARGV[5])
  end
end
return id
";

/// Claim a room's lease again after it vanished, only if no other node claimed the room
/// since this one did (the fence is still ours, or gone with a Redis restart). KEYS: owner,
/// fence. ARGV: our fence number, this node, lease ms. The new owner value, or nil.
const RECLAIM: &str = r"
local f = redis.call('GET', KEYS[2])
if f ~= false and f ~= ARGV[1] then return false end
local n = redis.call('INCR', KEYS[2])
local v = ARGV[2] .. ':' .. n
if redis.call('SET', KEYS[1], v, 'NX', 'PX', ARGV[3]) then return v end
return false
";

/// Renew a lease if it is ours. KEYS: owner. ARGV: value, lease ms. 1 renewed, 0 someone
/// else's, -1 gone (Redis lost it: a restart).
const RENEW: &str = r"
local v = redis.call('GET', KEYS[1])
if v == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
if v == false then return -1 end
return 0
";

/// Give a lease up if it is ours. KEYS: owner. ARGV: value.
const RELEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
";

// ---- the router ------------------------------------------------------------------------------

/// A connection of this node, for deliveries from owners elsewhere.
struct LocalConn {
    tx: flume::Sender<Outbound>,
    kill: Arc<tokio::sync::Notify>,
    /// Deliveries waiting for room in the outbox, in order, while a forwarding task moves
    /// them in (a burst larger than the outbox).
    backlog: Option<flume::Sender<Outbound>>,
}

/// A room this node owns.
struct Owned {
    /// Commands from members on this node.
    tx: RoomTx,
    /// Entries of the command stream, from this node's reader.
    stream: flume::Sender<(String, WireCmd)>,
    /// Where the reader is in the command stream.
    read_from: String,
}

struct Shared {
    cfg: SignalingConfig,
    sink: Arc<dyn EventSink>,
    me: Arc<str>,
    keys: Keys,
    lease: Duration,
    seal: Sealer,
    redis: redis::Client,
    conn: ConnectionManager,
    // std mutexes: held for map operations only, never across an await.
    owned: Mutex<HashMap<Uuid, Owned>>,
    conns: Mutex<HashMap<u64, LocalConn>>,
    pending: Mutex<HashMap<u64, oneshot::Sender<Joined>>>,
    /// Connections already reported gone to their rooms.
    gone: Mutex<HashSet<u64>>,
    healthy: AtomicBool,
    stopping: watch::Sender<bool>,
    /// The hub's: closes this node's connections of a revoked account.
    on_revoke: std::sync::OnceLock<RevokeFn>,
}

/// Rooms over several nodes; see the module docs.
#[derive(Clone)]
pub struct RedisRouter {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for RedisRouter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisRouter")
            .field("node", &self.shared.me)
            .finish_non_exhaustive()
    }
}

/// How often an owner's command reader reads every room it owns, besides those it is woken
/// for.
const SWEEP: Duration = Duration::from_secs(2);
/// How long a node's delivery and wake streams outlive their last write (a node that is
/// gone leaves nothing behind for long). The same figure is in the COMMIT script.
const NODE_STREAM_KEEP: Duration = Duration::from_secs(600);
/// How soon a room whose queue was full is read again.
const BUSY_RETRY: Duration = Duration::from_millis(20);
/// How long a stream reader's `XREAD` blocks in Redis.
const BLOCK: Duration = Duration::from_secs(1);

/// The connection of a stream reader: its blocking `XREAD` must not be taken for a lost
/// connection (the client's default answer timeout is half a second), but a silent one
/// (a partition) is given up after a few seconds.
fn blocking_config() -> redis::AsyncConnectionConfig {
    redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(1)))
        .set_response_timeout(Some(BLOCK + Duration::from_secs(2)))
}

/// Whether stream entry id `a` (`<ms>-<seq>`) comes after `b`.
fn stream_id_after(a: &str, b: &str) -> bool {
    let parse = |id: &str| {
        let (ms, seq) = id.split_once('-').unwrap_or((id, "0"));
        (
            ms.parse::<u64>().unwrap_or(0),
            seq.parse::<u64>().unwrap_or(0),
        )
    };
    parse(a) > parse(b)
}

fn ms(d: Duration) -> u64 {
    (d.as_millis() as u64).max(1)
}

fn now_ms() -> i64 {
    jiff::Timestamp::now().as_millisecond()
}

impl RedisRouter {
    /// Join the cluster: start this node's liveness, delivery reader, command reader and
    /// janitor.
    pub async fn start(
        cfg: SignalingConfig,
        sink: Arc<dyn EventSink>,
        cluster: ClusterConfig,
        redis: redis::Client,
        conn: ConnectionManager,
    ) -> anyhow::Result<Self> {
        let (stopping, _) = watch::channel(false);
        let shared = Arc::new(Shared {
            cfg,
            sink,
            // The node's name and this process's own mark: connections of an earlier
            // process of the same name (restarted within a lease) count as gone.
            me: {
                let mut r = [0u8; 4];
                getrandom::fill(&mut r).expect("the system random source works");
                format!("{}#{:08x}", cluster.node, u32::from_be_bytes(r)).into()
            },
            keys: Keys {
                prefix: cluster.prefix.clone(),
            },
            lease: cluster.lease,
            seal: Sealer::new(&cluster.secrets),
            redis,
            conn,
            owned: Mutex::new(HashMap::new()),
            conns: Mutex::new(HashMap::new()),
            pending: Mutex::new(HashMap::new()),
            gone: Mutex::new(HashSet::new()),
            healthy: AtomicBool::new(true),
            stopping,
            on_revoke: std::sync::OnceLock::new(),
        });
        let me = Self { shared };
        me.heartbeat().await?;
        // Deliveries addressed to this node from now on (earlier ones were for a previous
        // process of the same name, whose connections are gone).
        let from = me.last_entry(&me.shared.keys.out(&me.shared.me)).await;
        tokio::spawn(me.clone().read_deliveries(from));
        let from = me.last_entry(&me.shared.keys.revocations()).await;
        tokio::spawn(me.clone().read_revocations(from));
        tokio::spawn(me.clone().read_commands());
        tokio::spawn(me.clone().keep_alive());
        tokio::spawn(me.clone().janitor());
        Ok(me)
    }

    fn conn(&self) -> ConnectionManager {
        self.shared.conn.clone()
    }

    /// The id of a stream's last entry (`0-0` when it has none), to read what comes after.
    async fn last_entry(&self, stream: &str) -> String {
        let mut c = self.conn();
        let last: Vec<(String, HashMap<String, Vec<u8>>)> = redis::cmd("XREVRANGE")
            .arg(stream)
            .arg("+")
            .arg("-")
            .arg("COUNT")
            .arg(1)
            .query_async(&mut c)
            .await
            .unwrap_or_default();
        last.first()
            .map_or_else(|| "0-0".to_owned(), |e| e.0.clone())
    }

    /// The appointments whose rooms are saved in Redis (some node carries them on).
    pub async fn saved_rooms(&self) -> anyhow::Result<HashSet<Uuid>> {
        let mut c = self.conn();
        let rooms: Vec<String> = c.smembers(self.shared.keys.rooms()).await?;
        Ok(rooms.iter().filter_map(|r| r.parse().ok()).collect())
    }

    fn ok<T>(&self, r: redis::RedisResult<T>) -> redis::RedisResult<T> {
        self.shared.healthy.store(r.is_ok(), Ordering::Relaxed);
        if r.is_err() {
            stats::add(&stats::STATS.bus.errors, 1);
        }
        r
    }

    /// Say this node is alive, and keep its streams while it is.
    async fn heartbeat(&self) -> redis::RedisResult<()> {
        let mut c = self.conn();
        let keys = &self.shared.keys;
        let keep = ms(NODE_STREAM_KEEP) as i64;
        let r: redis::RedisResult<()> = redis::pipe()
            .pset_ex(keys.alive(&self.shared.me), 1, ms(self.shared.lease))
            .ignore()
            .pexpire(keys.out(&self.shared.me), keep)
            .ignore()
            .pexpire(keys.wake(&self.shared.me), keep)
            .ignore()
            .query_async(&mut c)
            .await;
        self.ok(r)
    }

    /// Renew this node's liveness key a few times per lease.
    async fn keep_alive(self) {
        let mut stop = self.shared.stopping.subscribe();
        let mut tick = tokio::time::interval(self.shared.lease / 3);
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    if let Err(e) = self.heartbeat().await {
                        tracing::warn!(error = %e, "cluster: cannot reach Redis");
                    }
                }
                _ = stop.changed() => break,
            }
        }
    }

    /// Claim rooms whose owner is gone (its lease lapsed) even when no member of this node
    /// asks: so that a room whose members all reconnect elsewhere, or never come back, is
    /// carried on or closed properly.
    async fn janitor(self) {
        let mut stop = self.shared.stopping.subscribe();
        let mut tick = tokio::time::interval(self.shared.lease / 2);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.changed() => break,
            }
            let mut c = self.conn();
            let rooms: Vec<String> = match self.ok(c.smembers(self.shared.keys.rooms()).await) {
                Ok(r) => r,
                Err(_) => continue,
            };
            for apt in rooms.iter().filter_map(|r| r.parse::<Uuid>().ok()) {
                if self.owned_tx(apt).is_some() {
                    continue;
                }
                let owner: redis::RedisResult<Option<String>> =
                    c.get(self.shared.keys.owner(apt)).await;
                if let Ok(None) = owner
                    && let Err(e) = self.claim(apt, None).await
                {
                    tracing::warn!(appointment_id = %apt, error = %e, "cluster: could not take an orphaned room over");
                }
            }
        }
    }

    fn owned_tx(&self, apt: Uuid) -> Option<RoomTx> {
        self.shared
            .owned
            .lock()
            .expect("owned lock")
            .get(&apt)
            .map(|o| o.tx.clone())
            .filter(|tx| !tx.is_disconnected())
    }

    /// Try to become the room's owner. With `grant`, a room that has no saved state is
    /// opened anew (the first join); without, only a saved room is taken over. `Ok(true)`
    /// when this node owns the room now.
    async fn claim(&self, apt: Uuid, grant: Option<&JoinGrant>) -> anyhow::Result<bool> {
        let keys = &self.shared.keys;
        let mut c = self.conn();
        let fence: u64 = self.ok(c.incr(keys.fence(apt), 1).await)?;
        let value = format!("{}:{fence}", self.shared.me);
        let set: Option<String> = self.ok(redis::cmd("SET")
            .arg(keys.owner(apt))
            .arg(&value)
            .arg("NX")
            .arg("PX")
            .arg(ms(self.shared.lease))
            .query_async(&mut c)
            .await)?;
        if set.is_none() {
            return Ok(false);
        }
        let (saved, pos): (Option<Vec<u8>>, Option<String>) = self.ok(redis::pipe()
            .get(keys.state(apt))
            .get(keys.pos(apt))
            .query_async(&mut c)
            .await)?;
        let saved: Option<Saved> = match saved {
            None => None,
            Some(bytes) => match self.shared.seal.open(&bytes, &keys.state(apt)) {
                Some(saved) => Some(saved),
                None => {
                    // Saved under a key this node does not have (a rotation half rolled
                    // out): not "no room", which would open a second one.
                    let _: redis::RedisResult<i64> = redis::Script::new(RELEASE)
                        .key(keys.owner(apt))
                        .arg(&value)
                        .invoke_async(&mut c)
                        .await;
                    anyhow::bail!(
                        "the room's saved state does not open with this node's keys (ALCOVE_SIGNING_KEYS differ between nodes?)"
                    );
                }
            },
        };
        let now = Instant::now();
        let (room, pos, restored) = match (saved, grant) {
            (Some(saved), _) => {
                // Which nodes of the snapshot's connections are alive.
                let nodes: HashSet<String> = saved
                    .room
                    .members
                    .iter()
                    .filter_map(|m| m.conn.as_ref().map(|c| c.node.clone()))
                    .collect();
                let mut alive = HashSet::new();
                for n in nodes {
                    let up: bool = self.ok(c.exists(keys.alive(&n)).await)?;
                    if up {
                        alive.insert(n);
                    }
                }
                let me = self.shared.me.clone();
                let conns = &self.shared.conns;
                let room = Room::restore(saved.room, &self.shared.cfg, now, |r| {
                    let here = r.node.as_str() == &*me;
                    let reachable = if here {
                        conns.lock().expect("conns lock").contains_key(&r.id)
                    } else {
                        alive.contains(&r.node)
                    };
                    // Every connection of a restored room is reached through the delivery
                    // streams (those of this node too): one path per connection, in order.
                    reachable.then(|| Conn::remote(r.id, r.node.as_str().into()))
                });
                // The position moves on without the snapshot while the room does not
                // change (relayed signals): the later of the two.
                let pos = pos
                    .filter(|p| stream_id_after(p, &saved.pos))
                    .unwrap_or(saved.pos);
                (room, pos, true)
            }
            (None, Some(grant)) => (Room::new(grant, &self.shared.cfg, now), "0-0".into(), false),
            (None, None) => {
                // Nothing to take over: the room ended meanwhile.
                let _: redis::RedisResult<i64> = redis::Script::new(RELEASE)
                    .key(keys.owner(apt))
                    .arg(&value)
                    .invoke_async(&mut c)
                    .await;
                let _: redis::RedisResult<i64> = c.srem(keys.rooms(), apt.to_string()).await;
                return Ok(false);
            }
        };
        if restored {
            tracing::info!(appointment_id = %apt, session_id = %room.session_id, "cluster: took the room over");
            stats::add(&stats::STATS.bus.takeovers, 1);
            self.shared.sink.adopted(room.session_id, apt).await;
        }
        self.own(room, value, pos);
        Ok(true)
    }

    /// Start the task of a room this node now owns.
    fn own(&self, room: Room, owner_value: String, pos: String) {
        let apt = room.appointment_id;
        let (tx, rx) = flume::bounded(256);
        let (stream_tx, stream_rx) = flume::bounded(1024);
        self.shared.owned.lock().expect("owned lock").insert(
            apt,
            Owned {
                tx,
                stream: stream_tx,
                read_from: pos.clone(),
            },
        );
        // Tell this node's command reader to read this room's stream (a backlog may wait
        // there after a takeover).
        let me = self.clone();
        tokio::spawn(async move {
            let mut c = me.conn();
            let _: redis::RedisResult<String> = redis::cmd("XADD")
                .arg(me.shared.keys.wake(&me.shared.me))
                .arg("MAXLEN")
                .arg("~")
                .arg(STREAM_MAX)
                .arg("*")
                .arg("r")
                .arg(apt.to_string())
                .query_async(&mut c)
                .await;
        });
        tokio::spawn(
            self.clone()
                .run_owned(room, rx, stream_rx, owner_value, pos),
        );
    }

    /// Read the command streams of the rooms this node owns, handing entries to their
    /// rooms' tasks. The reader blocks on this node's **wake stream** alone, where every
    /// command appended for a room this node owns names that room (see [`SEND`]); then it
    /// reads just the rooms named. So a command costs two reads of one stream each, however
    /// many rooms the node holds. Every [`SWEEP`] it also reads every room it owns, in case
    /// a wake was missed (a command appended while the room was changing owner).
    async fn read_commands(self) {
        let mut stop = self.shared.stopping.subscribe();
        let mut blocking: Option<redis::aio::MultiplexedConnection> = None;
        let wake = self.shared.keys.wake(&self.shared.me);
        // What is appended from now on (a previous process of this node's name left the
        // rest); the rooms this node owns are swept at once anyway.
        let mut wake_from = self.last_entry(&wake).await;
        let mut due: HashSet<Uuid> = HashSet::new();
        // Rooms whose queue was full, and when to read them again.
        let mut busy: HashMap<Uuid, Instant> = HashMap::new();
        let mut last_sweep = Instant::now() - SWEEP;
        loop {
            if *stop.borrow() {
                break;
            }
            if blocking.is_none() {
                match self
                    .shared
                    .redis
                    .get_multiplexed_async_connection_with_config(&blocking_config())
                    .await
                {
                    Ok(c) => blocking = Some(c),
                    Err(_) => {
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        continue;
                    }
                }
            }
            let c = blocking.as_mut().expect("connected");
            if last_sweep.elapsed() >= SWEEP {
                last_sweep = Instant::now();
                due.extend(self.shared.owned.lock().expect("owned lock").keys());
                // Wakes already read are of no more use.
                let _: redis::RedisResult<i64> = redis::cmd("XTRIM")
                    .arg(&wake)
                    .arg("MINID")
                    .arg(&wake_from)
                    .query_async(c)
                    .await;
            }
            let now = Instant::now();
            busy.retain(|apt, at| {
                let wait = *at > now;
                if !wait {
                    due.insert(*apt);
                }
                wait
            });
            if due.is_empty() {
                // Wait for a wake (not past the next busy room's turn).
                let block = busy
                    .values()
                    .map(|at| at.saturating_duration_since(now))
                    .min()
                    .map_or(BLOCK, |d| d.clamp(Duration::from_millis(1), BLOCK));
                let mut cmd = redis::cmd("XREAD");
                cmd.arg("COUNT")
                    .arg(256)
                    .arg("BLOCK")
                    .arg(ms(block))
                    .arg("STREAMS")
                    .arg(&wake)
                    .arg(&wake_from);
                let reply: redis::RedisResult<Option<redis::streams::StreamReadReply>> = tokio::select! {
                    r = cmd.query_async(c) => r,
                    _ = stop.changed() => break,
                };
                match reply {
                    Ok(Some(reply)) => {
                        for entry in reply.keys.into_iter().flat_map(|k| k.ids) {
                            wake_from = entry.id.clone();
                            let apt = entry
                                .map
                                .get("r")
                                .and_then(|v| redis::from_redis_value::<String>(v.clone()).ok())
                                .and_then(|r| r.parse::<Uuid>().ok());
                            if let Some(apt) = apt {
                                due.insert(apt);
                            }
                        }
                    }
                    Ok(None) => {}
                    Err(e) => {
                        tracing::debug!(error = %e, "cluster: command reader lost Redis");
                        blocking = None;
                        // Whatever was appended meanwhile is read with the next sweep.
                        last_sweep = Instant::now() - SWEEP;
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
                continue;
            }
            // Read the rooms that are due, from where each was read to.
            let rooms: Vec<(Uuid, String)> = {
                let owned = self.shared.owned.lock().expect("owned lock");
                due.drain()
                    .filter_map(|apt| owned.get(&apt).map(|o| (apt, o.read_from.clone())))
                    .collect()
            };
            if rooms.is_empty() {
                continue;
            }
            let mut cmd = redis::cmd("XREAD");
            cmd.arg("COUNT").arg(BATCH).arg("STREAMS");
            for (apt, _) in &rooms {
                cmd.arg(self.shared.keys.commands(*apt));
            }
            for (_, from) in &rooms {
                cmd.arg(from);
            }
            let reply: redis::RedisResult<Option<redis::streams::StreamReadReply>> =
                cmd.query_async(c).await;
            let reply = match reply {
                Ok(r) => r,
                Err(e) => {
                    tracing::debug!(error = %e, "cluster: command reader lost Redis");
                    blocking = None;
                    due.extend(rooms.iter().map(|(apt, _)| *apt));
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let Some(reply) = reply else { continue };
            for key in reply.keys {
                let Some(apt) = rooms
                    .iter()
                    .map(|(a, _)| *a)
                    .find(|a| self.shared.keys.commands(*a) == key.key)
                else {
                    continue;
                };
                // A full batch: there may be more; read the room again at once.
                if key.ids.len() >= BATCH {
                    due.insert(apt);
                }
                let Some(target) = self
                    .shared
                    .owned
                    .lock()
                    .expect("owned lock")
                    .get(&apt)
                    .map(|o| o.stream.clone())
                else {
                    continue;
                };
                // Hand the entries to the room's task without waiting on it: a room that is
                // busy (its queue is full) is read again from where it stopped a moment
                // later, while the other rooms go on.
                let mut handed = None;
                for entry in key.ids {
                    let id = entry.id.clone();
                    let Some(cmd) = entry
                        .map
                        .get("c")
                        .and_then(|v| redis::from_redis_value::<Vec<u8>>(v.clone()).ok())
                        .and_then(|b| self.shared.seal.open::<WireCmd>(&b, &key.key))
                    else {
                        tracing::warn!(appointment_id = %apt, "cluster: an unreadable command was skipped");
                        handed = Some(id);
                        continue;
                    };
                    match target.try_send((id.clone(), cmd)) {
                        Ok(()) => {
                            stats::add(&stats::STATS.bus.commands_read, 1);
                            handed = Some(id);
                        }
                        Err(flume::TrySendError::Full(_)) => {
                            due.remove(&apt);
                            busy.insert(apt, Instant::now() + BUSY_RETRY);
                            break;
                        }
                        Err(flume::TrySendError::Disconnected(_)) => break,
                    }
                }
                if let Some(id) = handed
                    && let Some(o) = self.shared.owned.lock().expect("owned lock").get_mut(&apt)
                {
                    o.read_from = id;
                }
            }
        }
    }

    /// Read this node's delivery stream and hand each delivery to its connection.
    async fn read_deliveries(self, from: String) {
        let key = self.shared.keys.out(&self.shared.me);
        let me = self.clone();
        // Delivered content leaves Redis at once (trimmed after each batch).
        self.read_sealed::<Delivery>(key, from, "delivery", true, move |d| {
            stats::add(&stats::STATS.bus.deliveries_read, 1);
            me.deliver(d);
        })
        .await;
    }

    /// Read the revocation stream, and close this node's connections of each account in it
    /// (those of the node that wrote it are closed already).
    async fn read_revocations(self, from: String) {
        let key = self.shared.keys.revocations();
        let me = self.clone();
        // Every node reads this stream: it is capped when written, never trimmed by a reader.
        self.read_sealed::<Revocation>(key, from, "revocation", false, move |r| {
            if r.from != *me.shared.me
                && let Some(f) = me.shared.on_revoke.get()
            {
                f(r.user_id, r.sign_ins);
            }
        })
        .await;
    }

    /// Read the sealed entries of stream `key` after `from`, in order, with a blocking
    /// `XREAD` on a connection of its own (made again when Redis comes back), until the node
    /// stops; each entry that opens goes to `each`. With `trim`, what was read is trimmed
    /// from the stream after each batch.
    async fn read_sealed<T: for<'de> Deserialize<'de>>(
        self,
        key: String,
        mut from: String,
        what: &'static str,
        trim: bool,
        mut each: impl FnMut(T) + Send,
    ) {
        let mut stop = self.shared.stopping.subscribe();
        let mut blocking: Option<redis::aio::MultiplexedConnection> = None;
        loop {
            if *stop.borrow() {
                break;
            }
            if blocking.is_none() {
                match self
                    .shared
                    .redis
                    .get_multiplexed_async_connection_with_config(&blocking_config())
                    .await
                {
                    Ok(c) => blocking = Some(c),
                    Err(_) => {
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        continue;
                    }
                }
            }
            let c = blocking.as_mut().expect("connected");
            let mut cmd = redis::cmd("XREAD");
            cmd.arg("COUNT")
                .arg(256)
                .arg("BLOCK")
                .arg(ms(BLOCK))
                .arg("STREAMS")
                .arg(&key)
                .arg(&from);
            let reply: redis::RedisResult<Option<redis::streams::StreamReadReply>> = tokio::select! {
                r = cmd.query_async(c) => r,
                _ = stop.changed() => break,
            };
            let reply = match reply {
                Ok(r) => r,
                Err(e) => {
                    tracing::debug!(error = %e, stream = what, "cluster: a stream reader lost Redis");
                    blocking = None;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let Some(reply) = reply else { continue };
            for stream in reply.keys {
                for entry in stream.ids {
                    from = entry.id.clone();
                    if let Some(v) = entry
                        .map
                        .get("d")
                        .and_then(|v| redis::from_redis_value::<Vec<u8>>(v.clone()).ok())
                        .and_then(|b| self.shared.seal.open::<T>(&b, &key))
                    {
                        each(v);
                    }
                }
            }
            if trim {
                let mut c = self.conn();
                let _: redis::RedisResult<i64> = redis::cmd("XTRIM")
                    .arg(&key)
                    .arg("MINID")
                    .arg(&from)
                    .query_async(&mut c)
                    .await;
            }
        }
    }

    /// Append a revocation to the stream every node reads.
    async fn publish_revocation(&self, sealed: &[u8]) -> redis::RedisResult<()> {
        let mut c = self.conn();
        let key = self.shared.keys.revocations();
        redis::pipe()
            .cmd("XADD")
            .arg(&key)
            .arg("MAXLEN")
            .arg("~")
            .arg(1000)
            .arg("*")
            .arg("d")
            .arg(sealed)
            .ignore()
            .pexpire(&key, ms(REVOCATION_KEEP) as i64)
            .ignore()
            .query_async(&mut c)
            .await
    }

    /// Hand one delivery to a connection of this node.
    fn deliver(&self, d: Delivery) {
        let known = match d.what {
            WireOut::Joined(j) => {
                let reply = self
                    .shared
                    .pending
                    .lock()
                    .expect("pending lock")
                    .remove(&d.conn);
                // A join whose wait had given up: the room must not keep a member
                // whose connection is gone.
                reply.is_some_and(|reply| reply.send(j).is_ok())
            }
            WireOut::Text(t) => self.to_local(d.conn, Outbound::Text(t.into())),
            // A connection being closed needs no news of its own end.
            WireOut::Close(why) => {
                self.to_local(d.conn, Outbound::Close(why));
                true
            }
        };
        if !known {
            self.report_gone(d.apt, d.conn);
        }
    }

    /// Tell a room that a connection it sends to is no longer on this node (once).
    fn report_gone(&self, apt: Uuid, conn_id: u64) {
        {
            let mut gone = self.shared.gone.lock().expect("gone lock");
            if gone.len() >= 10_000 {
                gone.clear();
            }
            if !gone.insert(conn_id) {
                return;
            }
        }
        let me = self.clone();
        tokio::spawn(async move {
            let _ = me.send_command(apt, &WireCmd::ConnGone { conn_id }).await;
        });
    }

    /// Put a message in a connection's outbox; false if the connection is not on this node.
    ///
    /// Deliveries come in bursts (a batch of the owner's commands at once, or the backlog a
    /// new owner applies after a takeover), sometimes larger than the outbox. Then the rest
    /// waits in the connection's backlog (up to another outbox), in order, and a task of its
    /// own moves it in as the connection writes: the node's reader never waits for one
    /// connection. A connection that cannot take a message for [`DELIVERY_WAIT`], or whose
    /// backlog fills, is stopped as a slow consumer (as on one node).
    fn to_local(&self, conn: u64, out: Outbound) -> bool {
        let mut conns = self.shared.conns.lock().expect("conns lock");
        let Some(c) = conns.get_mut(&conn) else {
            return false;
        };
        if let Some(backlog) = &c.backlog {
            match backlog.try_send(out) {
                Ok(()) | Err(flume::TrySendError::Disconnected(_)) => {}
                Err(flume::TrySendError::Full(_)) => {
                    c.kill.notify_one();
                    conns.remove(&conn);
                }
            }
            return true;
        }
        let out = match c.tx.try_send(out) {
            Ok(()) | Err(flume::TrySendError::Disconnected(_)) => return true,
            Err(flume::TrySendError::Full(out)) => out,
        };
        let (backlog, waiting) = flume::bounded(self.shared.cfg.outbox);
        let _ = backlog.try_send(out);
        c.backlog = Some(backlog);
        let (tx, kill) = (c.tx.clone(), c.kill.clone());
        let shared = self.shared.clone();
        tokio::spawn(async move {
            loop {
                let next = {
                    // The reader adds to the backlog under this lock: empty here means empty.
                    let mut conns = shared.conns.lock().expect("conns lock");
                    match waiting.try_recv() {
                        Ok(out) => out,
                        Err(_) => {
                            if let Some(c) = conns.get_mut(&conn) {
                                c.backlog = None;
                            }
                            return;
                        }
                    }
                };
                if tokio::time::timeout(DELIVERY_WAIT, tx.send_async(next))
                    .await
                    .is_err()
                {
                    shared.conns.lock().expect("conns lock").remove(&conn);
                    kill.notify_one();
                    return;
                }
            }
        });
        true
    }

    /// Append a command to a room's command stream, and wake the room's owner.
    async fn send_command(&self, apt: Uuid, cmd: &WireCmd) -> Result<(), LinkError> {
        let mut c = self.conn();
        let started = Instant::now();
        let r: redis::RedisResult<Option<String>> = redis::Script::new(SEND)
            .key(self.shared.keys.commands(apt))
            .key(self.shared.keys.owner(apt))
            .key(self.shared.keys.state(apt))
            .arg(self.shared.seal.seal(cmd, &self.shared.keys.commands(apt)))
            .arg(format!("{}:node:", self.shared.keys.prefix))
            .arg(apt.to_string())
            .arg(STREAM_MAX)
            .arg(ms(NODE_STREAM_KEEP))
            .invoke_async(&mut c)
            .await;
        match self.ok(r) {
            Ok(Some(_)) => {
                let bus = &stats::STATS.bus;
                bus.send_seconds.observe(started.elapsed());
                stats::add(&bus.commands_sent, 1);
                Ok(())
            }
            // No room to take it (ended, or Redis lost it and its owner has not claimed
            // it again yet): not delivered.
            Ok(None) | Err(_) => Err(LinkError::Unavailable),
        }
    }

    /// Whether a join verified at `verified_ms` predates a closure of its room or account.
    async fn closed_since(&self, grant: &JoinGrant, verified_ms: i64) -> redis::RedisResult<bool> {
        let mut c = self.conn();
        let marks: Vec<Option<i64>> = self.ok(redis::cmd("HMGET")
            .arg(self.shared.keys.closed(grant.appointment_id))
            .arg("room")
            .arg(grant.user_id.to_string())
            .query_async(&mut c)
            .await)?;
        Ok(marks.into_iter().flatten().any(|at| at >= verified_ms))
    }

    async fn mark_closed(&self, apt: Uuid, user: Option<Uuid>) {
        let mut c = self.conn();
        let field = user.map_or_else(|| "room".to_owned(), |u| u.to_string());
        let key = self.shared.keys.closed(apt);
        let _: redis::RedisResult<()> = redis::pipe()
            .hset(&key, field, now_ms())
            .ignore()
            .expire(&key, CLOSED_MARK_KEEP_SECS as i64)
            .ignore()
            .query_async(&mut c)
            .await;
    }

    async fn room_exists(&self, apt: Uuid) -> bool {
        let mut c = self.conn();
        let n: redis::RedisResult<u64> = redis::cmd("EXISTS")
            .arg(self.shared.keys.owner(apt))
            .arg(self.shared.keys.state(apt))
            .query_async(&mut c)
            .await;
        matches!(n, Ok(n) if n > 0)
    }

    /// Send a room command from outside (the API): to the local task, or the stream.
    async fn command(&self, apt: Uuid, local: RoomCmd, wire: WireCmd) {
        if let Some(tx) = self.owned_tx(apt) {
            let _ = tx.send_async(Box::new(local)).await;
        } else if self.room_exists(apt).await {
            let _ = self.send_command(apt, &wire).await;
        }
    }

    fn link(&self, apt: Uuid) -> RoomLink {
        RoomLink::Remote(Arc::new(StreamLink {
            router: self.clone(),
            appointment_id: apt,
        }))
    }

    // ---- the owner's task -----------------------------------------------------------------

    async fn run_owned(
        self,
        mut room: Room,
        local: flume::Receiver<Box<RoomCmd>>,
        stream: flume::Receiver<(String, WireCmd)>,
        owner: String,
        mut pos: String,
    ) {
        let apt = room.appointment_id;
        let session_id = room.session_id;
        tracing::info!(appointment_id = %apt, %session_id, node = %self.shared.me, "session room opened here");
        let mut stop = self.shared.stopping.subscribe();
        let mut renew = tokio::time::interval(self.shared.lease / 3);
        renew.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        renew.tick().await;
        // Save the whole state with the next commit (after a takeover, or Redis lost it).
        let mut save_all = true;
        let mut owner = owner;
        let mut degraded = false;
        // When the liveness of the nodes that members are connected through is next
        // checked (`None`: Redis does not answer).
        let mut check_nodes_from = Some(Instant::now());
        // What the room sent members on other nodes, not yet committed.
        let mut unsent: Vec<(String, Vec<u8>)> = Vec::new();
        // The command stream position moved since the last commit.
        let mut pos_unsaved = false;
        // The room changed since the last commit.
        let mut dirty_unsaved = false;
        let mut retry_now = false;
        // Claimed while the node was already stopping: hand it on at once.
        let mut stopping = *stop.borrow_and_update();
        loop {
            let deadline = tokio::time::Instant::from_std(room.next_deadline());
            let mut replies = Vec::new();
            let mut moved = false;
            let mut release = std::mem::take(&mut stopping);
            if !release {
                tokio::select! {
                    cmd = local.recv_async() => match cmd {
                        Ok(cmd) => apply(&mut room, *cmd, &mut replies),
                        Err(_) => room.finish("server_shutdown"),
                    },
                    entry = stream.recv_async() => {
                        if let Ok((id, cmd)) = entry {
                            self.apply_wire(&mut room, cmd, &mut replies);
                            pos = id;
                            moved = true;
                        }
                    }
                    _ = tokio::time::sleep_until(deadline) => room.tick(Instant::now()),
                    _ = renew.tick() => {
                        match self.renew(apt, &owner).await {
                            // Redis answers again: the commit below is tried at once.
                            Ok(true) if degraded => retry_now = true,
                            Ok(true) => match check_nodes_from {
                                // Redis answers again: every node renews its liveness within a
                                // lease; only then does a missing one count as gone.
                                None => check_nodes_from = Some(Instant::now() + self.shared.lease),
                                Some(from) if Instant::now() >= from => {
                                    // Members connected through a node that died are
                                    // reconnecting.
                                    for node in room.remote_nodes() {
                                        if *node == *self.shared.me {
                                            continue;
                                        }
                                        let mut c = self.conn();
                                        let up: redis::RedisResult<bool> =
                                            c.exists(self.shared.keys.alive(&node)).await;
                                        if let Ok(false) = up {
                                            tracing::info!(appointment_id = %apt, %node, "cluster: a node of this room's members is gone");
                                            room.node_lost(&node, Instant::now());
                                        }
                                    }
                                }
                                Some(_) => {}
                            },
                            Ok(false) => {
                                tracing::warn!(appointment_id = %apt, "cluster: another node owns the room now; giving it up");
                                rejoin_local_members(&mut room);
                                break;
                            }
                            // Redis restarted and lost the lease (and every node's liveness):
                            // claim it again, save everything with the next commit, and give
                            // the other nodes a lease to say they are alive.
                            Err(Some(again)) => {
                                owner = again;
                                save_all = true;
                                retry_now = true;
                                check_nodes_from = Some(Instant::now() + self.shared.lease);
                            }
                            Err(None) => {
                                degraded = true;
                                check_nodes_from = None;
                            }
                        }
                    }
                    _ = stop.changed() => release = true,
                }
            }
            // More that is already waiting goes into the same commit.
            for _ in 0..BATCH {
                if room.finished().is_some() {
                    break;
                }
                if let Ok(cmd) = local.try_recv() {
                    apply(&mut room, *cmd, &mut replies);
                } else if let Ok((id, cmd)) = stream.try_recv() {
                    self.apply_wire(&mut room, cmd, &mut replies);
                    pos = id;
                    moved = true;
                } else {
                    break;
                }
            }
            record_events(&mut room, self.shared.sink.as_ref()).await;
            let finished = room.finished().is_some();
            let mut local_out: Vec<(Conn, Outbound)> = Vec::new();
            // A remote joiner learns its participant id first, then what the join sent.
            let mut local_replies = Vec::new();
            for (reply, conn, joined) in replies {
                match reply {
                    Reply::Local(tx) => local_replies.push((tx, joined)),
                    Reply::Remote => {
                        if let ConnSink::Remote { node } = &conn.sink {
                            let stream = self.shared.keys.out(node);
                            let d = self.shared.seal.seal(
                                &Delivery {
                                    apt,
                                    conn: conn.id,
                                    what: WireOut::Joined(joined),
                                },
                                &stream,
                            );
                            unsent.push((stream, d));
                        }
                    }
                }
            }
            for Effect::Send(conn, out) in room.take_effects() {
                match &conn.sink {
                    ConnSink::Local { .. } => local_out.push((conn, out)),
                    ConnSink::Remote { node } => {
                        let what = match out {
                            Outbound::Text(t) => WireOut::Text(t.to_string()),
                            Outbound::Close(c) => WireOut::Close(c),
                        };
                        let stream = self.shared.keys.out(node);
                        let d = self.shared.seal.seal(
                            &Delivery {
                                apt,
                                conn: conn.id,
                                what,
                            },
                            &stream,
                        );
                        unsent.push((stream, d));
                    }
                }
            }
            // The snapshot is saved when the room changed (or the stream position moved),
            // in the same commit as what the batch sends. While Redis does not answer, what
            // is for members on other nodes waits here (in order, up to UNSENT_MAX) and a
            // commit is tried again once a lease renewal (which waits a third of a lease at
            // most) gets through: members on this node never wait on Redis meanwhile.
            pos_unsaved |= moved;
            // A change not yet saved stays to be saved until a commit gets through.
            dirty_unsaved |= room.take_dirty();
            let changed = !finished && (dirty_unsaved || save_all);
            let due = !degraded || finished || retry_now;
            let write = (changed || pos_unsaved || !unsent.is_empty() || finished) && due;
            if write {
                retry_now = false;
                let mut outcome = None;
                // A lease Redis lost is claimed again, and everything committed at once.
                for _ in 0..2 {
                    let full = changed || save_all;
                    let state = if finished || !full {
                        Vec::new()
                    } else {
                        self.shared.seal.seal(
                            &Saved {
                                room: room.snapshot(&self.shared.me, Instant::now()),
                                pos: pos.clone(),
                            },
                            &self.shared.keys.state(apt),
                        )
                    };
                    let r = self
                        .commit(
                            apt,
                            &owner,
                            &state,
                            if pos_unsaved { &pos } else { "" },
                            finished,
                            &unsent,
                        )
                        .await;
                    if let Ok(Commit::LeaseGone) = r {
                        match self.reclaim(apt, &owner).await {
                            Err(Some(again)) => {
                                owner = again;
                                save_all = true;
                                check_nodes_from = Some(Instant::now() + self.shared.lease);
                                continue;
                            }
                            Ok(_) => outcome = Some(Ok(Commit::NotOurs)),
                            Err(None) => outcome = Some(Err(())),
                        }
                    } else {
                        outcome = Some(r.map_err(|e| {
                            if !degraded {
                                tracing::warn!(appointment_id = %apt, error = %e, "cluster: cannot commit to Redis; serving this node's members, holding what is for others");
                            }
                        }));
                    }
                    break;
                }
                match outcome {
                    Some(Ok(Commit::Done)) => {
                        save_all = false;
                        pos_unsaved = false;
                        dirty_unsaved = false;
                        unsent.clear();
                        if degraded {
                            tracing::info!(appointment_id = %apt, "cluster: Redis is back for this room");
                            degraded = false;
                            check_nodes_from = Some(Instant::now() + self.shared.lease);
                        }
                    }
                    Some(Ok(Commit::NotOurs)) => {
                        tracing::warn!(appointment_id = %apt, "cluster: another node holds the room's lease; giving it up");
                        rejoin_local_members(&mut room);
                        break;
                    }
                    // Redis does not answer (or lost the lease twice in a row).
                    _ => {
                        degraded = true;
                        save_all = true;
                        if unsent.len() > UNSENT_MAX {
                            let over = unsent.len() - UNSENT_MAX;
                            unsent.drain(..over);
                            tracing::warn!(appointment_id = %apt, dropped = over, "cluster: Redis is away too long; the oldest messages for members on other nodes are dropped");
                        }
                    }
                }
            }
            for (conn, out) in local_out {
                if let ConnSink::Local { tx, kill } = &conn.sink {
                    match tx.try_send(out) {
                        Ok(()) | Err(flume::TrySendError::Disconnected(_)) => {}
                        Err(flume::TrySendError::Full(_)) => kill.notify_one(),
                    }
                }
            }
            for (tx, joined) in local_replies {
                let _ = tx.send(joined);
            }
            if let Some(f) = room.finished() {
                tracing::info!(appointment_id = %apt, %session_id, reason = ?f, "session room closed");
                break;
            }
            if release {
                // Stopping: the state is saved; let another node take the room at once.
                let mut c = self.conn();
                let _: redis::RedisResult<i64> = redis::Script::new(RELEASE)
                    .key(self.shared.keys.owner(apt))
                    .arg(&owner)
                    .invoke_async(&mut c)
                    .await;
                tracing::info!(appointment_id = %apt, "cluster: handed the room over");
                break;
            }
        }
        self.shared.owned.lock().expect("owned lock").remove(&apt);
    }

    fn apply_wire(&self, room: &mut Room, cmd: WireCmd, replies: &mut Vec<(Reply, Conn, Joined)>) {
        let conn_of = |r: ConnRef| Conn::remote(r.id, r.node.as_str().into());
        let cmd = match cmd {
            WireCmd::Join {
                grant,
                conn,
                resume,
                reset,
            } => RoomCmd::Join(JoinCmd {
                grant,
                conn: conn_of(conn),
                resume,
                reset,
                reply: Reply::Remote,
            }),
            WireCmd::Msg { pid, conn, msg } => RoomCmd::Msg {
                pid,
                conn: conn_of(conn),
                msg,
            },
            WireCmd::Disconnected { pid, conn_id } => RoomCmd::Disconnected { pid, conn_id },
            WireCmd::SetAutoAdmit(on) => RoomCmd::SetAutoAdmit(on),
            WireCmd::Remove(u) => RoomCmd::Remove(u),
            WireCmd::Finish(r) => RoomCmd::Finish(r),
            WireCmd::ConnGone { conn_id } => RoomCmd::ConnGone(conn_id),
        };
        apply(room, cmd, replies);
    }

    /// Renew the room's lease: `Ok(true)` renewed, `Ok(false)` another node's now,
    /// `Err(Some(v))` Redis had lost it and it is ours again as `v`, `Err(None)` Redis does
    /// not answer.
    async fn renew(&self, apt: Uuid, owner: &str) -> Result<bool, Option<String>> {
        let mut c = self.conn();
        // The room's task waits for this: a Redis that does not answer (a partition) gets
        // a third of a lease, not the client's whole timeout.
        let r: redis::RedisResult<i64> = tokio::time::timeout(
            self.shared.lease / 3,
            redis::Script::new(RENEW)
                .key(self.shared.keys.owner(apt))
                .arg(owner)
                .arg(ms(self.shared.lease))
                .invoke_async(&mut c),
        )
        .await
        .unwrap_or_else(|_| Err((redis::ErrorKind::Io, "no answer in time").into()));
        match self.ok(r) {
            Ok(1) => Ok(true),
            Ok(-1) => self.reclaim(apt, owner).await,
            Ok(_) => Ok(false),
            Err(_) => Err(None),
        }
    }

    /// The room's lease is gone from Redis (it restarted and lost it) while this node holds
    /// the room: claim it again. `Err(Some(v))` ours again as `v`, `Ok(false)` another
    /// node claimed it meanwhile, `Err(None)` Redis does not answer.
    async fn reclaim(&self, apt: Uuid, owner: &str) -> Result<bool, Option<String>> {
        let mut c = self.conn();
        let fence = owner.rsplit(':').next().unwrap_or_default();
        let r: redis::RedisResult<Option<String>> = redis::Script::new(RECLAIM)
            .key(self.shared.keys.owner(apt))
            .key(self.shared.keys.fence(apt))
            .arg(fence)
            .arg(&*self.shared.me)
            .arg(ms(self.shared.lease))
            .invoke_async(&mut c)
            .await;
        match self.ok(r) {
            Ok(Some(value)) => {
                tracing::info!(appointment_id = %apt, "cluster: the room's lease had vanished (Redis restarted?); claimed it again");
                Err(Some(value))
            }
            // Another node claimed the room meanwhile (this one stalled past its lease).
            Ok(None) => Ok(false),
            Err(_) => Err(None),
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn commit(
        &self,
        apt: Uuid,
        owner: &str,
        state: &[u8],
        pos: &str,
        finished: bool,
        remote: &[(String, Vec<u8>)],
    ) -> redis::RedisResult<Commit> {
        let keys = &self.shared.keys;
        let script = redis::Script::new(COMMIT);
        let mut inv = script.prepare_invoke();
        inv.key(keys.owner(apt))
            .key(keys.state(apt))
            .key(keys.commands(apt))
            .key(keys.rooms())
            .key(keys.pos(apt))
            .key(keys.fence(apt))
            .arg(owner)
            .arg(ms(self.shared.lease))
            .arg(state)
            .arg(pos)
            .arg(if finished { "1" } else { "0" })
            .arg(apt.to_string())
            .arg(remote.len());
        for (stream, payload) in remote {
            inv.arg(stream).arg(payload.as_slice());
        }
        let mut c = self.conn();
        let started = Instant::now();
        let r: redis::RedisResult<i64> = inv.invoke_async(&mut c).await;
        if r.is_ok() {
            let bus = &stats::STATS.bus;
            bus.commit_seconds.observe(started.elapsed());
            stats::add(&bus.commits, 1);
            stats::add(&bus.deliveries_sent, remote.len() as u64);
        }
        self.ok(r).map(|n| match n {
            1 => Commit::Done,
            -1 => Commit::LeaseGone,
            _ => Commit::NotOurs,
        })
    }
}

/// A room this node gives up (another node owns it now): its members connected here are
/// told to reconnect, and resume with the new owner.
fn rejoin_local_members(room: &mut Room) {
    room.take_effects();
    for conn in room.member_conns() {
        if let ConnSink::Local { tx, .. } = &conn.sink {
            let _ = tx.try_send(Outbound::Close(crate::room::Closing::Rejoin));
        }
    }
}

/// What an owner's commit came to.
enum Commit {
    Done,
    /// Another node holds the room's lease: this one gives the room up.
    NotOurs,
    /// The lease is gone from Redis (a restart): claim it again and commit everything.
    LeaseGone,
}

/// A member's link to a room owned on another node: its command stream.
struct StreamLink {
    router: RedisRouter,
    appointment_id: Uuid,
}

#[async_trait::async_trait]
impl RemoteLink for StreamLink {
    async fn message(
        &self,
        pid: ParticipantId,
        conn: &Conn,
        msg: &ClientMessage,
    ) -> Result<(), LinkError> {
        let cmd = WireCmd::Msg {
            pid,
            conn: conn.reference(&self.router.shared.me),
            msg: msg.clone(),
        };
        self.router.send_command(self.appointment_id, &cmd).await
    }

    async fn disconnected(&self, pid: ParticipantId, conn_id: u64) -> Result<(), LinkError> {
        self.router
            .send_command(self.appointment_id, &WireCmd::Disconnected { pid, conn_id })
            .await
    }
}

#[async_trait::async_trait]
impl Router for RedisRouter {
    async fn join(&self, req: JoinRequest) -> Result<(RoomLink, Joined), JoinFailure> {
        let apt = req.grant.appointment_id;
        let unavailable = |_| {
            JoinFailure::Unavailable(
                "the servers of this service cannot reach each other right now; try again in a moment"
                    .into(),
            )
        };
        if self
            .closed_since(&req.grant, req.verified_ms)
            .await
            .map_err(unavailable)?
        {
            return Err(JoinFailure::Closed);
        }
        let ConnSink::Local { tx, kill } = &req.conn.sink else {
            return Err(JoinFailure::Closed);
        };
        self.shared.conns.lock().expect("conns lock").insert(
            req.conn.id,
            LocalConn {
                tx: tx.clone(),
                kill: kill.clone(),
                backlog: None,
            },
        );
        for _ in 0..3 {
            // Owned here: straight to the room's task.
            if let Some(room) = self.owned_tx(apt) {
                let (reply, answer) = oneshot::channel();
                let cmd = Box::new(RoomCmd::Join(JoinCmd {
                    grant: req.grant.clone(),
                    conn: req.conn.clone(),
                    resume: req.resume,
                    reset: req.reset,
                    reply: Reply::Local(reply),
                }));
                if room.send_async(cmd).await.is_ok()
                    && let Ok(joined) = answer.await
                {
                    return Ok((RoomLink::Local(LocalLink::new(room)), joined));
                }
                continue;
            }
            let mut c = self.conn();
            let owner: Option<String> = self
                .ok(c.get(self.shared.keys.owner(apt)).await)
                .map_err(unavailable)?;
            if owner.is_none() {
                match self.claim(apt, Some(&req.grant)).await {
                    Ok(true) => continue,
                    // Another node claimed it first: join there.
                    Ok(false) => {}
                    Err(e) => {
                        tracing::warn!(appointment_id = %apt, error = %e, "cluster: could not claim a room");
                        return Err(JoinFailure::Unavailable(
                            "the servers of this service cannot reach each other right now; try again in a moment".into(),
                        ));
                    }
                }
            }
            // Owned elsewhere: through the room's command stream, and wait for the answer.
            let (reply, answer) = oneshot::channel();
            self.shared
                .pending
                .lock()
                .expect("pending lock")
                .insert(req.conn.id, reply);
            let cmd = WireCmd::Join {
                grant: req.grant.clone(),
                conn: req.conn.reference(&self.shared.me),
                resume: req.resume,
                reset: req.reset,
            };
            if self.send_command(apt, &cmd).await.is_err() {
                self.shared
                    .pending
                    .lock()
                    .expect("pending lock")
                    .remove(&req.conn.id);
                return Err(JoinFailure::Unavailable(
                    "the servers of this service cannot reach each other right now; try again in a moment".into(),
                ));
            }
            // The command waits in the stream for whichever node owns the room (the owner
            // now, or the one that takes it over if that owner died): no second attempt
            // with this connection, which the room would take for a second tab.
            let wait = self.shared.lease * 2 + JOIN_WAIT_EXTRA;
            if let Ok(Ok(joined)) = tokio::time::timeout(wait, answer).await {
                return Ok((self.link(apt), joined));
            }
            self.shared
                .pending
                .lock()
                .expect("pending lock")
                .remove(&req.conn.id);
            return Err(JoinFailure::Unavailable(
                "the session's server did not answer; try again in a moment".into(),
            ));
        }
        Err(JoinFailure::Unavailable(
            "the session's server did not answer; try again in a moment".into(),
        ))
    }

    async fn relink(&self, appointment_id: Uuid) -> Option<RoomLink> {
        if let Some(tx) = self.owned_tx(appointment_id) {
            return Some(RoomLink::Local(LocalLink::new(tx)));
        }
        self.room_exists(appointment_id)
            .await
            .then(|| self.link(appointment_id))
    }

    fn forget(&self, conn_id: u64) {
        self.shared
            .conns
            .lock()
            .expect("conns lock")
            .remove(&conn_id);
        self.shared
            .pending
            .lock()
            .expect("pending lock")
            .remove(&conn_id);
    }

    async fn end_room(&self, appointment_id: Uuid, reason: &str) {
        self.mark_closed(appointment_id, None).await;
        self.command(
            appointment_id,
            RoomCmd::Finish(reason.to_owned()),
            WireCmd::Finish(reason.to_owned()),
        )
        .await;
    }

    async fn set_auto_admit(&self, appointment_id: Uuid, on: bool) {
        self.command(
            appointment_id,
            RoomCmd::SetAutoAdmit(on),
            WireCmd::SetAutoAdmit(on),
        )
        .await;
    }

    async fn remove_account(&self, appointment_id: Uuid, user_id: Uuid) {
        self.mark_closed(appointment_id, Some(user_id)).await;
        self.command(
            appointment_id,
            RoomCmd::Remove(user_id),
            WireCmd::Remove(user_id),
        )
        .await;
    }

    async fn revoke(&self, user_id: Uuid, sign_ins: crate::SignIns) {
        let key = self.shared.keys.revocations();
        let sealed = self.shared.seal.seal(
            &Revocation {
                user_id,
                sign_ins,
                from: self.shared.me.to_string(),
            },
            &key,
        );
        if self.publish_revocation(&sealed).await.is_ok() {
            return;
        }
        // Redis is away: keep trying for a while in the background (the other nodes' hubs
        // refuse this account's new joins meanwhile; its open connections wait for this).
        tracing::warn!("cluster: a revocation could not reach Redis; retrying");
        let me = self.clone();
        tokio::spawn(async move {
            let deadline = Instant::now() + REVOCATION_RETRY;
            while Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(500)).await;
                if me.publish_revocation(&sealed).await.is_ok() {
                    return;
                }
            }
            tracing::error!(
                "cluster: a revocation never reached Redis; other nodes' connections of the account stay open until they close"
            );
        });
    }

    fn on_revoke(&self, f: RevokeFn) {
        let _ = self.shared.on_revoke.set(f);
    }

    /// Stopping: this node stops being alive (so its connections count as gone), saves and
    /// hands over every room it owns, and waits (up to 5 s) until they are handed over.
    async fn shutdown(&self) {
        let mut c = self.conn();
        let _: redis::RedisResult<i64> = c.del(self.shared.keys.alive(&self.shared.me)).await;
        let _ = self.shared.stopping.send(true);
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.room_count() > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn room_count(&self) -> usize {
        self.shared.owned.lock().expect("owned lock").len()
    }

    fn healthy(&self) -> bool {
        self.shared.healthy.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_values_open_only_in_their_place_and_across_processes_and_a_rotation() {
        let (old, new) = ([7u8; 32], [9u8; 32]);
        let a = Sealer::new(&[old]);
        let b = Sealer::new(&[old]);
        let sealed = a.seal(&"a signal", "alcove:room:1:in");
        assert!(!String::from_utf8_lossy(&sealed).contains("a signal"));
        // Another process with the same secret opens it; not for another place.
        assert_eq!(
            b.open::<String>(&sealed, "alcove:room:1:in").as_deref(),
            Some("a signal")
        );
        assert_eq!(b.open::<String>(&sealed, "alcove:room:2:in"), None);
        // Changed, it does not open.
        let mut bad = sealed.clone();
        *bad.last_mut().unwrap() ^= 1;
        assert_eq!(b.open::<String>(&bad, "alcove:room:1:in"), None);
        // Two processes never seal with the same key and nonce.
        let (x, y) = (a.seal(&1, "p"), b.seal(&1, "p"));
        assert_ne!(x[8..24], y[8..24], "each process has its own salt");
        // A rotation: the new secret seals, the old still opens.
        let rotated = Sealer::new(&[new, old]);
        assert_eq!(
            rotated
                .open::<String>(&sealed, "alcove:room:1:in")
                .as_deref(),
            Some("a signal")
        );
        let fresh = rotated.seal(&"after", "p");
        assert_eq!(
            a.open::<String>(&fresh, "p"),
            None,
            "the old key alone cannot"
        );
        assert_eq!(
            Sealer::new(&[new]).open::<String>(&fresh, "p").as_deref(),
            Some("after")
        );
    }

    #[test]
    fn stream_ids_compare_by_time_then_sequence() {
        assert!(stream_id_after("1700000000001-0", "1700000000000-5"));
        assert!(stream_id_after("1700000000000-6", "1700000000000-5"));
        assert!(!stream_id_after("1700000000000-5", "1700000000000-5"));
        assert!(!stream_id_after("0-0", "1-0"));
    }
}
