// The live session of one appointment: the signalling WebSocket (docs/signaling.md), the
// waiting room or lobby, the peer connections, local media, chat and quality figures.
//
// Sessions live in a module-level map, not in a page: the therapist's dashboard opens the
// room to watch the waiting room, and when they admit someone the call page (another hash
// route of the same document) picks up the very same connection. A second connection would
// take over the first one (`error replaced`).

import { t } from '../lib/i18n.js';
import { api, ApiError } from '../lib/api.js';
import { currentUser } from '../lib/auth.js';
import { PeerLink } from './peer.js';
import { rate, forServer } from './stats.js';
import { stopStream, openTrack, savePrefs } from './media.js';

const sessions = new Map();
const bus = new EventTarget(); // "sessions changed", for the header and idle sign-out

const RECORD_PREFIX = 'alcove.call.';
const SUMMARY_PREFIX = 'alcove.summary.';
const RECONNECT_DELAYS = [300, 1000, 2000, 3000, 5000];
const QUALITY_EVERY_MS = 5000;
const STATS_EVERY = 2; // send `stats` every 2nd sample, ~10 s
const LIVE_PHASES = ['connecting', 'waiting', 'in-call', 'reconnecting'];

// Close codes (docs/signaling.md §6).
const CLOSE = {
  NORMAL: 1000, SERVICE_RESTART: 1012, INVALID_TOKEN: 4001, NOT_JOINABLE: 4003, REPLACED: 4009, ENDED: 4010, DENIED: 4011,
  SIGNED_OUT: 4014,
};

const signedOutMessage = () => t('session.signed_out_left');

function readRecord(id) {
  try {
    return JSON.parse(sessionStorage.getItem(RECORD_PREFIX + id) || 'null');
  } catch {
    return null;
  }
}

function writeRecord(id, rec) {
  try {
    if (rec) sessionStorage.setItem(RECORD_PREFIX + id, JSON.stringify(rec));
    else sessionStorage.removeItem(RECORD_PREFIX + id);
  } catch { /* storage full or off */ }
}

export function readSummary(id) {
  try {
    return JSON.parse(sessionStorage.getItem(SUMMARY_PREFIX + id) || 'null');
  } catch {
    return null;
  }
}

/** The signalling URL on this page's own origin (the CSP allows `connect-src 'self'`). */
function socketUrl(signalingUrl) {
  const given = new URL(signalingUrl, location.href);
  const scheme = location.protocol === 'https:' ? 'wss:' : 'ws:';
  return `${scheme}//${location.host}${given.pathname}`;
}

export class CallSession extends EventTarget {
  constructor(appointmentId) {
    super();
    this.appointmentId = appointmentId;
    this.phase = 'idle';
    this.endReason = null;
    this.failure = null;
    this.participantId = null;
    this.role = null;
    this.resumeToken = null;
    this.ice = { iceServers: [], iceTransportPolicy: 'all' };
    this.peers = new Map();
    this.lobby = [];
    this.position = null;
    this.notices = [];
    this.chat = [];
    this.ws = null;
    this.closed = false;
    this.admitted = false;
    this.outbox = [];
    this.attempts = 0;
    this.tokenFailures = 0;
    this.reconnectTimer = null;
    this.admitGuess = null;
    this.needReset = false;
    this.serverRestarting = false;
    this.appointment = null;

    // Local media: camera/microphone stream, screen track, and the stream we send.
    this.mediaAttached = false;
    this.camStream = null;
    this.screenTrack = null;
    this.outStream = new MediaStream();
    this.muted = false;
    this.cameraOff = false;

    const rec = readRecord(appointmentId);
    this.startedAt = rec && rec.startedAt ? rec.startedAt : null;
    this.qualityTimer = null;
    this.qualityTick = 0;
    this.quality = 'unknown';
    this.lastSample = null;

    this.onOnline = () => {
      if (this.phase === 'reconnecting') this.reconnectNow();
    };
    window.addEventListener('online', this.onOnline);
  }

  // ---- events ----------------------------------------------------------------------

