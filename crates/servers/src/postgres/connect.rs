//! Reaching the database: the DSN, and a TCP connection made directly or
//! through the HTTP CONNECT proxy Berth's sandbox offers (the only way out of
//! a sandboxed server's network namespace).

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_postgres::config::{Host, SslMode};
use tokio_postgres::{CancelToken, Client, Config, NoTls};

/// Time allowed for reaching the server and logging in, unless the DSN sets
/// `connect_timeout`.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest proxy answer head read before giving up.
const MAX_PROXY_HEAD: usize = 16 * 1024;
/// The variables a proxy is taken from, in order.
const PROXY_VARS: &[&str] = &[
    "HTTPS_PROXY",
    "https_proxy",
    "HTTP_PROXY",
    "http_proxy",
    "ALL_PROXY",
    "all_proxy",
];

/// Where the database is and how to get there.
#[derive(Clone)]
pub struct Target {
    config: Config,
    /// `host:port` of an HTTP CONNECT proxy, when the environment names one.
    proxy: Option<String>,
    /// `(host, port)` pairs to try in order (TCP hosts only).
    addrs: Vec<(String, u16)>,
    timeout: Duration,
}

/// Sends a cancel request for whatever the connection it came from is running.
#[derive(Clone)]
pub struct Canceller {
    token: CancelToken,
    target: Target,
}

impl Target {
    /// Parses `dsn` (a `postgresql://` URL or `key=value` pairs) and reads the
    /// proxy from the environment.
    pub fn new(dsn: &str, env: impl Fn(&str) -> Option<String>) -> Result<Target, String> {
        let mut config: Config = dsn.parse().map_err(|e| {
            format!("it is not a valid connection string ({e}); expected postgresql://user@host:5432/db or \"host=... user=... dbname=...\"")
        })?;
        if config.get_ssl_mode() == SslMode::Require {
            return Err("it asks for sslmode=require, and this server does not speak TLS yet; use sslmode=disable (or prefer) over a trusted network (loopback, or Berth's egress proxy to a database on a private network)".into());
        }
        if config.get_hosts().is_empty() {
            return Err("it names no host (add host=... or postgresql://user@HOST/db)".into());
        }
        if config.get_user().is_none() {
            return Err("it names no user (add user=... or postgresql://USER@host/db)".into());
        }
        if config.get_application_name().is_none() {
            // So a DBA can tell these sessions apart in pg_stat_activity.
            config.application_name("berth-postgres");
        }
        let proxy = proxy_from(&env)?;
        let ports = config.get_ports();
        let mut addrs = Vec::new();
        for (i, host) in config.get_hosts().iter().enumerate() {
            let port = ports.get(i).or(ports.first()).copied().unwrap_or(5432);
            match host {
                Host::Tcp(name) => addrs.push((name.clone(), port)),
                Host::Unix(path) if proxy.is_some() => {
                    return Err(format!(
                        "it names the Unix socket directory {}, which the sandbox cannot reach; use a TCP host (127.0.0.1) and allow it in [servers.NAME.sandbox] allow",
                        path.display()
                    ));
                }
                Host::Unix(_) => {}
            }
        }
        let timeout = config
            .get_connect_timeout()
            .copied()
            .unwrap_or(CONNECT_TIMEOUT);
        Ok(Target {
            config,
            proxy,
            addrs,
            timeout,
        })
    }

    /// A description for logs and errors: where, and how (never the password).
    pub fn describe(&self) -> String {
        let db = self.config.get_dbname().unwrap_or("(default)");
        let user = self.config.get_user().unwrap_or("?");
        let hosts: Vec<String> = self.addrs.iter().map(|(h, p)| format!("{h}:{p}")).collect();
        let hosts = if hosts.is_empty() {
            "a Unix socket".to_string()
        } else {
            hosts.join(",")
        };
        match &self.proxy {
            Some(proxy) => format!("database {db} as {user} at {hosts} through the proxy {proxy}"),
            None => format!("database {db} as {user} at {hosts}"),
        }
    }

