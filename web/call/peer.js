// One RTCPeerConnection to one other participant (the call is a full mesh: one of these per
// admitted peer, up to three).
//
// Negotiation follows the W3C "perfect negotiation" pattern: both sides add their tracks and
// offer whenever `negotiationneeded` fires; when two offers cross, the *polite* side (the
// server tells each of us which side we play, per peer) rolls back and answers, and the
// impolite side ignores the other offer. Signals for one peer are handled strictly one after
// another (a promise chain), so the state checks below see a consistent signalingState.

import { Verification, VerificationHistory, fingerprintOf } from './verify.js';
import { QualitySampler } from './stats.js';

// `localStorage.setItem('alcove.debug', '1')` logs the negotiation to the console.
const DEBUG = (() => { try { return !!localStorage.getItem('alcove.debug'); } catch { return false; } })();
const debug = (...args) => { if (DEBUG) console.info('[alcove]', ...args); };

/**
 * "sha-256 AB:CD:…" of the certificate the other side used in the DTLS handshake, where the
 * browser shows it (RTCDtlsTransport.getRemoteCertificates); null elsewhere.
 */
async function dtlsRemoteFingerprint(pc) {
  try {
    const transport = pc.sctp && pc.sctp.transport;
    const certs = transport && typeof transport.getRemoteCertificates === 'function' ? transport.getRemoteCertificates() : [];
    if (!certs || !certs.length || !(globalThis.crypto && crypto.subtle)) return null;
    const digest = new Uint8Array(await crypto.subtle.digest('SHA-256', certs[0]));
    return `sha-256 ${[...digest].map((b) => b.toString(16).padStart(2, '0').toUpperCase()).join(':')}`;
  } catch {
    return null;
  }
}

export class PeerLink {
  /**
   * @param session the CallSession (sends signals, knows the local tracks and ICE config)
   * @param info {participant_id, role, display_name, polite}
   */
  constructor(session, info) {
    this.session = session;
    this.id = info.participant_id;
    this.info = info;
    this.polite = !!info.polite;
    this.pc = null;
    this.dc = null;
    this.pending = []; // signals that arrived before our media (and so our pc) was ready
    this.queue = Promise.resolve();
    this.reconnecting = false; // the peer's signalling dropped (peer_reconnecting)
    this.code = null;
    this.verification = null;
    // Every run of the verification exchange with this peer, across rebuilt connections.
    this.history = new VerificationHistory();
    this.remoteStream = new MediaStream();
    this.senders = {};
    this.sampler = new QualitySampler();
    this.quality = null;
    this.disconnectTimer = null;
    this.generation = 0;
  }

  get started() {
    return !!this.pc;
  }

  /** Create the RTCPeerConnection (once our local media is ready) and replay held signals. */
  start() {
    if (this.pc) return;
    this.create();
    const held = this.pending;
    this.pending = [];
    for (const msg of held) this.enqueue(msg);
  }

