// The network test (docs/network-test.md): this browser connects to a WebRTC peer of the
// server's own, through the same STUN/TURN servers as a session, and the server measures
// the path, the round trip, the loss and the upload, then answers a verdict with advice.
//
// Flow: POST /api/v1/network-tests ({relay_only}) → open `socket_url`, send
// {type:'hello', token} → `ready` → offer with two data channels, `echo` (unordered, no
// retransmits: send back what arrives) and `bulk` (on {send, ms} upload that many bytes
// for at most that long, then 'done') → trickle candidates both ways → after connecting,
// {type:'report', relay_protocol} when the selected local candidate is relayed →
// `step` messages → `result`.

import { t, locale } from '../lib/i18n.js';

const CHUNK = 16 * 1024;

/** Run one test. `onStep(name)` hears `connecting`, `echo`, `upload`. Resolves to the
 *  server's result ({verdict, reason?, advice, path?, rtt_ms?, packet_loss?,
 *  upload_kbps?, connect_ms?, relay_forced}); rejects with an Error whose `code` is the
 *  API's or the socket's problem code (`aborted` when `signal` aborts it). */
export async function runNetworkTest({ relayOnly = false, onStep = () => {}, signal } = {}) {
  // Imported here, not at the top: the words below are used (and unit-tested) without the
  // sign-in machinery, whose timers would keep a test process alive.
  const { api } = await import('../lib/api.js');
  const started = await api('/network-tests', { method: 'POST', body: { relay_only: relayOnly } });
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(started.socket_url);
    let pc = null;
    let done = false;
    const finish = (err, result) => {
      if (done) return;
      done = true;
      try { if (pc) pc.close(); } catch (e) { /* already closed */ }
      try { ws.close(); } catch (e) { /* already closed */ }
      if (err) reject(err); else resolve(result);
    };
    const send = (msg) => { if (ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify(msg)); };
    const fail = (code, message) => {
      const e = new Error(message);
      e.code = code;
      finish(e);
    };
    // The server ends every test within its limit; this only guards a socket that hangs.
    const guard = setTimeout(() => fail('timeout', t('net.timeout')), (started.seconds + 15) * 1000);
    // Leaving the page ends the test at once (the server frees its place when the socket closes).
    if (signal) {
      if (signal.aborted) fail('aborted', t('net.aborted'));
      signal.addEventListener('abort', () => { clearTimeout(guard); fail('aborted', t('net.aborted')); });
    }

    ws.onopen = () => send({ type: 'hello', token: started.token });
    ws.onerror = () => {};
    ws.onclose = () => {
      clearTimeout(guard);
      if (!done) fail('network', t('net.lost'));
    };
    ws.onmessage = async (ev) => {
      let msg;
      try { msg = JSON.parse(ev.data); } catch (e) { return; }
      if (msg.type === 'ready') {
        pc = new RTCPeerConnection({ iceServers: started.ice_servers, iceTransportPolicy: started.ice_transport_policy });
        serveChannels(pc);
        pc.onicecandidate = (e) => {
          if (e.candidate && e.candidate.candidate) {
            send({ type: 'signal', candidate: { candidate: e.candidate.candidate, sdpMid: e.candidate.sdpMid, sdpMLineIndex: e.candidate.sdpMLineIndex } });
          }
        };
        let reported = false;
        pc.onconnectionstatechange = async () => {
          if (pc.connectionState !== 'connected' || reported) return;
          reported = true;
          const protocol = await relayProtocol(pc);
          if (protocol) send({ type: 'report', relay_protocol: protocol });
        };
        const offer = await pc.createOffer();
        await pc.setLocalDescription(offer);
        send({ type: 'signal', description: { type: 'offer', sdp: offer.sdp } });
      } else if (msg.type === 'signal' && pc) {
        try {
          if (msg.description) await pc.setRemoteDescription(msg.description);
          if (msg.candidate) await pc.addIceCandidate(msg.candidate);
        } catch (e) { /* a candidate this browser cannot use is no reason to stop */ }
      } else if (msg.type === 'step') {
        onStep(msg.step);
      } else if (msg.type === 'result') {
        clearTimeout(guard);
        finish(null, msg);
      } else if (msg.type === 'error') {
        clearTimeout(guard);
        fail(msg.code, msg.message);
      }
    };
  });
}

