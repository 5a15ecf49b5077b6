// Connection quality from RTCPeerConnection.getStats(): round-trip time, packet loss,
// jitter, bitrate, dropped frames, and whether the selected path goes through a relay.
// Only figures leave the browser (the `stats` signalling message); never addresses.

export class QualitySampler {
  constructor() {
    this.prev = null;
  }

  /** One sample; null when nothing is connected yet. */
  async sample(pc) {
    if (!pc || pc.connectionState === 'closed') return null;
    let report;
    try {
      report = await pc.getStats();
    } catch {
      return null;
    }
    let pair = null;
    report.forEach((s) => {
      if (s.type === 'transport' && s.selectedCandidatePairId) pair = report.get(s.selectedCandidatePairId) || pair;
    });
    if (!pair) {
      report.forEach((s) => {
        if (s.type === 'candidate-pair' && s.state === 'succeeded' && (s.nominated || s.selected)) pair = pair || s;
      });
    }
    let lost = 0;
    let received = 0;
    let jitter = null;
    let bytesIn = 0;
    let bytesOut = 0;
    let framesDropped = 0;
    let remoteRtt = null;
    report.forEach((s) => {
      if (s.type === 'inbound-rtp') {
        lost += Math.max(0, s.packetsLost || 0);
        received += s.packetsReceived || 0;
        bytesIn += s.bytesReceived || 0;
        if (typeof s.jitter === 'number') jitter = Math.max(jitter || 0, s.jitter * 1000);
        if (s.kind === 'video' && typeof s.framesDropped === 'number') framesDropped += s.framesDropped;
      } else if (s.type === 'outbound-rtp') {
        bytesOut += s.bytesSent || 0;
      } else if (s.type === 'remote-inbound-rtp' && typeof s.roundTripTime === 'number') {
        remoteRtt = Math.max(remoteRtt || 0, s.roundTripTime * 1000);
      }
    });
    const now = performance.now();
    const out = { connected: !!pair };
    if (pair && typeof pair.currentRoundTripTime === 'number') out.rtt_ms = pair.currentRoundTripTime * 1000;
    else if (remoteRtt !== null) out.rtt_ms = remoteRtt;
    if (jitter !== null) out.jitter_ms = jitter;
    if (pair) {
      const local = report.get(pair.localCandidateId);
      const remote = report.get(pair.remoteCandidateId);
      const relayed = (local && local.candidateType === 'relay') || (remote && remote.candidateType === 'relay');
      out.path = local && local.candidateType === 'relay' ? 'relay' : 'direct';
      out.relayed = !!relayed;
    }
    if (this.prev) {
      const dt = (now - this.prev.at) / 1000;
      const dLost = Math.max(0, lost - this.prev.lost);
      const dRecv = Math.max(0, received - this.prev.received);
      out.packet_loss = dLost + dRecv > 0 ? dLost / (dLost + dRecv) : 0;
      if (dt > 0) out.bitrate_kbps = Math.max(0, ((bytesIn + bytesOut - this.prev.bytes) * 8) / dt / 1000);
    } else {
      out.packet_loss = lost + received > 0 ? lost / (lost + received) : 0;
    }
    out.frames_dropped = Math.max(0, Math.round(framesDropped));
    this.prev = { at: now, lost, received, bytes: bytesIn + bytesOut };
    return out;
  }
}

/** good | fair | poor from a sample. */
export function rate(s) {
  if (!s || !s.connected) return 'unknown';
  const loss = s.packet_loss || 0;
  const rtt = s.rtt_ms || 0;
  const jit = s.jitter_ms || 0;
  if (loss > 0.08 || rtt > 500 || jit > 80) return 'poor';
  if (loss > 0.02 || rtt > 250 || jit > 40) return 'fair';
  return 'good';
}

/** The figures the server accepts, rounded, finite and in range. */
export function forServer(s, peerId) {
  const msg = { type: 'stats', peer: peerId };
  const num = (v, max) => (typeof v === 'number' && Number.isFinite(v) && v >= 0 ? Math.min(max, Math.round(v * 10) / 10) : undefined);
  if (s.path === 'relay' || s.path === 'direct') msg.path = s.path;
  const rtt = num(s.rtt_ms, 600000);
  if (rtt !== undefined) msg.rtt_ms = rtt;
  const jit = num(s.jitter_ms, 600000);
  if (jit !== undefined) msg.jitter_ms = jit;
  if (typeof s.packet_loss === 'number' && Number.isFinite(s.packet_loss)) msg.packet_loss = Math.min(1, Math.max(0, Math.round(s.packet_loss * 10000) / 10000));
  const br = num(s.bitrate_kbps, 10000000);
  if (br !== undefined) msg.bitrate_kbps = br;
  if (Number.isInteger(s.frames_dropped) && s.frames_dropped >= 0) msg.frames_dropped = s.frames_dropped;
  return msg;
}
