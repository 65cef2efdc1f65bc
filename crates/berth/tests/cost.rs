//! `berth cost`, run as the real binary: recorded usage and projections under
//! the three pricing models, checked against figures computed by hand; the
//! `--svg` chart parsed and rasterised (the PNG is kept under the target dir);
//! bad input refused with a message that says what and where.

use std::path::{Path, PathBuf};
use std::process::Output;

use serde_json::Value;

/// Round prices, so the arithmetic in the comments stays readable.
const CONFIG: &str = r#"
[cost]
per_connection_hour = 0.01
per_1000_calls = 0.02
per_vcpu_hour = 0.04
per_gib_hour = 0.004
vcpu_per_session = 0.1
gib_per_session = 0.25
gateway_vcpu = 1.0
gateway_gib = 2.0
"#;

/// 24 hours, two principals (agent-a on two servers, agent-b on one).
const USAGE: &str = r#"{"since": "2026-11-29T22:00:00Z", "until": "2026-11-30T22:00:00Z", "by": "principal,server",
  "rows": [
    {"principal": "agent-a", "server": "echo", "tool": null, "sessions": 12, "session_seconds": 36000,
     "peak_connections": 3, "requests": 540, "tool_calls": 500, "bytes_in": 123456, "bytes_out": 654321,
     "cpu_seconds": 720, "memory_gib_seconds": 7200},
    {"principal": "agent-b", "server": "echo", "tool": null, "sessions": 8, "session_seconds": 7200,
     "peak_connections": 2, "requests": 1600, "tool_calls": 1500, "bytes_in": 1, "bytes_out": 2,
     "cpu_seconds": 1080, "memory_gib_seconds": 3600},
    {"principal": "agent-a", "server": "files", "tool": null, "sessions": 4, "session_seconds": 28800,
     "peak_connections": 1, "requests": 100, "tool_calls": 2000, "bytes_in": 5, "bytes_out": 6,
     "cpu_seconds": 0, "memory_gib_seconds": 3600}
  ]}"#;

/// A scratch directory holding berth.toml and usage.json.
fn scratch() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("berth.toml"), CONFIG).expect("berth.toml");
    std::fs::write(dir.path().join("usage.json"), USAGE).expect("usage.json");
    dir
}

/// Runs `berth cost ARGS` in `dir` (no BERTH_CONFIG from the caller's environment).
fn cost(dir: &Path, args: &[&str]) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_berth"))
        .arg("cost")
        .args(args)
        .current_dir(dir)
        .env_remove("BERTH_CONFIG")
        .output()
        .expect("run berth")
}

fn stdout(out: &Output) -> String {
    assert!(
        out.status.success(),
        "berth cost failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).expect("UTF-8 stdout")
}

fn stderr_of_failure(out: &Output) -> String {
    assert!(!out.status.success(), "berth cost should have failed");
    String::from_utf8(out.stderr.clone()).expect("UTF-8 stderr")
}

fn close(actual: &Value, expected: f64) {
    let actual = actual.as_f64().unwrap_or(f64::NAN);
    assert!(
        (actual - expected).abs() <= 1e-9 * expected.abs().max(1.0),
        "{actual} != {expected}"
    );
}

/// The line of `text` that starts with `prefix`.
fn line<'a>(text: &'a str, prefix: &str) -> &'a str {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .unwrap_or_else(|| panic!("no line starting {prefix:?} in:\n{text}"))
}