  emit(type, detail = {}) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
    this.dispatchEvent(new CustomEvent('change', { detail: { type, ...detail } }));
    bus.dispatchEvent(new CustomEvent('change', { detail: { session: this, type } }));
  }

  setPhase(phase) {
    if (this.phase === phase) return;
    this.phase = phase;
    this.emit('phase', { phase });
  }

  get live() {
    return LIVE_PHASES.includes(this.phase);
  }

  // ---- connection ------------------------------------------------------------------

  /**
   * Connect. A session started on a fresh page load takes back its place with the stored
   * `resume_token` and `reset: true` (its peer connections were lost with the page).
   */
  connect() {
    if (this.closed || this.ws || this.phase !== 'idle') return;
    const rec = readRecord(this.appointmentId);
    if (rec && rec.resumeToken) {
      this.resumeToken = rec.resumeToken;
      this.needReset = true;
    }
    this.setPhase('connecting');
    this.openSocket();
  }

  async openSocket() {
    clearTimeout(this.reconnectTimer);
    // One attempt at a time: a second (the browser came back online meanwhile) would open a
    // second socket that takes the place over from the first.
    if (this.closed || this.opening) return;
    this.opening = true;
    let join;
    try {
      join = await api(`/appointments/${this.appointmentId}/join`, { method: 'POST' });
    } catch (err) {
      this.opening = false;
      if (this.closed) return;
      if (err instanceof ApiError && err.code === 'denied') {
        this.deny();
      } else if (err instanceof ApiError && err.code === 'relay_unavailable') {
        // Relay-only was chosen and there is no relay: never join directly instead.
        this.fail(err.code, t('session.no_relay'));
      } else if (err instanceof ApiError && (err.code === 'not_joinable' || err.status === 404 || err.status === 403 || err.status === 409)) {
        if (this.admitted || this.startedAt) this.finish('window_closed');
        else this.fail(err.code, err.detail || t('session.not_open'));
      } else if (err instanceof ApiError && err.status === 401) {
        this.fail('signed_out', t('session.signed_out'));
      } else {
        this.scheduleReconnect();
      }
      return;
    }
    this.opening = false;
    if (this.closed) return;
    this.ice = { iceServers: join.ice_servers || [], iceTransportPolicy: join.ice_transport_policy || 'all' };
    let ws;
    try {
      ws = new WebSocket(socketUrl(join.signaling_url));
    } catch (err) {
      this.scheduleReconnect();
      return;
    }
    this.ws = ws;
    ws.onopen = () => {
      const hello = { type: 'hello', token: join.token };
      if (this.resumeToken) hello.resume_token = this.resumeToken;
      if (this.needReset) hello.reset = true;
      ws.send(JSON.stringify(hello));
    };
    ws.onmessage = (ev) => {
      if (ws !== this.ws) return;
      let msg;
      try {
        msg = JSON.parse(ev.data);
      } catch {
        return;
      }
      try {
        this.onMessage(msg);
      } catch (err) {
        console.error('signalling message failed', msg.type, err);
      }
    };
    ws.onclose = (ev) => {
      if (ws !== this.ws) return;
      this.ws = null;
      this.onClose(ev);
    };
  }

  onClose(ev) {
    if (this.closed) return;
    switch (ev.code) {
      case CLOSE.SERVICE_RESTART:
        this.serverRestarting = true;
        break;
      case CLOSE.ENDED:
        if (this.phase !== 'ended') this.finish(this.endReason || 'ended');
        return;
      case CLOSE.DENIED:
        this.deny();
        return;
      case CLOSE.NOT_JOINABLE:
        if (this.admitted || this.startedAt) this.finish('window_closed');
        else this.fail('not_joinable', this.lastError || t('session.not_open'));
        return;
      case CLOSE.REPLACED:
        this.fail('replaced', t('session.replaced'));
        return;
      case CLOSE.SIGNED_OUT:
        // The sign-in ended on the server: no reconnecting with it.
        this.fail('signed_out', signedOutMessage());
        return;
      case CLOSE.INVALID_TOKEN:
        // Join tokens are single-use and short-lived; a fresh one usually fixes it.
        this.tokenFailures += 1;
        if (this.tokenFailures > 3) {
          this.fail('invalid_token', t('session.invalid_token'));
          return;
        }
        break;
      default:
        break;
    }
    this.scheduleReconnect();
  }

  scheduleReconnect() {
    if (this.closed) return;
    if (this.phase !== 'connecting') this.setPhase('reconnecting');
    const delay = RECONNECT_DELAYS[Math.min(this.attempts, RECONNECT_DELAYS.length - 1)];
    this.attempts += 1;
    clearTimeout(this.reconnectTimer);
    this.reconnectTimer = setTimeout(() => this.openSocket(), delay);
  }

  reconnectNow() {
    if (this.closed || this.ws || this.opening) return;
    clearTimeout(this.reconnectTimer);
    this.openSocket();
  }

  send(msg) {
    if (this.ws && this.ws.readyState === WebSocket.OPEN && this.participantId) {
      this.ws.send(JSON.stringify(msg));
      return true;
    }
    return false;
  }

  sendSignal(to, payload) {
    const msg = { type: 'signal', to, ...payload };
    // While reconnecting, keep signals and send them once we are back: a lost offer would
    // leave the pair stuck half-way through a negotiation.
    if (!this.send(msg)) {
      this.outbox.push(msg);
      if (this.outbox.length > 100) this.outbox.shift();
    }
  }

  // ---- messages from the server ----------------------------------------------------

  onMessage(msg) {
    switch (msg.type) {
      case 'welcome': return this.onWelcome(msg);
      case 'waiting':
        clearTimeout(this.admitGuess);
        this.admitted = false;
        this.position = msg.position;
        this.setPhase('waiting');
        this.emit('position', { position: msg.position });
        return undefined;
      case 'lobby':
        this.lobby = msg.waiting || [];
        this.emit('lobby', { waiting: this.lobby });
        return undefined;
      case 'admitted':
        clearTimeout(this.admitGuess);
        this.position = null;
        this.enterRoom(msg.peers || []);
        return undefined;
      case 'denied':
        this.deny();
        return undefined;
      case 'notice':
        this.notices.push({ text: msg.text, at: Date.now() });
        this.emit('notice', { text: msg.text });
        return undefined;
      case 'peer_joined':
        this.addPeer(msg);
        return undefined;
      case 'peer_left': {
        const link = this.peers.get(msg.participant_id);
        if (link) {
          link.close();
          this.peers.delete(msg.participant_id);
          this.emit('peer-left', { participantId: msg.participant_id, name: link.info.display_name, reason: msg.reason });
          this.emit('peers');
        }
        return undefined;
      }
      case 'peer_reconnecting': {
        const link = this.peers.get(msg.participant_id);
        if (link) {
          link.reconnecting = true;
          this.peerChanged(link);
        }
        return undefined;
      }
      case 'peer_resumed': {
        const link = this.peers.get(msg.participant_id);
        if (!link) return undefined;
        link.reconnecting = false;
        if (link.started) {
          if (msg.reset) link.recreate(); // they lost their connection: build a new one
          else link.restartIce(); // same connection, new network path
        }
        this.peerChanged(link);
        return undefined;
      }
      case 'signal': {
        const link = this.peers.get(msg.from);
        if (link) link.enqueue(msg);
        return undefined;
      }
      case 'ice_servers':
        this.ice = { iceServers: msg.ice_servers || [], iceTransportPolicy: msg.ice_transport_policy || 'all' };
        for (const link of this.peers.values()) link.applyConfig(this.rtcConfig());
        return undefined;
      case 'ended':
        this.endReason = msg.reason;
        this.finish(msg.reason);
        return undefined;
      case 'reconnect':
        // The server is restarting (a deploy): the session goes on. The socket closes next
        // (1012) and we reconnect and resume, keeping the call.
        this.serverRestarting = true;
        return undefined;
      case 'error':
        this.lastError = msg.message;
        console.warn('signalling error', msg.code, msg.message);
        if (msg.code === 'replaced') this.fail('replaced', t('session.replaced'));
        else if (msg.code === 'signed_out') this.fail('signed_out', signedOutMessage());
        else this.emit('server-error', { code: msg.code, message: msg.message });
        return undefined;
      default:
        return undefined;
    }
  }

  onWelcome(msg) {
    const wasReset = this.needReset;
    const continuing = msg.resumed && !wasReset;
    this.participantId = msg.participant_id;
    this.role = msg.role;
    this.resumeToken = msg.resume_token;
    this.attempts = 0;
    this.tokenFailures = 0;
    this.needReset = false;
    this.serverRestarting = false;
    if (msg.ice_servers) this.ice = { iceServers: msg.ice_servers, iceTransportPolicy: msg.ice_transport_policy || 'all' };
    writeRecord(this.appointmentId, { resumeToken: this.resumeToken, participantId: this.participantId, startedAt: this.startedAt });

    if (!msg.resumed || wasReset) {
      // A new participant (the grace period ran out), or a reload: old connections are void.
      for (const link of this.peers.values()) link.close();
      this.peers.clear();
      this.outbox = [];
    } else {
      // Back after a dropped socket: keep connections to peers still here.
      const still = new Set((msg.peers || []).map((p) => p.participant_id));
      for (const [id, link] of this.peers) {
        if (!still.has(id)) {
          link.close();
          this.peers.delete(id);
        }
      }
      for (const link of this.peers.values()) link.applyConfig(this.rtcConfig());
    }
    const queued = continuing ? this.outbox : [];
    this.outbox = [];
    for (const m of queued) this.send(m);

    if (msg.role === 'therapist' || (msg.peers && msg.peers.length)) {
      this.enterRoom(msg.peers || []);
    } else {
      // A client: the server follows with `waiting` when they are in the waiting room; with
      // auto-admit (or when resuming an admitted place in an empty room) nothing follows.
      this.setPhase('connecting');
      clearTimeout(this.admitGuess);
      this.admitGuess = setTimeout(() => {
        if (this.phase === 'connecting' && !this.closed) this.enterRoom([]);
      }, 700);
    }
    this.emit('welcome', { resumed: msg.resumed });
  }

  enterRoom(peers) {
    this.admitted = true;
    for (const p of peers) this.addPeer(p);
    this.setPhase('in-call');
    this.emit('peers');
    this.startQuality();
  }

  addPeer(info) {
    let link = this.peers.get(info.participant_id);
    if (link) {
      link.info = { ...link.info, ...info };
      link.polite = !!info.polite;
    } else {
      link = new PeerLink(this, info);
      this.peers.set(info.participant_id, link);
      if (this.mediaAttached) link.start();
    }
    this.emit('peers');
  }

  deny() {
    this.closed = true;
    this.teardown();
    writeRecord(this.appointmentId, null);
    this.setPhase('denied');
  }

  fail(code, message) {
    this.failure = { code, message };
    // Taken over by another tab: do not let the dashboard here take it back by itself
    // (the two tabs would keep replacing each other).
    if (code === 'replaced') markRoomLeft(this.appointmentId);
    this.closed = true;
    this.teardown();
    if (code !== 'replaced') writeRecord(this.appointmentId, null);
    this.setPhase('failed');
  }

  /** The session is over (ended by the therapist, window closed, or we left). */
  finish(reason) {
    if (this.phase === 'ended') return;
    this.endReason = reason;
    this.closed = true;
    const endedAt = Date.now();
    try {
      sessionStorage.setItem(SUMMARY_PREFIX + this.appointmentId, JSON.stringify({
        startedAt: this.startedAt,
        endedAt,
        reason,
        role: this.role,
        with: [...this.peers.values()].map((l) => l.info.display_name),
        seen: this.seenNames ? [...this.seenNames] : [],
      }));
    } catch { /* ignore */ }
    this.teardown();
    writeRecord(this.appointmentId, null);
    this.setPhase('ended');
  }

  // ---- therapist actions -------------------------------------------------------------

  admit(participantId) {
    return this.send({ type: 'admit', participant_id: participantId });
  }

  denyClient(participantId) {
    return this.send({ type: 'deny', participant_id: participantId });
  }

  sendNotice(text, participantId) {
    const msg = { type: 'notice', text };
    if (participantId) msg.participant_id = participantId;
    return this.send(msg);
  }

  /** End the session for everyone. */
  endForEveryone() {
    if (!this.send({ type: 'end' })) {
      this.leave();
      return;
    }
    // The server answers with `ended`; if it does not, leave anyway.
    setTimeout(() => { if (this.phase !== 'ended') this.finish('ended_by_therapist'); }, 4000);
  }

  /** Hang up: leave for good. */
  leave() {
    if (this.phase === 'ended') return;
    this.send({ type: 'leave' });
    this.finish('left');
  }

  // ---- media -------------------------------------------------------------------------

  rtcConfig() {
    return { iceServers: this.ice.iceServers, iceTransportPolicy: this.ice.iceTransportPolicy };
  }

  /** Attach local media (may be null: receive only) and start the peer connections. */
  attachMedia(stream) {
    this.camStream = stream || new MediaStream();
    this.outStream = new MediaStream(this.camStream.getTracks());
    this.mediaAttached = true;
    for (const t of this.camStream.getAudioTracks()) t.enabled = !this.muted;
    for (const t of this.camStream.getVideoTracks()) t.enabled = !this.cameraOff;
    for (const link of this.peers.values()) link.start();
    this.emit('media');
  }

  outgoingTracks() {
    const audio = this.camStream ? this.camStream.getAudioTracks()[0] : null;
    const video = this.screenTrack || (this.camStream ? this.camStream.getVideoTracks()[0] : null);
    return [audio, video].filter(Boolean);
  }

  setMuted(muted) {
    this.muted = muted;
    if (this.camStream) this.camStream.getAudioTracks().forEach((t) => { t.enabled = !muted; });
    this.emit('media');
  }

  setCameraOff(off) {
    this.cameraOff = off;
    if (this.camStream) this.camStream.getVideoTracks().forEach((t) => { t.enabled = !off; });
    this.emit('media');
  }

  /** Switch camera or microphone mid-call: replaceTrack on every connection, no renegotiation. */
  async switchDevice(kind, deviceId) {
    const track = await openTrack(kind, deviceId);
    track.enabled = kind === 'audio' ? !this.muted : !this.cameraOff;
    const old = kind === 'audio' ? this.camStream.getAudioTracks()[0] : this.camStream.getVideoTracks()[0];
    if (old) this.camStream.removeTrack(old);
    this.camStream.addTrack(track);
    this.outStream.getTracks().filter((t) => t.kind === kind).forEach((t) => this.outStream.removeTrack(t));
    if (!(kind === 'video' && this.screenTrack)) {
      this.outStream.addTrack(track);
      await Promise.all([...this.peers.values()].map((l) => l.useTrack(track)));
    } else {
      this.outStream.addTrack(this.screenTrack);
    }
    if (old) old.stop();
    savePrefs(kind === 'audio' ? { micId: deviceId } : { cameraId: deviceId });
    this.emit('media');
  }

  async startScreenShare() {
    const display = await navigator.mediaDevices.getDisplayMedia({ video: { frameRate: { ideal: 15 } }, audio: false });
    const track = display.getVideoTracks()[0];
    if (!track) return;
    if ('contentHint' in track) track.contentHint = 'detail';
    this.screenTrack = track;
    track.addEventListener('ended', () => this.stopScreenShare()); // the browser's own "Stop sharing"
    this.outStream.getVideoTracks().forEach((t) => this.outStream.removeTrack(t));
    this.outStream.addTrack(track);
    await Promise.all([...this.peers.values()].map((l) => l.useTrack(track)));
    this.emit('media');
  }

  async stopScreenShare() {
    const screen = this.screenTrack;
    if (!screen) return;
    this.screenTrack = null;
    screen.stop();
    this.outStream.removeTrack(screen);
    const cam = this.camStream && this.camStream.getVideoTracks()[0];
    if (cam) {
      this.outStream.addTrack(cam);
      await Promise.all([...this.peers.values()].map((l) => l.useTrack(cam)));
    } else {
      for (const l of this.peers.values()) if (l.senders.video) await l.senders.video.replaceTrack(null);
    }
    this.emit('media');
  }

  // ---- chat --------------------------------------------------------------------------

  /**
   * Send a chat message to everyone connected. With no chat channel open yet (the call is
   * still connecting) it waits and goes out as soon as one opens. Returns whether it went
   * out now.
   */
  sendChat(text) {
    const body = JSON.stringify({ type: 'chat', text, at: Date.now() });
    let delivered = 0;
    for (const link of this.peers.values()) if (link.sendChat(body)) delivered += 1;
    const me = currentUser();
    const entry = { local: true, from: me ? me.display_name : t('call.you'), text, at: Date.now() };
    if (!delivered) {
      entry.pending = true;
      entry.body = body;
    }
    this.chat.push(entry);
    this.emit('chat');
    return delivered > 0;
  }

  flushChat(link) {
    let sent = false;
    for (const m of this.chat) {
      if (m.pending && link.sendChat(m.body)) {
        m.pending = false;
        sent = true;
      }
    }
    if (sent) this.emit('chat');
  }

  chatOpen() {
    return [...this.peers.values()].some((l) => l.chatOpen());
  }

  chatReceived(link, data) {
    let msg;
    try {
      msg = JSON.parse(data);
    } catch {
      return;
    }
    if (!msg || msg.type !== 'chat' || typeof msg.text !== 'string') return;
    // The sender's name comes from the server (peer info), not from the message.
    this.chat.push({ local: false, from: link.info.display_name, participantId: link.id, text: msg.text.slice(0, 4000), at: Date.now() });
    this.emit('chat', { remote: true });
  }

  // ---- peers and quality -------------------------------------------------------------

  peerChanged(link, what = 'state') {
    if (link.chatOpen()) this.flushChat(link);
    this.emit('peer', { participantId: link.id, what });
  }

  peerConnected(link) {
    if (!this.seenNames) this.seenNames = new Set();
    this.seenNames.add(link.info.display_name);
    if (!this.startedAt) {
      this.startedAt = Date.now();
      writeRecord(this.appointmentId, { resumeToken: this.resumeToken, participantId: this.participantId, startedAt: this.startedAt });
    }
  }

  startQuality() {
    if (this.qualityTimer) return;
    this.qualityTimer = setInterval(() => this.sampleQuality(), QUALITY_EVERY_MS);
  }

  async sampleQuality() {
    const links = [...this.peers.values()].filter((l) => l.pc);
    if (!links.length) {
      this.quality = 'unknown';
      this.lastSample = null;
      this.emit('quality');
      return;
    }
    this.qualityTick += 1;
    const report = this.qualityTick % STATS_EVERY === 0;
    const order = ['unknown', 'good', 'fair', 'poor'];
    let worst = 'unknown';
    let worstSample = null;
    for (const link of links) {
      const s = await link.sampleQuality();
      if (!s) continue;
      const r = rate(s);
      if (order.indexOf(r) >= order.indexOf(worst)) {
        worst = r;
        worstSample = s;
      }
      if (report && s.connected) this.send(forServer(s, link.id));
    }
    this.quality = worst;
    this.lastSample = worstSample;
    this.emit('quality');
  }

  // ---- teardown and introspection ------------------------------------------------------

  teardown() {
    clearTimeout(this.reconnectTimer);
    clearTimeout(this.admitGuess);
    clearInterval(this.qualityTimer);
    this.qualityTimer = null;
    window.removeEventListener('online', this.onOnline);
    for (const link of this.peers.values()) link.close();
    if (this.ws) {
      const ws = this.ws;
      this.ws = null;
      try { ws.close(1000); } catch { /* closed */ }
    }
    if (this.screenTrack) this.screenTrack.stop();
    this.screenTrack = null;
    stopStream(this.camStream);
    this.camStream = null;
    this.mediaAttached = false;
    sessions.delete(this.appointmentId);
    bus.dispatchEvent(new CustomEvent('change', { detail: { session: this, type: 'closed' } }));
  }

  peerConnections() {
    return [...this.peers.values()].map((l) => l.pc).filter((pc) => pc && pc.connectionState !== 'closed');
  }

  state() {
    return {
      phase: this.phase,
      appointmentId: this.appointmentId,
      participantId: this.participantId,
      role: this.role,
      position: this.position,
      endReason: this.endReason,
      serverRestarting: this.serverRestarting,
      failure: this.failure ? this.failure.code : null,
      lobby: this.lobby.map((w) => ({ participantId: w.participant_id, displayName: w.display_name })),
      peers: [...this.peers.values()].map((l) => ({
        participantId: l.id,
        displayName: l.info.display_name,
        role: l.info.role,
        polite: l.polite,
        status: l.status(),
        connectionState: l.pc ? l.pc.connectionState : null,
        chatOpen: l.chatOpen(),
        code: l.code,
        // The verification exchange as it ran (nonces are public once revealed), and how
        // many runs with this peer were broken off.
        verification: l.verification ? l.verification.transcript() : null,
        verificationRuns: { started: l.history.started, finished: l.history.finished, interrupted: l.history.interrupted },
      })),
      quality: this.quality,
    };
  }
}