    /// Connects and logs in; the connection runs on its own task until the
    /// client is dropped or the server goes away.
    pub async fn connect(&self) -> Result<(Client, Canceller), String> {
        tokio::time::timeout(self.timeout, self.try_connect())
            .await
            .map_err(|_| {
                format!(
                    "cannot connect to {}: no answer within {}",
                    self.describe(),
                    humantime::format_duration(self.timeout)
                )
            })?
    }

    async fn try_connect(&self) -> Result<(Client, Canceller), String> {
        let client = match &self.proxy {
            None => {
                let (client, connection) =
                    self.config.connect(NoTls).await.map_err(|e| {
                        format!("cannot connect to {}: {}", self.describe(), chain(&e))
                    })?;
                tokio::spawn(async move {
                    if let Err(e) = connection.await {
                        eprintln!("postgres: the connection ended: {}", chain(&e));
                    }
                });
                client
            }
            Some(proxy) => {
                let mut last = String::from("no TCP host to try");
                let mut found = None;
                for (host, port) in &self.addrs {
                    let stream = match tunnel(proxy, host, *port).await {
                        Ok(stream) => stream,
                        Err(e) => {
                            last = e;
                            continue;
                        }
                    };
                    match self.config.connect_raw(stream, NoTls).await {
                        Ok((client, connection)) => {
                            tokio::spawn(async move {
                                if let Err(e) = connection.await {
                                    eprintln!("postgres: the connection ended: {}", chain(&e));
                                }
                            });
                            found = Some(client);
                            break;
                        }
                        Err(e) => last = format!("{host}:{port}: {}", chain(&e)),
                    }
                }
                found.ok_or_else(|| format!("cannot connect to {}: {last}", self.describe()))?
            }
        };
        let canceller = Canceller {
            token: client.cancel_token(),
            target: self.clone(),
        };
        Ok((client, canceller))
    }
}

impl Canceller {
    /// Asks the server to cancel the running statement (a new connection,
    /// through the proxy when there is one).
    pub async fn cancel(&self) -> Result<(), String> {
        let work = async {
            match &self.target.proxy {
                None => self.token.cancel_query(NoTls).await.map_err(|e| chain(&e)),
                Some(proxy) => {
                    let mut last = String::from("no TCP host to try");
                    for (host, port) in &self.target.addrs {
                        match tunnel(proxy, host, *port).await {
                            Ok(stream) => {
                                return self
                                    .token
                                    .cancel_query_raw(stream, NoTls)
                                    .await
                                    .map_err(|e| chain(&e));
                            }
                            Err(e) => last = e,
                        }
                    }
                    Err(last)
                }
            }
        };
        tokio::time::timeout(self.target.timeout, work)
            .await
            .map_err(|_| "the cancel request got no answer".to_string())?
    }
}

/// The `host:port` of the HTTP proxy in the environment, if any.
fn proxy_from(env: &impl Fn(&str) -> Option<String>) -> Result<Option<String>, String> {
    for var in PROXY_VARS {
        let Some(value) = env(var).filter(|v| !v.trim().is_empty()) else {
            continue;
        };
        let value = value.trim();
        let rest = match value.split_once("://") {
            Some(("http" | "HTTP", rest)) => rest,
            Some((scheme, _)) => {
                return Err(format!(
                    "{var} is a {scheme}:// proxy; only an HTTP CONNECT proxy (http://host:port) is supported"
                ));
            }
            None => value,
        };
        let authority = rest.split('/').next().unwrap_or(rest);
        if authority.contains('@') {
            return Err(format!(
                "{var} carries credentials, which this server does not send; Berth's sandbox proxy needs none"
            ));
        }
        let authority = if authority
            .rsplit_once(':')
            .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
            && !authority.ends_with(']')
        {
            authority.to_string()
        } else {
            format!("{authority}:80")
        };
        return Ok(Some(authority));
    }
    Ok(None)
}

