//! The exporter against an OTLP/HTTP receiver run here on loopback: what it
//! POSTs, when, and what it does when the collector refuses.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use berth_traces::{ExporterConfig, OtlpExporter};
use bytes::Bytes;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message as _;

/// One POST the receiver got.
#[derive(Debug, Clone)]
struct Post {
    path: String,
    content_type: String,
    body: Bytes,
}

#[derive(Default)]
struct Receiver {
    posts: Mutex<Vec<Post>>,
    /// Statuses to answer with, in turn; 200 once they are used up.
    answers: Mutex<VecDeque<u16>>,
}

async fn collect(
    State(receiver): State<Arc<Receiver>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    receiver.posts.lock().unwrap().push(Post {
        path: uri.path().to_owned(),
        content_type: headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned(),
        body,
    });
    let status = receiver.answers.lock().unwrap().pop_front().unwrap_or(200);
    StatusCode::from_u16(status).unwrap()
}

async fn receiver(answers: &[u16]) -> (Arc<Receiver>, SocketAddr) {
    let receiver = Arc::new(Receiver {
        posts: Mutex::new(Vec::new()),
        answers: Mutex::new(answers.iter().copied().collect()),
    });
    let app = axum::Router::new()
        .fallback(collect)
        .with_state(receiver.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (receiver, addr)
}

fn config(addr: SocketAddr) -> ExporterConfig {
    let mut config = ExporterConfig::new(&format!("http://{addr}"), "9.8.7");
    config.backoff = Duration::from_millis(20);
    config
}

fn span(n: u8) -> Span {
    Span {
        trace_id: vec![n; 16],
        span_id: vec![n; 8],
        name: format!("tools/call t{n}"),
        kind: 2,
        ..Span::default()
    }
}

async fn wait_for(what: &str, within: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !done() {
        assert!(Instant::now() < deadline, "{what} within {within:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn spans_of(post: &Post) -> Vec<Span> {
    let request = ExportTraceServiceRequest::decode(post.body.clone()).expect("OTLP protobuf");
    request
        .resource_spans
        .into_iter()
        .flat_map(|r| r.scope_spans)
        .flat_map(|s| s.spans)
        .collect()
}

#[tokio::test]
async fn a_full_batch_is_posted_at_once_as_otlp_protobuf() {
    let (receiver, addr) = receiver(&[]).await;
    let mut config = config(addr);
    config.max_batch = 3;
    // Only a full batch can be the reason for the POST.
    config.interval = Duration::from_secs(3600);
    let exporter = OtlpExporter::start(config).unwrap();
    for n in 1..=3 {
        exporter.push(span(n));
    }
    wait_for("a POST", Duration::from_secs(10), || {
        !receiver.posts.lock().unwrap().is_empty()
    })
    .await;
    let post = receiver.posts.lock().unwrap()[0].clone();
    assert_eq!(post.path, "/v1/traces");
    assert_eq!(post.content_type, "application/x-protobuf");
    let request = ExportTraceServiceRequest::decode(post.body.clone()).unwrap();
    let resource = request.resource_spans[0].resource.clone().unwrap();
    let attributes: Vec<(String, Option<Value>)> = resource
        .attributes
        .into_iter()
        .map(|kv| (kv.key, kv.value.and_then(|v| v.value)))
        .collect();
    assert!(attributes.contains(&(
        "service.name".into(),
        Some(Value::StringValue("berth".into()))
    )));
    assert!(attributes.contains(&(
        "service.version".into(),
        Some(Value::StringValue("9.8.7".into()))
    )));
    let names: Vec<String> = spans_of(&post).into_iter().map(|s| s.name).collect();
    assert_eq!(names, ["tools/call t1", "tools/call t2", "tools/call t3"]);
    exporter.shutdown().await;
    assert_eq!(exporter.stats().exported, 3);
}

#[tokio::test]
async fn waiting_spans_are_sent_every_interval_and_at_shutdown() {
    let (receiver, addr) = receiver(&[]).await;
    let mut config = config(addr);
    config.interval = Duration::from_millis(100);
    let exporter = OtlpExporter::start(config).unwrap();
    exporter.push(span(1));
    wait_for("the interval's POST", Duration::from_secs(10), || {
        receiver.posts.lock().unwrap().len() == 1
    })
    .await;

    let (receiver, addr) = self::receiver(&[]).await;
    let mut config = self::config(addr);
    config.interval = Duration::from_secs(3600);
    let later = OtlpExporter::start(config).unwrap();
    later.push(span(2));
    later.push(span(3));
    later.shutdown().await;
    let posts = receiver.posts.lock().unwrap().clone();
    let sent: usize = posts.iter().map(|p| spans_of(p).len()).sum();
    assert_eq!(sent, 2, "shutdown sends what is queued");
    assert_eq!(later.stats().exported, 2);
    exporter.shutdown().await;
}

#[tokio::test]
async fn a_refused_batch_is_retried_then_dropped() {
    // Two 503s, then accepted: three POSTs of the same batch.
    let (receiver, addr) = receiver(&[503, 503]).await;
    let exporter = OtlpExporter::start(config(addr)).unwrap();
    exporter.push(span(1));
    exporter.shutdown().await;
    let posts = receiver.posts.lock().unwrap().clone();
    assert_eq!(posts.len(), 3);
    assert!(posts.iter().all(|p| p.body == posts[0].body));
    assert_eq!(exporter.stats().exported, 1);
    assert_eq!(exporter.stats().dropped, 0);

    // Always unavailable: every try is used, then the batch is dropped.
    let (receiver, addr) = self::receiver(&[503; 10]).await;
    let mut config = self::config(addr);
    config.attempts = 3;
    let exporter = OtlpExporter::start(config).unwrap();
    exporter.push(span(1));
    exporter.push(span(2));
    exporter.shutdown().await;
    assert_eq!(receiver.posts.lock().unwrap().len(), 3);
    assert_eq!(exporter.stats().dropped, 2);
    assert_eq!(exporter.stats().exported, 0);

    // A 400 is not worth retrying.
    let (receiver, addr) = self::receiver(&[400]).await;
    let exporter = OtlpExporter::start(self::config(addr)).unwrap();
    exporter.push(span(1));
    exporter.shutdown().await;
    assert_eq!(receiver.posts.lock().unwrap().len(), 1);
    assert_eq!(exporter.stats().dropped, 1);
}

#[tokio::test]
async fn the_queue_is_bounded() {
    let (receiver, addr) = receiver(&[]).await;
    let mut config = config(addr);
    config.max_queue = 4;
    config.max_batch = 100;
    config.interval = Duration::from_secs(3600);
    let exporter = OtlpExporter::start(config).unwrap();
    for n in 0..10 {
        exporter.push(span(n));
    }
    let stats = exporter.stats();
    assert_eq!((stats.queued, stats.dropped), (4, 6));
    exporter.shutdown().await;
    let sent: usize = receiver
        .posts
        .lock()
        .unwrap()
        .iter()
        .map(|p| spans_of(p).len())
        .sum();
    assert_eq!(sent, 4);
    assert_eq!(exporter.stats().exported, 4);
}

#[tokio::test]
async fn an_unreachable_collector_does_not_hold_shutdown() {
    // A port nobody listens on: connections are refused at once.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let mut config = config(addr);
    config.shutdown_timeout = Duration::from_secs(2);
    let exporter = OtlpExporter::start(config).unwrap();
    exporter.push(span(1));
    let started = Instant::now();
    exporter.shutdown().await;
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(exporter.stats().dropped, 1);
}

#[test]
fn endpoints_must_be_http_urls() {
    for bad in ["127.0.0.1:4318", "ftp://x", "http://"] {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let result = runtime
            .block_on(async { OtlpExporter::start(ExporterConfig::new(bad, "1")).map(|_| ()) });
        let error = result.expect_err(bad).to_string();
        assert!(error.contains("http://127.0.0.1:4318"), "{error}");
    }
}