#[test]
fn usage_table_applies_each_model_to_recorded_usage() {
    let dir = scratch();
    // ./berth.toml is found without --config.
    let text = stdout(&cost(dir.path(), &["--usage", "usage.json"]));
    // per-connection: (36000 + 7200 + 28800) s = 20 connection-hours × $0.01 = $0.20
    let row = line(&text, "per-connection ");
    assert!(row.contains("20 connection-hours"), "{row}");
    assert!(row.ends_with("$0.20"), "{row}");
    // per-request: 500 + 1500 + 2000 = 4,000 calls / 1000 × $0.02 = $0.08
    let row = line(&text, "per-request ");
    assert!(row.contains("4,000 tool calls"), "{row}");
    assert!(row.ends_with("$0.08"), "{row}");
    // compute: sessions 1800 cpu-s = 0.5 vCPU-h, 14400 GiB-s = 4 GiB-h; gateway 24 h × 1 vCPU, × 2 GiB:
    // (0.5 + 24) × $0.04 + (4 + 48) × $0.004 = 0.98 + 0.208 = $1.188 → "$1.19"
    let row = line(&text, "included with compute ");
    assert!(row.contains("0.5 vCPU-h + 4 GiB-h (sessions)"), "{row}");
    assert!(row.ends_with("$1.19"), "{row}");
    assert!(text.contains("24 vCPU-h + 48 GiB-h (gateway)"), "{text}");
    assert!(
        text.contains("cheapest: per-request ($0.08 for 2 agents over 24 h)"),
        "{text}"
    );
    // Per agent (2 principals): per-connection 0.10 n, per-request 0.04 n, compute 1.152 + 0.018 n:
    // compute = per-connection at 1.152 / 0.082 = 14.049 agents (0.10 × 14.049 = $1.405 → "$1.40"),
    // compute = per-request at 1.152 / 0.022 = 52.364 agents (0.04 × 52.364 = $2.0945 → "$2.09").
    assert!(
        text.contains("14.05 agents: per-connection = included with compute at $1.40"),
        "{text}"
    );
    assert!(
        text.contains("52.36 agents: per-request = included with compute at $2.09"),
        "{text}"
    );
    assert!(text.contains("2 agents (distinct principals)"), "{text}");
    assert!(text.contains("prices: [cost] of berth.toml"), "{text}");
}

#[test]
fn usage_json_carries_the_figures_and_their_quantities() {
    let dir = scratch();
    let text = stdout(&cost(
        dir.path(),
        &[
            "--usage",
            "usage.json",
            "--config",
            "berth.toml",
            "--format",
            "json",
        ],
    ));
    let json: Value = serde_json::from_str(&text).expect("JSON output");
    close(&json["per_connection"], 0.20);
    close(&json["per_request"], 0.08);
    close(&json["compute"], 1.188);
    assert_eq!(json["cheapest"], "per-request");
    close(&json["quantities"]["connection_hours"], 20.0);
    close(&json["quantities"]["tool_calls"], 4000.0);
    close(&json["quantities"]["sessions"], 24.0);
    close(&json["period_hours"], 24.0);
    close(&json["agents"], 2.0);
    assert_eq!(json["basis"]["source"], "usage");
    assert_eq!(json["basis"]["agents_from"], "principals");
    close(&json["crossovers"][0]["agents"], 1.152 / 0.082);
    close(&json["crossovers"][1]["agents"], 1.152 / 0.022);
    assert_eq!(json["crossovers"][1]["cheaper_above"], "compute");
    close(&json["prices"]["per_1000_calls"], 0.02);

    // The usage on stdin, counted as 8 agents: the totals stay, the lines are per agent of 8.
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_berth"))
        .args([
            "cost",
            "--usage",
            "-",
            "--recorded-agents",
            "8",
            "--format",
            "json",
        ])
        .current_dir(dir.path())
        .env_remove("BERTH_CONFIG")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run berth");
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().expect("stdin");
        stdin.write_all(USAGE.as_bytes()).expect("write usage");
    }
    let json: Value = serde_json::from_str(&stdout(&child.wait_with_output().expect("berth")))
        .expect("JSON output");
    close(&json["per_connection"], 0.20);
    close(&json["agents"], 8.0);
    assert_eq!(json["basis"]["agents_from"], "given");
    // 0.20 / 8 = 0.025 per agent
    close(&json["lines"]["per_connection"]["per_agent"], 0.025);
}

