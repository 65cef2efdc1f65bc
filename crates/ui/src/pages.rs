//! The pages: servers, one server, usage and cost; the chart and the assets.

use std::fmt::Write as _;
use std::sync::Arc;

use axum::Form;
use axum::extract::rejection::FormRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use berth_fleet::LogLine;
use berth_usage::{By, UsageRow};

use crate::Ui;
use crate::auth::{CsrfForm, refuse};
use crate::data::{self, FIELDS, Reports, Row};
use crate::html::{Nav, bytes, esc, ms, page, path_segment, seconds, usd};

const CSS: &str = include_str!("../assets/ui.css");
const JS: &str = include_str!("../assets/ui.js");
/// Log lines a server page starts with (the stream adds the new ones).
const LOG_LINES: usize = 200;

fn stopping() -> Response {
    refuse(StatusCode::SERVICE_UNAVAILABLE, "Berth is stopping")
}

macro_rules! session {
    ($result:expr) => {
        match $result {
            Ok(session) => session,
            Err(denied) => return denied.into_response(),
        }
    };
}

/// The `<thead>` of a servers table.
fn head(first: &str) -> String {
    let mut out = format!("<thead><tr><th>{}</th>", esc(first));
    for (_, heading, tip) in FIELDS {
        let _ = write!(out, "<th title=\"{}\">{}</th>", esc(tip), esc(heading));
    }
    out.push_str("</tr></thead>");
    out
}

/// A server's `<tr>`: `data-server` and each cell's `data-field` are what
/// the script (and tests) find them by.
fn tr(row: &Row, link: bool) -> String {
    let name = esc(&row.name);
    let mut out = format!(
        "<tr data-server=\"{name}\" id=\"server-{name}\" data-status=\"{}\">",
        row.status
    );
    if link {
        let _ = write!(
            out,
            "<th scope=\"row\"><a href=\"/ui/servers/{}\">{name}</a></th>",
            path_segment(&row.name)
        );
    } else {
        let _ = write!(out, "<th scope=\"row\">{name}</th>");
    }
    for (field, _, _) in FIELDS {
        let text = row.cells.get(field).map_or("", String::as_str);
        let _ = write!(out, "<td data-field=\"{field}\">{}</td>", esc(text));
    }
    out.push_str("</tr>");
    out
}

const LIVE: &str = "<p class=\"live\">Live: <span id=\"live\" data-state=\"connecting\">connecting…</span> \
     · updated <time id=\"updated\">-</time></p>";

pub(crate) async fn servers(State(ui): State<Arc<Ui>>, headers: HeaderMap) -> Response {
    let session = session!(ui.page_session(&headers));
    let Some(gateway) = ui.gateway() else {
        return stopping();
    };
    let snapshot = data::snapshot(&gateway);
    let mut main = format!("<h1>Servers</h1>{LIVE}");
    if snapshot.servers.is_empty() {
        main.push_str("<p>No servers are configured.</p>");
    }
    let _ = write!(main, "<table id=\"servers\">{}<tbody>", head("Server"));
    for row in &snapshot.servers {
        main.push_str(&tr(row, true));
    }
    main.push_str("</tbody></table>");
    let _ = write!(
        main,
        "<p class=\"hint\">Figures since Berth started; latencies over recent calls. \
         <time id=\"snapshot-at\">{}</time></p>",
        esc(&snapshot.at)
    );
    Html(page(
        "Servers",
        "servers",
        Nav::Servers,
        Some(&session.csrf),
        &main,
    ))
    .into_response()
}

