//! The egress proxy: the only way out of a sandboxed server's network namespace.
//!
//! A sandboxed server sees loopback only; its `HTTPS_PROXY`/`HTTP_PROXY` point at a
//! listener in its namespace that [`serve`] accepts on, and every outbound connection is
//! made from Berth's own network after a check against the server's [`AllowList`].
//! Whatever is not listed, and whatever is not a well-formed proxy request, is refused:
//! the proxy fails closed.
//!
//! Two request kinds are spoken: `CONNECT host:port` (a raw tunnel, which is how HTTPS
//! goes through) and plain-HTTP requests in absolute form (`GET http://host/path`),
//! forwarded one per connection.
//!
//! Matching is by the name the client asked for (the CONNECT authority or the URI's
//! host), before resolution. There is no DNS-rebinding defence: an allowed name that
//! resolves to an internal address is connected to.

use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::time::timeout;
use tokio_util::sync::CancellationToken;

/// Connections served at once per [`Egress`]; more are answered 503.
const MAX_CONNECTIONS: usize = 64;
/// Largest request head (request line and headers) read before answering 400.
const MAX_HEAD: usize = 16 * 1024;
/// Time a client has to send its whole request head.
const HEAD_TIMEOUT: Duration = Duration::from_secs(10);
/// Time allowed for resolving and connecting upstream, and for the first writes to it.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Time spent delivering an error answer and draining what the client still sends.
const LINGER: Duration = Duration::from_secs(2);
/// Pause after a failed accept (out of descriptors, say) so the loop doesn't spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

const ESTABLISHED: &[u8] = b"HTTP/1.1 200 Connection established\r\n\r\n";
const EXPECTED_FORM: &str =
    r#"expected "host:port", "*.domain:port", "host:*", "1.2.3.4:port" or "[::1]:port""#;

// ---------------------------------------------------------------------------------------
// Allow list
// ---------------------------------------------------------------------------------------

