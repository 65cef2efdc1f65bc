//! The dashboard at `/ui`, driven in headless Chromium over the DevTools
//! protocol: login, the servers page and its live calls counter during a
//! workload, a server's live log tail and tools, usage and the cost chart,
//! CSRF and origin refusals, logout, and the login rate limit. Screenshots
//! are kept under `target/tmp/dashboard/`.
//!
//! Needs Debian's `chromium` (tests/setup.sh installs it). Without it the
//! test says so and passes, except under `CI=true`, where it fails.

mod common;

use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use common::*;
use futures::{SinkExt as _, StreamExt as _};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

/// The system browser: `$BERTH_CHROMIUM`, else the first of Debian's and
/// the usual names on PATH.
fn chromium() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("BERTH_CHROMIUM") {
        return Some(PathBuf::from(path));
    }
    let path = std::env::var_os("PATH")?;
    [
        "chromium",
        "chromium-browser",
        "google-chrome",
        "google-chrome-stable",
    ]
    .iter()
    .flat_map(|name| std::env::split_paths(&path).map(move |dir| dir.join(name)))
    .find(|p| p.is_file())
}

/// A headless Chromium; dropping it kills its whole process group.
struct Browser {
    child: Child,
    _profile: tempfile::TempDir,
    port: u16,
    browser_path: String,
}

