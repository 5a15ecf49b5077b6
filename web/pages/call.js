// The session page: the waiting room (clients) and the call itself.
//
// All the state lives in the CallSession (call/session.js); this page only draws it and
// forwards button presses. Leaving this route does not end the call (the header offers a
// way back); hanging up does.

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
    h('h1', {}, 'Joining your session…'),
    h('p', { class: 'muted' }, 'Getting your camera and microphone ready.'));
  const banner = h('div', { id: 'reconnecting-banner', class: 'reconnecting', role: 'alert', hidden: true },
    'Your connection dropped. Reconnecting… You do not need to do anything.');
  const mediaWarnings = h('div', { class: 'media-warnings' });

  // Waiting room
  const positionEl = h('strong', { id: 'waiting-position' }, '1');
  const positionText = h('p', { class: 'position' }, 'Your place in the queue: ', positionEl);
  const waitingWho = h('p', { class: 'lead' }, 'Your therapist has been told you are here and will let you in shortly.');
  const noticeList = h('ul', { class: 'notice-list', 'aria-live': 'polite', 'aria-label': 'Messages from your therapist' });
  const waitingSelf = h('video', { autoplay: true, playsinline: true, muted: true, class: 'mirror', 'aria-label': 'Your camera' });
  const leaveWaiting = h('button', { type: 'button', class: 'button', id: 'waiting-leave' }, 'Leave the waiting room');
  const waiting = h('section', { id: 'waiting-room', class: 'waiting card', hidden: true, 'aria-labelledby': 'waiting-title' },
    h('div', { class: 'breathe', 'aria-hidden': 'true' }),
    h('h1', { id: 'waiting-title' }, 'You are in the waiting room'),
    waitingWho,
    positionText,
    noticeList,
    h('p', { class: 'muted' }, 'While you wait: find a quiet, private spot and get comfortable. Breathe in slowly as the circle grows, and out as it shrinks.'),
    h('div', { class: 'self-preview' }, waitingSelf),
    h('div', { class: 'actions' }, leaveWaiting));

  // Call
  const callTitle = h('h1', { id: 'call-title' }, 'Your session');
  const timer = h('span', { class: 'timer', id: 'call-timer', 'aria-label': 'Time in session' }, '0:00');
  const quality = h('span', { class: 'quality', id: 'quality-indicator', 'data-quality': 'unknown' }, 'Connection: checking…');
  const stage = h('div', { class: 'stage', id: 'stage', 'data-count': '0' });
  const emptyStage = h('div', { class: 'stage-empty', id: 'stage-empty' }, 'Waiting for the others to join…');
  const localVideo = h('video', { id: 'local-video', class: 'mirror', autoplay: true, playsinline: true, muted: true, 'aria-label': 'Your camera' });
  const localName = h('span', { class: 'name' }, 'You');
  const selfTile = h('div', { class: 'self-tile' }, localVideo, localName);
  const muteBtn = h('button', { type: 'button', class: 'button', id: 'mute-button', 'aria-pressed': 'false' }, 'Mute');
  const camBtn = h('button', { type: 'button', class: 'button', id: 'camera-button', 'aria-pressed': 'false' }, 'Camera off');
  const screenBtn = h('button', { type: 'button', class: 'button', id: 'screen-button', 'aria-pressed': 'false' }, 'Share screen');
  const camSwitch = select([], { id: 'camera-switch' });
  const micSwitch = select([], { id: 'mic-switch' });
  const hangup = h('button', { type: 'button', class: 'button danger', id: 'hangup-button' }, 'Leave');
  const endBtn = h('button', { type: 'button', class: 'button danger', id: 'end-session-button', hidden: true }, 'End session for everyone');
  const soundBtn = h('button', { type: 'button', class: 'button primary', id: 'sound-button', hidden: true }, 'Turn on sound');
  const controlsMsg = h('div', { 'aria-live': 'polite', class: 'controls-msg' });
  const controls = h('div', { class: 'controls', role: 'toolbar', 'aria-label': 'Call controls' },
    muteBtn, camBtn, screenBtn,
    h('span', { class: 'device-pick' }, h('label', { for: 'camera-switch' }, 'Camera'), camSwitch),
    h('span', { class: 'device-pick' }, h('label', { for: 'mic-switch' }, 'Microphone'), micSwitch),
    soundBtn, hangup, endBtn);

  const codeEl = h('span', { id: 'verification-code', class: 'code' });
  const codeNote = h('p', { class: 'small muted', id: 'verification-note' }, 'Compare this code with the other person: if you both see the same code, no one else is on the line.');
  const lobbySection = h('section', { id: 'call-lobby', hidden: true, 'aria-labelledby': 'call-lobby-title' },
    h('h2', { id: 'call-lobby-title' }, 'Waiting room'), h('ul', { class: 'lobby-list' }));
  const chatLog = h('div', { id: 'chat-log', class: 'chat-log', role: 'log', 'aria-live': 'polite', 'aria-label': 'Chat messages' });
  const chatInput = h('input', { type: 'text', id: 'chat-input', maxlength: 1000, autocomplete: 'off' });
  const chatSend = h('button', { type: 'submit', class: 'button small primary', id: 'chat-send' }, 'Send');
  const chatStatus = h('p', { class: 'small muted', id: 'chat-status' }, 'Messages go straight to the other person and are not saved.');
  const chatForm = h('form', { class: 'chat-form' }, h('label', { for: 'chat-input', class: 'visually-hidden' }, 'Message'), chatInput, chatSend);
  const side = h('aside', { class: 'side', 'aria-label': 'Chat and details' },
    lobbySection,
    h('section', { 'aria-labelledby': 'verify-title' }, h('h2', { id: 'verify-title' }, 'Verification code'), codeEl, codeNote),
    h('section', { class: 'chat', 'aria-labelledby': 'chat-title' }, h('h2', { id: 'chat-title' }, 'Chat'), chatLog, chatForm, chatStatus));
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
    callTitle.textContent = `Session with ${who}`;
    waitingWho.textContent = user.role === 'client'
      ? `${a.therapist.display_name} has been told you are here and will let you in shortly. Your session starts at ${fmtTime(a.starts_at, tz)}.`
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
      if (stream) stream.getTracks().forEach((t) => t.stop());
      return undefined;
    }
    // A session that ended meanwhile (e.g. the therapist ended it) cannot take media.
    if (session.phase === 'ended' || session.phase === 'failed' || session.phase === 'denied') {
      if (stream) stream.getTracks().forEach((t) => t.stop());
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
    screenBtn.textContent = session.screenTrack ? 'Stop sharing' : 'Share screen';
    localName.textContent = `You${session.muted ? ' (muted)' : ''}${session.cameraOff ? ' (camera off)' : ''}`;
    if (!canShareScreen()) {
      screenBtn.disabled = true;
      screenBtn.title = 'This browser cannot share its screen.';
    }
  };

  const fillDeviceSwitches = async () => {
    const { cameras, mics } = await listDevices().catch(() => ({ cameras: [], mics: [] }));
    const stream = session.camStream;
    const curCam = stream && stream.getVideoTracks()[0] ? stream.getVideoTracks()[0].getSettings().deviceId : '';
    const curMic = stream && stream.getAudioTracks()[0] ? stream.getAudioTracks()[0].getSettings().deviceId : '';
    replace(camSwitch, ...(cameras.length ? cameras : [{ value: '', label: 'No camera' }]).map((d) => h('option', { value: d.value }, d.label)));
    replace(micSwitch, ...(mics.length ? mics : [{ value: '', label: 'No microphone' }]).map((d) => h('option', { value: d.value }, d.label)));
    if (curCam) camSwitch.value = curCam;
    if (curMic) micSwitch.value = curMic;
    camSwitch.disabled = !cameras.length;
    micSwitch.disabled = !mics.length;
  };

  const tileFor = (link) => {
    let t = tiles.get(link.id);
    if (!t) {
      const video = h('video', { class: 'remote-video', dataset: { participant: link.id }, autoplay: true, playsinline: true, muted: true });
      // Sound plays through its own element: the video stays muted so it may always
      // autoplay, and if the browser blocks sound (no click yet, e.g. after a reload) we can
      // offer a button without losing the picture.
      const audio = h('audio', { class: 'remote-audio', dataset: { participant: link.id }, autoplay: true });
      const nameEl = h('span', { class: 'name' });
      const statusEl = h('div', { class: 'tile-status', role: 'status' });
      const tile = h('figure', { class: 'tile', dataset: { participant: link.id } }, video, audio, nameEl, statusEl);
      t = { tile, video, audio, nameEl, statusEl };
      tiles.set(link.id, t);
    }
    if (t.video.srcObject !== link.remoteStream) {
      t.video.srcObject = link.remoteStream;
      t.audio.srcObject = link.remoteStream;
    }
    t.video.play().catch(() => {});
    t.audio.play().then(() => { soundBtn.hidden = true; }).catch((err) => {
      if (err && err.name === 'NotAllowedError') soundBtn.hidden = false;
    });
    t.nameEl.textContent = link.info.display_name + (link.info.role === 'therapist' && user.role !== 'therapist' ? ' (therapist)' : '');
    const st = link.status();
    const words = {
      waiting: user.role === 'therapist' ? 'Connecting…' : `Waiting for ${link.info.display_name}…`,
      connecting: 'Connecting…',
      reconnecting: `${link.info.display_name}'s connection dropped. Waiting for them to come back…`,
      connected: '',
    };
    t.statusEl.textContent = words[st] || '';
    t.statusEl.hidden = st === 'connected';
    // Said when someone's connection drops and when they are back.
    if (st === 'reconnecting' && !t.dropped) {
      t.dropped = true;
      announce(words.reconnecting);
    } else if (st === 'connected' && t.dropped) {
      t.dropped = false;
      announce(`${link.info.display_name} is back.`);
    }
    return t;
  };

  const drawPeers = () => {
    const links = [...session.peers.values()];
    for (const [pid, t] of tiles) {
      if (!session.peers.has(pid)) {
        t.video.srcObject = null;
        t.audio.srcObject = null;
        t.tile.remove();
        tiles.delete(pid);
      }
    }
    for (const link of links) {
      const t = tileFor(link);
      if (t.tile.parentElement !== stage) stage.append(t.tile);
    }
    stage.dataset.count = String(links.length);
    emptyStage.hidden = links.length > 0;
    if (!links.length) {
      emptyStage.textContent = user.role === 'therapist'
        ? (session.lobby.length ? 'Your client is in the waiting room: admit them when you are ready.' : 'Waiting for your client to arrive. They will appear in the waiting room.')
        : 'Waiting for your therapist to join…';
    }
    drawCodes();
  };

  let lastCodeSaid = '';
  const drawCodes = () => {
    const links = [...session.peers.values()];
    const withCode = links.filter((l) => l.code);
    if (!withCode.length) {
      codeEl.textContent = ''; // empty until there is a real code (never a placeholder)
      codeNote.textContent = 'The code appears once you are connected. Compare it with the other person: if you both see the same code, no one else is on the line.';
    } else if (links.length === 1) {
      codeEl.textContent = withCode[0].code;
      codeNote.textContent = `Compare this code with ${withCode[0].info.display_name}: if you both see the same code, no one else is on the line.`;
    } else {
      replace(codeEl, ...withCode.map((l) => h('span', { class: 'code-line' }, h('span', { class: 'code-name' }, `${l.info.display_name}: `), l.code)));
      codeNote.textContent = 'Compare each code with that person: if you both see the same code, no one else is on the line.';
    }
    if (withCode.some((l) => l.codeChanged)) {
      codeNote.textContent = `The code changed because the connection was rebuilt: compare it again. ${codeNote.textContent}`;
    }
    // Said once per new code (screen readers do not notice a span changing).
    const said = withCode.map((l) => `${l.info.display_name} ${l.code}`).join(', ');
    if (said && said !== lastCodeSaid) {
      announce(withCode.length === 1
        ? `Verification code: ${withCode[0].code}. ${codeNote.textContent}`
        : `Verification codes: ${withCode.map((l) => `${l.info.display_name}, ${l.code}`).join('; ')}. ${codeNote.textContent}`);
    }
    lastCodeSaid = said;
    const suspicious = links.filter((l) => l.history.suspicious);
    if (suspicious.length) {
      // A check was broken off or failed at least once in this call: that is how someone in
      // the middle would try again, so it stays said for the rest of the call.
      codeNote.textContent = `Checking the connection with ${suspicious.map((l) => l.info.display_name).join(' and ')} was interrupted before it finished. Compare the code with care; if this happens again, end the call and tell the practice. ${codeNote.textContent}`;
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
      const admit = h('button', { type: 'button', class: 'button small primary admit-button', dataset: { participant: w.participant_id }, 'aria-label': `Admit ${w.display_name}` }, 'Admit');
      const deny = h('button', { type: 'button', class: 'button small deny-button', dataset: { participant: w.participant_id }, 'aria-label': `Turn away ${w.display_name}` }, 'Turn away');
      admit.addEventListener('click', () => { session.admit(w.participant_id); announce(`${w.display_name} admitted.`); });
      deny.addEventListener('click', () => { session.denyClient(w.participant_id); announce(`${w.display_name} was turned away.`); });
      return h('li', { class: 'lobby-entry', dataset: { participant: w.participant_id } }, h('span', { class: 'who' }, w.display_name, networkBadge(h, w.network)), h('span', { class: 'actions' }, admit, deny));
    }));
  };

  let chatShown = 0;
  const drawChat = () => {
    for (; chatShown < session.chat.length; chatShown += 1) {
      const m = session.chat[chatShown];
      const el = h('div', { class: `chat-message ${m.local ? 'local' : 'remote'}` },
        h('span', { class: 'from' }, m.local ? 'You' : m.from), m.text);
      if (m.pending) {
        el.classList.add('pending');
        el.append(h('span', { class: 'small muted pending-note' }, ' (sending…)'));
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
      ? 'Messages go straight to the other person and are not saved.'
      : 'Chat opens once you are connected with someone.';
  };

  let lastQuality = 'unknown';
  const drawQuality = () => {
    const q = session.quality;
    // Say it out loud only when it gets worse or recovers, not every few seconds.
    if (q !== lastQuality && (q === 'poor' || (lastQuality === 'poor' && q !== 'unknown'))) {
      announce(q === 'poor' ? 'Your connection is weak. The picture may freeze for a moment.' : 'Your connection is better again.');
    }
    lastQuality = q;
    quality.dataset.quality = q;
    const words = { good: 'Good', fair: 'Fair', poor: 'Poor', unknown: 'checking…' };
    const s = session.lastSample;
    let details = '';
    if (s && s.connected) {
      const parts = [];
      if (typeof s.rtt_ms === 'number') parts.push(`delay ${Math.round(s.rtt_ms)} ms`);
      if (typeof s.packet_loss === 'number') parts.push(`loss ${(s.packet_loss * 100).toFixed(1)} %`);
      if (typeof s.jitter_ms === 'number') parts.push(`jitter ${Math.round(s.jitter_ms)} ms`);
      if (s.path) parts.push(s.path === 'relay' ? 'through the relay' : 'direct');
      details = parts.join(', ');
    }
    quality.textContent = `Connection: ${words[q] || q}`;
    quality.title = details;
    quality.setAttribute('aria-label', `Connection quality: ${words[q] || q}${details ? ` (${details})` : ''}`);
  };

  let lastView = null;
  const drawPhase = () => {
    const phase = session.phase;
    banner.hidden = phase !== 'reconnecting';
    banner.textContent = session.serverRestarting
      ? 'The service is restarting. Reconnecting… You do not need to do anything.'
      : 'Your connection dropped. Reconnecting… You do not need to do anything.';
    switch (phase) {
      case 'idle':
      case 'connecting':
        if (lastView === 'call') { call.hidden = false; return; }
        showStatus('Joining your session…', h('p', { class: 'muted' }, 'Connecting to the session room.'));
        return;
      case 'waiting':
        statusBox.hidden = true;
        call.hidden = true;
        waiting.hidden = false;
        ctx.setTitle('Waiting room');
        if (lastView !== 'waiting') {
          if (session.role !== 'therapist') announce('You are in the waiting room. Your therapist will let you in.');
          lastView = 'waiting';
          waiting.querySelector('h1').setAttribute('tabindex', '-1');
          waiting.querySelector('h1').focus();
        }
        return;
      case 'in-call':
        statusBox.hidden = true;
        waiting.hidden = true;
        call.hidden = false;
        ctx.setTitle('Session');
        if (lastView !== 'call') {
          if (lastView === 'waiting') announce('You have been let in. Your session is starting.');
          lastView = 'call';
          callTitle.setAttribute('tabindex', '-1');
          callTitle.focus();
          fillDeviceSwitches();
        }
        return;
      case 'reconnecting':
        if (!lastView) showStatus('Reconnecting…', h('p', { class: 'muted' }, 'Trying to reach the session room again.'));
        return;
      case 'ended':
        announce(session.endReason === 'left' ? 'You left the session.' : 'The session has ended.');
        // Left before anything started (e.g. from the waiting room): nothing to sum up.
        if (session.endReason === 'left' && !session.startedAt) {
          ctx.navigate(user.role === 'therapist' ? '/dashboard' : '/appointments', { replace: true });
        } else {
          ctx.navigate(`/summary/${id}`, { replace: true });
        }
        return;
      case 'denied':
        banner.hidden = true;
        showStatus('Your therapist cannot see you right now',
          notice('info', 'They have closed the waiting room for this session. If you are unsure why, please contact them or the practice.'),
          h('p', {}, h('a', { class: 'button', href: '#/appointments' }, 'Back to my appointments')));
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
        showStatus(f.code === 'replaced' ? 'This session continues elsewhere' : 'You cannot join right now',
          notice(f.code === 'replaced' ? 'info' : 'warning', f.message || 'This session is not open for joining now.'),
          h('p', {}, h('a', { class: 'button', href: user.role === 'therapist' ? '#/dashboard' : '#/appointments' }, 'Back')));
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
        announce(session.position === 1 ? 'You are next in the queue.' : `Your place in the queue: ${session.position}.`);
        break;
      case 'notice': {
        const n = session.notices[session.notices.length - 1];
        noticeList.append(h('li', {}, h('strong', {}, 'From your therapist: '), n.text));
        break;
      }
      case 'peers': case 'peer-left': case 'peer': drawPeers(); drawChat(); break;
      case 'lobby': drawLobby(); drawPeers(); break;
      case 'chat': drawChat(); break; // #chat-log is a live log: new messages are read out
      case 'quality': drawQuality(); break;
      case 'media': drawLocal(); break;
      case 'server-error':
        if (ev.detail.code === 'unknown_participant') controlsMsg.replaceChildren(notice('info', 'That person is no longer waiting.'));
        break;
      default:
    }
    if (type === 'peer-left') {
      const why = { left: 'left the session', timeout: 'lost their connection', denied: 'was turned away', removed: 'was removed', ended: 'left' };
      announce(`${ev.detail.name} ${why[ev.detail.reason] || 'left'}.`);
    }
  };
  session.addEventListener('change', onChange);
  cleanups.push(() => session.removeEventListener('change', onChange));

  // ---- controls ----
  muteBtn.addEventListener('click', () => {
    session.setMuted(!session.muted);
    announce(session.muted ? 'Microphone muted.' : 'Microphone on.');
  });
  camBtn.addEventListener('click', () => {
    session.setCameraOff(!session.cameraOff);
    announce(session.cameraOff ? 'Camera off.' : 'Camera on.');
  });
  screenBtn.addEventListener('click', async () => {
    controlsMsg.replaceChildren();
    try {
      if (session.screenTrack) await session.stopScreenShare();
      else await session.startScreenShare();
      announce(session.screenTrack ? 'You are sharing your screen.' : 'Screen sharing stopped. Your camera is back on.');
    } catch (err) {
      if (err && err.name !== 'NotAllowedError' && err.name !== 'AbortError') {
        controlsMsg.replaceChildren(notice('warning', 'Your screen could not be shared.'));
      }
    }
  });
  const switcher = (kind, sel) => async () => {
    if (!sel.value) return;
    controlsMsg.replaceChildren();
    try {
      await session.switchDevice(kind, sel.value);
      announce(kind === 'video' ? 'Camera switched.' : 'Microphone switched.');
    } catch (err) {
      controlsMsg.replaceChildren(notice('warning', explainMediaError(err, kind === 'video' ? 'camera' : 'microphone')));
      fillDeviceSwitches();
    }
  };
  camSwitch.addEventListener('change', switcher('video', camSwitch));
  micSwitch.addEventListener('change', switcher('audio', micSwitch));
  soundBtn.addEventListener('click', () => {
    for (const t of tiles.values()) t.audio.play().catch(() => {});
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
    if (!sent) chatStatus.textContent = 'Your message will be sent as soon as you are connected.';
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
    for (const t of tiles.values()) {
      t.video.srcObject = null;
      t.audio.srcObject = null;
    }
    localVideo.srcObject = null;
    waitingSelf.srcObject = null;
  };
}
