// Before joining: check the browser, see yourself, hear yourself (level meter), pick the
// camera and microphone, with plain words when something is missing or blocked.

import { t } from '../lib/i18n.js';
import { h, replace, field, select, notice, announce } from '../lib/dom.js';
import { api, describeError, ApiError } from '../lib/api.js';
import { fmtTime, fmtRange, userTimeZone, relative } from '../lib/format.js';
import {
  supportCheck, openLocalMedia, listDevices, micLevel, stopStream, loadPrefs, savePrefs, setPreparedStream,
} from '../call/media.js';
import { getSession } from '../call/session.js';
import { runNetworkTest, verdictLabel, figures, adviceFor } from '../call/nettest.js';
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

  const title = h('h1', {}, t('precall.title'));
  const intro = h('p', { class: 'lead' }, t('precall.intro'));
  const status = h('div', { 'aria-live': 'polite', id: 'precall-status' });
  const video = h('video', { id: 'precall-video', class: 'mirror', autoplay: true, playsinline: true, muted: true, 'aria-label': t('precall.preview') });
  const placeholder = h('div', { class: 'placeholder' }, t('precall.starting'));
  const preview = h('div', { class: 'preview' }, video, placeholder);
  const meter = h('meter', { id: 'mic-level', min: 0, max: 1, low: 0.15, high: 0.85, optimum: 0.5, value: 0 });
  const meterHint = h('p', { class: 'hint', id: 'mic-level-hint' }, t('precall.say'));
  meter.setAttribute('aria-describedby', 'mic-level-hint');
  const camSel = select([], { id: 'camera-select' });
  const micSel = select([], { id: 'mic-select' });
  // Device names come from the system, in its language.
  camSel.setAttribute('translate', 'no');
  micSel.setAttribute('translate', 'no');
  const cam = field(t('precall.camera'), camSel);
  const mic = field(t('precall.microphone'), micSel);
  const retry = h('button', { type: 'button', class: 'button', id: 'precall-retry' }, t('precall.retry'));
  const cont = h('button', { type: 'button', class: 'button primary', id: 'precall-continue', disabled: true }, t('precall.continue'));
  const contHint = h('p', { class: 'small muted', id: 'precall-continue-hint' });
  cont.setAttribute('aria-describedby', 'precall-continue-hint');
  const checks = h('ul', { class: 'checklist', 'aria-label': t('precall.browser_check') });
  const apptInfo = h('p', {});

  // The connection check: the server's own peer measures the path from here.
  const netStatus = h('div', { id: 'network-test', 'aria-live': 'polite' }, h('p', { class: 'muted' }, t('precall.checking')));
  const netRelay = h('input', { type: 'checkbox', id: 'network-relay-only' });
  const netAgain = h('button', { type: 'button', class: 'button', id: 'network-test-again' }, t('precall.test_again'));
  const netCard = h('div', { class: 'card stack', id: 'network-card' },
    h('h2', {}, t('precall.connection')),
    netStatus,
    h('div', { class: 'check' }, netRelay, h('label', { for: 'network-relay-only' }, t('precall.relay_only'))),
    h('div', { class: 'actions' }, netAgain));

  const support = supportCheck();
  for (const c of support) checks.append(h('li', { class: c.ok ? 'ok' : 'bad' }, h('span', {}, t(c.ok ? 'precall.check_ready' : 'precall.check_missing', { what: c.label }))));
  const supported = support.every((c) => c.ok);

  root.append(h('section', { class: 'page' },
    title, intro, apptInfo, status,
    h('div', { class: 'precall-layout' },
      h('div', { class: 'stack' }, preview,
        h('div', { class: 'field' }, h('label', { for: 'mic-level' }, t('precall.mic_level')), meterHint, meter)),
      h('div', { class: 'stack' },
        h('div', { class: 'card stack' },
          cam.wrap, mic.wrap,
          h('div', { class: 'actions' }, retry),
          h('h2', {}, t('precall.your_browser')), checks),
        netCard)),
    h('div', { class: 'actions' }, cont, h('a', { class: 'button quiet', href: '#/appointments' }, t('precall.not_now'))),
    contHint));

  if (!supported) {
    status.append(notice('error', t('precall.unsupported')));
  }

  // The appointment, for "with whom, when" and the join window.
  try {
    appt = await api(`/appointments/${id}`);
    apptInfo.textContent = t('appt.what_when', { kind: kindLabel(appt), name: otherSide(appt, user), when: fmtRange(appt.starts_at, appt.ends_at, tz) });
  } catch (err) {
    status.append(notice('error', describeError(err)));
  }
  if (!ctx.alive()) return undefined;

  const updateContinue = () => {
    const now = Date.now();
    const open = appt ? inJoinWindow(appt, now) : true;
    cont.disabled = !supported || !open;
    if (appt && appt.status !== 'booked') contHint.textContent = t('precall.not_booked');
    else if (appt && now < Date.parse(appt.join_opens_at)) contHint.textContent = t('precall.go_in_from', { time: fmtTime(appt.join_opens_at, tz), when: relative(appt.join_opens_at) });
    else if (appt && now >= Date.parse(appt.join_closes_at)) contHint.textContent = t('precall.over');
    else if (!stream) contHint.textContent = t('precall.no_devices');
    else contHint.textContent = user.role === 'client' ? t('precall.will_wait') : '';
  };

  const fillDevices = async () => {
    const prefs = loadPrefs();
    const { cameras, mics } = await listDevices();
    const curCam = stream && stream.getVideoTracks()[0] ? stream.getVideoTracks()[0].getSettings().deviceId : prefs.cameraId;
    const curMic = stream && stream.getAudioTracks()[0] ? stream.getAudioTracks()[0].getSettings().deviceId : prefs.micId;
    replace(camSel, ...(cameras.length ? cameras : [{ value: '', label: t('precall.no_camera_found') }]).map((d) => h('option', { value: d.value }, d.label)));
    replace(micSel, ...(mics.length ? mics : [{ value: '', label: t('precall.no_mic_found') }]).map((d) => h('option', { value: d.value }, d.label)));
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
    placeholder.textContent = t('precall.starting');
    status.replaceChildren();
    if (!supported) status.append(notice('error', t('precall.unsupported')));
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
      placeholder.textContent = stream ? t('precall.sound_only') : t('precall.devices_off');
    }
    stopMeter = micLevel(stream, meter);
    if (stream && !result.problems.length) announce(t('precall.working'));
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

  const stepWords = { connecting: t('precall.step_connecting'), echo: t('precall.step_echo'), upload: t('precall.step_upload') };
  let netRunning = false;
  const netAbort = new AbortController();
  const runNet = async () => {
    if (netRunning) return;
    netRunning = true;
    netAgain.disabled = true;
    replace(netStatus, h('p', { class: 'muted', id: 'network-step' }, t('precall.checking')));
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
          h('p', { id: 'network-advice' }, adviceFor(r))),
        h('ul', { class: 'checklist', id: 'network-figures', 'aria-label': t('precall.figures') }, ...figures(r).map((f) => h('li', {}, f))));
      announce(t('precall.verdict_said', { verdict: verdictLabel(r.verdict), advice: adviceFor(r) }));
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
  if (!supported) replace(netStatus, h('p', {}, t('precall.cannot_check')));

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