/// A parsed allow list. Entries: "host:port", "*.suffix:port" (any subdomain of suffix,
/// NOT suffix itself), "host:*"/"*.suffix:*" (any port), IPv4 "1.2.3.4:443", IPv6
/// "[::1]:443". Host matching is ASCII case-insensitive, trailing dot ignored. Port is
/// required (":*" for any).
///
/// Matching is by name, as the client asked for it; names are not resolved, so no
/// DNS-rebinding defence is implied. An empty list permits nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowList {
    rules: Vec<Rule>,
    written: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Rule {
    host: HostRule,
    /// `None` stands for `:*`.
    port: Option<u16>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum HostRule {
    /// Lowercase, without a trailing dot.
    Name(Box<str>),
    /// Lowercase and kept with its leading dot (".slack.com"), so that a suffix test
    /// can match neither "slack.com" itself nor "evilslack.com".
    Subdomain(Box<str>),
    Ip(IpAddr),
}

impl AllowList {
    /// Parses `sandbox.allow`; the error names the first bad entry and the expected form.
    pub fn parse(entries: &[String]) -> Result<AllowList, String> {
        let rules = entries
            .iter()
            .map(|entry| {
                parse_rule(entry.trim()).map_err(|why| {
                    format!("sandbox.allow entry {entry:?} is not valid: {why}; {EXPECTED_FORM}")
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(AllowList {
            rules,
            written: entries.to_vec(),
        })
    }

    /// Whether a connection to `host:port` is allowed. `host` is a name, an IPv4 address
    /// or an IPv6 address (bracketed or not); anything else is refused.
    pub fn permits(&self, host: &str, port: u16) -> bool {
        let Some(host) = classify(host) else {
            return false;
        };
        self.rules
            .iter()
            .any(|rule| rule.port.is_none_or(|p| p == port) && rule.host.matches(host))
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// The entries as written, for display.
    pub fn entries(&self) -> &[String] {
        &self.written
    }
}

impl HostRule {
    fn matches(&self, host: Host<'_>) -> bool {
        match (self, host) {
            (HostRule::Name(name), Host::Name(host)) => host.eq_ignore_ascii_case(name),
            (HostRule::Subdomain(suffix), Host::Name(host)) => {
                // Longer than ".suffix" means at least one label in front of it.
                host.len() > suffix.len()
                    && host.as_bytes()[host.len() - suffix.len()..]
                        .eq_ignore_ascii_case(suffix.as_bytes())
            }
            (HostRule::Ip(rule), Host::Ip(ip)) => *rule == ip,
            _ => false,
        }
    }
}

fn parse_rule(entry: &str) -> Result<Rule, &'static str> {
    if entry.is_empty() {
        return Err("it is empty");
    }
    let (host, port) = match entry.strip_prefix('[') {
        Some(rest) => {
            let (ip, port) = rest
                .split_once("]:")
                .ok_or("a bracketed IPv6 address needs a port after it")?;
            let ip: Ipv6Addr = ip
                .parse()
                .map_err(|_| "the part in brackets is not an IPv6 address")?;
            (HostRule::Ip(IpAddr::V6(ip)), port)
        }
        None => {
            let (host, port) = entry
                .rsplit_once(':')
                .ok_or("it has no port (write host:443, or host:* for any port)")?;
            (parse_host_rule(host)?, port)
        }
    };
    let port = match port {
        "*" => None,
        port => Some(parse_port(port).ok_or("the port must be 1-65535, or *")?),
    };
    Ok(Rule { host, port })
}

fn parse_host_rule(host: &str) -> Result<HostRule, &'static str> {
    if host.contains(':') {
        return Err("IPv6 addresses go in brackets, as in [::1]:443");
    }
    if host == "*" {
        return Err("a bare * would allow every host; list hosts, or *.domain for subdomains");
    }
    if let Some(suffix) = host.strip_prefix("*.") {
        let suffix = suffix.strip_suffix('.').unwrap_or(suffix);
        if !is_name(suffix) {
            return Err("the part after *. is not a domain name");
        }
        return Ok(HostRule::Subdomain(
            format!(".{}", suffix.to_ascii_lowercase()).into(),
        ));
    }
    if host.contains('*') {
        return Err("* may only stand for the first label, as in *.example.com");
    }
    let host = host.strip_suffix('.').unwrap_or(host);
    if let Ok(ip) = host.parse::<Ipv4Addr>() {
        return Ok(HostRule::Ip(IpAddr::V4(ip)));
    }
    if !is_name(host) {
        return Err("the host is not a name, an IPv4 address or a bracketed IPv6 address");
    }
    Ok(HostRule::Name(host.to_ascii_lowercase().into()))
}

/// A decimal port, 1-65535 (no sign, no empty string: `u16::from_str` takes "+80").
fn parse_port(port: &str) -> Option<u16> {
    if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    port.parse().ok().filter(|&p| p != 0)
}

/// A host as a request names it, once checked.
#[derive(Debug, Clone, Copy)]
enum Host<'a> {
    /// Without its trailing dot, case as written.
    Name(&'a str),
    Ip(IpAddr),
}

/// Sorts a requested host into a name or an address; `None` for anything that is
/// neither (so it can never match, nor be dialled).
fn classify(host: &str) -> Option<Host<'_>> {
    if let Some(inner) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        return inner.parse().ok().map(|ip| Host::Ip(IpAddr::V6(ip)));
    }
    let host = host.strip_suffix('.').unwrap_or(host);
    if let Ok(ip) = host.parse() {
        return Some(Host::Ip(ip));
    }
    is_name(host).then_some(Host::Name(host))
}

/// A DNS name: labels of 1-63 letters, digits, '-' or '_'. A numeric last label is
/// refused, so "1.2.3.256" or "2130706433" can't pass as a name and reach a resolver
/// that reads it as an address.
fn is_name(name: &str) -> bool {
    let label_ok = |label: &str| {
        (1..=63).contains(&label.len())
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    name.len() <= 253
        && name.split('.').all(label_ok)
        && name
            .rsplit('.')
            .next()
            .is_some_and(|last| !last.bytes().all(|b| b.is_ascii_digit()))
}

// ---------------------------------------------------------------------------------------
// The proxy
// ---------------------------------------------------------------------------------------

/// One server's proxy: who it serves, what it allows, where decisions are reported.
pub struct Egress {
    pub server: String,
    pub allow: AllowList,
    /// Called with one human line per refused (and per allowed) connection, e.g.
    /// "egress refused: CONNECT evil.com:443 is not in sandbox.allow (add \"evil.com:443\" to [servers.NAME.sandbox] allow)"
    /// "egress allowed: CONNECT api.github.com:443"
    pub report: Arc<dyn Fn(String) + Send + Sync>,
}

impl fmt::Debug for Egress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Egress")
            .field("server", &self.server)
            .field("allow", &self.allow)
            .finish_non_exhaustive()
    }
}

/// Accepts until `stop` is cancelled; each connection handled in its own task; never panics.
///
/// Cancelling `stop` also ends the connections in flight, tunnels included.
pub async fn serve(listener: TcpListener, egress: Arc<Egress>, stop: CancellationToken) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let accepted = tokio::select! {
            () = stop.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let mut client = match accepted {
            Ok((client, _)) => client,
            Err(err) => {
                tracing::warn!(server = %egress.server, %err, "egress proxy: accept failed");
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(ACCEPT_BACKOFF) => continue,
                }
            }
        };
        let egress = Arc::clone(&egress);
        let stop = stop.clone();
        match Arc::clone(&slots).try_acquire_owned() {
            Ok(slot) => {
                tokio::spawn(async move {
                    tokio::select! {
                        () = stop.cancelled() => {}
                        () = egress.handle(client) => {}
                    }
                    drop(slot);
                });
            }
            Err(_) => {
                // Answered without reading the request: a full proxy must not queue work.
                tokio::spawn(async move {
                    let line = format!(
                        "egress refused a connection: {MAX_CONNECTIONS} connections are already open, the most one server may have"
                    );
                    tokio::select! {
                        () = stop.cancelled() => {}
                        () = egress.refuse(&mut client, "503 Service Unavailable", line) => {}
                    }
                });
            }
        }
    }
}

/// Where a request goes, as the client wrote it (IPv6 without brackets).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Target<'a> {
    host: &'a str,
    port: u16,
}

