// A short code both people can read to each other to check that no one sits in the middle
// of the call: a short authentication string (SAS) as in ZRTP and Bluetooth numeric
// comparison.
//
// The code covers the two DTLS certificate fingerprints (each side's own, from the
// `a=fingerprint:` lines of the SDP) and two random nonces, exchanged over a data channel of
// the call (inside its DTLS) by commit-then-reveal:
//
//   initiator -> responder   commit  c = SHA-256("alcove-sas-commit-v1" 0 nI)
//   responder -> initiator   nonce   nR (in clear, only once the commitment has arrived)
//   initiator -> responder   reveal  nI (only once nR has arrived; the responder checks c)
//   code = first 32 bits of SHA-256("alcove-sas-v1" 0 fpI 0 fpR 0 nI nR) mod 10^6
//
// The initiator is the side whose own fingerprint sorts first, so both sides agree on the
// roles from what they both see, whoever made the offer. Why it holds: a server in the middle
// of the signalling presents its own certificate to each side. Without the nonces it could
// pick its certificates after seeing the real ones and try a million of them until both
// sides' codes match. With them, each honest side's code depends on a random nonce fixed
// after the man in the middle had to commit to his own on that side's link (the responder's
// nonce comes after the initiator's commitment; the initiator's nonce is hidden in its
// commitment until the responder's nonce is out), so whatever he does he has one chance in a
// million per call that the two codes agree, and no way to search for a better one.

export const PROTOCOL = 'alcove-sas-v1';
const COMMIT_LABEL = 'alcove-sas-commit-v1';
const NONCE_BYTES = 32;

const encoder = new TextEncoder();

function subtle() {
  const c = globalThis.crypto;
  return c && c.subtle ? c.subtle : null;
}

export function toHex(bytes) {
  return [...bytes].map((b) => b.toString(16).padStart(2, '0')).join('');
}

export function fromHex(hex) {
  if (typeof hex !== 'string' || hex.length % 2 || !/^[0-9a-f]*$/.test(hex)) return null;
  const out = new Uint8Array(hex.length / 2);
  for (let i = 0; i < out.length; i += 1) out[i] = parseInt(hex.slice(i * 2, i * 2 + 2), 16);
  return out;
}

