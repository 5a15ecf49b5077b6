//! Password hashing with Argon2id on a small pool of threads of its own.
//!
//! Each hash takes about 19 MiB of memory and tens of milliseconds of a core. Run on the
//! runtime's blocking pool, as before, an unauthenticated flood of sign-ins with random
//! emails started one thread and one 19 MiB block per request (hundreds at once), took every
//! core and gigabytes of memory, and the allocator kept the blocks afterwards. Now:
//!
//! - a fixed number of worker threads (`ALCOVE_HASH_WORKERS`, by default one per core) do
//!   all hashing; each owns its Argon2 memory, reused while jobs keep coming and given back
//!   to the system when it has none, so hashing needs `workers × 19 MiB` and never more, and
//!   a quiet server holds none of it;
//! - a short queue ([`QUEUE_PER_WORKER`] jobs per worker) holds what arrives while they are
//!   busy; when it is full the request is answered at once with [`PasswordError::Busy`]
//!   (503 `server_busy` with `Retry-After`), instead of waiting.

use argon2::{
    Algorithm, Argon2, Block, Params, Version,
    password_hash::phc::{Output, ParamsString, PasswordHash, Salt},
};
use secrecy::{ExposeSecret as _, SecretString};
use std::{sync::Arc, time::Duration};
use tokio::sync::oneshot;

/// Jobs that may wait for each worker before new ones are refused.
pub const QUEUE_PER_WORKER: usize = 4;

/// Why a hash could not be made or checked.
#[derive(Debug, thiserror::Error)]
pub enum PasswordError {
    /// Every worker is busy and the queue is full: try again in a moment.
    #[error("the server is busy checking passwords; try again in a moment")]
    Busy,
    #[error("hashing a password: {0}")]
    Failed(String),
}

enum Job {
    Hash {
        password: SecretString,
        reply: oneshot::Sender<Result<String, PasswordError>>,
    },
    Verify {
        password: SecretString,
        hash: Arc<str>,
        reply: oneshot::Sender<bool>,
    },
}

/// Hashes and verifies passwords.
///
/// Holds a hash of a random password, checked when an email is unknown, so that a sign-in
/// for an unknown account costs the same as one with a wrong password and its timing does
/// not tell which accounts exist.
#[derive(Clone)]
pub struct Passwords {
    jobs: flume::Sender<Job>,
    dummy_hash: Arc<str>,
    workers: usize,
}

impl std::fmt::Debug for Passwords {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Passwords")
            .field("workers", &self.workers)
            .finish()
    }
}

/// A worker's Argon2 memory: reused while sign-ins keep coming, given back to the operating
/// system once the worker has nothing left to do, so that a quiet server does not hold
/// `workers × 19 MiB` (resident memory after a morning's sign-ins stays near its idle size).
struct Memory(Vec<Block>);

/// Reserved beyond glibc's largest dynamic mmap threshold (32 MiB on 64-bit): the block is
/// then a mapping of its own, returned to the system when freed, and freeing it does not
/// raise the threshold (which would make the next block come from the heap, and stay). Only
/// the 19 MiB that Argon2 uses is ever touched, so only that is resident.
const RESERVE_BYTES: usize = 33 << 20;

impl Memory {
    fn blocks(&mut self, count: usize) -> &mut [Block] {
        if self.0.len() < count {
            let mut v = Vec::with_capacity(count.max(RESERVE_BYTES / std::mem::size_of::<Block>()));
            v.resize(count, Block::default());
            self.0 = v;
        }
        &mut self.0[..count]
    }

    fn release(&mut self) {
        self.0 = Vec::new();
    }
}

/// New hashes: Argon2id, m = 19 MiB, t = 2, p = 1 (OWASP's first choice; argon2's defaults).
fn params() -> Params {
    Params::default()
}

fn hash_with(password: &[u8], memory: &mut Memory) -> Result<String, PasswordError> {
    let fail = |e: &dyn std::fmt::Display| PasswordError::Failed(e.to_string());
    let params = params();
    let ctx = Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone());
    let mut salt = [0u8; 16];
    getrandom::fill(&mut salt).map_err(|e| fail(&e))?;
    let mut out = [0u8; 32];
    ctx.hash_password_into_with_memory(
        password,
        &salt,
        &mut out,
        memory.blocks(params.block_count()),
    )
    .map_err(|e| fail(&e))?;
    phc(&params, &salt, &out)
}

