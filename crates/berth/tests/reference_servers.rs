//! The reference MCP servers from npm (everything, memory, filesystem) and PyPI
//! (time, git, fetch), hosted together by one Berth and configured the way an
//! operator would: each answers a real MCP client session (official Python SDK,
//! `tests/python/reference_client.py`) that initializes, lists tools and calls
//! tools that do real work: read and write files, read a git repository, fetch
//! a page from an HTTP server on this machine. Afterwards no process remains.
//!
//! This is the acceptance test of the default-on sandbox: every server must
//! still work inside it, given only the `[servers.NAME.sandbox]` lines below.

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use common::*;

/// Whether the config parser knows `[servers.NAME.sandbox]` and the sandbox is
/// on by default (it is since the sandbox landed). When false, the sandbox
/// lines each server needs are left out of the config (which refused unknown
/// keys before) and the memory server keeps its file in a temp dir instead of
/// its state dir. When true, the test also checks that the sandbox holds: a
/// write into a read-only directory and a fetch from a site off the allow
/// list fail, and the memory file is in the server's state dir.
const SANDBOX_LANDED: bool = true;

/// Appends `[servers.NAME.sandbox]` with `lines` to a server table, once the
/// sandbox has landed (and when there is anything to say).
fn with_sandbox(table: String, name: &str, lines: &str) -> String {
    if SANDBOX_LANDED && !lines.is_empty() {
        format!("{table}\n[servers.{name}.sandbox]\n{lines}\n")
    } else {
        table
    }
}

/// What the test prepares on disk for the servers.
struct Workspace {
    _dir: tempfile::TempDir,
    /// The filesystem server's read-only directory, with `file` in it.
    files: PathBuf,
    file: PathBuf,
    file_text: String,
    /// The filesystem server's writable directory.
    out: PathBuf,
    /// A git repository with one commit, `commit_message`.
    repo: PathBuf,
    commit_message: String,
    /// The memory server's file when not sandboxed.
    memory_file: PathBuf,
    /// Unique per run, so results cannot come from an earlier run.
    tag: String,
}

impl Workspace {
    fn new() -> Workspace {
        let dir = tempfile::tempdir().expect("temp dir");
        let root = dir.path().canonicalize().expect("canonical temp dir");
        let tag = unique_tag();

        let files = root.join("files");
        std::fs::create_dir(&files).unwrap();
        let file = files.join("notes.txt");
        let file_text = format!("Berth hosts the filesystem server {tag}.\nSecond line.\n");
        std::fs::write(&file, &file_text).unwrap();

        let out = root.join("out");
        std::fs::create_dir(&out).unwrap();
        // Writable by whoever the server runs as: a sandboxed server of a
        // Berth running as root is uid 65534 on the host (as an operator
        // would chown it to that user).
        std::fs::set_permissions(&out, std::fs::Permissions::from_mode(0o777)).unwrap();

        let repo = root.join("repo");
        let commit_message = format!("Initial commit {tag}");
        std::fs::create_dir(&repo).unwrap();
        std::fs::write(repo.join("README.md"), format!("# A repository {tag}\n")).unwrap();
        git(&repo, &["init", "--quiet", "--initial-branch=main"]);
        git(&repo, &["add", "README.md"]);
        git(&repo, &["commit", "--quiet", "--message", &commit_message]);

        Workspace {
            files,
            file,
            file_text,
            out,
            repo,
            commit_message,
            memory_file: root.join("memory.jsonl"),
            tag,
            _dir: dir,
        }
    }
}

fn unique_tag() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{:x}{:x}", std::process::id(), nanos & 0xffff_ffff)
}

/// Runs the git CLI in `repo`, isolated from this machine's git configuration.
fn git(repo: &Path, args: &[&str]) {
    let (ok, out) = run_with_timeout(
        Command::new("git")
            .current_dir(repo)
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .args([
                "-c",
                "user.name=Berth Tests",
                "-c",
                "user.email=tests@berth.invalid",
            ])
            .args(args),
        Duration::from_secs(20),
    );
    assert!(ok, "git {args:?} failed: {out}");
}