  create() {
    this.generation += 1;
    const gen = this.generation;
    const pc = new RTCPeerConnection(this.session.rtcConfig());
    this.pc = pc;
    this.makingOffer = false;
    this.offerInFlight = null;
    this.negotiated = false;
    this.ignoreOffer = false;
    this.settingRemoteAnswer = false;
    clearTimeout(this.firstOfferTimer);
    this.code = null;
    this.verification = null;
    this.sampler = new QualitySampler();
    this.remoteStream = new MediaStream();
    this.senders = {};

    for (const track of this.session.outgoingTracks()) {
      this.senders[track.kind] = pc.addTrack(track, this.session.outStream);
    }

    // Chat: a negotiated data channel with the same id on both sides, so neither has to
    // wait for the other to announce it. Messages go peer to peer, never through the server.
    const dc = pc.createDataChannel('chat', { negotiated: true, id: 0, ordered: true });
    this.dc = dc;
    dc.onopen = () => this.session.peerChanged(this);
    dc.onclose = () => this.session.peerChanged(this);
    dc.onmessage = (ev) => this.session.chatReceived(this, ev.data);

    const current = () => gen === this.generation && this.pc === pc;

    // The verification code's commit-then-reveal exchange (call/verify.js), on a channel of
    // its own inside this connection's DTLS. It starts once the channel is open and both
    // fingerprints are known: ours from our own description, theirs from the certificate
    // the DTLS handshake actually used when the browser shows it (else from their
    // description). Messages that arrive before then wait; all are handled in order.
    const vc = pc.createDataChannel('verify', { negotiated: true, id: 1, ordered: true });
    this.vc = vc;
    let verifyQueue = Promise.resolve();
    let early = [];
    let starting = false;
    let tries = 0;
    const later = (fn) => {
      verifyQueue = verifyQueue.then(fn).catch((err) => console.warn('verification:', err && err.name));
    };
    const tryStart = async () => {
      if (!current() || this.verification || starting || vc.readyState !== 'open') return;
      starting = true;
      try {
        const local = fingerprintOf((pc.currentLocalDescription || pc.localDescription || {}).sdp);
        const fromDtls = await dtlsRemoteFingerprint(pc);
        const remote = fromDtls
          || fingerprintOf((pc.currentRemoteDescription || pc.remoteDescription || {}).sdp);
        if (!current() || this.verification) return;
        if (!local || !remote) {
          // Not readable yet (a description in flux): again when stable, or in a second.
          if (tries < 10) {
            tries += 1;
            setTimeout(() => later(tryStart), 1000);
          }
          return;
        }
        this.verification = new Verification({
          localFingerprint: local,
          remoteFingerprint: remote,
          remoteSource: fromDtls ? 'dtls' : 'sdp',
          send: (m) => {
            if (vc.readyState === 'open') vc.send(JSON.stringify(m));
            else console.warn('verify channel not open for', m.type, vc.readyState);
          },
          done: (code) => {
            this.history.finish();
            if (current()) this.setCode(code);
          },
          failed: (why) => {
            this.history.fail();
            console.warn('verification failed:', why);
            if (current()) this.session.peerChanged(this, 'code');
          },
        });
        this.history.begin(this.verification);
        if (this.history.suspicious) this.session.peerChanged(this, 'code');
        await this.verification.start();
        const waiting = early;
        early = [];
        for (const m of waiting) await this.verification.receive(m);
      } finally {
        starting = false;
      }
    };
    vc.onopen = () => later(tryStart);
    vc.onmessage = (ev) => {
      if (!current()) return;
      let msg = null;
      try { msg = JSON.parse(ev.data); } catch { /* not ours */ }
      later(async () => {
        if (this.verification) await this.verification.receive(msg);
        else {
          early.push(msg);
          await tryStart();
        }
      });
    };
    pc.onsignalingstatechange = () => {
      if (current() && pc.signalingState === 'stable') later(tryStart);
    };

    // Glare on a brand-new connection (both sides offering at once) is legal in perfect
    // negotiation, but Chrome can end up with an ICE agent that never gathers when the
    // polite side's very first offer is rolled back while it is being applied. So on a fresh
    // connection the polite side lets the impolite side make the first offer, and only
    // offers itself if none came within a few seconds.
    pc.onnegotiationneeded = () => {
      if (!current()) return;
      if (this.polite && !this.negotiated) {
        clearTimeout(this.firstOfferTimer);
        this.firstOfferTimer = setTimeout(() => {
          if (current() && !this.negotiated && pc.signalingState === 'stable') this.makeOffer(pc, gen);
        }, 2500);
        return;
      }
      this.makeOffer(pc, gen);
    };

    pc.onicecandidate = ({ candidate }) => {
      // A null candidate means "done gathering": nothing to send.
      if (!current() || !candidate || !candidate.candidate) return;
      const c = candidate.toJSON();
      const out = { candidate: c.candidate };
      if (c.sdpMid !== null && c.sdpMid !== undefined) out.sdpMid = c.sdpMid;
      if (c.sdpMLineIndex !== null && c.sdpMLineIndex !== undefined) out.sdpMLineIndex = c.sdpMLineIndex;
      if (c.usernameFragment) out.usernameFragment = c.usernameFragment;
      this.signal({ candidate: out });
    };

    pc.ontrack = ({ track }) => {
      if (!current()) return;
      // Keep one track of each kind: a renegotiated camera replaces the old one.
      for (const old of this.remoteStream.getTracks()) {
        if (old.kind === track.kind && old !== track) this.remoteStream.removeTrack(old);
      }
      if (!this.remoteStream.getTracks().includes(track)) this.remoteStream.addTrack(track);
      track.onunmute = () => this.session.peerChanged(this);
      this.session.peerChanged(this, 'track');
    };

    pc.onconnectionstatechange = () => {
      if (!current()) return;
      if (pc.connectionState === 'connected') this.session.peerConnected(this);
      this.session.peerChanged(this);
    };

    pc.oniceconnectionstatechange = () => {
      if (!current()) return;
      const s = pc.iceConnectionState;
      debug('ice', s, this.id.slice(0, 8));
      clearTimeout(this.disconnectTimer);
      if (s === 'failed') {
        // The network path broke (new Wi-Fi, mobile data): look for a new one.
        pc.restartIce();
      } else if (s === 'disconnected') {
        // Often recovers by itself within a few seconds; if not, restart ICE.
        this.disconnectTimer = setTimeout(() => {
          if (current() && pc.iceConnectionState === 'disconnected') pc.restartIce();
        }, 5000);
      }
      this.session.peerChanged(this);
    };

  }