impl Browser {
    fn launch(binary: &Path) -> Browser {
        let profile = tempfile::tempdir().expect("profile dir");
        let stderr = std::fs::File::create(profile.path().join("stderr.log")).expect("log");
        let child = Command::new(binary)
            .args([
                "--headless=new",
                "--remote-debugging-port=0",
                "--remote-debugging-address=127.0.0.1",
                // Root (CI) cannot use Chromium's sandbox; the pages are our own.
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--no-default-browser-check",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-default-apps",
                "--disable-extensions",
                "--disable-sync",
                "--window-size=1400,1000",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary.display()));
        let mut browser = Browser {
            child,
            port: 0,
            browser_path: String::new(),
            _profile: profile,
        };
        // Chromium writes its DevTools port and browser path there once listening.
        let active = browser._profile.path().join("DevToolsActivePort");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(text) = std::fs::read_to_string(&active)
                && let [port, path, ..] = text.lines().collect::<Vec<_>>()[..]
                && let Ok(port) = port.parse()
            {
                browser.port = port;
                browser.browser_path = path.to_owned();
                break;
            }
            if let Ok(Some(status)) = browser.child.try_wait() {
                panic!(
                    "chromium exited ({status}) before listening: {}",
                    browser.stderr()
                );
            }
            assert!(
                Instant::now() < deadline,
                "chromium did not write {} within 60 s: {}",
                active.display(),
                browser.stderr()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        browser
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(self._profile.path().join("stderr.log")).unwrap_or_default()
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
        let _ = self.child.wait();
    }
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// One page (tab), spoken to over the browser's DevTools websocket in flat
/// session mode.
struct Page {
    ws: Socket,
    session: String,
    next_id: u64,
    shots: PathBuf,
}

impl Page {
    async fn open(browser: &Browser) -> Page {
        let url = format!("ws://127.0.0.1:{}{}", browser.port, browser.browser_path);
        let (ws, _) = tokio_tungstenite::connect_async(url.as_str())
            .await
            .unwrap_or_else(|e| panic!("DevTools websocket {url}: {e}"));
        let shots = Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard");
        std::fs::create_dir_all(&shots).expect("screenshot dir");
        let mut page = Page {
            ws,
            session: String::new(),
            next_id: 0,
            shots,
        };
        let target = page
            .call("Target.createTarget", json!({ "url": "about:blank" }))
            .await;
        let attached = page
            .call(
                "Target.attachToTarget",
                json!({ "targetId": target["targetId"], "flatten": true }),
            )
            .await;
        page.session = attached["sessionId"]
            .as_str()
            .expect("sessionId")
            .to_owned();
        page.call(
            "Emulation.setDeviceMetricsOverride",
            json!({ "width": 1400, "height": 1000, "deviceScaleFactor": 1, "mobile": false }),
        )
        .await;
        page
    }

    /// A DevTools command; its result, or a panic naming the error.
    async fn call(&mut self, method: &str, params: Value) -> Value {
        match self.try_call(method, params).await {
            Ok(result) => result,
            Err(error) => panic!("{method}: {error}"),
        }
    }

    /// A DevTools command; its result, or the error Chromium answered.
    async fn try_call(&mut self, method: &str, params: Value) -> Result<Value, Value> {
        self.next_id += 1;
        let id = self.next_id;
        let mut message = json!({ "id": id, "method": method, "params": params });
        if !self.session.is_empty() {
            message["sessionId"] = self.session.clone().into();
        }
        self.ws
            .send(Message::text(message.to_string()))
            .await
            .expect("send to DevTools");
        let reply = tokio::time::timeout(Duration::from_secs(30), async {
            while let Some(frame) = self.ws.next().await {
                let Ok(Message::Text(text)) = frame else {
                    continue;
                };
                let Ok(value) = serde_json::from_str::<Value>(&text) else {
                    continue;
                };
                // Events (no id) and other answers are skipped.
                if value["id"] == id {
                    return value;
                }
            }
            panic!("the DevTools websocket closed");
        })
        .await
        .unwrap_or_else(|_| panic!("{method}: no answer from Chromium within 30 s"));
        match reply.get("error") {
            Some(error) => Err(error.clone()),
            None => Ok(reply["result"].clone()),
        }
    }

    /// Evaluates `expression` in the page (awaiting a promise); its value.
    async fn eval(&mut self, expression: &str) -> Value {
        let result = self
            .call(
                "Runtime.evaluate",
                json!({ "expression": expression, "returnByValue": true, "awaitPromise": true }),
            )
            .await;
        if let Some(exception) = result.get("exceptionDetails") {
            panic!("`{expression}` threw: {exception}");
        }
        result["result"]["value"].clone()
    }

    /// Waits until `expression` is truthy; its last value in the panic.
    async fn wait_for(&mut self, what: &str, expression: &str, within: Duration) -> Value {
        let deadline = Instant::now() + within;
        loop {
            // An evaluation that meets a navigation (a form just submitted)
            // is answered with an error: not yet, ask again.
            let value = self
                .try_call(
                    "Runtime.evaluate",
                    json!({ "expression": expression, "returnByValue": true }),
                )
                .await
                .map(|v| v["result"]["value"].clone())
                .unwrap_or(Value::Null);
            let truthy = match &value {
                Value::Null => false,
                Value::Bool(b) => *b,
                Value::String(s) => !s.is_empty(),
                Value::Number(n) => n.as_f64() != Some(0.0),
                _ => true,
            };
            if truthy {
                return value;
            }
            if Instant::now() > deadline {
                let html = self
                    .eval("document.documentElement ? document.documentElement.outerHTML.slice(0, 4000) : ''")
                    .await;
                panic!("{what}: not seen within {within:?} (last: {value}); page: {html}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Navigates and waits for the page at `path_wanted` to be loaded.
    async fn goto(&mut self, url: &str, path_wanted: &str) {
        self.call("Page.navigate", json!({ "url": url })).await;
        self.loaded(path_wanted).await;
    }

    async fn loaded(&mut self, path_wanted: &str) {
        let check = format!(
            "document.readyState === 'complete' && location.pathname === {}",
            json!(path_wanted)
        );
        self.wait_for(
            &format!("page {path_wanted} loaded"),
            &check,
            Duration::from_secs(20),
        )
        .await;
    }

    /// Saves a PNG of the whole page under target/tmp/dashboard/; prints its path.
    async fn screenshot(&mut self, name: &str) -> PathBuf {
        let metrics = self.call("Page.getLayoutMetrics", json!({})).await;
        let size = &metrics["cssContentSize"];
        let clip = json!({
            "x": 0, "y": 0, "scale": 1,
            "width": size["width"].as_f64().unwrap_or(1400.0).max(1400.0),
            "height": size["height"].as_f64().unwrap_or(1000.0).max(1000.0),
        });
        let shot = self
            .call(
                "Page.captureScreenshot",
                json!({ "format": "png", "clip": clip, "captureBeyondViewport": true }),
            )
            .await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(shot["data"].as_str().expect("screenshot data"))
            .expect("screenshot base64");
        assert!(png.starts_with(b"\x89PNG"), "not a PNG");
        let path = self.shots.join(format!("{name}.png"));
        std::fs::write(&path, &png).expect("write screenshot");
        println!("screenshot: {} ({} bytes)", path.display(), png.len());
        path
    }
}

/// The servers page's cell `field` of `server`, as a JS expression.
fn cell(server: &str, field: &str) -> String {
    format!(
        "(document.querySelector('tr[data-server={}] td[data-field={}]') || {{}}).textContent",
        json!(server),
        json!(field)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_in_headless_chromium() {
    let Some(binary) = chromium() else {
        let reason = "chromium is not installed (tests/setup.sh installs Debian's `chromium`; or set BERTH_CHROMIUM)";
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI=true: {reason}"
        );
        println!("SKIPPED dashboard_in_headless_chromium: {reason}");
        return;
    };
    let berth = Berth::start(
        "[usage]\nflush_interval = \"1s\"\n",
        &fixture_server("echo", "echo"),
    );
    let (admin, token) = admin_endpoint(&berth);
    let browser = Browser::launch(&binary);
    let mut page = Page::open(&browser).await;

    // Not logged in: /ui sends the browser to the login form.
    page.goto(&format!("{admin}/ui"), "/ui/login").await;
    page.screenshot("1-login").await;
    // A wrong token is refused on the page.
    page.eval("document.getElementById('token').value = 'wrong'; document.getElementById('login').requestSubmit(); true")
        .await;
    page.wait_for(
        "the wrong-token message",
        "(document.getElementById('login-error') || {}).textContent",
        Duration::from_secs(10),
    )
    .await;
    let typed = format!(
        "document.getElementById('token').value = {}; document.getElementById('login').requestSubmit(); true",
        json!(token)
    );
    page.eval(&typed).await;
    page.loaded("/ui").await;

    // The servers page: the echo server's row, and the live stream connected.
    let status = page
        .wait_for(
            "the echo row",
            &cell("echo", "status"),
            Duration::from_secs(10),
        )
        .await;
    assert!(
        ["running", "idle"].contains(&status.as_str().unwrap_or_default()),
        "{status}"
    );
    page.wait_for(
        "the live stream",
        "document.getElementById('live').dataset.state === 'open'",
        Duration::from_secs(10),
    )
    .await;
    let calls = |v: Value| -> u64 {
        v.as_str()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("calls cell is not a number: {v}"))
    };
    let before = calls(page.eval(&cell("echo", "calls")).await);
    // Marks this document: a reload would lose it.
    page.eval("window.__same_document = true").await;
    page.screenshot("2-servers-before").await;

    // A workload through the gateway: the counter follows without a reload.
    const CALLS: u64 = 5;
    let mut client = Raw::new(berth.url("echo"));
    client.initialize("2025-11-25").await;
    for id in 0..CALLS {
        let reply = client
            .call_tool(id + 1, "echo", json!({ "text": format!("call {id}") }))
            .await;
        assert_eq!(reply.status, 200, "{}", reply.body);
    }
    let wanted = format!(
        "Number({}) >= {} && window.__same_document === true",
        cell("echo", "calls"),
        before + CALLS
    );
    page.wait_for("the live calls counter", &wanted, Duration::from_secs(10))
        .await;
    let after = calls(page.eval(&cell("echo", "calls")).await);
    println!("live calls counter: {before} -> {after} during {CALLS} tool calls");
    let sessions = page.eval(&cell("echo", "sessions")).await;
    assert_eq!(sessions, "1", "one session open");
    page.screenshot("3-servers-live").await;

    // The server page: the tool's calls and latencies, and the live log.
    page.eval("document.querySelector('tr[data-server=\"echo\"] a').click(); true")
        .await;
    page.loaded("/ui/servers/echo").await;
    let tool_calls = page
        .wait_for(
            "the echo tool's row",
            "(document.querySelector('#tools tr[data-tool=\"echo\"] td[data-field=\"calls\"]') || {}).textContent",
            Duration::from_secs(10),
        )
        .await;
    assert_eq!(tool_calls, CALLS.to_string(), "tools/call count of `echo`");
    page.wait_for(
        "the log stream",
        "document.getElementById('log-state').dataset.state === 'open'",
        Duration::from_secs(10),
    )
    .await;
    let seq: u64 = page
        .eval("document.getElementById('log').dataset.after")
        .await
        .as_str()
        .and_then(|s| s.parse().ok())
        .expect("data-after");
    let text_before = page
        .eval("document.getElementById('log').textContent.length")
        .await
        .as_u64()
        .expect("log length");
    // Ending the session stops its process: a lifecycle line in the log.
    assert_eq!(client.delete().await, 200);
    let appended = format!(
        "Number(document.getElementById('log').dataset.after) > {seq} \
         && document.getElementById('log').textContent.length > {text_before} \
         && document.getElementById('log').textContent.slice({text_before})"
    );
    let new_text = page
        .wait_for("a new log line", &appended, Duration::from_secs(15))
        .await;
    println!("log lines streamed in: {new_text}");
    page.screenshot("4-server-log").await;

    // CSRF: a POST from the page without the token, or with a wrong one, is 403.
    let no_token = page
        .eval("fetch('/ui/servers/echo/restart', { method: 'POST' }).then(r => r.status)")
        .await;
    assert_eq!(no_token, 403, "a POST without the CSRF token");
    let wrong_token = page
        .eval("fetch('/ui/servers/echo/restart', { method: 'POST', body: new URLSearchParams({ csrf: 'forged' }) }).then(r => r.status)")
        .await;
    assert_eq!(wrong_token, 403, "a POST with a wrong CSRF token");

    // Usage (flushed every second here) and the cost chart.
    page.goto(&format!("{admin}/ui/usage"), "/ui/usage").await;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let rows = page
            .eval("(document.querySelector('#usage-servers tr[data-key=\"echo\"] td[data-field=\"tool_calls\"]') || {}).textContent || ''")
            .await;
        if rows.as_str().and_then(|s| s.parse::<u64>().ok()) == Some(CALLS) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the usage page never showed {CALLS} tool calls for echo (last: {rows})"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
        page.goto(&format!("{admin}/ui/usage"), "/ui/usage").await;
    }
    let width = page
        .wait_for(
            "the cost chart",
            "(() => { const i = document.getElementById('cost-chart'); return i && i.complete && i.naturalWidth; })()",
            Duration::from_secs(10),
        )
        .await;
    assert!(width.as_u64().unwrap_or(0) > 0, "chart width {width}");
    let basis = page
        .eval("document.getElementById('cost-basis').textContent")
        .await;
    assert!(
        basis
            .as_str()
            .unwrap_or_default()
            .starts_with("Recorded usage"),
        "{basis}"
    );
    page.screenshot("5-usage-cost").await;

    // Outside the browser: the headers, and a forged origin.
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let login = http
        .get(format!("{admin}/ui/login"))
        .send()
        .await
        .expect("GET /ui/login");
    let header = |name: &str| login.headers()[name].to_str().expect("header").to_owned();
    assert!(header("content-security-policy").starts_with("default-src 'self'"));
    assert_eq!(header("x-frame-options"), "DENY");
    let logged_in = http
        .post(format!("{admin}/ui/login"))
        .form(&[("token", token.as_str())])
        .send()
        .await
        .expect("POST /ui/login");
    assert_eq!(logged_in.status(), 303);
    let cookie = logged_in.headers()["set-cookie"]
        .to_str()
        .expect("cookie")
        .to_owned();
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/ui"] {
        assert!(cookie.contains(attribute), "{cookie}");
    }
    let session = cookie.split(';').next().expect("name=value").to_owned();
    let html = http
        .get(format!("{admin}/ui"))
        .header("cookie", &session)
        .send()
        .await
        .expect("GET /ui")
        .text()
        .await
        .expect("page");
    let csrf = html
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("the CSRF token in the page");
    let forged = http
        .post(format!("{admin}/ui/servers/echo/restart"))
        .header("cookie", &session)
        .header("origin", "http://evil.example")
        .form(&[("csrf", csrf)])
        .send()
        .await
        .expect("forged POST");
    assert_eq!(forged.status(), 403, "a POST from another origin");
    let restart = http
        .post(format!("{admin}/ui/servers/echo/restart"))
        .header("cookie", &session)
        .header("origin", admin.as_str())
        .form(&[("csrf", csrf)])
        .send()
        .await
        .expect("restart");
    assert_eq!(
        restart.status(),
        303,
        "a POST with the token and our origin"
    );

    // Logout in the browser: back to the login form, and /ui stays closed.
    page.goto(&format!("{admin}/ui"), "/ui").await;
    page.eval("document.querySelector('form.logout button').click(); true")
        .await;
    page.loaded("/ui/login").await;
    page.goto(&format!("{admin}/ui"), "/ui/login").await;

    // Login attempts are limited per peer: this peer made 3 so far.
    let mut statuses = Vec::new();
    for _ in 0..10 {
        let status = http
            .post(format!("{admin}/ui/login"))
            .form(&[("token", "guess")])
            .send()
            .await
            .expect("POST /ui/login")
            .status()
            .as_u16();
        statuses.push(status);
    }
    let first_limited = statuses.iter().position(|s| *s == 429);
    assert_eq!(
        first_limited,
        Some(7),
        "10 attempts a minute per peer (3 made before): {statuses:?}"
    );
    assert!(statuses[..7].iter().all(|s| *s == 401), "{statuses:?}");
    drop(page);
    drop(browser);
}
