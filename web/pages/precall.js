// Before joining: check the browser, see yourself, hear yourself (level meter), pick the
// camera and microphone, with plain words when something is missing or blocked.

import { h, replace, field, select, notice, announce } from '../lib/dom.js';
import { api, describeError, ApiError } from '../lib/api.js';
import { fmtTime, fmtRange, userTimeZone, relative } from '../lib/format.js';
import {
  supportCheck, openLocalMedia, listDevices, micLevel, stopStream, loadPrefs, savePrefs, setPreparedStream,
} from '../call/media.js';
import { getSession } from '../call/session.js';
import { runNetworkTest, verdictLabel, figures } from '../call/nettest.js';
import { inJoinWindow, otherSide, kindLabel } from './appointments.js';

export async function render(ctx) {
  const { root, params, user } = ctx;
  const id = params.id;
  const tz = userTimeZone();

  // Already in this session (e.g. came back with the browser's Back button): go straight on.
  const existing = getSession(id);
  if (existing && existing.mediaAttached && existing.live) {
    ctx.navigate(`/call/${id}`, { replace: true });
    return undefined;
  }

  let stream = null;
  let stopMeter = () => {};
  let handedOver = false;
  let appt = null;

  const title = h('h1', {}, 'Check your camera and microphone');
  const intro = h('p', { class: 'lead' }, 'Take a moment to get comfortable. Nobody can see or hear you yet.');
  const status = h('div', { 'aria-live': 'polite', id: 'precall-status' });
  const video = h('video', { id: 'precall-video', class: 'mirror', autoplay: true, playsinline: true, muted: true, 'aria-label': 'Your camera preview' });
  const placeholder = h('div', { class: 'placeholder' }, 'Starting your camera…');
  const preview = h('div', { class: 'preview' }, video, placeholder);
  const meter = h('meter', { id: 'mic-level', min: 0, max: 1, low: 0.15, high: 0.85, optimum: 0.5, value: 0 });
  const meterHint = h('p', { class: 'hint', id: 'mic-level-hint' }, 'Say something: the bar should move.');
  meter.setAttribute('aria-describedby', 'mic-level-hint');
  const camSel = select([], { id: 'camera-select' });
  const micSel = select([], { id: 'mic-select' });
  const cam = field('Camera', camSel);
  const mic = field('Microphone', micSel);
  const retry = h('button', { type: 'button', class: 'button', id: 'precall-retry' }, 'Try again');
  const cont = h('button', { type: 'button', class: 'button primary', id: 'precall-continue', disabled: true }, 'Continue');
  const contHint = h('p', { class: 'small muted', id: 'precall-continue-hint' });
  cont.setAttribute('aria-describedby', 'precall-continue-hint');
  const checks = h('ul', { class: 'checklist', 'aria-label': 'Browser check' });
  const apptInfo = h('p', {});

  // The connection check: the server's own peer measures the path from here.
  const netStatus = h('div', { id: 'network-test', 'aria-live': 'polite' }, h('p', { class: 'muted' }, 'Checking your connection…'));
  const netRelay = h('input', { type: 'checkbox', id: 'network-relay-only' });
  const netAgain = h('button', { type: 'button', class: 'button', id: 'network-test-again' }, 'Test again');
  const netCard = h('div', { class: 'card stack', id: 'network-card' },
    h('h2', {}, 'Your connection'),
    netStatus,
    h('div', { class: 'check' }, netRelay, h('label', { for: 'network-relay-only' }, 'Test through the relay server only')),
    h('div', { class: 'actions' }, netAgain));

  const support = supportCheck();
  for (const c of support) checks.append(h('li', { class: c.ok ? 'ok' : 'bad' }, h('span', {}, `${c.label}: ${c.ok ? 'ready' : 'not available'}`)));
  const supported = support.every((c) => c.ok);

  root.append(h('section', { class: 'page' },
    title, intro, apptInfo, status,
    h('div', { class: 'precall-layout' },
      h('div', { class: 'stack' }, preview,
        h('div', { class: 'field' }, h('label', { for: 'mic-level' }, 'Microphone level'), meterHint, meter)),
      h('div', { class: 'stack' },
        h('div', { class: 'card stack' },
          cam.wrap, mic.wrap,
          h('div', { class: 'actions' }, retry),
          h('h2', {}, 'Your browser'), checks),
        netCard)),
    h('div', { class: 'actions' }, cont, h('a', { class: 'button quiet', href: '#/appointments' }, 'Not now')),
    contHint));

  if (!supported) {
    status.append(notice('error', 'This browser is missing something video sessions need. Please use a recent version of Chrome, Edge, Firefox or Safari.'));
  }

  // The appointment, for "with whom, when" and the join window.
  try {
    appt = await api(`/appointments/${id}`);
    apptInfo.textContent = `${kindLabel(appt)} with ${otherSide(appt, user)}, ${fmtRange(appt.starts_at, appt.ends_at, tz)}.`;
  } catch (err) {
    status.append(notice('error', describeError(err)));
  }
  if (!ctx.alive()) return undefined;

  const updateContinue = () => {
    const now = Date.now();
    const open = appt ? inJoinWindow(appt, now) : true;
    cont.disabled = !supported || !open;
    if (appt && appt.status !== 'booked') contHint.textContent = 'This appointment is no longer booked.';
    else if (appt && now < Date.parse(appt.join_opens_at)) contHint.textContent = `You can go in from ${fmtTime(appt.join_opens_at, tz)} (${relative(appt.join_opens_at)}). This page will let you in then.`;
    else if (appt && now >= Date.parse(appt.join_closes_at)) contHint.textContent = 'This session is over.';
    else if (!stream) contHint.textContent = 'You can go in without camera or microphone, but the other person will not see or hear you.';
    else contHint.textContent = user.role === 'client' ? 'You will wait in a quiet waiting room until your therapist lets you in.' : '';
  };

  const fillDevices = async () => {
    const prefs = loadPrefs();
    const { cameras, mics } = await listDevices();
    const curCam = stream && stream.getVideoTracks()[0] ? stream.getVideoTracks()[0].getSettings().deviceId : prefs.cameraId;
    const curMic = stream && stream.getAudioTracks()[0] ? stream.getAudioTracks()[0].getSettings().deviceId : prefs.micId;
    replace(camSel, ...(cameras.length ? cameras : [{ value: '', label: 'No camera found' }]).map((d) => h('option', { value: d.value }, d.label)));
    replace(micSel, ...(mics.length ? mics : [{ value: '', label: 'No microphone found' }]).map((d) => h('option', { value: d.value }, d.label)));
    if (curCam && cameras.some((c) => c.value === curCam)) camSel.value = curCam;
    if (curMic && mics.some((m) => m.value === curMic)) micSel.value = curMic;
    camSel.disabled = !cameras.length;
    micSel.disabled = !mics.length;
  };

  const start = async (prefs) => {
    stopMeter();
    stopStream(stream);
    stream = null;
    video.srcObject = null;
    placeholder.hidden = false;
    placeholder.textContent = 'Starting your camera…';
    status.replaceChildren();
    if (!supported) status.append(notice('error', 'This browser is missing something video sessions need. Please use a recent version of Chrome, Edge, Firefox or Safari.'));
    const result = await openLocalMedia(prefs);
    if (!ctx.alive()) {
      stopStream(result.stream);
      return;
    }
    stream = result.stream;
    for (const p of result.problems) status.append(notice(p.kind === 'both' ? 'error' : 'warning', p.message));
    if (stream && stream.getVideoTracks().length) {
      video.srcObject = stream;
      placeholder.hidden = true;
      video.play().catch(() => {});
    } else {
      placeholder.textContent = stream ? 'No camera: you will join with sound only.' : 'Camera and microphone are off.';
    }
    stopMeter = micLevel(stream, meter);
    if (stream && !result.problems.length) announce('Camera and microphone are working.');
    await fillDevices();
    updateContinue();
  };

  // Continue works as soon as the session is open, even before the devices are ready (the
  // call page opens them itself if needed).
  updateContinue();

  camSel.addEventListener('change', () => {
    savePrefs({ cameraId: camSel.value });
    start({ cameraId: camSel.value, micId: micSel.value });
  });
  micSel.addEventListener('change', () => {
    savePrefs({ micId: micSel.value });
    start({ cameraId: camSel.value, micId: micSel.value });
  });
  retry.addEventListener('click', () => start(loadPrefs()));

  cont.addEventListener('click', () => {
    const prefs = {};
    if (camSel.value) prefs.cameraId = camSel.value;
    if (micSel.value) prefs.micId = micSel.value;
    savePrefs(prefs);
    handedOver = true;
    stopMeter();
    setPreparedStream(id, stream);
    ctx.navigate(`/call/${id}`);
  });

  const stepWords = { connecting: 'Connecting to the service…', echo: 'Measuring the round trip…', upload: 'Measuring your upload…' };
  let netRunning = false;
  const netAbort = new AbortController();
  const runNet = async () => {
    if (netRunning) return;
    netRunning = true;
    netAgain.disabled = true;
    replace(netStatus, h('p', { class: 'muted', id: 'network-step' }, 'Checking your connection…'));
    try {
      const r = await runNetworkTest({
        relayOnly: netRelay.checked,
        signal: netAbort.signal,
        onStep: (step) => {
          const el = netStatus.querySelector('#network-step');
          if (el && stepWords[step]) el.textContent = stepWords[step];
        },
      });
      if (!ctx.alive()) return;
      const kind = r.verdict === 'blocked' ? 'error' : (r.reason ? 'warning' : 'success');
      replace(netStatus,
        h('div', { class: `notice notice-${kind}`, id: 'network-verdict', dataset: { verdict: r.verdict, reason: r.reason || '' } },
          h('p', {}, h('strong', {}, verdictLabel(r.verdict))),
          h('p', { id: 'network-advice' }, r.advice)),
        h('ul', { class: 'checklist', id: 'network-figures', 'aria-label': 'Connection figures' }, ...figures(r).map((f) => h('li', {}, f))));
      announce(`Connection check: ${verdictLabel(r.verdict)}. ${r.advice}`);
    } catch (err) {
      if (!ctx.alive()) return;
      const message = err instanceof ApiError || !(err && err.message) ? describeError(err) : err.message;
      replace(netStatus, h('div', { class: 'notice notice-warning', id: 'network-error', dataset: { code: (err && err.code) || '' } }, h('p', {}, message)));
    } finally {
      netRunning = false;
      netAgain.disabled = false;
    }
  };
  netAgain.addEventListener('click', runNet);
  if (!supported) replace(netStatus, h('p', {}, 'The connection cannot be checked in this browser.'));

  const onDeviceChange = () => fillDevices().catch(() => {});
  if (navigator.mediaDevices && navigator.mediaDevices.addEventListener) navigator.mediaDevices.addEventListener('devicechange', onDeviceChange);
  const timer = setInterval(updateContinue, 5000);

  await start(loadPrefs());
  // After the camera question is answered: a browser that may use the camera offers its
  // real local candidates, so the check sees the path a session will take.
  if (supported && ctx.alive()) runNet();

  return () => {
    netAbort.abort();
    clearInterval(timer);
    stopMeter();
    if (navigator.mediaDevices && navigator.mediaDevices.removeEventListener) navigator.mediaDevices.removeEventListener('devicechange', onDeviceChange);
    if (!handedOver) stopStream(stream);
  };
}