pub(crate) async fn server(
    State(ui): State<Arc<Ui>>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Response {
    let session = session!(ui.page_session(&headers));
    let Some(gateway) = ui.gateway() else {
        return stopping();
    };
    let Some(server) = gateway.servers().into_iter().find(|s| s.spec.name == name) else {
        return not_found_page(&session.csrf, &format!("No server named “{name}”."));
    };
    let reports = Reports::of(&server);
    let state = gateway.fleet_state().into_iter().find(|s| s.server == name);
    let starts = data::starts(&gateway, &name);
    let row = data::row(&server, &reports, state.as_ref(), &starts);
    let n = esc(&name);
    let mut main = format!("<h1>{n}</h1>{LIVE}");
    let _ = write!(
        main,
        "<table id=\"summary\">{}<tbody>{}</tbody></table>",
        head("Server"),
        tr(&row, false)
    );

    // What berth ps says below its table.
    main.push_str("<dl class=\"facts\">");
    let mut fact = |term: &str, value: &str| {
        let _ = write!(main, "<dt>{}</dt><dd>{}</dd>", esc(term), esc(value));
    };
    if let Some((_, Some(why))) = server.era() {
        fact("Era reason", &why);
    }
    if let Some(budget) = server.spec.latency_budget {
        fact(
            "Latency budget",
            &format!("{} p99", ms(Some(budget.as_secs_f64() * 1000.0))),
        );
    }
    if let Some(failure) = &reports.pool.failure {
        fact("Failure", failure);
    }
    if let Some(last) = &reports.pool.last_exit {
        fact("Last crash", last);
    }
    fact(
        "Ready target",
        &format!(
            "{} ({}; {:.1} sessions/s)",
            reports.pool.ready_target,
            reports.pool.target_reason.as_str(),
            reports.pool.arrival_rate
        ),
    );
    if let Some(state) = &state {
        fact(
            "Spawns · OOM kills",
            &format!("{} · {}", state.spawns, state.oom_kills),
        );
    }
    main.push_str("</dl>");
    let _ = write!(
        main,
        "<form method=\"post\" action=\"/ui/servers/{}/restart\" class=\"inline\">\
         <input type=\"hidden\" name=\"csrf\" value=\"{}\">\
         <button type=\"submit\" id=\"restart\">Rolling restart</button></form>",
        path_segment(&name),
        esc(&session.csrf)
    );

    // Processes of both pools.
    main.push_str("<h2>Processes</h2>");
    let processes: Vec<_> = std::iter::once(("sessions", &reports.pool))
        .chain(reports.stateless.as_ref().map(|p| ("stateless", p)))
        .flat_map(|(pool, r)| r.processes.iter().map(move |p| (pool, p)))
        .collect();
    if processes.is_empty() {
        main.push_str("<p>No process is running.</p>");
    } else {
        main.push_str(
            "<table id=\"processes\"><thead><tr><th>Pool</th><th>PID</th><th>State</th>\
             <th>Sessions</th><th>Generation</th><th>Age</th></tr></thead><tbody>",
        );
        for (pool, p) in processes {
            let state = p.state.as_str();
            let _ = write!(
                main,
                "<tr><td>{pool}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                p.pid,
                esc(state),
                p.sessions,
                p.generation,
                seconds(p.age_ms as f64 / 1000.0)
            );
        }
        main.push_str("</tbody></table>");
    }

    // Tools.
    main.push_str("<h2>Tools</h2>");
    match data::tools(&gateway, &name) {
        None => main.push_str(
            "<p>Metrics are off (<code>[telemetry] metrics = false</code>): no per-tool figures.</p>",
        ),
        Some(tools) if tools.is_empty() => main.push_str("<p>No tool called yet.</p>"),
        Some(tools) => {
            main.push_str(
                "<table id=\"tools\"><thead><tr><th>Tool</th><th>Calls</th><th>Not ok</th>\
                 <th>Outcomes</th><th>p50</th><th>p99</th></tr></thead><tbody>",
            );
            for t in tools {
                let outcomes: Vec<String> =
                    t.outcomes.iter().map(|(o, n)| format!("{o} {n}")).collect();
                let _ = write!(
                    main,
                    "<tr data-tool=\"{0}\"><th scope=\"row\">{0}</th><td data-field=\"calls\">{1}</td>\
                     <td>{2}</td><td>{3}</td><td>{4}</td><td>{5}</td></tr>",
                    esc(&t.tool),
                    t.calls(),
                    t.failed(),
                    esc(&outcomes.join(" · ")),
                    ms(t.p50_ms),
                    ms(t.p99_ms)
                );
            }
            main.push_str("</tbody></table>");
        }
    }
    if !starts.is_empty() {
        main.push_str(
            "<h2>Time to first result</h2><table id=\"starts\"><thead><tr><th>Process</th>\
             <th>Sessions</th><th>p50</th><th>p99</th></tr></thead><tbody>",
        );
        for s in &starts {
            let _ = write!(
                main,
                "<tr><th scope=\"row\">{}</th><td>{}</td><td>{}</td><td>{}</td></tr>",
                s.start,
                s.count,
                ms(s.p50_ms),
                ms(s.p99_ms)
            );
        }
        main.push_str("</tbody></table>");
    }

    // The log: the last lines now, the new ones streamed by the script.
    let lines = server.log().since(0, LOG_LINES);
    let after = lines.last().map_or(0, |l| l.seq);
    let _ = write!(
        main,
        "<h2>Log <span class=\"live\" id=\"log-state\" data-state=\"connecting\">connecting…</span></h2>\
         <pre id=\"log\" data-server=\"{n}\" data-after=\"{after}\">{}</pre>",
        render_log(&lines)
    );
    Html(page(
        &name,
        "server",
        Nav::Servers,
        Some(&session.csrf),
        &main,
    ))
    .into_response()
}

fn render_log(lines: &[LogLine]) -> String {
    lines.iter().map(|l| esc(&format!("{l}\n"))).collect()
}

pub(crate) async fn restart(
    State(ui): State<Arc<Ui>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    form: Result<Form<CsrfForm>, FormRejection>,
) -> Response {
    let form = form.map(|Form(f)| f).unwrap_or_default();
    let session = session!(ui.post_session(&headers, &form.csrf));
    let Some(gateway) = ui.gateway() else {
        return stopping();
    };
    if !gateway.restart(&name) {
        return not_found_page(&session.csrf, &format!("No server named “{name}”."));
    }
    tracing::info!(server = %name, "rolling restart requested from the dashboard");
    Redirect::to(&format!("/ui/servers/{}", path_segment(&name))).into_response()
}

/// A usage table grouped by `key` (`server` or `principal`).
fn usage_table(id: &str, key: &str, rows: &[UsageRow]) -> String {
    let heading = if key == "principal" {
        "Principal"
    } else {
        "Server"
    };
    let mut out = format!(
        "<table id=\"{id}\"><thead><tr><th>{}</th><th>Sessions</th><th>Session time</th>\
         <th>Peak conns</th><th>Requests</th><th>Tool calls</th><th>Errors</th><th>In</th>\
         <th>Out</th><th>CPU</th><th>Memory (GiB·h)</th></tr></thead><tbody>",
        heading
    );
    for r in rows {
        let name = match key {
            "principal" => r.principal.as_deref(),
            _ => r.server.as_deref(),
        }
        .unwrap_or_default();
        let shown = if name.is_empty() { "(anonymous)" } else { name };
        let q = &r.quantities;
        let _ = write!(
            out,
            "<tr data-key=\"{}\"><th scope=\"row\">{}</th><td>{}</td><td>{}</td><td>{}</td>\
             <td data-field=\"requests\">{}</td><td data-field=\"tool_calls\">{}</td><td>{}</td>\
             <td>{}</td><td>{}</td><td>{}</td><td>{:.4}</td></tr>",
            esc(name),
            esc(shown),
            q.sessions,
            seconds(q.session_seconds),
            q.peak_connections,
            q.requests,
            q.tool_calls,
            q.errors,
            bytes(q.bytes_in),
            bytes(q.bytes_out),
            seconds(q.cpu_seconds),
            q.memory_gib_seconds / 3600.0
        );
    }
    out.push_str("</tbody></table>");
    out
}

pub(crate) async fn usage(State(ui): State<Arc<Ui>>, headers: HeaderMap) -> Response {
    let session = session!(ui.page_session(&headers));
    let mut main = String::from("<h1>Usage &amp; cost</h1>");
    match &ui.usage {
        None => {
            main.push_str("<p>Usage metering is off (<code>[usage] enabled = false</code>).</p>")
        }
        Some(store) => {
            let by_server = data::usage(store, By::Server).await;
            let by_principal = data::usage(store, By::Principal).await;
            match (by_server, by_principal) {
                (Ok(servers), Ok(principals)) => {
                    let time = |t| humantime::format_rfc3339_seconds(t).to_string();
                    let _ = write!(
                        main,
                        "<p>Last 24 hours, {} to {} (whole hours), from {}. The gateway writes \
                         what it metered every <code>[usage] flush_interval</code>.</p>",
                        esc(&time(servers.since)),
                        esc(&time(servers.until)),
                        esc(&store.describe())
                    );
                    main.push_str("<h2>By server</h2>");
                    if servers.rows.is_empty() {
                        main.push_str("<p id=\"usage-empty\">Nothing recorded yet.</p>");
                    } else {
                        main.push_str(&usage_table("usage-servers", "server", &servers.rows));
                    }
                    main.push_str("<h2>By principal</h2>");
                    if principals.rows.is_empty() {
                        main.push_str("<p>Nothing recorded yet.</p>");
                    } else {
                        main.push_str(&usage_table(
                            "usage-principals",
                            "principal",
                            &principals.rows,
                        ));
                    }
                }
                (Err(e), _) | (_, Err(e)) => {
                    let _ = write!(main, "<p class=\"error\">{}</p>", esc(&e));
                }
            }
        }
    }
    main.push_str("<h2>Cost</h2>");
    match data::costs(&ui).await {
        Ok((costs, basis)) => {
            let _ = write!(
                main,
                "<p id=\"cost-basis\">{}</p><table id=\"cost\"><thead><tr><th>Model</th>\
                 <th>Cost</th></tr></thead><tbody>",
                esc(&basis)
            );
            for model in berth_cost::Model::ALL {
                let cheapest = if model == costs.cheapest {
                    " (cheapest)"
                } else {
                    ""
                };
                let _ = write!(
                    main,
                    "<tr><th scope=\"row\">{}{cheapest}</th><td>{}</td></tr>",
                    esc(model.label()),
                    usd(costs.total(model))
                );
            }
            main.push_str(
                "</tbody></table><figure><img id=\"cost-chart\" src=\"/ui/cost.svg\" \
                 width=\"900\" height=\"560\" alt=\"Cost against agent count under each pricing model\">\
                 <figcaption>The same figures against the number of agents (<code>berth cost --svg</code>).</figcaption></figure>",
            );
        }
        Err(e) => {
            let _ = write!(main, "<p class=\"error\">Cost: {}</p>", esc(&e));
        }
    }
    Html(page(
        "Usage & cost",
        "usage",
        Nav::Usage,
        Some(&session.csrf),
        &main,
    ))
    .into_response()
}

pub(crate) async fn cost_svg(State(ui): State<Arc<Ui>>, headers: HeaderMap) -> Response {
    session!(ui.data_session(&headers));
    match data::costs(&ui).await {
        Ok((costs, _)) => (
            [
                (header::CONTENT_TYPE, "image/svg+xml"),
                // An image: nothing in it runs.
                (
                    header::CONTENT_SECURITY_POLICY,
                    "default-src 'none'; style-src 'unsafe-inline'",
                ),
            ],
            berth_cost::chart_svg(&costs),
        )
            .into_response(),
        Err(e) => refuse(StatusCode::INTERNAL_SERVER_ERROR, &e),
    }
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    let mut response = ([(header::CONTENT_TYPE, content_type)], body).into_response();
    // Assets change only with the binary.
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, max-age=300"),
    );
    response
}