  async makeOffer(pc, gen) {
    if (gen !== this.generation || this.pc !== pc) return;
    let done;
    this.offerInFlight = new Promise((resolve) => { done = resolve; });
    try {
      this.makingOffer = true;
      await pc.setLocalDescription();
      if (gen === this.generation && pc.localDescription) this.signal({ description: pc.localDescription.toJSON() });
    } catch (err) {
      // The name only: a browser's message may quote an SDP line (an address) verbatim.
      console.warn('negotiation failed:', err && err.name);
      debug('negotiation failed', err);
    } finally {
      this.makingOffer = false;
      this.offerInFlight = null;
      done();
    }
  }

  /** The peer started over (reload, other tab): drop our connection and build a new one. */
  recreate() {
    debug('recreate connection to', this.id.slice(0, 8));
    this.teardown();
    this.create();
    this.session.peerChanged(this, 'reset');
  }

  signal(payload) {
    debug('send', payload.description ? payload.description.type : 'candidate', 'to', this.id.slice(0, 8), this.pc && this.pc.signalingState);
    this.session.sendSignal(this.id, payload);
  }

  /** Queue an incoming `signal` message; handled one at a time, in order. */
  enqueue(msg) {
    if (!this.pc) {
      this.pending.push(msg);
      if (this.pending.length > 200) this.pending.shift();
      return;
    }
    this.queue = this.queue
      .then(() => this.handle(msg))
      .catch((err) => {
        console.warn('a signal could not be applied:', err && err.name);
        debug('signal from', this.id.slice(0, 8), 'failed', err);
      });
  }