// ---- rooms the therapist left on purpose ----
// The dashboard opens the room of every session in its join window; after the therapist
// hangs up or ends a session from this tab, it must not quietly reopen it.

const LEFT_KEY = 'alcove.left-rooms';

export function leftRooms() {
  try { return new Set(JSON.parse(sessionStorage.getItem(LEFT_KEY) || '[]')); } catch { return new Set(); }
}

export function markRoomLeft(id) {
  const s = leftRooms();
  s.add(id);
  try { sessionStorage.setItem(LEFT_KEY, JSON.stringify([...s])); } catch { /* ignore */ }
}

export function unmarkRoomLeft(id) {
  const s = leftRooms();
  s.delete(id);
  try { sessionStorage.setItem(LEFT_KEY, JSON.stringify([...s])); } catch { /* ignore */ }
}

// ---- the registry --------------------------------------------------------------------

export function getSession(appointmentId) {
  return sessions.get(appointmentId) || null;
}

/** The session of an appointment, created (not yet connected) if there is none. */
export function ensureSession(appointmentId) {
  let s = sessions.get(appointmentId);
  if (!s) {
    s = new CallSession(appointmentId);
    sessions.set(appointmentId, s);
    bus.dispatchEvent(new CustomEvent('change', { detail: { session: s, type: 'created' } }));
  }
  return s;
}