/** `echo` sends back what arrives; `bulk` uploads what the server asks for. */
function serveChannels(pc) {
  const echo = pc.createDataChannel('echo', { ordered: false, maxRetransmits: 0 });
  echo.binaryType = 'arraybuffer';
  echo.onmessage = (e) => { if (echo.readyState === 'open') echo.send(e.data); };
  const bulk = pc.createDataChannel('bulk');
  bulk.binaryType = 'arraybuffer';
  bulk.bufferedAmountLowThreshold = 256 * 1024;
  bulk.onmessage = (e) => {
    if (typeof e.data !== 'string') return;
    let ask;
    try { ask = JSON.parse(e.data); } catch (err) { return; }
    const total = Math.min(Number(ask.send) || 0, 8 * 1024 * 1024);
    const until = performance.now() + Math.min(Number(ask.ms) || 0, 10_000);
    const chunk = new Uint8Array(CHUNK);
    let sent = 0;
    const pump = () => {
      while (sent < total && performance.now() < until && bulk.readyState === 'open') {
        if (bulk.bufferedAmount > 1024 * 1024) {
          bulk.onbufferedamountlow = () => { bulk.onbufferedamountlow = null; pump(); };
          return;
        }
        bulk.send(chunk);
        sent += CHUNK;
      }
      if (bulk.readyState === 'open') bulk.send('done');
    };
    pump();
  };
}

/** The TURN transport (`udp`, `tcp`, `tls`) of the selected local candidate, when it is a
 *  relayed one; otherwise null. */
async function relayProtocol(pc) {
  try {
    const stats = await pc.getStats();
    let pair = null;
    stats.forEach((s) => {
      if (s.type === 'transport' && s.selectedCandidatePairId) pair = stats.get(s.selectedCandidatePairId);
    });
    if (!pair) stats.forEach((s) => { if (s.type === 'candidate-pair' && s.nominated && s.state === 'succeeded') pair = s; });
    const local = pair && stats.get(pair.localCandidateId);
    if (local && local.candidateType === 'relay') return local.relayProtocol || 'udp';
  } catch (e) { /* no stats: the server judges by itself */ }
  return null;
}

/** The advice for a result, in the page's language (the server's `advice` is English). */
export function adviceFor(r) {
  if (r.verdict === 'blocked') {
    return t({ no_candidates: 'net.advice_no_candidates', no_path: 'net.advice_no_path', channel_failed: 'net.advice_channel_failed' }[r.reason] || 'net.advice_blocked');
  }
  let base = 'net.advice_ready';
  if (r.verdict === 'relay_only') base = r.relay_forced ? 'net.advice_relay_forced' : 'net.advice_relay_only';
  const warn = { high_loss: 'net.warn_high_loss', high_latency: 'net.warn_high_latency', low_upload: 'net.warn_low_upload' }[r.reason];
  return warn ? `${t(base)} ${t(warn)}` : t(base);
}

/** Words for a verdict. */
export function verdictLabel(verdict) {
  const key = { ready: 'net.ready', relay_only: 'net.relay_only', blocked: 'net.blocked' }[verdict];
  return key ? t(key) : verdict;
}

/** Words for a path. */
export function pathLabel(path) {
  const known = ['direct', 'relay_udp', 'relay_tcp', 'relay_tls', 'relay'];
  if (known.includes(path)) return t(`net.path_${path}`);
  return path || t('net.path_none');
}

/** The figures of a result, as short phrases ("24 ms round trip", …). */
export function figures(r) {
  const out = [];
  if (r.path) out.push(t('net.fig_path', { path: pathLabel(r.path) }));
  if (typeof r.rtt_ms === 'number') out.push(t('net.fig_rtt', { ms: Math.round(r.rtt_ms) }));
  if (typeof r.packet_loss === 'number') out.push(t('net.fig_loss', { percent: new Intl.NumberFormat(locale()).format(Math.round(r.packet_loss * 1000) / 10) }));
  if (typeof r.upload_kbps === 'number') {
    out.push(r.upload_kbps >= 1000
      ? t('net.fig_up_mbit', { rate: new Intl.NumberFormat(locale(), { minimumFractionDigits: 1, maximumFractionDigits: 1 }).format(r.upload_kbps / 1000) })
      : t('net.fig_up_kbit', { rate: Math.round(r.upload_kbps) }));
  }
  return out;
}

/** The connection check shown beside a waiting client (the therapist's lobby lists):
 *  verdict and figures only, or that they have not run one. `h` is the DOM helper. */
export function networkBadge(h, network) {
  if (!network) {
    return h('span', { class: 'network-check small muted', dataset: { verdict: 'none' } }, t('net.no_check'));
  }
  const cls = network.verdict === 'blocked' ? 'badge warn' : (network.reason ? 'badge warn' : 'badge');
  const title = t('net.check', { verdict: verdictLabel(network.verdict) });
  return h('span', { class: 'network-check small', dataset: { verdict: network.verdict } },
    ' · ', h('span', { class: cls }, title),
    figures(network).length ? ` ${figures(network).join(', ')}` : '');
}