impl fmt::Display for Target<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// A request head, parsed.
#[derive(Debug, PartialEq, Eq)]
enum Request<'a> {
    Connect(Target<'a>),
    Forward(Forward<'a>),
}

/// A plain-HTTP request in absolute form, in the pieces its rewrite needs.
#[derive(Debug, PartialEq, Eq)]
struct Forward<'a> {
    method: &'a str,
    /// The URI's authority as written, for the Host header.
    authority: &'a str,
    target: Target<'a>,
    /// Path and query, possibly empty or starting with '?'.
    path: &'a str,
    version: &'a str,
    /// The header lines, validated, up to and including the blank line.
    fields: &'a [u8],
}

impl Egress {
    fn say(&self, line: String) {
        tracing::debug!(server = %self.server, "{line}");
        (self.report)(line);
    }

    /// Serves one connection: read the head, check it, then tunnel or forward.
    async fn handle(&self, mut client: TcpStream) {
        let _ = client.set_nodelay(true);
        let (buf, end) = match timeout(HEAD_TIMEOUT, read_head(&mut client)).await {
            Ok(Ok(head)) => head,
            Ok(Err(HeadError::TooLarge)) => {
                let line = format!(
                    "egress rejected a malformed request: its head is over {} KiB",
                    MAX_HEAD / 1024
                );
                return self.refuse(&mut client, "400 Bad Request", line).await;
            }
            // Connected and left without a word (a port probe): nothing worth reporting.
            Ok(Err(HeadError::Closed { read: 0 })) => return,
            Ok(Err(HeadError::Closed { .. })) => {
                return self.say(
                    "egress dropped a connection: the client closed it halfway through its request"
                        .to_owned(),
                );
            }
            Ok(Err(HeadError::Io(err))) => {
                return self.say(format!(
                    "egress dropped a connection: reading it failed: {err}"
                ));
            }
            Err(_) => {
                return self.say(format!(
                    "egress closed a connection: no complete request within {} s",
                    HEAD_TIMEOUT.as_secs()
                ));
            }
        };
        let (head, early) = buf.split_at(end);
        let upstream = match parse_request(head) {
            Ok(Request::Connect(target)) => self.start_tunnel(&mut client, target, early).await,
            Ok(Request::Forward(request)) => self.start_forward(&mut client, &request, early).await,
            Err(why) => {
                let line = format!("egress rejected a malformed request: {why}");
                return self.refuse(&mut client, "400 Bad Request", line).await;
            }
        };
        // The head buffer is done with; don't hold it for the tunnel's lifetime.
        drop(buf);
        if let Some(upstream) = upstream {
            splice(client, upstream).await;
        }
    }

    /// CONNECT: allowed, connected, answered 200, and `early` (what the client sent
    /// right after its head) passed on; the rest of the tunnel is the caller's.
    async fn start_tunnel(
        &self,
        client: &mut TcpStream,
        target: Target<'_>,
        early: &[u8],
    ) -> Option<TcpStream> {
        let what = format!("CONNECT {target}");
        let mut upstream = self.open(client, &what, target).await?;
        let start = async {
            client.write_all(ESTABLISHED).await?;
            upstream.write_all(early).await
        };
        match bounded(CONNECT_TIMEOUT, start).await {
            Ok(()) => Some(upstream),
            Err(err) => {
                self.say(format!("egress failed: {what}: {err}"));
                None
            }
        }
    }

    /// Plain HTTP: allowed, connected, and the head sent rewritten to origin form,
    /// followed by `early` (the start of the body); the rest (body, response) is copied
    /// raw by the caller. Whatever the client sends later can only reach this same
    /// upstream, and `Connection: close` asks both ends to stop after one exchange.
    async fn start_forward(
        &self,
        client: &mut TcpStream,
        request: &Forward<'_>,
        early: &[u8],
    ) -> Option<TcpStream> {
        let what = format!("{} http://{}", request.method, request.target);
        let mut upstream = self.open(client, &what, request.target).await?;
        let head = rewrite_head(request);
        let start = async {
            upstream.write_all(&head).await?;
            upstream.write_all(early).await
        };
        match bounded(CONNECT_TIMEOUT, start).await {
            Ok(()) => Some(upstream),
            Err(err) => {
                let line = format!("egress failed: {what}: {err}");
                self.refuse(client, "502 Bad Gateway", line).await;
                None
            }
        }
    }

    /// The allow check and the upstream connection; on refusal or failure the client has
    /// been answered (403 or 502) and `None` is returned.
    async fn open(
        &self,
        client: &mut TcpStream,
        what: &str,
        target: Target<'_>,
    ) -> Option<TcpStream> {
        if !self.allow.permits(target.host, target.port) {
            let line = format!(
                "egress refused: {what} is not in sandbox.allow (add \"{}\" to [servers.{}.sandbox] allow)",
                suggested_entry(target),
                self.server
            );
            self.refuse(client, "403 Forbidden", line).await;
            return None;
        }
        self.say(format!("egress allowed: {what}"));
        match dial(target).await {
            Ok(upstream) => Some(upstream),
            Err(err) => {
                let line = format!("egress failed: {what}: {err}");
                self.refuse(client, "502 Bad Gateway", line).await;
                None
            }
        }
    }

