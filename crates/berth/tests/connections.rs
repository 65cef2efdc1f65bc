//! Connection hygiene at the HTTP edge: slow-loris headers, trickling
//! bodies and idle keep-alives are closed within `[gateway]`'s timeouts,
//! open SSE streams are not, connections per peer are capped, and under a
//! flood of such connections a normal client is still served promptly.
//! All traffic is on loopback; every wait is bounded.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::*;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

const VERSION: &str = "2025-11-25";

async fn connect_from(local: [u8; 4], addr: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().expect("socket");
    socket
        .bind(SocketAddr::from((local, 0)))
        .expect("bind the client socket");
    tokio::time::timeout(Duration::from_secs(10), socket.connect(addr))
        .await
        .expect("connect in time")
        .expect("connect")
}

/// Reads until the peer closes (EOF or reset) or `within` passes; returns
/// what was read and whether the connection was closed.
async fn read_until_closed(stream: &mut TcpStream, within: Duration) -> (Vec<u8>, bool) {
    let deadline = tokio::time::Instant::now() + within;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => return (got, false),
            Ok(Ok(0)) | Ok(Err(_)) => return (got, true),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
        }
    }
}

/// Writes `prefix`, then one byte of `drip` every `every` until the peer
/// closes or `within` passes; returns when the connection was seen closed
/// (counted from the end of `prefix`) and what was read.
async fn trickle(
    stream: TcpStream,
    prefix: Vec<u8>,
    drip: u8,
    every: Duration,
    within: Duration,
) -> (Option<Duration>, Vec<u8>) {
    let (mut rd, mut wr) = stream.into_split();
    if wr.write_all(&prefix).await.is_err() {
        return (Some(Duration::ZERO), Vec::new());
    }
    let start = Instant::now();
    let writer = tokio::spawn(async move {
        loop {
            tokio::time::sleep(every).await;
            if wr.write_all(&[drip]).await.is_err() {
                return;
            }
        }
    });
    let deadline = tokio::time::Instant::now() + within;
    let mut got = Vec::new();
    let mut buf = [0u8; 2048];
    let closed = loop {
        match tokio::time::timeout_at(deadline, rd.read(&mut buf)).await {
            Err(_) => break None,
            Ok(Ok(0)) | Ok(Err(_)) => break Some(start.elapsed()),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
        }
    };
    writer.abort();
    (closed, got)
}

fn healthz_request(addr: SocketAddr) -> Vec<u8> {
    format!("GET /healthz HTTP/1.1\r\nhost: {addr}\r\n\r\n").into_bytes()
}

fn slow_body_headers(addr: SocketAddr) -> Vec<u8> {
    format!(
        "POST /mcp/echo HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\naccept: application/json, text/event-stream\r\ncontent-length: 1000\r\n\r\n{{"
    )
    .into_bytes()
}

/// Sends GET /healthz on a keep-alive connection and reads the whole answer.
async fn healthz_on(stream: &mut TcpStream, addr: SocketAddr) -> String {
    stream
        .write_all(&healthz_request(addr))
        .await
        .expect("write");
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !got.ends_with(b"ok\n") {
        let n = tokio::time::timeout_at(deadline, stream.read(&mut buf))
            .await
            .expect("healthz answered in time")
            .expect("read");
        assert!(
            n > 0,
            "closed before answering: {}",
            String::from_utf8_lossy(&got)
        );
        got.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&got).into_owned()
}

#[tokio::test]
async fn slow_loris_headers_are_cut_at_header_read_timeout() {
    let berth = Berth::start(
        "header_read_timeout = \"1s\"",
        &fixture_server("echo", "echo"),
    );
    let stream = connect_from([127, 0, 0, 1], berth.addr).await;
    // A 408 from hyper, or nothing: never a 200.
    assert_slow_head_cut(stream, Duration::from_secs(3)).await;
}

/// Trickles a request head a byte every 300 ms on `stream` and checks the
/// connection is closed after the 1 s header_read_timeout (and by
/// `at_most`), without an answer.
async fn assert_slow_head_cut(stream: TcpStream, at_most: Duration) {
    let (closed, got) = trickle(
        stream,
        b"GET /healthz HT".to_vec(),
        b'T',
        Duration::from_millis(300),
        Duration::from_secs(6),
    )
    .await;
    let closed = closed.expect("the slow head was never cut");
    assert!(
        closed >= Duration::from_millis(800) && closed <= at_most,
        "closed after {closed:?}"
    );
    assert!(!String::from_utf8_lossy(&got).contains(" 200 "));
}

#[tokio::test]
async fn a_slow_head_on_a_kept_alive_connection_is_cut_too() {
    let berth = Berth::start(
        "header_read_timeout = \"1s\"",
        &fixture_server("echo", "echo"),
    );
    let mut stream = connect_from([127, 0, 0, 1], berth.addr).await;
    // One request answered, then the next head arrives a byte at a time.
    assert!(healthz_on(&mut stream, berth.addr).await.contains(" 200 "));
    assert_slow_head_cut(stream, Duration::from_millis(2500)).await;
}