  async handle({ description, candidate }) {
    if (!this.pc) return; // closed meanwhile
    debug('recv', description ? description.type : 'candidate', 'from', this.id.slice(0, 8), 'state', this.pc.signalingState, 'makingOffer', this.makingOffer, 'polite', this.polite);
    if (description) {
      // An offer carrying a different certificate than the connection we have comes from a
      // brand-new RTCPeerConnection on their side (they reloaded and we missed the notice):
      // start over on ours too.
      if (description.type === 'offer' && this.pc.remoteDescription && this.pc.remoteDescription.sdp) {
        const before = fingerprintOf(this.pc.remoteDescription.sdp);
        const now = fingerprintOf(description.sdp);
        if (before && now && before !== now) this.recreate();
      }
      // Polite and in the middle of creating our own offer: let that finish first, then
      // roll it back by applying theirs (as the pattern intends).
      if (description.type === 'offer' && this.polite && this.offerInFlight) await this.offerInFlight;
      if (!this.pc) return;
      const pc = this.pc;
      const readyForOffer = !this.makingOffer && (pc.signalingState === 'stable' || this.settingRemoteAnswer);
      const collision = description.type === 'offer' && !readyForOffer;
      this.ignoreOffer = !this.polite && collision;
      if (this.ignoreOffer) return;
      if (description.type === 'answer' && pc.signalingState !== 'have-local-offer') return; // stale
      this.settingRemoteAnswer = description.type === 'answer';
      try {
        await pc.setRemoteDescription(description); // rolls back our own offer if needed (polite)
        this.negotiated = true;
        clearTimeout(this.firstOfferTimer);
      } finally {
        this.settingRemoteAnswer = false;
      }
      if (description.type === 'offer') {
        await pc.setLocalDescription();
        this.signal({ description: pc.localDescription.toJSON() });
      }
      // The code follows from the verify channel's exchange (see create()).
    } else if (candidate) {
      try {
        await this.pc.addIceCandidate(candidate);
      } catch (err) {
        // Candidates of an offer we ignored, or of a connection we replaced, fail harmlessly.
        if (!this.ignoreOffer) debug('candidate not added', err.message);
      }
    }
  }

  setCode(code) {
    if (code === this.code) return;
    // A code that replaces another one (the connection was rebuilt: a reload on their
    // side, or the server said to start over) must be compared again.
    if (code && this.lastCode && code !== this.lastCode) this.codeChanged = true;
    if (code) this.lastCode = code;
    this.code = code;
    this.session.peerChanged(this, 'code');
  }

  restartIce() {
    if (this.pc && this.pc.connectionState !== 'closed') this.pc.restartIce();
  }

  applyConfig(cfg) {
    if (!this.pc) return;
    try {
      this.pc.setConfiguration({ ...this.pc.getConfiguration(), ...cfg });
    } catch (err) {
      console.warn('setConfiguration failed', err);
    }
  }

  /** Send our current outgoing track of a kind (after a device switch or screen share). */
  async useTrack(track) {
    if (!this.pc || !track) return;
    const sender = this.senders[track.kind];
    if (sender && this.pc.getSenders().includes(sender)) {
      await sender.replaceTrack(track); // no renegotiation needed
    } else {
      this.senders[track.kind] = this.pc.addTrack(track, this.session.outStream); // renegotiates
    }
  }

  chatOpen() {
    return !!this.dc && this.dc.readyState === 'open';
  }

  sendChat(text) {
    if (!this.chatOpen()) return false;
    this.dc.send(text);
    return true;
  }

  async sampleQuality() {
    this.quality = await this.sampler.sample(this.pc);
    return this.quality;
  }

  status() {
    if (this.reconnecting) return 'reconnecting';
    if (!this.pc) return 'waiting';
    const s = this.pc.connectionState;
    if (s === 'connected') return 'connected';
    if (s === 'disconnected' || s === 'failed') return 'reconnecting';
    return 'connecting';
  }

  teardown() {
    clearTimeout(this.disconnectTimer);
    clearTimeout(this.firstOfferTimer);
    this.generation += 1;
    if (this.dc) {
      this.dc.onopen = this.dc.onclose = this.dc.onmessage = null;
      try { this.dc.close(); } catch { /* closed */ }
    }
    if (this.vc) {
      this.vc.onopen = this.vc.onmessage = null;
      try { this.vc.close(); } catch { /* closed */ }
    }
    this.vc = null;
    // An unfinished exchange stays unfinished (the history counts it as broken off).
    if (this.verification) this.verification.close();
    if (this.pc) {
      try { this.pc.close(); } catch { /* closed */ }
    }
    this.remoteStream.getTracks().forEach((t) => this.remoteStream.removeTrack(t));
    this.pc = null;
    this.dc = null;
  }

  close() {
    this.pending = [];
    this.teardown();
  }
}
