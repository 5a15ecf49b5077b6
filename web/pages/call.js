// The session page: the waiting room (clients) and the call itself.
//
// All the state lives in the CallSession (call/session.js); this page only draws it and
// forwards button presses. Leaving this route does not end the call (the header offers a
// way back); hanging up does.

import { t, locale } from '../lib/i18n.js';
import { networkBadge } from '../call/nettest.js';
import { h, replace, notice, announce, select } from '../lib/dom.js';
import { api } from '../lib/api.js';
import { currentUser, logout } from '../lib/auth.js';
import { fmtClock, fmtTime, userTimeZone } from '../lib/format.js';
import {
  ensureSession, markRoomLeft, unmarkRoomLeft,
} from '../call/session.js';
import {
  takePreparedStream, openLocalMedia, loadPrefs, listDevices, canShareScreen, explainMediaError,
} from '../call/media.js';
import { otherSide } from './appointments.js';

export async function render(ctx) {
  const { root, params } = ctx;
  const id = params.id;
  const user = currentUser();
  const tz = userTimeZone();
  ctx.keepFocus = true;
  const cleanups = [];

  // ---- skeleton ----
  const statusBox = h('section', { class: 'page narrow call-status', id: 'call-status', 'aria-live': 'polite' },
    h('h1', {}, t('call.joining')),
    h('p', { class: 'muted' }, t('call.getting_ready')));
  const banner = h('div', { id: 'reconnecting-banner', class: 'reconnecting', role: 'alert', hidden: true },
    t('call.dropped'));
  const mediaWarnings = h('div', { class: 'media-warnings' });

  // Waiting room
  const positionEl = h('strong', { id: 'waiting-position' }, '1');
  const positionText = h('p', { class: 'position' }, t('call.place'), ' ', positionEl);
  const waitingWho = h('p', { class: 'lead' }, t('call.told'));
  const noticeList = h('ul', { class: 'notice-list', 'aria-live': 'polite', 'aria-label': t('call.messages') });
  const waitingSelf = h('video', { autoplay: true, playsinline: true, muted: true, class: 'mirror', 'aria-label': t('call.your_camera') });
  const leaveWaiting = h('button', { type: 'button', class: 'button', id: 'waiting-leave' }, t('call.leave_waiting'));
  const waiting = h('section', { id: 'waiting-room', class: 'waiting card', hidden: true, 'aria-labelledby': 'waiting-title' },
    h('div', { class: 'breathe', 'aria-hidden': 'true' }),
    h('h1', { id: 'waiting-title' }, t('call.waiting_title')),
    waitingWho,
    positionText,
    noticeList,
    h('p', { class: 'muted' }, t('call.while_waiting')),
    h('div', { class: 'self-preview' }, waitingSelf),
    h('div', { class: 'actions' }, leaveWaiting));

  // Call
  const callTitle = h('h1', { id: 'call-title' }, t('call.title'));
  const timer = h('span', { class: 'timer', id: 'call-timer', 'aria-label': t('call.timer') }, '0:00');
  const quality = h('span', { class: 'quality', id: 'quality-indicator', 'data-quality': 'unknown' }, t('call.quality_checking'));
  const stage = h('div', { class: 'stage', id: 'stage', 'data-count': '0' });
  const emptyStage = h('div', { class: 'stage-empty', id: 'stage-empty' }, t('call.waiting_others'));
  const localVideo = h('video', { id: 'local-video', class: 'mirror', autoplay: true, playsinline: true, muted: true, 'aria-label': t('call.your_camera') });
  const localName = h('span', { class: 'name' }, t('call.you'));
  const selfTile = h('div', { class: 'self-tile' }, localVideo, localName);
  const muteBtn = h('button', { type: 'button', class: 'button', id: 'mute-button', 'aria-pressed': 'false' }, t('call.mute'));
  const camBtn = h('button', { type: 'button', class: 'button', id: 'camera-button', 'aria-pressed': 'false' }, t('call.camera_off'));
  const screenBtn = h('button', { type: 'button', class: 'button', id: 'screen-button', 'aria-pressed': 'false' }, t('call.share'));
  const camSwitch = select([], { id: 'camera-switch' });
  const micSwitch = select([], { id: 'mic-switch' });
  // Device names come from the system, in its language.
  camSwitch.setAttribute('translate', 'no');
  micSwitch.setAttribute('translate', 'no');
  const hangup = h('button', { type: 'button', class: 'button danger', id: 'hangup-button' }, t('call.leave'));
  const endBtn = h('button', { type: 'button', class: 'button danger', id: 'end-session-button', hidden: true }, t('call.end'));
  const soundBtn = h('button', { type: 'button', class: 'button primary', id: 'sound-button', hidden: true }, t('call.sound'));
  const controlsMsg = h('div', { 'aria-live': 'polite', class: 'controls-msg' });
  const controls = h('div', { class: 'controls', role: 'toolbar', 'aria-label': t('call.controls') },
    muteBtn, camBtn, screenBtn,
    h('span', { class: 'device-pick' }, h('label', { for: 'camera-switch' }, t('call.camera')), camSwitch),
    h('span', { class: 'device-pick' }, h('label', { for: 'mic-switch' }, t('call.microphone')), micSwitch),
    soundBtn, hangup, endBtn);

  const codeEl = h('span', { id: 'verification-code', class: 'code' });
  const codeNote = h('p', { class: 'small muted', id: 'verification-note' }, t('call.code_note'));
  const lobbySection = h('section', { id: 'call-lobby', hidden: true, 'aria-labelledby': 'call-lobby-title' },
    h('h2', { id: 'call-lobby-title' }, t('call.lobby')), h('ul', { class: 'lobby-list' }));
  const chatLog = h('div', { id: 'chat-log', class: 'chat-log', role: 'log', 'aria-live': 'polite', 'aria-label': t('call.chat_log') });
  const chatInput = h('input', { type: 'text', id: 'chat-input', maxlength: 1000, autocomplete: 'off' });
  const chatSend = h('button', { type: 'submit', class: 'button small primary', id: 'chat-send' }, t('call.send'));
  const chatStatus = h('p', { class: 'small muted', id: 'chat-status' }, t('call.chat_private'));
  const chatForm = h('form', { class: 'chat-form' }, h('label', { for: 'chat-input', class: 'visually-hidden' }, t('call.message')), chatInput, chatSend);
  const side = h('aside', { class: 'side', 'aria-label': t('call.side') },
    lobbySection,
    h('section', { 'aria-labelledby': 'verify-title' }, h('h2', { id: 'verify-title' }, t('call.verify_title')), codeEl, codeNote),
    h('section', { class: 'chat', 'aria-labelledby': 'chat-title' }, h('h2', { id: 'chat-title' }, t('call.chat')), chatLog, chatForm, chatStatus));
  const call = h('section', { id: 'call', class: 'call', hidden: true, 'aria-labelledby': 'call-title' },
    h('div', { class: 'call-top' }, callTitle, h('div', { class: 'call-meta' }, timer, quality)),
    h('div', {}, mediaWarnings, controlsMsg),
    h('div', { class: 'stage-wrap' }, stage, emptyStage, selfTile),
    controls,
    side);

  root.append(banner, statusBox, waiting, call);

  const showStatus = (title, ...body) => {
    replace(statusBox, h('h1', {}, title), ...body);
    statusBox.hidden = false;
    waiting.hidden = true;
    call.hidden = true;
  };

  // ---- the session and local media ----
  unmarkRoomLeft(id);
  const session = ensureSession(id);
  api(`/appointments/${id}`).then((a) => {
    session.appointment = a;
    if (!ctx.alive()) return;
    const who = otherSide(a, user);
    callTitle.textContent = t('call.title_with', { name: who });
    waitingWho.textContent = user.role === 'client'
      ? t('call.told_named', { name: a.therapist.display_name, time: fmtTime(a.starts_at, tz) })
      : waitingWho.textContent;
  }).catch(() => {});

  if (!session.mediaAttached) {
    let stream = takePreparedStream(id);
    if (!stream) {
      // A reload, or the therapist coming from the dashboard: open the saved devices.
      const result = await openLocalMedia(loadPrefs());
      stream = result.stream;
      for (const p of result.problems) mediaWarnings.append(notice('warning', p.message));
    }
    if (!ctx.alive()) {
      if (stream) stream.getTracks().forEach((track) => track.stop());
      return undefined;
    }
    // A session that ended meanwhile (e.g. the therapist ended it) cannot take media.
    if (session.phase === 'ended' || session.phase === 'failed' || session.phase === 'denied') {
      if (stream) stream.getTracks().forEach((track) => track.stop());
    } else {
      session.attachMedia(stream);
    }
  }
  if (session.phase === 'idle') session.connect();

  // ---- drawing ----
  const tiles = new Map(); // participantId -> {tile, video, audio, nameEl, statusEl}

  const drawLocal = () => {
    const stream = session.camStream;
    const preview = session.screenTrack ? new MediaStream([session.screenTrack]) : stream;
    if (localVideo.srcObject !== preview) {
      localVideo.srcObject = preview && preview.getVideoTracks().length ? preview : null;
      localVideo.play().catch(() => {});
    }
    if (waitingSelf.srcObject !== stream) {
      waitingSelf.srcObject = stream && stream.getVideoTracks().length ? stream : null;
      waitingSelf.play().catch(() => {});
    }
    localVideo.classList.toggle('mirror', !session.screenTrack);
    const hasAudio = !!(stream && stream.getAudioTracks().length);
    const hasVideo = !!(stream && stream.getVideoTracks().length);
    muteBtn.setAttribute('aria-pressed', String(session.muted));
    muteBtn.disabled = !hasAudio;
    camBtn.setAttribute('aria-pressed', String(session.cameraOff));
    camBtn.disabled = !hasVideo;
    screenBtn.setAttribute('aria-pressed', String(!!session.screenTrack));
    screenBtn.textContent = session.screenTrack ? t('call.stop_share') : t('call.share');
    localName.textContent = t(session.muted ? (session.cameraOff ? 'call.you_muted_camera_off' : 'call.you_muted') : (session.cameraOff ? 'call.you_camera_off' : 'call.you'));
    if (!canShareScreen()) {
      screenBtn.disabled = true;
      screenBtn.title = t('call.no_share');
    }
  };

  const fillDeviceSwitches = async () => {
    const { cameras, mics } = await listDevices().catch(() => ({ cameras: [], mics: [] }));
    const stream = session.camStream;
    const curCam = stream && stream.getVideoTracks()[0] ? stream.getVideoTracks()[0].getSettings().deviceId : '';
    const curMic = stream && stream.getAudioTracks()[0] ? stream.getAudioTracks()[0].getSettings().deviceId : '';
    replace(camSwitch, ...(cameras.length ? cameras : [{ value: '', label: t('call.no_camera') }]).map((d) => h('option', { value: d.value }, d.label)));
    replace(micSwitch, ...(mics.length ? mics : [{ value: '', label: t('call.no_microphone') }]).map((d) => h('option', { value: d.value }, d.label)));
    if (curCam) camSwitch.value = curCam;
    if (curMic) micSwitch.value = curMic;
    camSwitch.disabled = !cameras.length;
    micSwitch.disabled = !mics.length;
  };

  const tileFor = (link) => {
    let tl = tiles.get(link.id);
    if (!tl) {
      const video = h('video', { class: 'remote-video', dataset: { participant: link.id }, autoplay: true, playsinline: true, muted: true });
      // Sound plays through its own element: the video stays muted so it may always
      // autoplay, and if the browser blocks sound (no click yet, e.g. after a reload) we can
      // offer a button without losing the picture.
      const audio = h('audio', { class: 'remote-audio', dataset: { participant: link.id }, autoplay: true });
      const nameEl = h('span', { class: 'name' });
      const statusEl = h('div', { class: 'tile-status', role: 'status' });
      const tile = h('figure', { class: 'tile', dataset: { participant: link.id } }, video, audio, nameEl, statusEl);
      tl = { tile, video, audio, nameEl, statusEl };
      tiles.set(link.id, tl);
    }
    if (tl.video.srcObject !== link.remoteStream) {
      tl.video.srcObject = link.remoteStream;
      tl.audio.srcObject = link.remoteStream;
    }
    tl.video.play().catch(() => {});
    tl.audio.play().then(() => { soundBtn.hidden = true; }).catch((err) => {
      if (err && err.name === 'NotAllowedError') soundBtn.hidden = false;
    });
    tl.nameEl.textContent = link.info.role === 'therapist' && user.role !== 'therapist' ? t('call.peer_therapist', { name: link.info.display_name }) : link.info.display_name;
    const st = link.status();
    const words = {
      waiting: user.role === 'therapist' ? t('call.connecting') : t('call.peer_waiting', { name: link.info.display_name }),
      connecting: t('call.connecting'),
      reconnecting: t('call.peer_dropped', { name: link.info.display_name }),
      connected: '',
    };
    tl.statusEl.textContent = words[st] || '';
    tl.statusEl.hidden = st === 'connected';
    // Said when someone's connection drops and when they are back.
    if (st === 'reconnecting' && !tl.dropped) {
      tl.dropped = true;
      announce(words.reconnecting);
    } else if (st === 'connected' && tl.dropped) {
      tl.dropped = false;
      announce(t('call.peer_back', { name: link.info.display_name }));
    }
    return tl;
  };

  const drawPeers = () => {
    const links = [...session.peers.values()];
    for (const [pid, tl] of tiles) {
      if (!session.peers.has(pid)) {
        tl.video.srcObject = null;
        tl.audio.srcObject = null;
        tl.tile.remove();
        tiles.delete(pid);
      }
    }
    for (const link of links) {
      const tl = tileFor(link);
      if (tl.tile.parentElement !== stage) stage.append(tl.tile);
    }
    stage.dataset.count = String(links.length);
    emptyStage.hidden = links.length > 0;
    if (!links.length) {
      emptyStage.textContent = user.role === 'therapist'
        ? (session.lobby.length ? t('call.client_waiting') : t('call.client_coming'))
        : t('call.therapist_coming');
    }
    drawCodes();
  };

  let lastCodeSaid = '';
  const drawCodes = () => {
    const links = [...session.peers.values()];
    const withCode = links.filter((l) => l.code);
    if (!withCode.length) {
      codeEl.textContent = ''; // empty until there is a real code (never a placeholder)
      codeNote.textContent = t('call.code_wait');
    } else if (links.length === 1) {
      codeEl.textContent = withCode[0].code;
      codeNote.textContent = t('call.code_with', { name: withCode[0].info.display_name });
    } else {
      replace(codeEl, ...withCode.map((l) => h('span', { class: 'code-line' }, h('span', { class: 'code-name' }, `${l.info.display_name}: `), l.code)));
      codeNote.textContent = t('call.code_each');
    }
    if (withCode.some((l) => l.codeChanged)) {
      codeNote.textContent = t('call.code_changed', { note: codeNote.textContent });
    }
    // Said once per new code (screen readers do not notice a span changing).
    const said = withCode.map((l) => `${l.info.display_name} ${l.code}`).join(', ');
    if (said && said !== lastCodeSaid) {
      announce(withCode.length === 1
        ? t('call.code_said', { code: withCode[0].code, note: codeNote.textContent })
        : t('call.codes_said', { codes: withCode.map((l) => `${l.info.display_name}, ${l.code}`).join('; '), note: codeNote.textContent }));
    }
    lastCodeSaid = said;
    const suspicious = links.filter((l) => l.history.suspicious);
    if (suspicious.length) {
      // A check was broken off or failed at least once in this call: that is how someone in
      // the middle would try again, so it stays said for the rest of the call.
      codeNote.textContent = t('call.code_interrupted', { names: new Intl.ListFormat(locale()).format(suspicious.map((l) => l.info.display_name)), note: codeNote.textContent });
      codeNote.classList.add('warning');
    } else {
      codeNote.classList.remove('warning');
    }
  };

  const drawLobby = () => {
    const isTherapist = session.role === 'therapist';
    lobbySection.hidden = !isTherapist || !session.lobby.length;
    endBtn.hidden = !isTherapist;
    if (!isTherapist) return;
    replace(lobbySection.querySelector('ul'), ...session.lobby.map((w) => {
      const admit = h('button', { type: 'button', class: 'button small primary admit-button', dataset: { participant: w.participant_id }, 'aria-label': t('call.admit_label', { name: w.display_name }) }, t('call.admit'));
      const deny = h('button', { type: 'button', class: 'button small deny-button', dataset: { participant: w.participant_id }, 'aria-label': t('call.turn_away_label', { name: w.display_name }) }, t('call.turn_away'));
      admit.addEventListener('click', () => { session.admit(w.participant_id); announce(t('call.admitted', { name: w.display_name })); });
      deny.addEventListener('click', () => { session.denyClient(w.participant_id); announce(t('call.turned_away', { name: w.display_name })); });
      return h('li', { class: 'lobby-entry', dataset: { participant: w.participant_id } }, h('span', { class: 'who' }, w.display_name, networkBadge(h, w.network)), h('span', { class: 'actions' }, admit, deny));
    }));
  };

  let chatShown = 0;
  const drawChat = () => {
    for (; chatShown < session.chat.length; chatShown += 1) {
      const m = session.chat[chatShown];
      const el = h('div', { class: `chat-message ${m.local ? 'local' : 'remote'}` },
        h('span', { class: 'from', translate: 'no' }, m.local ? t('call.you') : m.from), h('span', { class: 'text', translate: 'no' }, m.text));
      if (m.pending) {
        el.classList.add('pending');
        el.append(h('span', { class: 'small muted pending-note' }, t('call.sending')));
        m.el = el;
      }
      chatLog.append(el);
    }
    // Messages that were waiting for a connection and have gone out since.
    for (const m of session.chat) {
      if (m.el && !m.pending) {
        m.el.classList.remove('pending');
        const note = m.el.querySelector('.pending-note');
        if (note) note.remove();
        m.el = null;
      }
    }
    chatLog.scrollTop = chatLog.scrollHeight;
    const open = session.chatOpen();
    chatStatus.textContent = open
      ? t('call.chat_private')
      : t('call.chat_closed');
  };

  let lastQuality = 'unknown';
  const drawQuality = () => {
    const q = session.quality;
    // Say it out loud only when it gets worse or recovers, not every few seconds.
    if (q !== lastQuality && (q === 'poor' || (lastQuality === 'poor' && q !== 'unknown'))) {
      announce(q === 'poor' ? t('call.weak') : t('call.better'));
    }
    lastQuality = q;
    quality.dataset.quality = q;
    const words = { good: t('call.q_good'), fair: t('call.q_fair'), poor: t('call.q_poor'), unknown: t('call.q_unknown') };
    const s = session.lastSample;
    let details = '';
    if (s && s.connected) {
      const parts = [];
      if (typeof s.rtt_ms === 'number') parts.push(t('call.q_delay', { ms: Math.round(s.rtt_ms) }));
      if (typeof s.packet_loss === 'number') parts.push(t('call.q_loss', { percent: new Intl.NumberFormat(locale(), { minimumFractionDigits: 1, maximumFractionDigits: 1 }).format(s.packet_loss * 100) }));
      if (typeof s.jitter_ms === 'number') parts.push(t('call.q_jitter', { ms: Math.round(s.jitter_ms) }));
      if (s.path) parts.push(s.path === 'relay' ? t('call.q_relay') : t('call.q_direct'));
      details = parts.join(', ');
    }
    quality.textContent = t('call.quality', { quality: words[q] || q });
    const label = details ? t('call.quality_label_details', { quality: words[q] || q, details }) : t('call.quality_label', { quality: words[q] || q });
    quality.title = label;
    quality.setAttribute('aria-label', label);
  };

  let lastView = null;
  const drawPhase = () => {
    const phase = session.phase;
    banner.hidden = phase !== 'reconnecting';
    banner.textContent = session.serverRestarting
      ? t('call.restarting')
      : t('call.dropped');
    switch (phase) {
      case 'idle':
      case 'connecting':
        if (lastView === 'call') { call.hidden = false; return; }
        showStatus(t('call.joining'), h('p', { class: 'muted' }, t('call.connecting_room')));
        return;
      case 'waiting':
        statusBox.hidden = true;
        call.hidden = true;
        waiting.hidden = false;
        ctx.setTitle(t('call.route_waiting'));
        if (lastView !== 'waiting') {
          if (session.role !== 'therapist') announce(t('call.in_waiting_said'));
          lastView = 'waiting';
          waiting.querySelector('h1').setAttribute('tabindex', '-1');
          waiting.querySelector('h1').focus();
        }
        return;
      case 'in-call':
        statusBox.hidden = true;
        waiting.hidden = true;
        call.hidden = false;
        ctx.setTitle(t('route.call'));
        if (lastView !== 'call') {
          if (lastView === 'waiting') announce(t('call.let_in_said'));
          lastView = 'call';
          callTitle.setAttribute('tabindex', '-1');
          callTitle.focus();
          fillDeviceSwitches();
        }
        return;
      case 'reconnecting':
        if (!lastView) showStatus(t('call.reconnecting'), h('p', { class: 'muted' }, t('call.trying_again')));
        return;
      case 'ended':
        announce(session.endReason === 'left' ? t('call.you_left') : t('call.ended'));
        // Left before anything started (e.g. from the waiting room): nothing to sum up.
        if (session.endReason === 'left' && !session.startedAt) {
          ctx.navigate(user.role === 'therapist' ? '/dashboard' : '/appointments', { replace: true });
        } else {
          ctx.navigate(`/summary/${id}`, { replace: true });
        }
        return;
      case 'denied':
        banner.hidden = true;
        showStatus(t('call.denied_title'),
          notice('info', t('call.denied_text')),
          h('p', {}, h('a', { class: 'button', href: '#/appointments' }, t('call.back_appointments'))));
        return;
      case 'failed': {
        banner.hidden = true;
        const f = session.failure || {};
        if (f.code === 'signed_out') {
          // This tab's sign-in ended on the server: forget it here too; the sign-in page
          // says why.
          logout(f.message);
          return;
        }
        showStatus(f.code === 'replaced' ? t('call.elsewhere') : t('call.cannot_join'),
          notice(f.code === 'replaced' ? 'info' : 'warning', f.message || t('call.not_open')),
          h('p', {}, h('a', { class: 'button', href: user.role === 'therapist' ? '#/dashboard' : '#/appointments' }, t('call.back'))));
        return;
      }
      default:
    }
  };

  const drawAll = () => {
    drawPhase();
    drawLocal();
    drawPeers();
    drawLobby();
    drawChat();
    drawQuality();
    positionEl.textContent = String(session.position || 1);
  };

  // ---- events from the session ----
  const onChange = (ev) => {
    if (!ctx.alive()) return;
    const { type } = ev.detail;
    switch (type) {
      case 'phase': drawPhase(); drawPeers(); drawLobby(); break;
      case 'position':
        positionEl.textContent = String(session.position);
        announce(session.position === 1 ? t('call.next_in_queue') : t('call.queue_place', { place: session.position }));
        break;
      case 'notice': {
        const n = session.notices[session.notices.length - 1];
        noticeList.append(h('li', {}, h('strong', {}, t('call.from_therapist')), ' ', h('span', { translate: 'no' }, n.text)));
        break;
      }
      case 'peers': case 'peer-left': case 'peer': drawPeers(); drawChat(); break;
      case 'lobby': drawLobby(); drawPeers(); break;
      case 'chat': drawChat(); break; // #chat-log is a live log: new messages are read out
      case 'quality': drawQuality(); break;
      case 'media': drawLocal(); break;
      case 'server-error':
        if (ev.detail.code === 'unknown_participant') controlsMsg.replaceChildren(notice('info', t('call.no_longer_waiting')));
        break;
      default:
    }
    if (type === 'peer-left') {
      const why = { left: 'call.left_left', timeout: 'call.left_timeout', denied: 'call.left_denied', removed: 'call.left_removed' };
      announce(t(why[ev.detail.reason] || 'call.left_other', { name: ev.detail.name }));
    }
  };
  session.addEventListener('change', onChange);
  cleanups.push(() => session.removeEventListener('change', onChange));

  // ---- controls ----
  muteBtn.addEventListener('click', () => {
    session.setMuted(!session.muted);
    announce(session.muted ? t('call.muted') : t('call.unmuted'));
  });
  camBtn.addEventListener('click', () => {
    session.setCameraOff(!session.cameraOff);
    announce(session.cameraOff ? t('call.cam_off') : t('call.cam_on'));
  });
  screenBtn.addEventListener('click', async () => {
    controlsMsg.replaceChildren();
    try {
      if (session.screenTrack) await session.stopScreenShare();
      else await session.startScreenShare();
      announce(session.screenTrack ? t('call.sharing') : t('call.share_stopped'));
    } catch (err) {
      if (err && err.name !== 'NotAllowedError' && err.name !== 'AbortError') {
        controlsMsg.replaceChildren(notice('warning', t('call.share_failed')));
      }
    }
  });
  const switcher = (kind, sel) => async () => {
    if (!sel.value) return;
    controlsMsg.replaceChildren();
    try {
      await session.switchDevice(kind, sel.value);
      announce(kind === 'video' ? t('call.cam_switched') : t('call.mic_switched'));
    } catch (err) {
      controlsMsg.replaceChildren(notice('warning', explainMediaError(err, kind === 'video' ? 'camera' : 'microphone')));
      fillDeviceSwitches();
    }
  };
  camSwitch.addEventListener('change', switcher('video', camSwitch));
  micSwitch.addEventListener('change', switcher('audio', micSwitch));
  soundBtn.addEventListener('click', () => {
    for (const tl of tiles.values()) tl.audio.play().catch(() => {});
    soundBtn.hidden = true;
  });
  hangup.addEventListener('click', () => {
    if (session.role === 'therapist') markRoomLeft(id);
    session.leave();
  });
  endBtn.addEventListener('click', () => {
    markRoomLeft(id);
    session.endForEveryone();
  });
  leaveWaiting.addEventListener('click', () => {
    session.leave();
  });
  chatForm.addEventListener('submit', (ev) => {
    ev.preventDefault();
    const text = chatInput.value.trim();
    if (!text) return;
    const sent = session.sendChat(text);
    chatInput.value = '';
    if (!sent) chatStatus.textContent = t('call.chat_later');
    chatInput.focus();
  });

  const onDeviceChange = () => { if (lastView === 'call') fillDeviceSwitches(); };
  if (navigator.mediaDevices && navigator.mediaDevices.addEventListener) navigator.mediaDevices.addEventListener('devicechange', onDeviceChange);
  cleanups.push(() => navigator.mediaDevices && navigator.mediaDevices.removeEventListener && navigator.mediaDevices.removeEventListener('devicechange', onDeviceChange));

  const clock = setInterval(() => {
    timer.textContent = session.startedAt ? fmtClock(Date.now() - session.startedAt) : '0:00';
  }, 1000);
  cleanups.push(() => clearInterval(clock));

  drawAll();

  return () => {
    cleanups.forEach((fn) => fn());
    // Videos let go of their streams; the call itself goes on (see the header banner).
    for (const tl of tiles.values()) {
      tl.video.srcObject = null;
      tl.audio.srcObject = null;
    }
    localVideo.srcObject = null;
    waitingSelf.srcObject = null;
  };
}