#[test]
fn projection_figures_and_price_overrides() {
    let dir = scratch();
    let args = [
        "--agents",
        "50",
        "--tools-per-agent",
        "4",
        "--calls-per-agent-hour",
        "120",
        "--session-hours",
        "8",
        "--format",
        "json",
    ];
    let json: Value = serde_json::from_str(&stdout(&cost(dir.path(), &args))).expect("JSON");
    // sessions 50 × 4 = 200; connection-hours 200 × 8 = 1600 × $0.01 = $16
    close(&json["quantities"]["sessions"], 200.0);
    close(&json["per_connection"], 16.0);
    // calls 50 × 120 × 8 = 48,000 → 48 × $0.02 = $0.96
    close(&json["per_request"], 0.96);
    // compute 1600 session-hours × (0.1 × 0.04 + 0.25 × 0.004) = $8, plus 8 h × (0.04 + 2 × 0.004) = $0.384
    close(&json["compute"], 8.384);
    assert_eq!(json["basis"]["source"], "projection");
    // compute = per-connection at 0.384 / (0.32 - 0.16) = 2.4 agents
    close(&json["crossovers"][0]["agents"], 2.4);

    // --price-1000-calls 1: per-request = 48 × $1 = $48; compute ($8.384) is now the cheapest.
    let mut overridden = args.to_vec();
    overridden.extend(["--price-1000-calls", "1"]);
    let json: Value = serde_json::from_str(&stdout(&cost(dir.path(), &overridden))).expect("JSON");
    close(&json["per_request"], 48.0);
    assert_eq!(json["cheapest"], "compute");

    // Without any configuration: the built-in prices (per-connection $0.007/h → 1600 × 0.007 = $11.20).
    let empty = tempfile::tempdir().expect("temp dir");
    let text = stdout(&cost(empty.path(), &args[..8]));
    let row = line(&text, "per-connection ");
    assert!(row.ends_with("$11.20"), "{text}");
    assert!(text.contains("prices: built-in defaults"), "{text}");
}

#[test]
fn chart_rasterises_with_the_three_models_named() {
    let dir = scratch();
    let svg_path = dir.path().join("cost.svg");
    let svg_arg = svg_path.to_str().expect("UTF-8 path");
    // 3000 calls per agent-hour: per-request 0.48 n, per-connection 0.32 n,
    // compute 0.384 + 0.16 n: crossovers at 1.2 and 2.4 agents.
    let args = [
        "--agents",
        "10",
        "--tools-per-agent",
        "4",
        "--calls-per-agent-hour",
        "3000",
        "--session-hours",
        "8",
        "--svg",
        svg_arg,
    ];
    let out = cost(dir.path(), &args);
    let text = stdout(&out);
    assert!(text.contains("cheapest: included with compute"), "{text}");
    let svg = std::fs::read_to_string(&svg_path).expect("the chart was written");
    for name in ["per-connection", "per-request", "included with compute"] {
        assert!(svg.contains(&format!(">{name}<")), "the chart names {name}");
    }
    assert!(svg.contains(">1.2 agents, $0.576<"), "crossover annotated");
    assert!(svg.contains(">2.4 agents, $0.768<"), "crossover annotated");
    // Deterministic: a second run writes the same bytes.
    let again = dir.path().join("again.svg");
    stdout(&cost(
        dir.path(),
        &[&args[..8], &["--svg", again.to_str().expect("path")]].concat(),
    ));
    assert_eq!(std::fs::read(&again).expect("again.svg"), svg.as_bytes());

    let png = rasterise(&svg, "cost-projection.png");
    let (width, height) = (png.width(), png.height());
    assert_eq!((width, height), (900, 560));
    // Something is drawn in the plot area (not only the white background)...
    let plot_pixels = (100..630)
        .flat_map(|x| (80..470).map(move |y| (x, y)))
        .filter(|&(x, y)| {
            let p = png.pixel(x, y).expect("in bounds");
            (p.red(), p.green(), p.blue()) != (255, 255, 255)
        })
        .count();
    assert!(
        plot_pixels > 1000,
        "{plot_pixels} drawn pixels in the plot area"
    );
    // ...and each model's line is there in its colour.
    for (name, rgb) in [
        ("per-connection", (0x00, 0x72, 0xb2)),
        ("per-request", (0xd5, 0x5e, 0x00)),
        ("included with compute", (0x00, 0x9e, 0x73)),
    ] {
        let count = (0..width)
            .flat_map(|x| (0..height).map(move |y| (x, y)))
            .filter(|&(x, y)| {
                let p = png.pixel(x, y).expect("in bounds");
                near(p.red(), rgb.0) && near(p.green(), rgb.1) && near(p.blue(), rgb.2)
            })
            .count();
        assert!(count > 100, "{name}: {count} pixels of its colour");
    }
}

fn near(a: u8, b: u8) -> bool {
    a.abs_diff(b) <= 24
}