/// A TCP stream to `host:port` through the HTTP CONNECT proxy at `proxy`.
async fn tunnel(proxy: &str, host: &str, port: u16) -> Result<TcpStream, String> {
    let target = if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    let mut stream = TcpStream::connect(proxy)
        .await
        .map_err(|e| format!("cannot reach the egress proxy {proxy}: {e}"))?;
    stream
        .write_all(format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n").as_bytes())
        .await
        .map_err(|e| format!("the egress proxy {proxy} closed: {e}"))?;
    // The database says nothing before the client's startup message, so
    // everything read up to the blank line is the proxy's answer.
    let mut head = Vec::new();
    let mut buf = [0u8; 512];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        if head.len() > MAX_PROXY_HEAD {
            return Err(format!("the egress proxy {proxy} sent an oversized answer"));
        }
        let n = stream
            .read(&mut buf)
            .await
            .map_err(|e| format!("the egress proxy {proxy} closed: {e}"))?;
        if n == 0 {
            return Err(format!(
                "the egress proxy {proxy} closed the connection to {target}"
            ));
        }
        head.extend_from_slice(&buf[..n]);
    }
    let status_line =
        String::from_utf8_lossy(head.split(|&b| b == b'\r').next().unwrap_or_default())
            .into_owned();
    let code = status_line.split_whitespace().nth(1).unwrap_or_default();
    if code != "200" {
        let hint = if code == "403" {
            format!(
                " (the sandbox does not allow {target}: add \"{target}\" to [servers.NAME.sandbox] allow)"
            )
        } else {
            String::new()
        };
        return Err(format!(
            "the egress proxy refused {target}: {status_line}{hint}"
        ));
    }
    Ok(stream)
}

/// An error with its causes, as one line.
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = cause.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |k| {
            pairs
                .iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn dsns_in_both_forms() {
        let t = Target::new("postgresql://root@127.0.0.1:5432/test", env(&[])).unwrap();
        assert_eq!(t.addrs, vec![("127.0.0.1".to_string(), 5432)]);
        assert!(t.proxy.is_none());
        let t = Target::new("host=db.internal port=6543 user=app dbname=x", env(&[])).unwrap();
        assert_eq!(t.addrs, vec![("db.internal".to_string(), 6543)]);
        assert_eq!(t.describe(), "database x as app at db.internal:6543");
    }

    #[test]
    fn bad_dsns_say_why() {
        let err = |dsn| Target::new(dsn, env(&[])).err().unwrap();
        assert!(err("postgresql://root@h/db?sslmode=require").contains("sslmode=require"));
        assert!(err("not a dsn at all = =").contains("not a valid connection string"));
        assert!(err("user=x dbname=y").contains("no host"));
    }

    #[test]
    fn the_proxy_comes_from_the_environment() {
        let t = Target::new(
            "postgresql://root@127.0.0.1/test",
            env(&[("HTTPS_PROXY", "http://127.0.0.1:3128")]),
        )
        .unwrap();
        assert_eq!(t.proxy.as_deref(), Some("127.0.0.1:3128"));
        assert!(t.describe().contains("through the proxy 127.0.0.1:3128"));
        let t = Target::new(
            "postgresql://root@127.0.0.1/test",
            env(&[("ALL_PROXY", "http://proxy.lan/")]),
        )
        .unwrap();
        assert_eq!(t.proxy.as_deref(), Some("proxy.lan:80"));
        let err = Target::new(
            "postgresql://root@127.0.0.1/test",
            env(&[("HTTP_PROXY", "socks5://127.0.0.1:1080")]),
        )
        .err()
        .unwrap();
        assert!(err.contains("socks5"), "{err}");
        let err = Target::new(
            "host=/var/run/postgresql user=root",
            env(&[("HTTP_PROXY", "http://127.0.0.1:3128")]),
        )
        .err()
        .unwrap();
        assert!(err.contains("Unix socket"), "{err}");
    }

    #[tokio::test]
    async fn a_refusing_proxy_is_reported_with_the_fix() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf).await;
            let _ = s.write_all(b"HTTP/1.1 403 Forbidden\r\n\r\n").await;
        });
        let err = tunnel(&addr, "10.0.0.5", 5432).await.err().unwrap();
        assert!(
            err.contains("403") && err.contains("10.0.0.5:5432"),
            "{err}"
        );
    }
}