    /// Reports `line` and answers it to the client as a text/plain error.
    async fn refuse(&self, client: &mut TcpStream, status: &str, line: String) {
        let response = format!(
            "HTTP/1.1 {status}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{line}\n",
            line.len() + 1
        );
        // Reported before the (lingering) answer, so the line is out when the client reads it.
        self.say(line);
        close_with(client, response.as_bytes()).await;
    }
}

/// The allow-list entry that would permit `target`, normalized.
fn suggested_entry(target: Target<'_>) -> String {
    let host = target.host.strip_suffix('.').unwrap_or(target.host);
    let host = host.to_ascii_lowercase();
    Target {
        host: &host,
        port: target.port,
    }
    .to_string()
}

/// Connects to `target`, resolving names; an address is dialled as is.
async fn dial(target: Target<'_>) -> io::Result<TcpStream> {
    let connecting = async {
        let upstream = match classify(target.host) {
            Some(Host::Ip(ip)) => TcpStream::connect(SocketAddr::new(ip, target.port)).await?,
            _ => TcpStream::connect((target.host, target.port)).await?,
        };
        let _ = upstream.set_nodelay(true);
        Ok(upstream)
    };
    bounded(CONNECT_TIMEOUT, connecting).await
}

/// `work`, failing with `TimedOut` once `limit` has passed.
async fn bounded<T>(limit: Duration, work: impl Future<Output = io::Result<T>>) -> io::Result<T> {
    timeout(limit, work).await.unwrap_or_else(|_| {
        Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("timed out after {} s", limit.as_secs()),
        ))
    })
}

/// Copies both ways until both sides are done. Not time-bounded: tunnels may
/// legitimately stay open and idle (streams, websockets); `stop` ends them.
async fn splice(mut client: TcpStream, mut upstream: TcpStream) {
    match tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
        Ok((sent, received)) => tracing::trace!(sent, received, "egress tunnel closed"),
        Err(err) => tracing::trace!(%err, "egress tunnel ended with an error"),
    }
}

/// Sends a final answer, then drains the client until it closes: closing a socket with
/// unread input sends a reset, which can make the client discard the answer unread.
async fn close_with(client: &mut TcpStream, response: &[u8]) {
    let finish = async {
        client.write_all(response).await?;
        client.shutdown().await?;
        let mut sink = [0u8; 1024];
        while client.read(&mut sink).await? != 0 {}
        Ok(())
    };
    let _ = bounded(LINGER, finish).await;
}

// ---------------------------------------------------------------------------------------
// Request heads
// ---------------------------------------------------------------------------------------

#[derive(Debug)]
enum HeadError {
    TooLarge,
    Closed { read: usize },
    Io(io::Error),
}

/// Reads until the blank line that ends a request head. Returns the buffer and the
/// head's length; bytes past it are the start of what follows (body or tunnel data).
async fn read_head(stream: &mut TcpStream) -> Result<(Vec<u8>, usize), HeadError> {
    let mut buf = Vec::with_capacity(1024);
    let mut scanned = 0;
    loop {
        if let Some(end) = find_head_end(&buf, scanned) {
            return if end > MAX_HEAD {
                Err(HeadError::TooLarge)
            } else {
                Ok((buf, end))
            };
        }
        if buf.len() >= MAX_HEAD {
            return Err(HeadError::TooLarge);
        }
        // A terminator split across reads begins at most 3 bytes before the end.
        scanned = buf.len().saturating_sub(3);
        buf.reserve(1024);
        match stream.read_buf(&mut buf).await {
            Ok(0) => return Err(HeadError::Closed { read: buf.len() }),
            Ok(_) => {}
            Err(err) => return Err(HeadError::Io(err)),
        }
    }
}

/// The index just past the first empty line at or after `from` (CRLF, or a bare LF,
/// which RFC 9112 lets a recipient accept).
fn find_head_end(buf: &[u8], from: usize) -> Option<usize> {
    let mut at = from;
    while let Some(offset) = buf.get(at..)?.iter().position(|&b| b == b'\n') {
        let newline = at + offset;
        match &buf[newline + 1..] {
            [b'\n', ..] => return Some(newline + 2),
            [b'\r', b'\n', ..] => return Some(newline + 3),
            _ => at = newline + 1,
        }
    }
    None
}