/// Parses and renders `svg`, saves it as a PNG under the target dir (printing
/// where) and returns the raster.
fn rasterise(svg: &str, name: &str) -> resvg::tiny_skia::Pixmap {
    let mut options = resvg::usvg::Options::default();
    options.fontdb_mut().load_system_fonts();
    let tree = resvg::usvg::Tree::from_str(svg, &options).expect("the chart is valid SVG");
    let size = tree.size().to_int_size();
    let mut pixmap = resvg::tiny_skia::Pixmap::new(size.width(), size.height()).expect("a raster");
    resvg::render(
        &tree,
        resvg::tiny_skia::Transform::default(),
        &mut pixmap.as_mut(),
    );
    let path = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(name);
    pixmap.save_png(&path).expect("write the PNG");
    println!("chart rasterised to {}", path.display());
    pixmap
}

#[test]
fn usage_chart_rasterises() {
    let dir = scratch();
    let svg_path = dir.path().join("usage.svg");
    stdout(&cost(
        dir.path(),
        &[
            "--usage",
            "usage.json",
            "--svg",
            svg_path.to_str().expect("path"),
        ],
    ));
    let svg = std::fs::read_to_string(&svg_path).expect("the chart was written");
    // 2 agents → 1..8, stretched to show the crossover at 52.36: up to 52.36 × 1.25 = 65.4 → 70.
    assert!(svg.contains(">52.36 agents, $2.09<"), "crossover annotated");
    assert!(svg.contains(">recorded: 2 agents<"));
    let png = rasterise(&svg, "cost-usage.png");
    assert_eq!((png.width(), png.height()), (900, 560));
}

#[test]
fn bad_input_is_refused_with_what_and_where() {
    let dir = scratch();
    let missing = stderr_of_failure(&cost(dir.path(), &["--usage", "nowhere.json"]));
    assert!(
        missing.contains("cannot read usage file nowhere.json"),
        "{missing}"
    );
    std::fs::write(
        dir.path().join("bad.json"),
        "{\"since\": \"2026-11-29T22:00:00Z\",\n  \"until\" 5}",
    )
    .expect("bad.json");
    std::fs::write(dir.path().join("empty.json"), "").expect("empty.json");
    let empty = stderr_of_failure(&cost(dir.path(), &["--usage", "empty.json"]));
    assert!(empty.contains("usage file empty.json is empty"), "{empty}");
    let bad = stderr_of_failure(&cost(dir.path(), &["--usage", "bad.json"]));
    assert!(bad.contains("bad.json:2:11: expected `:`"), "{bad}");
    let negative = stderr_of_failure(&cost(
        dir.path(),
        &[
            "--agents",
            "-5",
            "--tools-per-agent",
            "4",
            "--calls-per-agent-hour",
            "1",
            "--session-hours",
            "1",
        ],
    ));
    assert!(
        negative.contains("invalid value '-5' for '--agents <N>': must be a number of at least 0"),
        "{negative}"
    );
    let half = stderr_of_failure(&cost(dir.path(), &["--agents", "5"]));
    assert!(half.contains("--tools-per-agent"), "{half}");
    let neither = stderr_of_failure(&cost(dir.path(), &[]));
    assert!(neither.contains("--usage <FILE>|--agents <N>"), "{neither}");
    let price = stderr_of_failure(&cost(
        dir.path(),
        &["--usage", "usage.json", "--price-vcpu-hour", "-1"],
    ));
    assert!(price.contains("--price-vcpu-hour"), "{price}");

    std::fs::write(
        dir.path().join("negative.toml"),
        "[cost]\nper_gib_hour = -0.004\n",
    )
    .expect("negative.toml");
    let config = stderr_of_failure(&cost(
        dir.path(),
        &["--usage", "usage.json", "--config", "negative.toml"],
    ));
    assert!(
        config.contains("negative.toml: cost.per_gib_hour must be a finite number of at least 0"),
        "{config}"
    );
    std::fs::write(dir.path().join("typo.toml"), "[cost]\nper_call = 0.1\n").expect("typo.toml");
    let typo = stderr_of_failure(&cost(
        dir.path(),
        &["--usage", "usage.json", "--config", "typo.toml"],
    ));
    assert!(
        typo.contains("typo.toml:2:1: unknown field `per_call`"),
        "{typo}"
    );
    let backwards = USAGE.replace("2026-11-30T22", "2026-11-28T22");
    std::fs::write(dir.path().join("backwards.json"), backwards).expect("backwards.json");
    let period = stderr_of_failure(&cost(dir.path(), &["--usage", "backwards.json"]));
    assert!(
        period.contains(
            "usage file backwards.json: until (2026-11-28T22:00:00Z) must be after since"
        ),
        "{period}"
    );
}
