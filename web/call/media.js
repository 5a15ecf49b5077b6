import { t } from '../lib/i18n.js';
// Camera and microphone: support checks, opening devices with clear error messages,
// device lists, the microphone level meter, and handing the pre-call stream to the call.

const PREFS_KEY = 'alcove.devices';

export function supportCheck() {
  const gum = !!(navigator.mediaDevices && navigator.mediaDevices.getUserMedia);
  return [
    { key: 'secure', label: t('media.secure'), ok: window.isSecureContext !== false },
    { key: 'getUserMedia', label: t('media.gum'), ok: gum },
    { key: 'RTCPeerConnection', label: t('media.rtc'), ok: typeof window.RTCPeerConnection === 'function' },
    { key: 'WebSocket', label: t('media.ws'), ok: typeof window.WebSocket === 'function' },
  ];
}

export function canShareScreen() {
  return !!(navigator.mediaDevices && navigator.mediaDevices.getDisplayMedia);
}

export function loadPrefs() {
  try {
    return JSON.parse(localStorage.getItem(PREFS_KEY) || '{}') || {};
  } catch {
    return {};
  }
}

export function savePrefs(prefs) {
  try {
    localStorage.setItem(PREFS_KEY, JSON.stringify({ ...loadPrefs(), ...prefs }));
  } catch { /* private mode: fine */ }
}

/** A sentence for people about a getUserMedia failure. */
export function explainMediaError(err, device = 'both') {
  const name = err && err.name;
  const what = t({ camera: 'media.camera', microphone: 'media.microphone' }[device] || 'media.both');
  switch (name) {
    case 'NotAllowedError':
    case 'SecurityError':
      return t('media.not_allowed', { what });
    case 'NotFoundError':
    case 'OverconstrainedError':
      return t('media.not_found');
    case 'NotReadableError':
    case 'AbortError':
      return t('media.in_use', { what });
    default:
      return t('media.failed', { what });
  }
}

function videoConstraints(cameraId) {
  const base = { width: { ideal: 1280 }, height: { ideal: 720 }, frameRate: { ideal: 30 } };
  return cameraId ? { ...base, deviceId: { exact: cameraId } } : base;
}

function audioConstraints(micId) {
  const base = { echoCancellation: true, noiseSuppression: true, autoGainControl: true };
  return micId ? { ...base, deviceId: { exact: micId } } : base;
}

/**
 * Open camera and microphone, falling back step by step so that someone without a camera
 * (or whose saved device went away) can still join. Resolves to
 * {stream|null, problems: [{kind, error, message}]}.
 */
export async function openLocalMedia({ cameraId, micId } = {}) {
  const problems = [];
  if (!(navigator.mediaDevices && navigator.mediaDevices.getUserMedia)) {
    return { stream: null, problems: [{ kind: 'both', error: null, message: t('media.no_browser') }] };
  }
  const attempt = (c) => navigator.mediaDevices.getUserMedia(c);
  try {
    return { stream: await attempt({ video: videoConstraints(cameraId), audio: audioConstraints(micId) }), problems };
  } catch (err) {
    // A saved device that is gone: retry with the defaults before giving up.
    if ((err.name === 'OverconstrainedError' || err.name === 'NotFoundError') && (cameraId || micId)) {
      try {
        return { stream: await attempt({ video: videoConstraints(), audio: audioConstraints() }), problems };
      } catch { /* fall through to the one-kind attempts */ }
    }
    if (err.name === 'NotAllowedError' || err.name === 'SecurityError') {
      return { stream: null, problems: [{ kind: 'both', error: err, message: explainMediaError(err) }] };
    }
  }
  // One of the two may still work on its own.
  const stream = new MediaStream();
  try {
    const a = await attempt({ audio: audioConstraints() });
    a.getAudioTracks().forEach((t) => stream.addTrack(t));
  } catch (err) {
    problems.push({ kind: 'audio', error: err, message: explainMediaError(err, 'microphone') });
  }
  try {
    const v = await attempt({ video: videoConstraints() });
    v.getVideoTracks().forEach((t) => stream.addTrack(t));
  } catch (err) {
    problems.push({ kind: 'video', error: err, message: explainMediaError(err, 'camera') });
  }
  return { stream: stream.getTracks().length ? stream : null, problems };
}