export function allSessions() {
  return [...sessions.values()];
}

/** The session with camera and microphone in use, if any: "a call". */
export function activeCall() {
  return allSessions().find((s) => s.mediaAttached && s.live) || null;
}

/** True while someone is in a call or its waiting room: never sign them out then. */
export function callInProgress() {
  return allSessions().some((s) => s.live && (s.mediaAttached || s.phase === 'waiting'));
}

export function onSessionsChange(fn) {
  const handler = (ev) => fn(ev.detail);
  bus.addEventListener('change', handler);
  return () => bus.removeEventListener('change', handler);
}

/**
 * Sign-out: leave every room, let go of the devices, and forget what this tab kept of its
 * calls (resume tokens, summaries with names, rooms left), so that the next person to sign
 * in on this computer finds none of it.
 */
export function closeAllSessions() {
  for (const s of allSessions()) {
    if (s.live) s.leave();
    else s.teardown();
  }
  try {
    for (const key of Object.keys(sessionStorage)) {
      if (key.startsWith(RECORD_PREFIX) || key.startsWith(SUMMARY_PREFIX) || key === LEFT_KEY) {
        sessionStorage.removeItem(key);
      }
    }
  } catch { /* storage off */ }
}

// A handle for tests and for curious support staff: the live RTCPeerConnections and a plain
// description of the current call.
window.alcoveCall = {
  current() {
    return activeCall() || allSessions().find((s) => s.live) || lastSession;
  },
  peerConnections() {
    const s = this.current();
    return s ? s.peerConnections() : [];
  },
  state() {
    const s = this.current();
    return s ? s.state() : { phase: 'idle', participantId: null, peers: [] };
  },
};

let lastSession = null;
onSessionsChange(({ session }) => { if (session && (session.mediaAttached || session.phase === 'ended')) lastSession = session; });