pub(crate) async fn css() -> Response {
    asset("text/css; charset=utf-8", CSS)
}

pub(crate) async fn js() -> Response {
    asset("text/javascript; charset=utf-8", JS)
}

fn not_found_page(csrf: &str, message: &str) -> Response {
    let main = format!(
        "<h1>Not found</h1><p>{}</p><p><a href=\"/ui\">All servers</a></p>",
        esc(message)
    );
    (
        StatusCode::NOT_FOUND,
        Html(page("Not found", "missing", Nav::None, Some(csrf), &main)),
    )
        .into_response()
}

pub(crate) async fn not_found(State(ui): State<Arc<Ui>>, headers: HeaderMap) -> Response {
    let session = session!(ui.page_session(&headers));
    not_found_page(&session.csrf, "No such dashboard page.")
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use berth_fleet::LogSource;

    use super::*;

    #[test]
    fn what_servers_write_is_escaped() {
        let line = LogLine {
            seq: 1,
            at: std::time::SystemTime::UNIX_EPOCH,
            pid: Some(7),
            source: LogSource::Stderr,
            text: "<img src=x onerror=alert(1)> & \"q\"".into(),
        };
        let html = render_log(&[line]);
        assert!(!html.contains('<'), "{html}");
        assert!(html.contains("&lt;img src=x onerror=alert(1)&gt; &amp; &quot;q&quot;"));
        let row = Row {
            name: "a\"b".into(),
            status: "running",
            cells: BTreeMap::from([("owner", "<b>team</b>".to_owned())]),
        };
        let tr = tr(&row, true);
        assert!(tr.contains("data-server=\"a&quot;b\""), "{tr}");
        assert!(tr.contains("href=\"/ui/servers/a%22b\""), "{tr}");
        assert!(tr.contains("&lt;b&gt;team&lt;/b&gt;"), "{tr}");
    }
}
