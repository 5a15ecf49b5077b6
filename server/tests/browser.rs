//! End to end in real browsers: a therapist and a client, each in a headless Chromium of
//! their own (Debian's), driven through ChromeDriver, meet through the whole chain: the web
//! client, the API, signalling and browser WebRTC with fake camera and microphone.
//!
//! Every packet stays on loopback: the test re-runs itself inside a network namespace of its
//! own that has only `lo` (so Chromium cannot reach, or even look up, anything else), and
//! starts the server, ChromeDriver and Chromium in there. Creating the namespace needs root,
//! as CI and these machines have.

use alcove::{
    auth::Passwords,
    domain::{DisplayName, Email, Role},
    store::{Db, NewUser},
};
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};
use std::{
    io::{BufRead as _, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

#[allow(dead_code)]
#[path = "api/turn.rs"]
mod turn;

#[allow(dead_code)]
#[path = "api/smtp_sink.rs"]
mod smtp_sink;

const IN_NETNS: &str = "ALCOVE_E2E_IN_NETNS";
const TEST: &str = "a_therapist_and_a_client_meet_in_real_browsers";
const CHROMIUM: &str = "/usr/lib/chromium/chromium";
const PASSWORD: &str = "a calm and quiet room";

fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file())
}

/// A network namespace, deleted when dropped.
struct Netns(String);

impl Netns {
    fn create(name: &str) -> Netns {
        let run = |args: &[&str]| {
            let ok = Command::new("ip")
                .args(args)
                .status()
                .expect("ip runs")
                .success();
            assert!(ok, "ip {args:?} failed");
        };
        let _ = Command::new("ip")
            .args(["netns", "del", name])
            .stderr(Stdio::null())
            .status();
        run(&["netns", "add", name]);
        run(&["netns", "exec", name, "ip", "link", "set", "lo", "up"]);
        Netns(name.to_owned())
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

#[test]
fn a_therapist_and_a_client_meet_in_real_browsers() {
    if std::env::var_os(IN_NETNS).is_some() {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
            .block_on(scenario());
        return;
    }
    assert!(
        Path::new(CHROMIUM).exists() && which("chromedriver").is_some(),
        "Debian's chromium and chromium-driver are required: apt-get install chromium chromium-driver (scripts/test installs them)"
    );
    assert!(
        which("ip").is_some(),
        "iproute2's `ip` is required for the network namespace"
    );
    let uid = Command::new("id").arg("-u").output().expect("id runs");
    assert_eq!(
        String::from_utf8_lossy(&uid.stdout).trim(),
        "0",
        "the browser test needs root to create its network namespace (run the suite as root)"
    );
    let ns = Netns::create(&format!("alcove-e2e-{}", std::process::id()));
    let status = Command::new("ip")
        .args(["netns", "exec", &ns.0])
        .arg(std::env::current_exe().unwrap())
        .args(["--exact", TEST, "--nocapture"])
        .env(IN_NETNS, "1")
        .status()
        .expect("the test re-runs inside its namespace");
    assert!(
        status.success(),
        "the browser scenario failed inside the namespace (output above)"
    );
}

/// A child process killed when dropped.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A child process that leads a process group of its own: dropped, the whole group is
/// killed (ChromeDriver and the Chromiums it started, also when the test fails half-way).
struct ProcGroup(Child);

impl Drop for ProcGroup {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.0.id())])
            .status();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The TURN relay the server hands out: (port, secret).
static TURN: std::sync::OnceLock<(u16, String)> = std::sync::OnceLock::new();
/// The SMTP sink's URL (appointment emails).
static SMTP: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// Start the server (embedded web client, SQLite, data in `dir`) on `port` (0: any) and
/// return it with its base URL.
fn start_server(dir: &Path, port: u16) -> (Proc, String) {
    let (turn_port, turn_secret) = TURN.get().expect("coturn first").clone();
    let mut child = Command::new(env!("CARGO_BIN_EXE_alcove"))
        .current_dir(dir)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("RUST_LOG", "info")
        .env("ALCOVE_LISTEN", format!("127.0.0.1:{port}"))
        .env("ALCOVE_MIN_NOTICE", "0s")
        .env("ALCOVE_NETWORK_TEST_UDP", "127.0.0.1:0")
        .env(
            "ALCOVE_TURN_URLS",
            format!("turn:127.0.0.1:{turn_port}?transport=udp"),
        )
        .env("ALCOVE_TURN_SECRET", turn_secret)
        .env("ALCOVE_SMTP_URL", SMTP.get().expect("the SMTP sink first"))
        .env("ALCOVE_MAIL_FROM", "Alcove <no-reply@alcove.test>")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("alcove starts");
    let out = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if let Some(rest) = line.split("address=").nth(1) {
                let _ = tx.send(
                    rest.split_whitespace()
                        .next()
                        .unwrap_or_default()
                        .to_owned(),
                );
            }
            if line.contains("ERROR") || line.contains("WARN") {
                eprintln!("server: {line}");
            }
        }
    });
    let addr = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("the server listens");
    (Proc(child), format!("http://{addr}"))
}

/// The time zone of the whole scenario (the therapist's hours and profile, and the
/// browsers'): one where it is the middle of the day now. A day's hours end at its
/// midnight, so in the last 50 minutes before midnight no session starts soon enough to be
/// joinable now, and just after it the dashboard's "today" no longer holds one booked before
/// (the test must pass at any hour it runs).
static MIDDAY_ZONE: std::sync::LazyLock<&'static str> = std::sync::LazyLock::new(|| {
    let utc_hour = jiff::Timestamp::now()
        .to_zoned(jiff::tz::TimeZone::UTC)
        .hour();
    if (6..18).contains(&utc_hour) {
        "UTC"
    } else {
        "Etc/GMT-12"
    }
});