/// A small website on 127.0.0.1 for the fetch server: `/` is an HTML page
/// whose text is `text`, `/robots.txt` allows every agent. Records each
/// request (`METHOD /path`); stops when dropped.
struct Site {
    port: u16,
    text: String,
    requests: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Site {
    fn start(tag: &str) -> Site {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the site");
        let port = listener.local_addr().unwrap().port();
        let text = format!("The fetch server read this page through Berth {tag}.");
        let page = format!(
            "<!DOCTYPE html>\n<html><head><title>Berth reference page</title></head>\n\
             <body><article><h1>Berth reference page</h1>\n<p>{text}</p>\n\
             <p>It is served by the test itself, on the loopback interface.</p></article></body></html>\n"
        );
        let requests = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (requests, stop) = (requests.clone(), stop.clone());
            std::thread::spawn(move || {
                for conn in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    if let Ok(conn) = conn {
                        serve_one(conn, &page, &requests);
                    }
                }
            })
        };
        Site {
            port,
            text,
            requests,
            stop,
            thread: Some(thread),
        }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/", self.port)
    }

    fn requests(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }
}

impl Drop for Site {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Answers one HTTP/1.1 request and closes the connection.
fn serve_one(mut conn: TcpStream, page: &str, requests: &Mutex<Vec<String>>) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 64 * 1024 {
        match conn.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    let head = String::from_utf8_lossy(&head);
    let mut line = head.lines().next().unwrap_or_default().split(' ');
    let (Some(method), Some(target)) = (line.next(), line.next()) else {
        return;
    };
    // A proxy may send the absolute form: http://host:port/path.
    let path = target
        .strip_prefix("http://")
        .map_or(target, |rest| rest.find('/').map_or("/", |i| &rest[i..]));
    requests.lock().unwrap().push(format!("{method} {path}"));
    let (status, content_type, body) = match path {
        "/" => ("200 OK", "text/html; charset=utf-8", page),
        "/robots.txt" => ("200 OK", "text/plain", "User-agent: *\nAllow: /\n"),
        _ => ("404 Not Found", "text/plain", "not found\n"),
    };
    let response = format!(
        "HTTP/1.1 {status}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = conn.write_all(response.as_bytes());
}

/// The six servers as an operator would configure them, with the sandbox lines
/// each needs (included once `SANDBOX_LANDED`).
fn servers(ws: &Workspace, site: &Site) -> String {
    let files = ws.files.display().to_string();
    let out = ws.out.display().to_string();
    let repo = ws.repo.display().to_string();
    let memory_file = if SANDBOX_LANDED {
        // The server's own writable state dir inside the sandbox.
        "/state/memory.jsonl".to_string()
    } else {
        ws.memory_file.display().to_string()
    };

    let everything = npm_server(
        "everything",
        "@modelcontextprotocol/server-everything",
        &["stdio"],
        &[],
    );
    let memory = npm_server(
        "memory",
        "@modelcontextprotocol/server-memory",
        &[],
        &[("MEMORY_FILE_PATH", &memory_file)],
    );
    // Both directories are named in args (so visible read-only); `out` is
    // also writable.
    let filesystem = with_sandbox(
        npm_server(
            "filesystem",
            "@modelcontextprotocol/server-filesystem",
            &[&files, &out],
            &[],
        ),
        "filesystem",
        &format!("writable = [{out:?}]"),
    );
    let time = pypi_server("time", "mcp-server-time", &[], &[]);
    // git_log and git_status only read: the repository (named in args) stays
    // read-only. It belongs to another user than the server's (in the sandbox
    // the server is uid 1000 inside and the repository's owner is unmapped),
    // so git refuses it as of "dubious ownership" unless it is declared safe.
    let git = pypi_server(
        "git",
        "mcp-server-git",
        &["--repository", &repo],
        &[
            ("GIT_CONFIG_COUNT", "1"),
            ("GIT_CONFIG_KEY_0", "safe.directory"),
            ("GIT_CONFIG_VALUE_0", &repo),
        ],
    );
    // The site is on loopback, which mcp-server-fetch refuses without
    // --allow-private-ips; in the sandbox it is reached through the egress
    // proxy, which must allow exactly it. PATH without node: with node on
    // PATH, its HTML extractor (readabilipy) runs `npm install` into the venv
    // on the first fetch, unpinned, from the npm registry, and npm's report
    // lands on the server's stdout, the MCP channel (Berth stops the server
    // for it). Without node it extracts in Python.
    let venv_bin = python().parent().expect("venv bin").display().to_string();
    let fetch = with_sandbox(
        pypi_server(
            "fetch",
            "mcp-server-fetch",
            &["--allow-private-ips"],
            &[("PATH", &venv_bin)],
        ),
        "fetch",
        &format!("allow = [\"127.0.0.1:{}\"]", site.port),
    );
    [everything, memory, filesystem, time, git, fetch].join("\n")
}

/// Runs `tests/python/reference_client.py` against `/mcp/SERVER`; its output
/// (`ok <step>` lines, or what failed).
fn reference_client(
    berth: &Berth,
    server: &str,
    params: serde_json::Value,
) -> Result<String, String> {
    let (ok, out) = run_with_timeout(
        Command::new(python())
            .arg(repo().join("tests/python/reference_client.py"))
            .arg(berth.url(server))
            .arg(server)
            .arg(params.to_string()),
        Duration::from_secs(90),
    );
    let out = format!("--- {server} ---\n{out}");
    if ok { Ok(out) } else { Err(out) }
}

#[test]
fn reference_servers_through_berth() {
    let ws = Workspace::new();
    let site = Site::start(&ws.tag);
    // Not on the fetch server's allow list: in the sandbox it stays unreached.
    let elsewhere = Site::start(&ws.tag);
    let config = servers(&ws, &site);
    let berth = Berth::start("", &config);

    let written = ws.out.join("written.txt");
    let written_text = format!("Written through Berth {}.\n", ws.tag);
    let read_only_write = ws.files.join("must-not-exist.txt");
    let mut filesystem = serde_json::json!({
        "file": ws.file,
        "text": ws.file_text,
        "read_dir": ws.files,
        "write_file": written,
        "write_text": written_text,
    });
    if SANDBOX_LANDED {
        // Named in args, not writable: the sandbox must refuse the write even
        // though the server itself allows the directory.
        filesystem["read_only_write"] = serde_json::json!(read_only_write);
    }
    let mut fetch = serde_json::json!({"url": site.url(), "text": site.text});
    if SANDBOX_LANDED {
        fetch["denied_url"] = serde_json::json!(elsewhere.url());
    }
    let sessions = [
        (
            "everything",
            serde_json::json!({"message": format!("hello from berth {}", ws.tag)}),
        ),
        ("memory", serde_json::json!({"tag": ws.tag})),
        ("filesystem", filesystem),
        ("time", serde_json::json!({})),
        (
            "git",
            serde_json::json!({"repo": ws.repo, "message": ws.commit_message}),
        ),
        ("fetch", fetch),
    ];
    // Every server is tried, so one failure does not hide another.
    let mut failures = Vec::new();
    for (server, params) in sessions {
        match reference_client(&berth, server, params) {
            Ok(out) => println!("{out}"),
            Err(out) => failures.push(out),
        }
    }
    assert!(
        failures.is_empty(),
        "{} of 6 reference servers failed:\n{}\n--- config ---\n{config}\n--- berth log ---\n{}",
        failures.len(),
        failures.join("\n"),
        berth.log()
    );

    // The tools' effects, seen from outside.
    assert_eq!(
        std::fs::read_to_string(&written).ok().as_deref(),
        Some(written_text.as_str()),
        "write_file did not write {}",
        written.display()
    );
    assert!(
        !read_only_write.exists(),
        "a read-only directory was written"
    );
    let memory_file = if SANDBOX_LANDED {
        // /state of server `memory`, on the host.
        berth.dir.path().join("state/memory/memory.jsonl")
    } else {
        ws.memory_file.clone()
    };
    let memory = std::fs::read_to_string(&memory_file).unwrap_or_default();
    assert!(
        memory.contains(&ws.tag),
        "the memory server did not save to {}: {memory}",
        memory_file.display()
    );
    let requests = site.requests();
    for want in ["GET /robots.txt", "GET /"] {
        assert!(
            requests.iter().any(|r| r == want),
            "the site never got `{want}`: {requests:?}"
        );
    }
    assert_eq!(
        elsewhere.requests(),
        Vec::<String>::new(),
        "a site not on the allow list was reached"
    );

    // No server crashed or was given up on.
    for status in berth.status() {
        assert!(
            status["crashes"] == 0 && status["status"] != "failed",
            "server {} is unwell: {status}\n--- berth log ---\n{}",
            status["server"],
            berth.log()
        );
    }

    // Every session was deleted by its client: every process is reaped, and
    // Berth stops cleanly.
    berth.wait_for_children(0, Duration::from_secs(15));
    let status = berth.stop(Duration::from_secs(15));
    assert!(status.success(), "berth exited with {status}");
}