/** Open one kind of device (for switching mid-call). */
export async function openTrack(kind, deviceId) {
  const c = kind === 'video' ? { video: videoConstraints(deviceId) } : { audio: audioConstraints(deviceId) };
  const s = await navigator.mediaDevices.getUserMedia(c);
  return kind === 'video' ? s.getVideoTracks()[0] : s.getAudioTracks()[0];
}

/** Cameras, microphones and speakers. Labels are empty until permission is given. */
export async function listDevices() {
  if (!(navigator.mediaDevices && navigator.mediaDevices.enumerateDevices)) return { cameras: [], mics: [], speakers: [] };
  const all = await navigator.mediaDevices.enumerateDevices();
  const pick = (kind, fallback) => all
    .filter((d) => d.kind === kind && d.deviceId)
    .map((d, i) => ({ value: d.deviceId, label: d.label || `${fallback} ${i + 1}` }));
  return { cameras: pick('videoinput', t('precall.camera')), mics: pick('audioinput', t('precall.microphone')), speakers: pick('audiooutput', t('media.speaker')) };
}

export function stopStream(stream) {
  if (stream) stream.getTracks().forEach((t) => t.stop());
}

/**
 * Live microphone level into a <meter>/<progress> (0..1) with a Web Audio AnalyserNode.
 * Returns a stop() function.
 */
export function micLevel(stream, meter, onLevel) {
  const track = stream && stream.getAudioTracks()[0];
  if (!track || !(window.AudioContext || window.webkitAudioContext)) {
    meter.value = 0;
    return () => {};
  }
  const Ctx = window.AudioContext || window.webkitAudioContext;
  const ctx = new Ctx();
  const source = ctx.createMediaStreamSource(new MediaStream([track]));
  const analyser = ctx.createAnalyser();
  analyser.fftSize = 1024;
  analyser.smoothingTimeConstant = 0.6;
  source.connect(analyser);
  const data = new Float32Array(analyser.fftSize);
  let smoothed = 0;
  // An interval rather than requestAnimationFrame: it keeps running in a background tab
  // and 12 updates a second are plenty for a meter.
  const timer = setInterval(() => {
    if (ctx.state === 'suspended') ctx.resume().catch(() => {});
    analyser.getFloatTimeDomainData(data);
    let sum = 0;
    for (let i = 0; i < data.length; i += 1) sum += data[i] * data[i];
    const rms = Math.sqrt(sum / data.length);
    // Speech RMS is roughly 0.01–0.3; a square root spreads that over the meter.
    const level = Math.min(1, Math.sqrt(rms) * 1.6);
    smoothed = Math.max(level, smoothed * 0.85);
    meter.value = Math.round(smoothed * 100) / 100;
    if (onLevel) onLevel(smoothed);
  }, 80);
  return () => {
    clearInterval(timer);
    try { source.disconnect(); } catch { /* already */ }
    ctx.close().catch(() => {});
  };
}

// The pre-call page opens the devices once; the call page takes that stream over, so people
// are not asked twice and the camera light does not blink off and on.
let prepared = null;

export function setPreparedStream(appointmentId, stream) {
  if (prepared && prepared.stream !== stream) stopStream(prepared.stream);
  prepared = { appointmentId, stream };
}

export function takePreparedStream(appointmentId) {
  if (prepared && prepared.appointmentId === appointmentId) {
    const { stream } = prepared;
    prepared = null;
    if (stream && stream.getTracks().some((t) => t.readyState === 'live')) return stream;
  }
  return null;
}

export function discardPreparedStream() {
  if (prepared) stopStream(prepared.stream);
  prepared = null;
}