fn start_chromedriver() -> (ProcGroup, u16) {
    use std::os::unix::process::CommandExt as _;
    let port = free_port();
    let child = Command::new(which("chromedriver").unwrap())
        .process_group(0)
        .arg(format!("--port={port}"))
        .env("TZ", *MIDDAY_ZONE)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromedriver starts");
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "chromedriver did not listen");
        std::thread::sleep(Duration::from_millis(100));
    }
    (ProcGroup(child), port)
}

/// A Chromium of its own (its own profile: a separate browser context).
async fn browser(port: u16, profile: &Path) -> Client {
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": CHROMIUM,
            "args": [
                "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
                "--allow-loopback-in-peer-connection", "--autoplay-policy=no-user-gesture-required",
                "--window-size=1280,860",
                format!("--user-data-dir={}", profile.display()),
            ],
        }),
    );
    ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(&format!("http://127.0.0.1:{port}"))
        .await
        .expect("a browser session")
}

/// Poll a JavaScript expression until it is truthy; return its value.
async fn wait_js(c: &Client, what: &str, expr: &str, within: Duration) -> Value {
    let deadline = Instant::now() + within;
    let script = format!("try {{ return ({expr}); }} catch (e) {{ return null; }}");
    loop {
        let v = c.execute(&script, vec![]).await.unwrap_or(Value::Null);
        let truthy = match &v {
            Value::Null => false,
            Value::Bool(b) => *b,
            Value::String(s) => !s.is_empty(),
            Value::Number(n) => n.as_f64() != Some(0.0),
            _ => true,
        };
        if truthy {
            return v;
        }
        if Instant::now() > deadline {
            let url = c
                .current_url()
                .await
                .map(|u| u.to_string())
                .unwrap_or_default();
            // What the page knew of its call, for the failure report.
            let call = c
                .execute(
                    "try { return JSON.stringify(window.alcoveCall.state()); } catch (e) { return String(e); }",
                    vec![],
                )
                .await
                .unwrap_or(Value::Null);
            panic!("timed out waiting for {what} (at {url}); call state: {call}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// axe-core, from npm, kept in the repository for this test (web/tests/vendor/axe-core).
const AXE: &str = include_str!("../../web/tests/vendor/axe-core/axe.min.js");

/// The WCAG 2.0, 2.1 and 2.2 rules of levels A and AA.
const WCAG_TAGS: &str = "['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa', 'wcag22a', 'wcag22aa']";

/// Run axe-core on the page as it is now: no violation of the WCAG A and AA rules.
async fn audit(c: &Client, page: &str) {
    let loaded = c
        .execute("return typeof window.axe === 'object'", vec![])
        .await
        .unwrap();
    if loaded != Value::Bool(true) {
        c.execute(&format!("{AXE}\nreturn true;"), vec![])
            .await
            .expect("axe-core loads");
    }
    let script = format!(
        "const done = arguments[arguments.length - 1];
         axe.run(document, {{ runOnly: {{ type: 'tag', values: {WCAG_TAGS} }}, resultTypes: ['violations'] }})
           .then((r) => done(r.violations.map((v) => ({{ id: v.id, impact: v.impact, help: v.help,
               nodes: v.nodes.slice(0, 5).map((n) => n.target.join(' ') + ' :: ' + n.failureSummary) }}))))
           .catch((e) => done([{{ id: 'axe-error', help: String(e) }}]));"
    );
    let violations = c.execute_async(&script, vec![]).await.expect("axe runs");
    let list = violations.as_array().expect("a list");
    assert!(
        list.is_empty(),
        "axe-core: {} WCAG A/AA violation(s) on {page}:\n{}",
        list.len(),
        serde_json::to_string_pretty(&violations).unwrap()
    );
    eprintln!("axe-core: no WCAG A/AA violation on {page}");
}

async fn visible(c: &Client, selector: &str) -> bool {
    let js = format!(
        "const e = document.querySelector({sel}); return !!e && !e.hidden && e.offsetParent !== null;",
        sel = serde_json::to_string(selector).unwrap()
    );
    c.execute(&js, vec![])
        .await
        .ok()
        .and_then(|v| v.as_bool())
        .unwrap_or(false)
}

async fn wait_visible(c: &Client, selector: &str, within: Duration) {
    let deadline = Instant::now() + within;
    while !visible(c, selector).await {
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {selector} to show"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn click(c: &Client, selector: &str) {
    wait_visible(c, selector, Duration::from_secs(20)).await;
    c.find(Locator::Css(selector))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
}

// ---- by keyboard alone (order 12) ----------------------------------------------------------

const TAB: char = '\u{E004}';
const ENTER: char = '\u{E007}';
const SPACE: char = '\u{E00D}';

/// Press one key, as a person at the keyboard does (WebDriver's key actions).
async fn press(c: &Client, key: char) {
    use fantoccini::actions::{InputSource as _, KeyAction, KeyActions};
    let keys = KeyActions::new("keyboard".into())
        .then(KeyAction::Down { value: key })
        .then(KeyAction::Up { value: key });
    c.perform_actions(keys).await.expect("a key press");
}

/// Tab until `selector` has the focus, then press `key` (if any). Every element the focus
/// stops at on the way must show where the focus is (an outline or a shadow).
async fn key_to(c: &Client, selector: &str, key: Option<char>) {
    wait_visible(c, selector, Duration::from_secs(30)).await;
    let sel = serde_json::to_string(selector).unwrap();
    let check = format!(
        "const a = document.activeElement;
         if (!a || a === document.body || a === document.documentElement) return 'none';
         const s = getComputedStyle(a);
         const shown = (s.outlineStyle !== 'none' && parseFloat(s.outlineWidth) > 0) || s.boxShadow !== 'none';
         const name = a.id ? '#' + a.id : a.tagName.toLowerCase() + '.' + a.className;
         if (!shown) return 'unmarked ' + name;
         return a.matches({sel}) ? 'target' : 'other ' + name;"
    );
    let mut path = Vec::new();
    for _ in 0..150 {
        press(c, TAB).await;
        let at = c.execute(&check, vec![]).await.unwrap();
        let at = at.as_str().unwrap_or("none").to_owned();
        assert!(
            !at.starts_with("unmarked"),
            "the keyboard focus is not visible on {} (tabbing to {selector})",
            &at[9..]
        );
        if at == "target" {
            if let Some(k) = key {
                press(c, k).await;
            }
            return;
        }
        path.push(at);
    }
    panic!(
        "{selector} cannot be reached with Tab; the focus went: {}",
        path.join(" ")
    );
}

/// Type into the focused field, key by key.
async fn type_keys(c: &Client, text: &str) {
    c.active_element()
        .await
        .unwrap()
        .send_keys(text)
        .await
        .unwrap();
}

/// Tab to a field and type into it.
async fn key_in(c: &Client, selector: &str, text: &str) {
    key_to(c, selector, None).await;
    type_keys(c, text).await;
}

/// Keep what the page's screen-reader live region says (`#sr-status`), in `window.__said`.
async fn listen(c: &Client) {
    c.execute(
        "if (!window.__said) {
           window.__said = [];
           const region = document.getElementById('sr-status');
           new MutationObserver(() => { const t = region.textContent.trim(); if (t) window.__said.push(t); })
             .observe(region, { childList: true, characterData: true, subtree: true });
         }
         return true;",
        vec![],
    )
    .await
    .unwrap();
}

/// Wait until the live region has said something containing `words`.
async fn heard(c: &Client, who: &str, words: &str) {
    let w = serde_json::to_string(words).unwrap();
    wait_js(
        c,
        &format!("{who}'s screen reader to hear {words:?}"),
        &format!("(window.__said || []).some((t) => t.includes({w}))"),
        Duration::from_secs(30),
    )
    .await;
}

/// Order 12: every visible text of the page (and every aria-label, title and placeholder) is
/// a text of the current language's catalog, user data inside it aside: none is left in
/// English, none is in no catalog. Content marked `translate="no"` (what people wrote of
/// themselves, names of languages, time zones, the brand) or `data-intl` (dates and times
/// formatted by Intl in the page's language) is not checked.
async fn not_in_language(c: &Client) -> (String, Vec<String>) {
    let script = r#"
        const done = arguments[arguments.length - 1];
        import('/lib/i18n.js').then(({ CATALOGS, language }) => {
          const lang = language();
          const forms = (v) => (typeof v === 'object' ? Object.values(v) : [v]);
          const esc = (x) => x.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
          const pat = (x) => new RegExp('^' + esc(x).replace(/\\\{\w+\\\}/g, '.+') + '$', 's');
          const mine = Object.values(CATALOGS[lang]).flatMap(forms).map(pat);
          const english = Object.entries(CATALOGS.en)
            .filter(([k, v]) => JSON.stringify(v) !== JSON.stringify(CATALOGS[lang][k]))
            .flatMap(([, v]) => forms(v)).map(pat);
          const bad = [];
          const judge = (text, where) => {
            text = text.replace(/\s+/g, ' ').trim();
            if (!/\p{L}{2}/u.test(text)) return;
            if (english.some((p) => p.test(text))) bad.push(`English (${where}): ${text}`);
            else if (!mine.some((p) => p.test(text))) bad.push(`in no catalog (${where}): ${text}`);
          };
          const shown = (el) => el.getClientRects().length > 0 && getComputedStyle(el).visibility !== 'hidden';
          const skip = (el) => el.closest('[translate="no"], [data-intl], script, style, noscript, #sr-status');
          const walk = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
          for (let n = walk.nextNode(); n; n = walk.nextNode()) {
            const el = n.parentElement;
            if (el && !skip(el) && shown(el)) judge(n.textContent, el.tagName.toLowerCase() + (el.id ? '#' + el.id : ''));
          }
          for (const el of document.body.querySelectorAll('[aria-label], [title], [placeholder]')) {
            if (skip(el) || !shown(el)) continue;
            for (const a of ['aria-label', 'title', 'placeholder']) if (el.hasAttribute(a)) judge(el.getAttribute(a), a);
          }
          done({ lang, bad });
        }).catch((e) => done({ lang: null, bad: [String(e)] }));
    "#;
    let r = c
        .execute_async(script, vec![])
        .await
        .expect("the check runs");
    let bad: Vec<String> = r["bad"]
        .as_array()
        .expect("a list")
        .iter()
        .map(|v| v.as_str().unwrap_or_default().to_owned())
        .collect();
    (r["lang"].as_str().unwrap_or_default().to_owned(), bad)
}

/// [`not_in_language`] finds nothing on the page.
async fn no_english(c: &Client, page: &str) {
    let (lang, bad) = not_in_language(c).await;
    assert!(
        bad.is_empty(),
        "{page} in {lang}: texts not in its language:\n{}",
        bad.join("\n")
    );
    eprintln!("{page} in {lang}: every text is in its language");
}

/// The check is not blind: an English text and a text of no catalog, put on the page, are
/// both found.
async fn the_language_check_sees(c: &Client) {
    c.execute(
        "const p = document.createElement('p'); p.id = 'i18n-control';
         p.append(Object.assign(document.createElement('span'), { textContent: 'Sign in' }),
                  Object.assign(document.createElement('span'), { textContent: 'Words from no catalog at all' }));
         document.querySelector('main').append(p); return true;",
        vec![],
    )
    .await
    .unwrap();
    let (_, bad) = not_in_language(c).await;
    c.execute(
        "document.getElementById('i18n-control').remove(); return true;",
        vec![],
    )
    .await
    .unwrap();
    assert!(
        bad.iter()
            .any(|b| b.starts_with("English") && b.ends_with(": Sign in"))
            && bad
                .iter()
                .any(|b| b.starts_with("in no catalog")
                    && b.ends_with("Words from no catalog at all")),
        "the language check missed planted texts: {bad:?}"
    );
}

/// Choose a language with the header's picker.
async fn choose_language(c: &Client, code: &str) {
    c.find(Locator::Css("#language-select"))
        .await
        .unwrap()
        .select_by_value(code)
        .await
        .unwrap();
    wait_js(
        c,
        &format!("the page in {code}"),
        &format!("document.documentElement.lang === '{code}'"),
        Duration::from_secs(10),
    )
    .await;
}

async fn text_of(c: &Client, selector: &str) -> String {
    c.find(Locator::Css(selector))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// Remote video: the element's width and the frames decoded over all peer connections.
async fn remote_video(c: &Client) -> (u64, u64) {
    let v = c
        .execute_async(
            r#"const done = arguments[arguments.length - 1];
            (async () => {
              let frames = 0;
              const pcs = window.alcoveCall ? window.alcoveCall.peerConnections() : [];
              for (const pc of pcs) {
                const stats = await pc.getStats();
                stats.forEach(r => { if (r.type === 'inbound-rtp' && r.kind === 'video') frames += r.framesDecoded || 0; });
              }
              const v = document.querySelector('video.remote-video');
              done([v ? v.videoWidth : 0, frames]);
            })().catch(() => done([0, 0]));"#,
            vec![],
        )
        .await
        .unwrap_or(json!([0, 0]));
    (v[0].as_u64().unwrap_or(0), v[1].as_u64().unwrap_or(0))
}

/// Wait until remote video is showing and decoding: a width, and frames that keep coming.
async fn video_flows(c: &Client, who: &str) {
    let deadline = Instant::now() + Duration::from_secs(45);
    let mut last = 0;
    loop {
        let (width, frames) = remote_video(c).await;
        if width > 0 && frames > last && last > 0 {
            return;
        }
        last = frames;
        assert!(
            Instant::now() < deadline,
            "{who}: remote video not decoding (width {width}, frames {frames})"
        );
        tokio::time::sleep(Duration::from_millis(700)).await;
    }
}

async fn shot(c: &Client, name: &str) {
    let png = c.screenshot().await.expect("screenshot");
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(name), png).unwrap();
}

async fn api(
    base: &str,
    method: reqwest::Method,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> Value {
    let mut r = reqwest::Client::new().request(method, format!("{base}{path}"));
    if let Some(t) = token {
        r = r.bearer_auth(t);
    }
    if let Some(b) = body {
        r = r.json(&b);
    }
    let res = r.send().await.unwrap();
    let status = res.status();
    let text = res.text().await.unwrap();
    assert!(status.is_success(), "{path}: {status} {text}");
    serde_json::from_str(&text).unwrap_or(Value::Null)
}

/// The verification exchange as each browser ran it (`window.alcoveCall`).
async fn verification_of(c: &Client) -> Value {
    wait_js(
        c,
        "the verification transcript",
        "(() => { const p = window.alcoveCall.state().peers[0]; return p && p.verification && p.verification.state === 'done' ? p.verification : null; })()",
        Duration::from_secs(20),
    )
    .await
}

/// Both browsers ran the commit-then-reveal exchange of web/README.md: opposite roles, each
/// one's nonce is the other's, the initiator's commitment opens to its nonce, and the code
/// shown is the documented derivation over both fingerprints and both nonces.
async fn check_verification(client: &Client, therapist: &Client, shown: &str) {
    use sha2::{Digest as _, Sha256};
    let c = verification_of(client).await;
    let t = verification_of(therapist).await;
    assert_eq!(c["protocol"], "alcove-sas-v1");
    eprintln!(
        "verification: remote fingerprints from {} and {}",
        c["remoteSource"], t["remoteSource"]
    );
    assert_ne!(c["role"], t["role"], "{c} {t}");
    assert_eq!(c["localNonce"], t["remoteNonce"]);
    assert_eq!(t["localNonce"], c["remoteNonce"]);
    assert_eq!(c["localFingerprint"], t["remoteFingerprint"]);
    assert_eq!(t["localFingerprint"], c["remoteFingerprint"]);
    let (i, r) = if c["role"] == "initiator" {
        (&c, &t)
    } else {
        (&t, &c)
    };
    let hex = |v: &Value| hex::decode(v.as_str().unwrap()).unwrap();
    let (n_i, n_r) = (hex(&i["localNonce"]), hex(&r["localNonce"]));
    assert_eq!(n_i.len(), 32);
    let mut commit = Sha256::new();
    commit.update(b"alcove-sas-commit-v1\0");
    commit.update(&n_i);
    assert_eq!(
        r["commitment"].as_str().unwrap(),
        hex::encode(commit.finalize()),
        "the responder got the commitment to the initiator's nonce"
    );
    let mut h = Sha256::new();
    h.update(b"alcove-sas-v1\0");
    h.update(i["localFingerprint"].as_str().unwrap().as_bytes());
    h.update(b"\0");
    h.update(r["localFingerprint"].as_str().unwrap().as_bytes());
    h.update(b"\0");
    h.update(&n_i);
    h.update(&n_r);
    let d = h.finalize();
    let n = u32::from_be_bytes([d[0], d[1], d[2], d[3]]) % 1_000_000;
    let code = format!("{:03} {:03}", n / 1000, n % 1000);
    assert_eq!(code, shown, "the code shown is the documented derivation");
    assert_eq!(c["code"], shown);
    // An honest call, reloads included, breaks no run off: no warning is shown.
    for (who, b) in [("client", client), ("therapist", therapist)] {
        let runs = b
            .execute(
                "return window.alcoveCall.state().peers[0].verificationRuns",
                vec![],
            )
            .await
            .unwrap();
        assert_eq!(runs["interrupted"], 0, "{who}: {runs}");
        assert!(runs["finished"].as_u64().unwrap() >= 1, "{who}: {runs}");
    }
}

async fn scenario() {
    let dir = tempfile::tempdir().unwrap();
    // A coturn of the test's own, in the namespace (the API tests' helper).
    let coturn = turn::Coturn::start();
    TURN.set((coturn.port, coturn.secret.clone())).unwrap();
    let sink = smtp_sink::SmtpSink::start(None).await;
    SMTP.set(sink.url()).unwrap();
    let (server, base) = start_server(dir.path(), 0);
    let (_driver, driver_port) = start_chromedriver();

    // A therapist with a profile and open hours all day, every day.
    let db = Db::connect(
        &format!("sqlite://{}", dir.path().join("data/alcove.db").display()),
        2,
    )
    .await
    .unwrap();
    let hash = Passwords::new()
        .await
        .unwrap()
        .hash(&secrecy::SecretString::from(PASSWORD))
        .await
        .unwrap();
    db.create_user(
        NewUser {
            email: Email::parse("dr.ward@example.com").unwrap(),
            display_name: DisplayName::parse("Dr Tess Ward").unwrap(),
            role: Role::Therapist,
            password_hash: hash,
        },
        alcove::store::Creator::Cli,
    )
    .await
    .unwrap();
    let login = api(
        &base,
        reqwest::Method::POST,
        "/api/v1/auth/login",
        None,
        Some(json!({"email": "dr.ward@example.com", "password": PASSWORD})),
    )
    .await;
    let t_token = login["access_token"].as_str().unwrap().to_owned();
    api(
        &base,
        reqwest::Method::PUT,
        "/api/v1/therapists/me",
        Some(&t_token),
        Some(json!({
            "display_name": "Dr Tess Ward",
            "bio": "Integrative psychotherapist. I work with anxiety, grief and life transitions.",
            "qualifications": ["MSc Integrative Psychotherapy", "UKCP registered"],
            "specialisations": ["anxiety", "grief", "life_transitions"],
            "modalities": ["integrative", "person_centred"],
            "languages": ["en", "fr"],
            "time_zone": *MIDDAY_ZONE,
            "offers_free_consultation": true
        })),
    )
    .await;
    let weekly: Vec<Value> = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
        .iter()
        .map(|d| json!({"weekday": d, "start": "00:00", "end": "24:00"}))
        .collect();
    let zone = *MIDDAY_ZONE;
    api(
        &base,
        reqwest::Method::PUT,
        "/api/v1/therapists/me/availability",
        Some(&t_token),
        Some(json!({
            "time_zone": zone, "weekly": weekly, "slot_step_minutes": 5, "buffer_minutes": 0
        })),
    )
    .await;

    let client = browser(driver_port, &dir.path().join("client-profile")).await;
    let therapist = browser(driver_port, &dir.path().join("therapist-profile")).await;

    // The client registers and signs in.
    client.goto(&format!("{base}/#/register")).await.unwrap();
    wait_visible(&client, "#register-name", Duration::from_secs(20)).await;
    audit(&client, "the registration page").await;
    // A whole session by keyboard alone from here (booking aside): registering signs in.
    listen(&client).await;
    key_in(&client, "#register-name", "Casey Marsh").await;
    key_in(&client, "#register-email", "casey@example.com").await;
    key_in(&client, "#register-password", PASSWORD).await;
    press(&client, ENTER).await;
    wait_js(
        &client,
        "signed in",
        "document.body.dataset.signedIn === 'client'",
        Duration::from_secs(20),
    )
    .await;

    // Finds the therapist in the directory, and books the first free slot.
    client.goto(&format!("{base}/#/therapists")).await.unwrap();
    wait_visible(&client, ".therapist-card", Duration::from_secs(20)).await;
    audit(&client, "the directory").await;
    shot(&client, "directory.png").await;
    client
        .goto(&format!(
            "{base}/#/therapists/{}",
            login["user"]["id"].as_str().unwrap()
        ))
        .await
        .unwrap();
    wait_visible(&client, "button.slot", Duration::from_secs(20)).await;
    audit(&client, "a therapist's profile and booking").await;
    shot(&client, "booking.png").await;
    // The first slot at least a minute away (slots come every 5 minutes from now: one that
    // starts within seconds could pass while the test clicks), so inside its join window.
    let start = wait_js(
        &client,
        "a slot a minute away",
        "[...document.querySelectorAll('button.slot')].map(b => b.dataset.start).find(s => Date.parse(s) > Date.now() + 60000)",
        Duration::from_secs(20),
    )
    .await;
    click(
        &client,
        &format!("button.slot[data-start=\"{}\"]", start.as_str().unwrap()),
    )
    .await;
    click(&client, "#book-submit").await;
    let appointment = wait_js(
        &client,
        "the booking",
        "document.querySelector('#booking-confirmed') && document.querySelector('#booking-confirmed').dataset.appointmentId",
        Duration::from_secs(20),
    )
    .await;
    let appointment = appointment.as_str().unwrap().to_owned();
    audit(&client, "the booking confirmed").await;

    // The booking's confirmation comes by email; its link opens the appointment (after
    // signing in, were the client signed out) and holds no token.
    let mails = sink.wait_for(2, Duration::from_secs(20)).await;
    let mail = mails
        .iter()
        .find(|m| m.to == "casey@example.com")
        .expect("the client's confirmation");
    assert!(mail.subject.starts_with("Your appointment on"), "{mail:?}");
    assert!(mail.ics.is_some(), "{mail:?}");
    let link = format!("{base}/#/appointments/{appointment}");
    assert!(mail.text.contains(&link), "{}", mail.text);
    client.goto(&link).await.unwrap();
    wait_js(
        &client,
        "the emailed appointment, marked",
        &format!("(() => {{ const el = document.querySelector('.appointment.linked'); return !!el && el.dataset.id === '{appointment}'; }})()"),
        Duration::from_secs(20),
    )
    .await;
    audit(&client, "the appointments page, one marked").await;

    // Settings: the time zone of emails was taken from the browser; reminders switch off.
    client.goto(&format!("{base}/#/settings")).await.unwrap();
    wait_visible(&client, "#email-reminders", Duration::from_secs(20)).await;
    audit(&client, "the settings").await;
    let zone = wait_js(
        &client,
        "the time zone of emails",
        "document.querySelector('#email-time-zone').value",
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(zone, *MIDDAY_ZONE);
    assert_eq!(
        client
            .execute(
                "return document.querySelector('#email-reminders').checked",
                vec![]
            )
            .await
            .unwrap(),
        true
    );
    click(&client, "#email-reminders").await;
    click(&client, "#email-save").await;
    wait_js(
        &client,
        "the settings saved",
        "!!document.querySelector('#email-status .notice-success')",
        Duration::from_secs(10),
    )
    .await;
    audit(&client, "the settings, saved").await;
    client.refresh().await.unwrap();
    wait_visible(&client, "#email-reminders", Duration::from_secs(20)).await;
    listen(&client).await;
    assert_eq!(
        client
            .execute(
                "return document.querySelector('#email-reminders').checked",
                vec![]
            )
            .await
            .unwrap(),
        false,
        "switching reminders off is kept"
    );

    // The therapist signs in and opens the dashboard.
    therapist.goto(&format!("{base}/#/signin")).await.unwrap();
    wait_visible(&therapist, "#signin-email", Duration::from_secs(20)).await;
    audit(&therapist, "the sign-in page").await;
    listen(&therapist).await;
    key_in(&therapist, "#signin-email", "dr.ward@example.com").await;
    key_in(&therapist, "#signin-password", PASSWORD).await;
    press(&therapist, ENTER).await;
    wait_js(
        &therapist,
        "signed in",
        "document.body.dataset.signedIn === 'therapist'",
        Duration::from_secs(20),
    )
    .await;
    therapist
        .goto(&format!("{base}/#/dashboard"))
        .await
        .unwrap();
    wait_visible(&therapist, "#today-sessions", Duration::from_secs(20)).await;
    audit(&therapist, "the dashboard").await;

    // The client joins: pre-call check, then the waiting room.
    client
        .goto(&format!("{base}/#/appointments"))
        .await
        .unwrap();
    let join = format!(".appointment[data-id=\"{appointment}\"] .join-button");
    wait_js(
        &client,
        "the Join button",
        &format!("!document.querySelector('{join}').disabled"),
        Duration::from_secs(30),
    )
    .await;
    audit(&client, "the appointments page, the room open").await;
    key_to(&client, &join, Some(ENTER)).await;
    wait_js(
        &client,
        "the camera preview",
        "document.querySelector('#precall-video').videoWidth > 0",
        Duration::from_secs(30),
    )
    .await;
    // The connection check runs by itself: a direct path on loopback.
    let verdict = "document.querySelector('#network-verdict') && document.querySelector('#network-verdict').dataset.verdict";
    let first = wait_js(
        &client,
        "the connection check",
        verdict,
        Duration::from_secs(40),
    )
    .await;
    assert_eq!(
        first,
        "ready",
        "{}",
        text_of(&client, "#network-test").await
    );
    let figures = text_of(&client, "#network-figures").await;
    assert!(
        figures.contains("Path: direct") && figures.contains("Round trip"),
        "{figures}"
    );
    shot(&client, "precall.png").await;
    audit(&client, "the pre-call check").await;
    // Through the relay only: relay_only, over UDP.
    let again = |want: &'static str| {
        format!(
            "document.querySelector('#network-verdict') && !document.querySelector('#network-test-again').disabled && document.querySelector('#network-verdict').dataset.verdict === '{want}'"
        )
    };
    key_to(&client, "#network-relay-only", Some(SPACE)).await;
    key_to(&client, "#network-test-again", Some(ENTER)).await;
    wait_js(
        &client,
        "relay_only",
        &again("relay_only"),
        Duration::from_secs(40),
    )
    .await;
    let figures = text_of(&client, "#network-figures").await;
    assert!(figures.contains("Path: relay (UDP)"), "{figures}");
    // The relay stops: forced through it, blocked, with the reason in plain words.
    drop(coturn);
    key_to(&client, "#network-test-again", Some(ENTER)).await;
    wait_js(
        &client,
        "blocked",
        &again("blocked"),
        Duration::from_secs(40),
    )
    .await;
    let advice = text_of(&client, "#network-advice").await;
    assert!(
        advice.contains("could not reach our relay server"),
        "{advice}"
    );
    client
        .execute(
            "document.querySelector('#network-card').scrollIntoView()",
            vec![],
        )
        .await
        .unwrap();
    shot(&client, "precall-blocked.png").await;
    audit(&client, "the pre-call check, blocked").await;
    // A direct test again (the relay is not needed here), whose verdict the therapist sees.
    key_to(&client, "#network-relay-only", Some(SPACE)).await;
    key_to(&client, "#network-test-again", Some(ENTER)).await;
    wait_js(
        &client,
        "ready again",
        &again("ready"),
        Duration::from_secs(40),
    )
    .await;
    key_to(&client, "#precall-continue", Some(ENTER)).await;
    wait_visible(&client, "#waiting-room", Duration::from_secs(30)).await;
    heard(&client, "the client", "You are in the waiting room").await;
    shot(&client, "waiting-room.png").await;
    audit(&client, "the waiting room").await;

    // The therapist admits from the dashboard, seeing the client's connection check.
    wait_visible(&therapist, ".lobby-entry", Duration::from_secs(30)).await;
    let check = text_of(&therapist, ".lobby-entry .network-check").await;
    assert!(
        check.contains("Connection check: Ready") && check.contains("Path: direct"),
        "{check}"
    );
    shot(&therapist, "dashboard.png").await;
    audit(&therapist, "the dashboard, someone waiting").await;
    key_to(&therapist, "button.admit-button", Some(ENTER)).await;
    heard(&therapist, "the therapist", "admitted").await;

    // Each side's remote video decodes frames.
    wait_visible(&client, "#call", Duration::from_secs(30)).await;
    wait_visible(&therapist, "#call", Duration::from_secs(30)).await;
    video_flows(&client, "client").await;
    video_flows(&therapist, "therapist").await;
    heard(&client, "the client", "You have been let in").await;

    // Mute and unmute, camera off and on, by keyboard: the state and the words say so.
    let pressed = |sel: &str, on: bool| {
        format!("document.querySelector('{sel}').getAttribute('aria-pressed') === '{on}'")
    };
    for (button, on, off) in [
        ("#mute-button", "Microphone muted.", "Microphone on."),
        ("#camera-button", "Camera off.", "Camera on."),
    ] {
        key_to(&client, button, Some(SPACE)).await;
        for (state, words) in [(true, on), (false, off)] {
            if !state {
                press(&client, SPACE).await;
            }
            wait_js(
                &client,
                &format!("{button} pressed {state}"),
                &pressed(button, state),
                Duration::from_secs(5),
            )
            .await;
            heard(&client, "the client", words).await;
        }
    }
    video_flows(&therapist, "therapist, the client's camera back on").await;

    // Chat crosses the data channel (typed, and sent with Enter).
    key_in(&client, "#chat-input", "Hello, I made it in").await;
    press(&client, ENTER).await;
    wait_js(
        &therapist,
        "the chat message",
        "[...document.querySelectorAll('#chat-log .chat-message.remote')].some(m => m.textContent.includes('Hello, I made it in'))",
        Duration::from_secs(20),
    )
    .await;

    // Both sides show the same verification code.
    let code_c = wait_js(
        &client,
        "a verification code",
        "document.querySelector('#verification-code').textContent.trim()",
        Duration::from_secs(20),
    )
    .await;
    let code_t = wait_js(
        &therapist,
        "a verification code",
        "document.querySelector('#verification-code').textContent.trim()",
        Duration::from_secs(20),
    )
    .await;
    assert_eq!(code_c, code_t, "the verification codes match");
    let said = format!("Verification code: {}", code_c.as_str().unwrap());
    heard(&client, "the client", &said).await;
    heard(&therapist, "the therapist", &said).await;
    check_verification(&client, &therapist, code_c.as_str().unwrap()).await;
    audit(&client, "the call, live (client)").await;
    audit(&therapist, "the call, live (therapist)").await;
    // The live call in German: the page is drawn again in its words, the call carries on.
    choose_language(&client, "de").await;
    wait_js(
        &client,
        "the call in German",
        "!document.querySelector('#call').hidden && document.querySelector('#mute-button').textContent === 'Stumm schalten' && document.querySelector('#verification-code').textContent.trim().length > 0",
        Duration::from_secs(20),
    )
    .await;
    video_flows(&client, "client, the call in German").await;
    no_english(&client, "the call, live").await;
    audit(&client, "the call, live, in de").await;
    choose_language(&client, "en").await;
    wait_js(
        &client,
        "the call in English again",
        "!document.querySelector('#call').hidden && document.querySelector('#mute-button').textContent === 'Mute'",
        Duration::from_secs(20),
    )
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    shot(&therapist, "call.png").await;

    // The client reloads mid-call, and the call recovers.
    client.refresh().await.unwrap();
    heard(
        &therapist,
        "the therapist",
        "Casey Marsh's connection dropped",
    )
    .await;
    wait_visible(&client, "#call", Duration::from_secs(30)).await;
    listen(&client).await;
    video_flows(&client, "client after reload").await;
    video_flows(&therapist, "therapist after the client's reload").await;
    heard(&therapist, "the therapist", "Casey Marsh is back.").await;
    // A new connection, a new exchange: the two codes agree again.
    let code_c = wait_js(
        &client,
        "a verification code after the reload",
        "document.querySelector('#verification-code').textContent.trim()",
        Duration::from_secs(20),
    )
    .await;
    wait_js(
        &therapist,
        "the same code at the therapist",
        &format!(
            "document.querySelector('#verification-code').textContent.trim() === {}",
            code_c
        ),
        Duration::from_secs(20),
    )
    .await;
    check_verification(&client, &therapist, code_c.as_str().unwrap()).await;

    // The server restarts mid-call (a deploy, SIGTERM): both are told to reconnect, show
    // that the service is restarting, and come back into the same call by themselves, in
    // the same page (no reload).
    let ids = {
        let mut ids = Vec::new();
        for b in [&client, &therapist] {
            b.execute("window.__samePage = true;", vec![])
                .await
                .unwrap();
            ids.push(
                b.execute("return window.alcoveCall.state().participantId", vec![])
                    .await
                    .unwrap(),
            );
        }
        ids
    };
    let mut server = server;
    let ok = Command::new("kill")
        .args(["-TERM", &server.0.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "SIGTERM to the server");
    let status = server.0.wait().unwrap();
    assert!(
        status.success(),
        "the server exits 0 after its drain: {status}"
    );
    for (who, b) in [("client", &client), ("therapist", &therapist)] {
        wait_js(
            b,
            &format!("{who}: the restart banner"),
            "window.alcoveCall.state().phase === 'reconnecting' && window.alcoveCall.state().serverRestarting && !document.querySelector('#reconnecting-banner').hidden && document.querySelector('#reconnecting-banner').textContent.includes('restarting')",
            Duration::from_secs(20),
        )
        .await;
    }
    let port: u16 = base.rsplit(':').next().unwrap().parse().unwrap();
    let (server, again) = start_server(dir.path(), port);
    assert_eq!(again, base);
    for ((who, b), id) in [("client", &client), ("therapist", &therapist)]
        .into_iter()
        .zip(&ids)
    {
        wait_js(
            b,
            &format!("{who}: back in the same call, in the same page"),
            &format!(
                "window.__samePage === true && window.alcoveCall.state().phase === 'in-call' && window.alcoveCall.state().participantId === {id} && document.querySelector('#reconnecting-banner').hidden"
            ),
            Duration::from_secs(45),
        )
        .await;
    }
    video_flows(&client, "client after the server restart").await;
    video_flows(&therapist, "therapist after the server restart").await;
    key_in(&client, "#chat-input", "Still here after the restart").await;
    press(&client, ENTER).await;
    wait_js(
        &therapist,
        "the chat message after the restart",
        "[...document.querySelectorAll('#chat-log .chat-message.remote')].some(m => m.textContent.includes('Still here after the restart'))",
        Duration::from_secs(20),
    )
    .await;

    // The therapist ends the session for everyone.
    key_to(&therapist, "#end-session-button", Some(ENTER)).await;
    wait_visible(&client, "#call-duration", Duration::from_secs(30)).await;
    heard(&client, "the client", "The session has ended.").await;
    let duration = text_of(&client, "#call-duration").await;
    assert!(!duration.trim().is_empty());
    audit(&client, "after the session (client)").await;

    // The session record shows it.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let sessions = api(
        &base,
        reqwest::Method::GET,
        &format!("/api/v1/appointments/{appointment}/sessions"),
        Some(&t_token),
        None,
    )
    .await;
    assert_eq!(
        sessions.as_array().unwrap().len(),
        1,
        "one session, through a reload and a server restart: {sessions}"
    );
    let last = sessions.as_array().unwrap().last().unwrap();
    assert_eq!(last["end_reason"], "ended_by_therapist", "{sessions}");
    let c = last["participants"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["role"] == "client")
        .unwrap();
    assert!(
        c["admitted_at"].is_string() && c["reconnects"].as_i64().unwrap() >= 1,
        "{c}"
    );

    client
        .goto(&format!("{base}/#/no-such-page"))
        .await
        .unwrap();
    wait_js(
        &client,
        "the page-not-found page",
        "document.title.startsWith('Page not found')",
        Duration::from_secs(10),
    )
    .await;
    audit(&client, "a page that does not exist").await;

    // Languages: German, then Spanish, chosen in the header; the pages say everything in
    // them, and the choice is kept with the account.
    for (code, settings) in [("de", "Einstellungen"), ("es", "Ajustes")] {
        client.goto(&format!("{base}/#/settings")).await.unwrap();
        wait_visible(&client, "#email-reminders", Duration::from_secs(20)).await;
        choose_language(&client, code).await;
        wait_js(
            &client,
            "the settings redrawn",
            &format!("document.querySelector('main h1') && document.querySelector('main h1').textContent === '{settings}' && !!document.querySelector('#email-reminders')"),
            Duration::from_secs(10),
        )
        .await;
        no_english(&client, "the settings").await;
        the_language_check_sees(&client).await;
        audit(&client, &format!("the settings in {code}")).await;
        client
            .goto(&format!("{base}/#/no-such-page"))
            .await
            .unwrap();
        wait_js(
            &client,
            "the page-not-found page",
            "!!document.querySelector('main h1')",
            Duration::from_secs(10),
        )
        .await;
        no_english(&client, "a page that does not exist").await;
        client.goto(&format!("{base}/#/therapists")).await.unwrap();
        wait_visible(&client, ".therapist-card", Duration::from_secs(20)).await;
        no_english(&client, "the directory").await;
        client
            .goto(&format!(
                "{base}/#/therapists/{}",
                login["user"]["id"].as_str().unwrap()
            ))
            .await
            .unwrap();
        wait_visible(&client, "button.slot", Duration::from_secs(20)).await;
        no_english(&client, "a therapist's profile and booking").await;
        client
            .goto(&format!("{base}/#/appointments"))
            .await
            .unwrap();
        wait_visible(&client, "#feed-title", Duration::from_secs(20)).await;
        wait_js(
            &client,
            "the appointments listed",
            "document.querySelectorAll('[data-id]').length > 0",
            Duration::from_secs(20),
        )
        .await;
        no_english(&client, "the appointments").await;
        client
            .goto(&format!("{base}/#/precall/{appointment}"))
            .await
            .unwrap();
        wait_js(
            &client,
            "the connection check",
            "!!document.querySelector('#network-verdict') && !document.querySelector('#network-test-again').disabled",
            Duration::from_secs(40),
        )
        .await;
        no_english(&client, "the pre-call check").await;
        audit(&client, &format!("a therapist's profile in {code}")).await;
    }
    // The therapist's dashboard in German.
    therapist
        .goto(&format!("{base}/#/dashboard"))
        .await
        .unwrap();
    wait_visible(&therapist, "#today-sessions", Duration::from_secs(20)).await;
    choose_language(&therapist, "de").await;
    wait_js(
        &therapist,
        "the dashboard in German",
        "document.querySelector('main h1') && /^Guten/.test(document.querySelector('main h1').textContent) && !!document.querySelector('#availability-save') && !!document.querySelector('#profile-save')",
        Duration::from_secs(20),
    )
    .await;
    no_english(&therapist, "the dashboard").await;
    audit(&therapist, "the dashboard in de").await;
    // Signed out (still in Spanish): the sign-in and registration pages.
    key_to(&client, "#signout-button", Some(ENTER)).await;
    wait_visible(&client, "#signin-email", Duration::from_secs(20)).await;
    no_english(&client, "the sign-in page").await;
    client.goto(&format!("{base}/#/register")).await.unwrap();
    wait_visible(&client, "#register-name", Duration::from_secs(20)).await;
    no_english(&client, "the registration page").await;
    // A browser that forgot the choice gets it back from the account at sign-in.
    client
        .execute("localStorage.clear(); return true;", vec![])
        .await
        .unwrap();
    client.goto(&format!("{base}/#/signin")).await.unwrap();
    client.refresh().await.unwrap();
    wait_js(
        &client,
        "English again in a browser that forgot",
        "document.documentElement.lang === 'en' && !!document.querySelector('#signin-email')",
        Duration::from_secs(20),
    )
    .await;
    key_in(&client, "#signin-email", "casey@example.com").await;
    key_in(&client, "#signin-password", PASSWORD).await;
    press(&client, ENTER).await;
    wait_js(
        &client,
        "the account's language back after signing in",
        "document.body.dataset.signedIn === 'client' && document.documentElement.lang === 'es'",
        Duration::from_secs(20),
    )
    .await;

    let _ = client.close().await;
    let _ = therapist.close().await;
    drop(server);
}