#[tokio::test]
async fn trickling_body_is_cut_at_body_read_timeout() {
    let berth = Berth::start(
        "body_read_timeout = \"2s\"",
        &fixture_server("echo", "echo"),
    );
    let stream = connect_from([127, 0, 0, 1], berth.addr).await;
    let (closed, got) = trickle(
        stream,
        slow_body_headers(berth.addr),
        b' ',
        Duration::from_secs(1),
        Duration::from_secs(8),
    )
    .await;
    let closed = closed.expect("the trickling body was never cut");
    assert!(
        closed >= Duration::from_millis(1800) && closed <= Duration::from_secs(4),
        "closed after {closed:?}"
    );
    let got = String::from_utf8_lossy(&got);
    assert!(got.starts_with("HTTP/1.1 408"), "answer: {got}");
    assert!(got.contains("body_read_timeout"), "answer: {got}");
}

#[tokio::test]
async fn idle_keepalive_is_closed_but_an_open_sse_stream_is_not() {
    let berth = Berth::start(
        "idle_timeout = \"1s\"\nsse_keepalive = \"300ms\"",
        &fixture_server("echo", "echo"),
    );
    // The session's standalone SSE stream, on its own connection.
    let mut raw = Raw::new(berth.url("echo"));
    raw.initialize(VERSION).await;
    let mut sse = raw.get(&[]).await;
    assert_eq!(sse.status(), 200);

    let mut idle = connect_from([127, 0, 0, 1], berth.addr).await;
    let answer = healthz_on(&mut idle, berth.addr).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let start = Instant::now();
    let (_, closed) = read_until_closed(&mut idle, Duration::from_secs(5)).await;
    let after = start.elapsed();
    assert!(closed, "the idle keep-alive connection was never closed");
    assert!(
        after >= Duration::from_millis(800) && after <= Duration::from_secs(3),
        "closed after {after:?}"
    );

    // The SSE stream still delivers (keep-alive comments) well past 1 s.
    let opened = Instant::now();
    while opened.elapsed() < Duration::from_secs(3) {
        let chunk = tokio::time::timeout(Duration::from_secs(2), sse.chunk())
            .await
            .expect("the SSE stream went silent");
        assert!(
            matches!(chunk, Ok(Some(_))),
            "the SSE stream was closed: {chunk:?}"
        );
    }
    assert_eq!(raw.delete().await, 200);
}