/// The PHC string of an Argon2id hash with `params`, `salt` and output `out`.
fn phc(params: &Params, salt: &[u8], out: &[u8]) -> Result<String, PasswordError> {
    let fail = |e: &dyn std::fmt::Display| PasswordError::Failed(e.to_string());
    let phc = PasswordHash {
        algorithm: Algorithm::Argon2id.ident(),
        version: Some(Version::V0x13.into()),
        params: ParamsString::try_from(params).map_err(|e| fail(&e))?,
        salt: Some(Salt::new(salt).map_err(|e| fail(&e))?),
        hash: Some(Output::new(out).map_err(|e| fail(&e))?),
    };
    Ok(phc.to_string())
}

/// What an unknown account is checked against: a hash with our parameters, a random salt
/// and a random output. Checking a password against it costs exactly what checking a real
/// hash costs (Argon2 runs in full with these parameters, then the outputs are compared),
/// and no password matches it; it needs no hashing to make (a whole Argon2 run at every
/// start, 40 ms of start to ready, before).
fn dummy_hash() -> Result<String, PasswordError> {
    let fail = |e: &dyn std::fmt::Display| PasswordError::Failed(e.to_string());
    let mut salt = [0u8; 16];
    let mut out = [0u8; 32];
    getrandom::fill(&mut salt).map_err(|e| fail(&e))?;
    getrandom::fill(&mut out).map_err(|e| fail(&e))?;
    phc(&params(), &salt, &out)
}

fn verify_with(password: &[u8], hash: &str, memory: &mut Memory) -> bool {
    let mut check = || -> Option<bool> {
        let parsed = PasswordHash::new(hash).ok()?;
        let algorithm = Algorithm::try_from(parsed.algorithm.as_str()).ok()?;
        let version = match parsed.version {
            Some(v) => Version::try_from(v).ok()?,
            None => Version::default(),
        };
        let params = Params::try_from(&parsed).ok()?;
        let salt = parsed.salt?;
        let expected = parsed.hash?;
        let mut out = vec![0u8; expected.len()];
        Argon2::new(algorithm, version, params.clone())
            .hash_password_into_with_memory(
                password,
                salt.as_ref(),
                &mut out,
                memory.blocks(params.block_count()),
            )
            .ok()?;
        // Output's equality is constant-time.
        Some(Output::new(&out).ok()? == expected)
    };
    check().unwrap_or(false)
}

/// How long a hashing thread keeps its memory without a job: sign-ins one after another
/// reuse it instead of mapping and clearing 19 MiB again each time.
const KEEP_MEMORY: Duration = Duration::from_millis(500);

fn work(jobs: flume::Receiver<Job>) {
    let mut memory = Memory(Vec::new());
    loop {
        let job = match jobs.try_recv() {
            Ok(job) => job,
            Err(flume::TryRecvError::Empty) => match jobs.recv_timeout(KEEP_MEMORY) {
                Ok(job) => job,
                Err(flume::RecvTimeoutError::Disconnected) => return,
                Err(flume::RecvTimeoutError::Timeout) => {
                    // Nothing for a while: give the memory back before sleeping.
                    memory.release();
                    match jobs.recv() {
                        Ok(job) => job,
                        Err(_) => return,
                    }
                }
            },
            Err(flume::TryRecvError::Disconnected) => return,
        };
        match job {
            Job::Hash { password, reply } => {
                let _ = reply.send(hash_with(password.expose_secret().as_bytes(), &mut memory));
            }
            Job::Verify {
                password,
                hash,
                reply,
            } => {
                let _ = reply.send(verify_with(
                    password.expose_secret().as_bytes(),
                    &hash,
                    &mut memory,
                ));
            }
        }
    }
}

/// Worker threads by default: one per core.
pub fn default_workers() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

impl Passwords {
    /// A pool with one worker per core.
    pub async fn new() -> anyhow::Result<Self> {
        Self::with_workers(default_workers()).await
    }