function concat(...parts) {
  const len = parts.reduce((n, p) => n + p.length, 0);
  const out = new Uint8Array(len);
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

const ZERO = new Uint8Array([0]);

async function sha256(bytes) {
  return new Uint8Array(await subtle().digest('SHA-256', bytes));
}

/**
 * The one certificate fingerprint of an SDP, or null. Every `a=fingerprint:` line counts
 * (one per media section in a normal SDP, all the same): a browser may use another line than
 * the first, so SDP that carries two different fingerprints has no code at all rather than a
 * code for a certificate that may not be the one in use.
 */
export function fingerprintOf(sdp) {
  if (!sdp) return null;
  const seen = new Set();
  for (const m of sdp.matchAll(/^a=fingerprint:\s*(\S+)\s+([0-9A-Fa-f:]+)\s*$/gm)) {
    seen.add(`${m[1].toLowerCase()} ${m[2].toUpperCase()}`);
  }
  return seen.size === 1 ? [...seen][0] : null;
}

/** The commitment to a nonce. */
export async function commitmentOf(nonce) {
  return toHex(await sha256(concat(encoder.encode(COMMIT_LABEL), ZERO, nonce)));
}

/** "123 456" from the two fingerprints and nonces, initiator's first. */
export async function codeOf(fpInitiator, fpResponder, nonceInitiator, nonceResponder) {
  const digest = await sha256(concat(
    encoder.encode(PROTOCOL), ZERO, encoder.encode(fpInitiator), ZERO, encoder.encode(fpResponder), ZERO,
    nonceInitiator, nonceResponder,
  ));
  const n = new DataView(digest.buffer).getUint32(0) % 1_000_000;
  const s = String(n).padStart(6, '0');
  return `${s.slice(0, 3)} ${s.slice(3)}`;
}

function randomNonce() {
  const n = new Uint8Array(NONCE_BYTES);
  globalThis.crypto.getRandomValues(n);
  return n;
}

/**
 * The runs of the exchange with one peer over the whole call, across rebuilt connections.
 * Each run is one chance for a man in the middle; one that starts and never finishes (the
 * connection rebuilt mid-way, a reveal withheld, a timeout) is how he would try again, so
 * it is counted, and the page says so for the rest of the call.
 */
export class VerificationHistory {
  constructor() {
    this.started = 0;
    this.finished = 0;
    this.failed = 0;
    this.current = null;
  }

  /** A new run begins (on a new connection): the previous one, if unfinished, was broken off. */
  begin(run) {
    if (this.current) this.current.close();
    this.current = run;
    this.started += 1;
  }

  finish() {
    this.finished += 1;
  }

  fail() {
    this.failed += 1;
  }

  /** Runs that started and never gave a code (broken off or failed). */
  get interrupted() {
    const running = this.current && !['done', 'failed', 'unavailable'].includes(this.current.state) ? 1 : 0;
    return this.started - this.finished - running;
  }

  /** Whether codes shown for this peer deserve a warning. */
  get suspicious() {
    return this.interrupted > 0;
  }
}

/**
 * One run of the exchange on one peer connection. `send(obj)` puts a message on the data
 * channel; `receive(obj)` takes one from it. `done(code)` is called once, when the code is
 * known; `failed(reason)` when the other side broke the protocol (a reveal that does not
 * match its commitment, messages out of order): then there is no code, and the page says the
 * connection could not be verified.
 */
/** How long an exchange may take, from its start, before it counts as broken off. */
export const EXCHANGE_TIMEOUT_MS = 10_000;

export class Verification {
  constructor({ localFingerprint, remoteFingerprint, remoteSource = null, send, done = () => {}, failed = () => {}, nonce = randomNonce, timeoutMs = EXCHANGE_TIMEOUT_MS }) {
    this.local = localFingerprint;
    this.remote = remoteFingerprint;
    this.remoteSource = remoteSource;
    this.send = send;
    this.done = done;
    this.failedCb = failed;
    this.makeNonce = nonce;
    this.timeoutMs = timeoutMs;
    this.timer = null;
    this.state = 'new';
    this.code = null;
    this.failure = null;
    this.localNonce = null;
    this.remoteNonce = null;
    this.commitment = null;
    if (!this.local || !this.remote || this.local === this.remote || !subtle()) {
      this.role = null;
      this.state = 'unavailable';
    } else {
      this.role = this.local < this.remote ? 'initiator' : 'responder';
    }
  }

  /** Begin: the initiator commits; the responder waits for the commitment. */
  async start() {
    if (this.state !== 'new') return;
    // An exchange that does not finish in time failed: a man in the middle who learned
    // what one side would show and did not like it can stop, but not silently.
    if (this.timeoutMs > 0) {
      this.timer = setTimeout(() => this.fail('the exchange did not finish in time'), this.timeoutMs);
    }
    this.localNonce = this.makeNonce();
    if (this.role === 'initiator') {
      this.state = 'committed';
      this.commitment = await commitmentOf(this.localNonce);
      this.send({ type: 'commit', v: 1, c: this.commitment });
    } else {
      this.state = 'waiting-commit';
    }
  }

  /** The connection is going away: stop the timer (an unfinished run stays unfinished). */
  close() {
    clearTimeout(this.timer);
    this.timer = null;
  }

  fail(reason) {
    if (this.state === 'failed' || this.state === 'done') return;
    clearTimeout(this.timer);
    this.state = 'failed';
    this.failure = reason;
    this.failedCb(reason);
  }

  async finish() {
    const [fpI, fpR, nI, nR] = this.role === 'initiator'
      ? [this.local, this.remote, this.localNonce, this.remoteNonce]
      : [this.remote, this.local, this.remoteNonce, this.localNonce];
    const code = await codeOf(fpI, fpR, nI, nR);
    if (this.state === 'failed') return; // timed out meanwhile
    clearTimeout(this.timer);
    this.code = code;
    this.state = 'done';
    this.done(this.code);
  }

  /** A message from the other side. */
  async receive(msg) {
    if (!msg || msg.v !== 1) return this.fail('unknown message');
    if (this.state === 'new') await this.start();
    const nonce = () => {
      const n = fromHex(msg.n);
      return n && n.length === NONCE_BYTES ? n : null;
    };
    if (this.role === 'responder' && this.state === 'waiting-commit' && msg.type === 'commit') {
      if (typeof msg.c !== 'string' || !/^[0-9a-f]{64}$/.test(msg.c)) return this.fail('bad commitment');
      this.commitment = msg.c;
      this.state = 'waiting-reveal';
      // Our nonce goes out only now, after their commitment fixed theirs.
      this.send({ type: 'nonce', v: 1, n: toHex(this.localNonce) });
      return undefined;
    }
    if (this.role === 'initiator' && this.state === 'committed' && msg.type === 'nonce') {
      const n = nonce();
      if (!n) return this.fail('bad nonce');
      this.remoteNonce = n;
      this.state = 'revealing';
      this.send({ type: 'reveal', v: 1, n: toHex(this.localNonce) });
      return this.finish();
    }
    if (this.role === 'responder' && this.state === 'waiting-reveal' && msg.type === 'reveal') {
      const n = nonce();
      if (!n) return this.fail('bad nonce');
      if (await commitmentOf(n) !== this.commitment) return this.fail('the reveal does not match its commitment');
      this.remoteNonce = n;
      return this.finish();
    }
    return this.fail(`unexpected ${msg.type} (${this.role}, ${this.state})`);
  }

  /** What was exchanged (nonces are public once revealed), for tests and support. */
  transcript() {
    return {
      protocol: PROTOCOL,
      role: this.role,
      state: this.state,
      localFingerprint: this.local,
      remoteFingerprint: this.remote,
      // Where the remote fingerprint came from: the DTLS handshake's certificate, or the SDP.
      remoteSource: this.remoteSource,
      localNonce: this.localNonce && this.state === 'done' ? toHex(this.localNonce) : null,
      remoteNonce: this.remoteNonce ? toHex(this.remoteNonce) : null,
      commitment: this.commitment,
      code: this.code,
      failure: this.failure,
    };
  }
}
