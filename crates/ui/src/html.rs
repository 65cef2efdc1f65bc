//! HTML building: escaping and the page frame. Everything that comes from a
//! server, a client or the configuration goes through [`esc`].

use std::fmt::Write as _;

/// `text` safe in element content and in double- or single-quoted attributes.
pub fn esc(text: &str) -> String {
    html_escape::encode_quoted_attribute(text).into_owned()
}

/// A path segment: percent-encodes everything but unreserved characters
/// (server names go into links).
pub fn path_segment(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// Where a page sits in the navigation.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Nav {
    Servers,
    Usage,
    /// The login page: no navigation.
    None,
}

/// A whole page. `csrf` (the session's token) goes into the logout form;
/// `page` is `<body data-page>`, which the script reads to know what to
/// update.
pub fn page(title: &str, page: &str, nav: Nav, csrf: Option<&str>, main: &str) -> String {
    let mut header = String::new();
    if let (Some(csrf), true) = (csrf, nav != Nav::None) {
        let current = |n: Nav| {
            if n == nav {
                " aria-current=\"page\""
            } else {
                ""
            }
        };
        let _ = write!(
            header,
            "<header><span class=\"brand\">Berth</span><nav>\
             <a href=\"/ui\"{}>Servers</a>\
             <a href=\"/ui/usage\"{}>Usage &amp; cost</a></nav>\
             <form method=\"post\" action=\"/ui/logout\" class=\"logout\">\
             <input type=\"hidden\" name=\"csrf\" value=\"{}\">\
             <button type=\"submit\">Log out</button></form></header>",
            current(Nav::Servers),
            current(Nav::Usage),
            esc(csrf)
        );
    }
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{} · Berth</title>\
         <link rel=\"stylesheet\" href=\"/ui/static/ui.css\">\
         <script src=\"/ui/static/ui.js\" defer></script></head>\
         <body data-page=\"{}\">{header}<main>{main}</main></body></html>\n",
        esc(title),
        esc(page)
    )
}

/// Milliseconds for a table cell: `-` when unknown.
pub fn ms(value: Option<f64>) -> String {
    match value {
        None => "-".into(),
        Some(v) if v >= 1000.0 => format!("{:.2} s", v / 1000.0),
        Some(v) if v >= 100.0 => format!("{v:.0} ms"),
        Some(v) if v >= 10.0 => format!("{v:.1} ms"),
        Some(v) => format!("{v:.2} ms"),
    }
}

/// US dollars: cents for a dollar or more, else three significant digits
/// (hosting a day's test traffic costs fractions of a cent).
pub fn usd(v: f64) -> String {
    if v == 0.0 || !v.is_finite() {
        return "$0".into();
    }
    if v.abs() >= 1.0 {
        return format!("${v:.2}");
    }
    let digits = (2 - v.abs().log10().floor() as i32).clamp(2, 12) as usize;
    format!("${v:.digits$}")
}

/// Bytes with a binary unit.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

/// A duration in seconds, shortened.
pub fn seconds(s: f64) -> String {
    if s >= 3600.0 {
        format!("{:.1} h", s / 3600.0)
    } else if s >= 60.0 {
        format!("{:.1} min", s / 60.0)
    } else {
        format!("{s:.1} s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markup_is_escaped() {
        assert_eq!(
            esc(r#"<script>alert("x")</script> & 'y'"#),
            "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &#x27;y&#x27;"
        );
        assert_eq!(path_segment("a b/c"), "a%20b%2Fc");
        assert_eq!(path_segment("echo-1_x"), "echo-1_x");
    }

    #[test]
    fn figures_are_readable() {
        assert_eq!(ms(None), "-");
        assert_eq!(ms(Some(1.234)), "1.23 ms");
        assert_eq!(ms(Some(2500.0)), "2.50 s");
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(2048), "2.0 KiB");
        assert_eq!(seconds(90.0), "1.5 min");
        assert_eq!(usd(0.0), "$0");
        assert_eq!(usd(12.345), "$12.35");
        assert_eq!(usd(0.408), "$0.408");
        assert_eq!(usd(0.0000018081), "$0.00000181");
    }

    #[test]
    fn the_page_title_and_logout_token_are_escaped() {
        let html = page("<x>", "servers", Nav::Servers, Some("\"t"), "");
        assert!(html.contains("<title>&lt;x&gt; · Berth</title>"));
        assert!(html.contains("value=\"&quot;t\""));
        assert!(!page("Log in", "login", Nav::None, None, "").contains("logout"));
    }
}