#[tokio::test]
async fn connections_per_peer_are_capped() {
    let berth = Berth::start(
        "max_connections_per_peer = 50",
        &fixture_server("echo", "echo"),
    );
    let mut held = Vec::new();
    for _ in 0..50 {
        let mut s = connect_from([127, 0, 0, 1], berth.addr).await;
        healthz_on(&mut s, berth.addr).await;
        held.push(s);
    }
    // The 51st from 127.0.0.1 is refused at once.
    let mut extra = connect_from([127, 0, 0, 1], berth.addr).await;
    let _ = extra.write_all(&healthz_request(berth.addr)).await;
    let (got, closed) = read_until_closed(&mut extra, Duration::from_secs(3)).await;
    let got = String::from_utf8_lossy(&got);
    assert!(closed, "the 51st connection was kept open");
    assert!(
        got.is_empty() || got.starts_with("HTTP/1.1 503"),
        "the 51st connection was answered: {got}"
    );
    assert!(
        berth.log().contains("max_connections_per_peer"),
        "no log line about the refusal"
    );
    // Another peer is served.
    let mut other = connect_from([127, 0, 0, 2], berth.addr).await;
    let answer = healthz_on(&mut other, berth.addr).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    // A closed connection frees its place.
    held.pop();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut again = connect_from([127, 0, 0, 1], berth.addr).await;
        let _ = again.write_all(&healthz_request(berth.addr)).await;
        let (got, _) = read_until_closed(&mut again, Duration::from_millis(500)).await;
        if got.starts_with(b"HTTP/1.1 200") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the freed place was never reused"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Runs one attacker connection; returns whether Berth closed it in time.
type Attack = tokio::task::JoinHandle<Option<Duration>>;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_slow_connections_does_not_starve_normal_clients() {
    const SLOW_HEADERS: usize = 2000;
    const SLOW_BODIES: usize = 500;
    const IDLE: usize = 1000;
    const TIMEOUT: Duration = Duration::from_secs(3);
    const MARGIN: Duration = Duration::from_secs(4);
    let berth = Berth::start(
        "header_read_timeout = \"3s\"\nbody_read_timeout = \"3s\"\nidle_timeout = \"3s\"\nmax_connections_per_peer = 10000",
        &fixture_server("echo", "echo"),
    );
    let addr = berth.addr;
    let pid = berth.pid();
    // Warm up: one session, so the baseline includes a served session.
    {
        let mut raw = Raw::new(berth.url("echo"));
        raw.initialize(VERSION).await;
        raw.delete().await;
    }
    let rss_before = rss_kib(pid);
    let connected = Arc::new(AtomicUsize::new(0));
    let mut attacks: Vec<(&str, Attack)> = Vec::new();
    for i in 0..SLOW_HEADERS + SLOW_BODIES + IDLE {
        let connected = connected.clone();
        let (kind, task): (&str, Attack) = if i < SLOW_HEADERS {
            (
                "slow headers",
                tokio::spawn(async move {
                    let s = connect_from([127, 0, 0, 1], addr).await;
                    connected.fetch_add(1, Ordering::Relaxed);
                    let prefix = format!("GET /healthz HTTP/1.1\r\nhost: {addr}\r\nx-slow: ");
                    trickle(
                        s,
                        prefix.into_bytes(),
                        b'a',
                        Duration::from_secs(1),
                        TIMEOUT + MARGIN,
                    )
                    .await
                    .0
                }),
            )
        } else if i < SLOW_HEADERS + SLOW_BODIES {
            (
                "slow body",
                tokio::spawn(async move {
                    let s = connect_from([127, 0, 0, 1], addr).await;
                    connected.fetch_add(1, Ordering::Relaxed);
                    trickle(
                        s,
                        slow_body_headers(addr),
                        b' ',
                        Duration::from_secs(1),
                        TIMEOUT + MARGIN,
                    )
                    .await
                    .0
                }),
            )
        } else {
            (
                "idle keep-alive",
                tokio::spawn(async move {
                    let mut s = connect_from([127, 0, 0, 1], addr).await;
                    connected.fetch_add(1, Ordering::Relaxed);
                    healthz_on(&mut s, addr).await;
                    let start = Instant::now();
                    let (_, closed) = read_until_closed(&mut s, TIMEOUT + MARGIN).await;
                    closed.then(|| start.elapsed())
                }),
            )
        };
        attacks.push((kind, task));
    }
    let total = attacks.len();
    assert_eq!(total, SLOW_HEADERS + SLOW_BODIES + IDLE);

    // While the attack runs, a normal client is served promptly.
    let http = reqwest::Client::new();
    let mut rss_peak = rss_before;
    let mut slowest_health = Duration::ZERO;
    let mut slowest_session = Duration::ZERO;
    let mut measured_with = Vec::new();
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_millis(400)).await;
        measured_with.push(connected.load(Ordering::Relaxed));
        let t = Instant::now();
        let health = tokio::time::timeout(
            Duration::from_secs(5),
            http.get(format!("{}/healthz", berth.base())).send(),
        )
        .await
        .expect("healthz in time")
        .expect("healthz");
        assert_eq!(health.status(), 200);
        slowest_health = slowest_health.max(t.elapsed());

        let t = Instant::now();
        let session = async {
            let mut raw = Raw::new(berth.url("echo"));
            raw.initialize(VERSION).await;
            let reply = raw
                .call_tool(1, "echo", json!({"text": "under fire"}))
                .await;
            assert_eq!(reply.status, 200, "{}", reply.body);
            assert!(reply.body.contains("under fire"), "{}", reply.body);
            assert_eq!(raw.delete().await, 200);
        };
        tokio::time::timeout(Duration::from_secs(10), session)
            .await
            .expect("session in time");
        slowest_session = slowest_session.max(t.elapsed());
        rss_peak = rss_peak.max(rss_kib(pid));
    }

    let mut late: std::collections::BTreeMap<&str, usize> = Default::default();
    for (kind, task) in attacks {
        rss_peak = rss_peak.max(rss_kib(pid));
        match task.await.expect("attacker task") {
            Some(after) if after <= TIMEOUT + MARGIN => {}
            _ => *late.entry(kind).or_default() += 1,
        }
    }
    eprintln!(
        "attackers connected at the measurements: {measured_with:?}; slowest /healthz {slowest_health:?}, \
         slowest session {slowest_session:?}; RSS {rss_before} KiB before, {rss_peak} KiB peak; \
         not closed in time: {late:?}"
    );
    assert!(
        measured_with.iter().any(|&n| n >= total * 9 / 10),
        "the attack never got going: {measured_with:?}"
    );
    assert!(
        slowest_health < Duration::from_secs(1),
        "{slowest_health:?}"
    );
    assert!(
        slowest_session < Duration::from_secs(1),
        "{slowest_session:?}"
    );
    assert!(late.is_empty(), "not closed within the timeouts: {late:?}");
    assert!(
        rss_peak.saturating_sub(rss_before) < 50 * 1024,
        "RSS grew from {rss_before} KiB to {rss_peak} KiB"
    );
    // And afterwards Berth is still fine.
    let health = http
        .get(format!("{}/healthz", berth.base()))
        .send()
        .await
        .expect("healthz");
    assert_eq!(health.status(), 200);
}