/// Parses a complete head: the request line and the header lines (which are only
/// validated here; `rewrite_head` reads them again).
fn parse_request(head: &[u8]) -> Result<Request<'_>, &'static str> {
    let newline = head
        .iter()
        .position(|&b| b == b'\n')
        .ok_or("no request line")?;
    let line = &head[..newline];
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let fields = &head[newline + 1..];
    if !line.iter().all(|&b| b == b' ' || b.is_ascii_graphic()) {
        return Err("the request line is not printable ASCII");
    }
    let line = std::str::from_utf8(line).map_err(|_| "the request line is not ASCII")?;
    let mut parts = line.split(' ');
    let (Some(method), Some(uri), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err("the request line is not \"METHOD target HTTP/1.1\"");
    };
    if method.is_empty() || !method.bytes().all(is_tchar) || uri.is_empty() {
        return Err("the request line is not \"METHOD target HTTP/1.1\"");
    }
    if version != "HTTP/1.1" && version != "HTTP/1.0" {
        return Err("only HTTP/1.0 and HTTP/1.1 are spoken");
    }
    if !field_lines(fields).all(|line| split_field(line).is_some()) {
        return Err("a header line is not \"Name: value\"");
    }

    if method == "CONNECT" {
        let target = parse_authority(uri, None).ok_or("CONNECT needs host:port")?;
        return Ok(Request::Connect(target));
    }
    let Some((scheme, rest)) = uri.split_once("://") else {
        return Err("a proxy takes CONNECT host:port or an absolute URI (http://host/path)");
    };
    if scheme.eq_ignore_ascii_case("https") {
        return Err("https:// goes through CONNECT, not a plain request");
    }
    if !scheme.eq_ignore_ascii_case("http") {
        return Err("only http:// URIs are forwarded");
    }
    let (authority, path) = rest.split_at(rest.find(['/', '?', '#']).unwrap_or(rest.len()));
    // A fragment is the client's own business; it never goes on the wire.
    let path = path.split_once('#').map_or(path, |(path, _)| path);
    let target = parse_authority(authority, Some(80)).ok_or("the URI has no valid host[:port]")?;
    Ok(Request::Forward(Forward {
        method,
        authority,
        target,
        path,
        version,
        fields,
    }))
}

/// `host:port`, `[v6]:port`, or without the port when there is a default. Userinfo,
/// empty hosts and unbracketed IPv6 are refused.
fn parse_authority(authority: &str, default_port: Option<u16>) -> Option<Target<'_>> {
    let (host, port) = match authority.strip_prefix('[') {
        Some(rest) => {
            let (ip, after) = rest.split_once(']')?;
            ip.parse::<Ipv6Addr>().ok()?;
            let port = match after {
                "" => None,
                after => Some(after.strip_prefix(':')?),
            };
            (ip, port)
        }
        None => {
            let (host, port) = match authority.split_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (authority, None),
            };
            classify(host)?;
            (host, port)
        }
    };
    let port = match port {
        Some(port) => parse_port(port)?,
        None => default_port?,
    };
    Some(Target { host, port })
}

/// The header lines of a field block, line endings removed, up to the blank line.
fn field_lines(fields: &[u8]) -> impl Iterator<Item = &[u8]> {
    fields
        .split(|&b| b == b'\n')
        .map(|line| line.strip_suffix(b"\r").unwrap_or(line))
        .take_while(|line| !line.is_empty())
}

/// A header line's name and trimmed value; `None` if it is not a valid field (which
/// includes obsolete line folding, whose leading space is not a token character).
fn split_field(line: &[u8]) -> Option<(&[u8], &[u8])> {
    let colon = line.iter().position(|&b| b == b':')?;
    let (name, value) = (&line[..colon], &line[colon + 1..]);
    let name_ok = !name.is_empty() && name.iter().copied().all(is_tchar);
    let value_ok = value
        .iter()
        .all(|&b| b == b'\t' || (b >= 0x20 && b != 0x7f));
    (name_ok && value_ok).then_some((name, value.trim_ascii()))
}

