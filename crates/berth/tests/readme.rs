//! The README's promise to a newcomer: its first two lines are the run
//! command and the test command, and CI runs exactly that test command.

mod common;

use common::repo;

fn readme_commands() -> (String, String) {
    let readme = std::fs::read_to_string(repo().join("README.md")).expect("README.md");
    let block = readme
        .split("```")
        .nth(1)
        .expect("README starts with a code block");
    let mut lines = block.lines().skip(1).filter(|l| !l.trim().is_empty());
    let strip = |l: &str| l.split('#').next().unwrap_or_default().trim().to_string();
    let run = strip(lines.next().expect("run command"));
    let test = strip(lines.next().expect("test command"));
    (run, test)
}

#[test]
fn run_command_serves_the_embedded_default() {
    let (run, _) = readme_commands();
    // `rust_client::embedded_demo_serves_rmcp_client` runs the built binary
    // with these arguments and calls the demo's tools.
    assert_eq!(run, "cargo run --release -p berth -- serve");
}

#[test]
fn ci_runs_the_readme_test_command() {
    let (_, test) = readme_commands();
    assert_eq!(test, "./test.sh");
    let ci = std::fs::read_to_string(repo().join(".ci/run")).expect(".ci/run");
    assert!(
        ci.lines().any(|l| l.trim() == format!("exec {test}")),
        ".ci/run must exec {test}:\n{ci}"
    );
}