    /// A pool of `workers` threads (at least one).
    pub async fn with_workers(workers: usize) -> anyhow::Result<Self> {
        let workers = workers.max(1);
        let (tx, rx) = flume::bounded(workers * QUEUE_PER_WORKER);
        for i in 0..workers {
            let rx = rx.clone();
            std::thread::Builder::new()
                .name(format!("alcove-argon2-{i}"))
                .spawn(move || work(rx))?;
        }
        Ok(Self {
            jobs: tx,
            dummy_hash: dummy_hash().map_err(|e| anyhow::anyhow!("{e}"))?.into(),
            workers,
        })
    }

    fn submit(&self, job: Job) -> Result<(), PasswordError> {
        self.jobs.try_send(job).map_err(|e| match e {
            flume::TrySendError::Full(_) => PasswordError::Busy,
            flume::TrySendError::Disconnected(_) => {
                PasswordError::Failed("the hashing threads stopped".into())
            }
        })
    }

    /// Hash a new password.
    pub async fn hash(&self, password: &SecretString) -> Result<String, PasswordError> {
        let (reply, answer) = oneshot::channel();
        self.submit(Job::Hash {
            password: password.clone(),
            reply,
        })?;
        answer
            .await
            .map_err(|_| PasswordError::Failed("the hashing thread stopped".into()))?
    }

    /// Whether `password` matches `hash`; with no hash (unknown account) the work is done
    /// anyway against the dummy hash, and the answer is no.
    pub async fn verify(
        &self,
        password: &SecretString,
        hash: Option<&str>,
    ) -> Result<bool, PasswordError> {
        let (h, real): (Arc<str>, bool) = match hash {
            Some(h) => (Arc::from(h), true),
            None => (self.dummy_hash.clone(), false),
        };
        let (reply, answer) = oneshot::channel();
        self.submit(Job::Verify {
            password: password.clone(),
            hash: h,
            reply,
        })?;
        let ok = answer.await.unwrap_or(false);
        Ok(ok && real)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hash_and_verify() {
        let pw = Passwords::with_workers(1).await.unwrap();
        let secret = SecretString::from("correct horse battery");
        let h = pw.hash(&secret).await.unwrap();
        assert!(h.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{h}");
        assert!(pw.verify(&secret, Some(&h)).await.unwrap());
        assert!(
            !pw.verify(&SecretString::from("wrong horse battery"), Some(&h))
                .await
                .unwrap()
        );
        assert!(
            !pw.verify(&secret, None).await.unwrap(),
            "unknown account never verifies"
        );
        assert!(!pw.verify(&secret, Some("not a hash")).await.unwrap());
    }

    #[tokio::test]
    async fn hashes_made_by_the_argon2_crate_itself_verify() {
        use argon2::password_hash::PasswordHasher as _;
        let phc = Argon2::default()
            .hash_password(b"an older password")
            .unwrap()
            .to_string();
        let pw = Passwords::with_workers(1).await.unwrap();
        assert!(
            pw.verify(&SecretString::from("an older password"), Some(&phc))
                .await
                .unwrap()
        );
        // And ours verify with the crate's own verifier.
        use argon2::password_hash::PasswordVerifier as _;
        let ours = pw
            .hash(&SecretString::from("a newer password"))
            .await
            .unwrap();
        Argon2::default()
            .verify_password(b"a newer password", &PasswordHash::new(&ours).unwrap())
            .unwrap();
    }

    #[tokio::test]
    async fn a_full_queue_answers_busy_at_once() {
        let pw = Passwords::with_workers(1).await.unwrap();
        let secret = SecretString::from("correct horse battery");
        let jobs: Vec<_> = (0..20).map(|_| pw.verify(&secret, None)).collect();
        let results = futures_util::future::join_all(jobs).await;
        let busy = results
            .iter()
            .filter(|r| matches!(r, Err(PasswordError::Busy)))
            .count();
        // One running, QUEUE_PER_WORKER waiting: the rest are refused.
        assert!(busy >= 20 - 1 - QUEUE_PER_WORKER, "{busy} busy");
        assert!(results.iter().any(|r| matches!(r, Ok(false))));
    }
}