/// RFC 9110 token characters.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// The head sent upstream: origin-form request line, Host from the URI (RFC 9112
/// §3.2.2), the client's headers minus hop-by-hop ones, and `Connection: close`.
fn rewrite_head(request: &Forward<'_>) -> Vec<u8> {
    // Names the client marked hop-by-hop in its Connection header.
    let listed: Vec<&[u8]> = field_lines(request.fields)
        .filter_map(split_field)
        .filter(|(name, _)| name.eq_ignore_ascii_case(b"connection"))
        .flat_map(|(_, value)| value.split(|&b| b == b','))
        .map(<[u8]>::trim_ascii)
        .collect();
    let hop_by_hop = |name: &[u8]| {
        name.get(..6)
            .is_some_and(|prefix| prefix.eq_ignore_ascii_case(b"proxy-"))
            || [&b"connection"[..], b"keep-alive", b"host"]
                .iter()
                .chain(&listed)
                .any(|hop| name.eq_ignore_ascii_case(hop))
    };

    let mut head = Vec::with_capacity(request.fields.len() + 128);
    head.extend_from_slice(request.method.as_bytes());
    head.push(b' ');
    if request.path.is_empty() || request.path.starts_with('?') {
        head.push(b'/');
    }
    head.extend_from_slice(request.path.as_bytes());
    head.push(b' ');
    head.extend_from_slice(request.version.as_bytes());
    head.extend_from_slice(b"\r\nHost: ");
    head.extend_from_slice(request.authority.as_bytes());
    head.extend_from_slice(b"\r\n");
    for line in field_lines(request.fields) {
        if split_field(line).is_some_and(|(name, _)| !hop_by_hop(name)) {
            head.extend_from_slice(line);
            head.extend_from_slice(b"\r\n");
        }
    }
    head.extend_from_slice(b"Connection: close\r\n\r\n");
    head
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;
    use tokio::task::JoinHandle;

    fn list(entries: &[&str]) -> Result<AllowList, String> {
        AllowList::parse(&entries.iter().map(|e| e.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn allow_list_matching() {
        let allow = list(&[
            "api.github.com:443",
            "*.slack.com:443",
            "Example.COM.:*",
            "*.internal:*",
            "1.2.3.4:443",
            "[::1]:8080",
        ])
        .unwrap();
        let table: &[(&str, u16, bool)] = &[
            ("api.github.com", 443, true),
            ("API.GitHub.com", 443, true),
            ("api.github.com.", 443, true),
            ("api.github.com", 80, false),
            ("x.api.github.com", 443, false),
            ("github.com", 443, false),
            ("files.slack.com", 443, true),
            ("a.b.SLACK.com", 443, true),
            ("files.slack.com.", 443, true),
            ("slack.com", 443, false),
            ("evilslack.com", 443, false),
            ("files.slack.com", 80, false),
            ("example.com", 1, true),
            ("example.com", 65535, true),
            ("www.example.com", 443, false),
            ("db.internal", 5432, true),
            ("internal", 5432, false),
            ("1.2.3.4", 443, true),
            ("1.2.3.4", 80, false),
            ("1.2.3.5", 443, false),
            ("::1", 8080, true),
            ("[::1]", 8080, true),
            ("0:0::1", 8080, true),
            ("::1", 80, false),
            ("::2", 8080, false),
            ("", 443, false),
            ("api.github.com:443", 443, false),
            ("api github.com", 443, false),
        ];
        for &(host, port, expected) in table {
            assert_eq!(allow.permits(host, port), expected, "{host}:{port}");
        }
        assert!(!allow.is_empty());
        assert_eq!(allow.entries()[2], "Example.COM.:*");

        let empty = list(&[]).unwrap();
        assert!(empty.is_empty());
        assert!(!empty.permits("api.github.com", 443));
        assert_eq!(empty, AllowList::default());
    }

    #[test]
    fn allow_list_rejects_bad_entries() {
        for bad in [
            "",
            "   ",
            "api.github.com",
            "api.github.com:",
            "api.github.com:0",
            "api.github.com:65536",
            "api.github.com:+443",
            "api.github.com:https",
            "*:443",
            "*.:443",
            "*:*",
            "a.*.com:443",
            "foo*.com:443",
            "**.com:443",
            "::1:443",
            "[::1]",
            "[::1]:",
            "[::1:443",
            "[1.2.3.4]:443",
            "1.2.3.256:443",
            "*.1.2.3.4:443",
            "exa mple.com:443",
            "http://example.com:443",
            "user@example.com:443",
        ] {
            let err = list(&["ok.example:443", bad]).expect_err(bad);
            assert!(err.contains(&format!("{bad:?}")), "{err}");
            assert!(err.contains("\"host:port\""), "{err}");
        }
    }

    #[test]
    fn head_end_and_request_parsing() {
        assert_eq!(find_head_end(b"GET / HTTP/1.1\r\n\r\nrest", 0), Some(18));
        assert_eq!(find_head_end(b"GET / HTTP/1.1\n\nrest", 0), Some(16));
        assert_eq!(find_head_end(b"GET / HTTP/1.1\r\nA: b\r\n", 0), None);
        assert_eq!(find_head_end(b"", 0), None);

        let request = b"CONNECT [::1]:8443 HTTP/1.1\r\nHost: x\r\n\r\n";
        assert_eq!(
            parse_request(request),
            Ok(Request::Connect(Target {
                host: "::1",
                port: 8443
            }))
        );
        assert_eq!(
            Target {
                host: "::1",
                port: 8443
            }
            .to_string(),
            "[::1]:8443"
        );

        let rewritten = |head: &'static [u8]| match parse_request(head) {
            Ok(Request::Forward(request)) => String::from_utf8(rewrite_head(&request)).unwrap(),
            other => panic!("{other:?}"),
        };
        assert_eq!(
            rewritten(b"GET http://h.example HTTP/1.0\r\n\r\n"),
            "GET / HTTP/1.0\r\nHost: h.example\r\nConnection: close\r\n\r\n"
        );
        assert_eq!(
            rewritten(
                b"HEAD http://h.example:8080?q=1#frag HTTP/1.1\nHost: other\nKeep-Alive: 5\n\n"
            ),
            "HEAD /?q=1 HTTP/1.1\r\nHost: h.example:8080\r\nConnection: close\r\n\r\n"
        );
    }

    // --- end to end, over loopback ---

    const RESPONSE: &[u8] =
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello";

    struct Proxy {
        addr: SocketAddr,
        reports: Arc<Mutex<Vec<String>>>,
        stop: CancellationToken,
    }

    impl Proxy {
        async fn start(allow: &[String]) -> Proxy {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let reports = Arc::new(Mutex::new(Vec::new()));
            let sink = Arc::clone(&reports);
            let egress = Arc::new(Egress {
                server: "demo".to_owned(),
                allow: AllowList::parse(allow).unwrap(),
                report: Arc::new(move |line| sink.lock().unwrap().push(line)),
            });
            let stop = CancellationToken::new();
            tokio::spawn(serve(listener, egress, stop.clone()));
            Proxy {
                addr,
                reports,
                stop,
            }
        }

        fn reports(&self) -> Vec<String> {
            self.reports.lock().unwrap().clone()
        }

        /// Sends `request` on a fresh connection and reads the answer to its end.
        async fn ask(&self, request: &[u8]) -> String {
            let mut client = TcpStream::connect(self.addr).await.unwrap();
            client.write_all(request).await.unwrap();
            let mut answer = Vec::new();
            client.read_to_end(&mut answer).await.unwrap();
            String::from_utf8(answer).unwrap()
        }
    }

    impl Drop for Proxy {
        fn drop(&mut self) {
            self.stop.cancel();
        }
    }

    /// An origin server for one request: answers `RESPONSE` and yields what it received
    /// (the head plus a Content-Length body).
    async fn upstream() -> (u16, JoinHandle<Vec<u8>>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let task = tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            let mut got = Vec::new();
            let mut chunk = [0u8; 1024];
            loop {
                if let Some(end) = find_head_end(&got, 0) {
                    let head = String::from_utf8_lossy(&got[..end]).to_ascii_lowercase();
                    let body = head
                        .lines()
                        .find_map(|line| line.strip_prefix("content-length:"))
                        .map_or(0, |len| len.trim().parse().unwrap());
                    if got.len() >= end + body {
                        break;
                    }
                }
                let n = stream.read(&mut chunk).await.unwrap();
                if n == 0 {
                    break;
                }
                got.extend_from_slice(&chunk[..n]);
            }
            stream.write_all(RESPONSE).await.unwrap();
            stream.shutdown().await.unwrap();
            got
        });
        (port, task)
    }

    async fn within<F: Future>(work: F) -> F::Output {
        timeout(Duration::from_secs(20), work)
            .await
            .expect("test did not finish in 20 s")
    }

    #[tokio::test]
    async fn connect_allowed_reaches_upstream() {
        within(async {
            let (port, origin) = upstream().await;
            let proxy = Proxy::start(&[format!("127.0.0.1:{port}")]).await;
            let mut client = TcpStream::connect(proxy.addr).await.unwrap();
            let connect =
                format!("CONNECT 127.0.0.1:{port} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n");
            client.write_all(connect.as_bytes()).await.unwrap();
            let mut established = [0u8; ESTABLISHED.len()];
            client.read_exact(&mut established).await.unwrap();
            assert_eq!(&established[..], ESTABLISHED);

            client
                .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
                .await
                .unwrap();
            let mut answer = Vec::new();
            client.read_to_end(&mut answer).await.unwrap();
            assert_eq!(answer, RESPONSE);
            assert_eq!(origin.await.unwrap(), b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
            assert_eq!(
                proxy.reports(),
                [format!("egress allowed: CONNECT 127.0.0.1:{port}")]
            );
        })
        .await;
    }

    #[tokio::test]
    async fn connect_to_unlisted_port_is_refused() {
        within(async {
            let (port, origin) = upstream().await;
            let proxy = Proxy::start(&["127.0.0.1:1".to_owned()]).await;
            let answer = proxy
                .ask(format!("CONNECT 127.0.0.1:{port} HTTP/1.1\r\n\r\n").as_bytes())
                .await;
            let line = format!(
                "egress refused: CONNECT 127.0.0.1:{port} is not in sandbox.allow (add \"127.0.0.1:{port}\" to [servers.demo.sandbox] allow)"
            );
            assert!(answer.starts_with("HTTP/1.1 403 Forbidden\r\n"), "{answer}");
            assert!(answer.contains("Connection: close\r\n"), "{answer}");
            assert!(answer.contains("Content-Type: text/plain"), "{answer}");
            assert!(answer.ends_with(&format!("\r\n\r\n{line}\n")), "{answer}");
            assert_eq!(proxy.reports(), [line]);
            assert!(!origin.is_finished(), "the origin was reached");
            origin.abort();
        })
        .await;
    }

    #[tokio::test]
    async fn bytes_pipelined_after_connect_are_delivered() {
        within(async {
            let (port, origin) = upstream().await;
            let proxy = Proxy::start(&["127.0.0.1:*".to_owned()]).await;
            let request = format!(
                "CONNECT 127.0.0.1:{port} HTTP/1.1\r\n\r\nGET /early HTTP/1.1\r\nHost: x\r\n\r\n"
            );
            let answer = proxy.ask(request.as_bytes()).await;
            let mut expected = ESTABLISHED.to_vec();
            expected.extend_from_slice(RESPONSE);
            assert_eq!(answer.as_bytes(), expected);
            assert_eq!(
                origin.await.unwrap(),
                b"GET /early HTTP/1.1\r\nHost: x\r\n\r\n"
            );
        })
        .await;
    }

    #[tokio::test]
    async fn plain_http_is_rewritten_and_forwarded() {
        within(async {
            let (port, origin) = upstream().await;
            let proxy = Proxy::start(&[format!("127.0.0.1:{port}")]).await;
            let request = format!(
                "POST http://127.0.0.1:{port}/submit?x=1 HTTP/1.1\r\n\
                 Host: elsewhere.example\r\n\
                 Proxy-Authorization: Basic eDp5\r\n\
                 Proxy-Connection: keep-alive\r\n\
                 Connection: keep-alive, X-Hop\r\n\
                 X-Hop: 1\r\n\
                 Content-Length: 5\r\n\
                 Accept: */*\r\n\r\nhello"
            );
            let answer = proxy.ask(request.as_bytes()).await;
            assert_eq!(answer.as_bytes(), RESPONSE);
            let forwarded = String::from_utf8(origin.await.unwrap()).unwrap();
            assert_eq!(
                forwarded,
                format!(
                    "POST /submit?x=1 HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 5\r\n\
                     Accept: */*\r\nConnection: close\r\n\r\nhello"
                )
            );
            assert_eq!(
                proxy.reports(),
                [format!("egress allowed: POST http://127.0.0.1:{port}")]
            );
        })
        .await;
    }

    #[tokio::test]
    async fn plain_http_to_unlisted_host_is_refused() {
        within(async {
            let proxy = Proxy::start(&["api.github.com:443".to_owned()]).await;
            let answer = proxy
                .ask(b"GET http://Evil.example./x HTTP/1.1\r\nHost: evil.example\r\n\r\n")
                .await;
            assert!(answer.starts_with("HTTP/1.1 403 Forbidden\r\n"), "{answer}");
            assert_eq!(
                proxy.reports(),
                ["egress refused: GET http://Evil.example.:80 is not in sandbox.allow (add \"evil.example:80\" to [servers.demo.sandbox] allow)"]
            );
        })
        .await;
    }

    #[tokio::test]
    async fn unreachable_upstream_is_bad_gateway() {
        within(async {
            let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let port = closed.local_addr().unwrap().port();
            drop(closed);
            let proxy = Proxy::start(&["127.0.0.1:*".to_owned()]).await;
            let answer = proxy
                .ask(format!("CONNECT 127.0.0.1:{port} HTTP/1.1\r\n\r\n").as_bytes())
                .await;
            assert!(
                answer.starts_with("HTTP/1.1 502 Bad Gateway\r\n"),
                "{answer}"
            );
            let reports = proxy.reports();
            assert_eq!(reports.len(), 2, "{reports:?}");
            assert!(reports[1].starts_with(&format!("egress failed: CONNECT 127.0.0.1:{port}: ")));
        })
        .await;
    }

    #[tokio::test]
    async fn malformed_requests_get_400() {
        within(async {
            let proxy = Proxy::start(&["example.com:*".to_owned()]).await;
            let mut oversized = b"GET http://example.com/ HTTP/1.1\r\nX-Big: ".to_vec();
            oversized.resize(MAX_HEAD + 1024, b'a');
            let requests: [&[u8]; 10] = [
                b"hello\r\n\r\n",
                b"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n",
                b"GET https://example.com/ HTTP/1.1\r\n\r\n",
                b"GET ftp://example.com/ HTTP/1.1\r\n\r\n",
                b"CONNECT example.com HTTP/1.1\r\n\r\n",
                b"CONNECT user@example.com:443 HTTP/1.1\r\n\r\n",
                b"GET http://example.com/ HTTP/2.0\r\n\r\n",
                b"GET http://example.com/ HTTP/1.1\r\nno colon here\r\n\r\n",
                b"GET  http://example.com/ HTTP/1.1\r\n\r\n",
                &oversized,
            ];
            for request in requests {
                let answer = proxy.ask(request).await;
                let shown = String::from_utf8_lossy(&request[..request.len().min(60)]);
                assert!(
                    answer.starts_with("HTTP/1.1 400 Bad Request\r\n"),
                    "{shown}: {answer}"
                );
            }
            let reports = proxy.reports();
            assert_eq!(reports.len(), requests.len(), "{reports:?}");
            assert!(
                reports
                    .iter()
                    .all(|r| r.starts_with("egress rejected a malformed request: ")),
                "{reports:?}"
            );
        })
        .await;
    }

    #[tokio::test]
    async fn connections_beyond_the_cap_get_503() {
        within(async {
            let proxy = Proxy::start(&["127.0.0.1:*".to_owned()]).await;
            // Connections that send nothing hold their slot while the proxy waits for a head.
            let mut idle = Vec::new();
            for _ in 0..MAX_CONNECTIONS {
                idle.push(TcpStream::connect(proxy.addr).await.unwrap());
            }
            let answer = proxy.ask(b"").await;
            assert!(
                answer.starts_with("HTTP/1.1 503 Service Unavailable\r\n"),
                "{answer}"
            );
            assert!(proxy.reports().iter().any(|r| r.contains("64 connections")));

            // A slot frees once the proxy sees an idle connection close.
            drop(idle.pop());
            loop {
                let answer = proxy.ask(b"hello\r\n\r\n").await;
                if answer.starts_with("HTTP/1.1 400 Bad Request\r\n") {
                    break;
                }
                assert!(answer.starts_with("HTTP/1.1 503 "), "{answer}");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await;
    }
}
