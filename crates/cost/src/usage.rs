//! Recorded usage: the JSON `berth usage --format json` prints.

use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::CostError;

/// What `berth usage --format json` prints: usage over `[since, until)`,
/// grouped `by` principal, server and/or tool (a row's other keys are null).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UsageReport {
    /// Start of the period, RFC 3339 (`2026-11-29T22:00:00Z`).
    pub since: String,
    /// End of the period, RFC 3339.
    pub until: String,
    /// What the rows are grouped by (`server`, `principal`, `tool`, or a
    /// comma-separated combination).
    pub by: String,
    pub rows: Vec<UsageRow>,
}

/// One group's usage over the report's period.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UsageRow {
    /// The caller (token subject, API key name); null when not grouped by it.
    pub principal: Option<String>,
    /// The server; null when not grouped by it.
    pub server: Option<String>,
    /// The tool; null when not grouped by it.
    pub tool: Option<String>,
    /// Sessions started.
    pub sessions: u64,
    /// Seconds sessions were held open, summed over sessions.
    pub session_seconds: f64,
    /// Most sessions open at once.
    pub peak_connections: u64,
    /// HTTP requests (every JSON-RPC message a client sent).
    pub requests: u64,
    /// `tools/call` requests.
    pub tool_calls: u64,
    /// Requests whose outcome was not ok (absent from older reports: 0).
    #[serde(default)]
    pub errors: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// CPU seconds the servers' processes used.
    pub cpu_seconds: f64,
    /// Memory the servers' processes held, integrated over time (GiB × seconds).
    pub memory_gib_seconds: f64,
}

impl UsageReport {
    /// Parses a report; a syntax or shape error says where (line and column).
    pub fn from_json(text: &str) -> Result<UsageReport, CostError> {
        let report: UsageReport = serde_json::from_str(text).map_err(|e| {
            let position = format!(" at line {} column {}", e.line(), e.column());
            let message = e.to_string();
            CostError::Json {
                line: e.line(),
                column: e.column(),
                message: message
                    .strip_suffix(&position)
                    .unwrap_or(&message)
                    .to_string(),
            }
        })?;
        report.validate()?;
        Ok(report)
    }

    /// Refuses negative or non-finite measurements and an empty period.
    pub fn validate(&self) -> Result<(), CostError> {
        for (i, row) in self.rows.iter().enumerate() {
            for (key, value) in [
                ("session_seconds", row.session_seconds),
                ("cpu_seconds", row.cpu_seconds),
                ("memory_gib_seconds", row.memory_gib_seconds),
            ] {
                crate::prices::non_negative(&format!("rows[{i}].{key}"), value)?;
            }
        }
        self.period_hours().map(|_| ())
    }

    /// Hours from `since` to `until`.
    pub fn period_hours(&self) -> Result<f64, CostError> {
        let since = timestamp("since", &self.since)?;
        let until = timestamp("until", &self.until)?;
        match until.duration_since(since) {
            Ok(d) if !d.is_zero() => Ok(d.as_secs_f64() / 3600.0),
            _ => Err(CostError::Usage(format!(
                "until ({}) must be after since ({})",
                self.until, self.since
            ))),
        }
    }

    /// How many distinct principals the rows name (0 when not grouped by principal).
    pub fn principals(&self) -> usize {
        let mut names: Vec<&str> = self
            .rows
            .iter()
            .filter_map(|r| r.principal.as_deref())
            .collect();
        names.sort_unstable();
        names.dedup();
        names.len()
    }
}

fn timestamp(key: &str, value: &str) -> Result<SystemTime, CostError> {
    humantime::parse_rfc3339_weak(value).map_err(|e| {
        CostError::Usage(format!(
            "{key} {value:?} is not an RFC 3339 UTC time such as \"2026-11-29T22:00:00Z\": {e}"
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = r#"{"since": "2026-11-29T22:00:00Z", "until": "2026-11-30T22:00:00Z", "by": "server",
 "rows": [{"principal": null, "server": "echo", "tool": null,
           "sessions": 12, "session_seconds": 3600.5, "peak_connections": 3,
           "requests": 540, "tool_calls": 500, "bytes_in": 123456, "bytes_out": 654321,
           "cpu_seconds": 12.5, "memory_gib_seconds": 4500.0}]}"#;

    #[test]
    fn the_contract_example_parses() {
        let report = UsageReport::from_json(EXAMPLE).unwrap();
        assert_eq!(report.by, "server");
        assert_eq!(report.rows.len(), 1);
        let row = &report.rows[0];
        assert_eq!(row.server.as_deref(), Some("echo"));
        assert_eq!(row.principal, None);
        assert_eq!((row.sessions, row.tool_calls), (12, 500));
        assert_eq!(row.memory_gib_seconds, 4500.0);
        assert_eq!(report.period_hours().unwrap(), 24.0);
        assert_eq!(report.principals(), 0);
        assert_eq!(row.errors, 0, "errors may be absent");
        let with_errors =
            EXAMPLE.replace("\"tool_calls\": 500", "\"tool_calls\": 500, \"errors\": 7");
        assert_eq!(
            UsageReport::from_json(&with_errors).unwrap().rows[0].errors,
            7
        );
        let extra = EXAMPLE.replace(
            "\"sessions\": 12",
            "\"sessions\": 12, \"later_field\": true",
        );
        assert!(
            UsageReport::from_json(&extra).is_ok(),
            "fields added later are ignored"
        );
    }

    #[test]
    fn bad_json_names_line_and_column() {
        let err = UsageReport::from_json("{\"since\": \"2026-11-29T22:00:00Z\",\n  \"until\" 5}")
            .unwrap_err();
        match &err {
            CostError::Json { line, column, .. } => assert_eq!((*line, *column), (2, 11)),
            other => panic!("{other:?}"),
        }
        assert!(err.to_string().starts_with("2:11: expected `:`"), "{err}");
        let missing = UsageReport::from_json(r#"{"since": "x", "until": "y", "by": "server"}"#)
            .unwrap_err()
            .to_string();
        assert!(missing.contains("missing field `rows`"), "{missing}");
        let negative = EXAMPLE.replace("\"sessions\": 12", "\"sessions\": -12");
        let err = UsageReport::from_json(&negative).unwrap_err().to_string();
        assert!(err.contains("invalid value: integer `-12`"), "{err}");
    }

    #[test]
    fn bad_periods_and_measurements_are_refused() {
        let backwards = EXAMPLE.replace("2026-11-30T22", "2026-11-28T22");
        let err = UsageReport::from_json(&backwards).unwrap_err().to_string();
        assert!(err.contains("must be after since"), "{err}");
        let garbled = EXAMPLE.replace("2026-11-29T22:00:00Z", "yesterday");
        let err = UsageReport::from_json(&garbled).unwrap_err().to_string();
        assert!(
            err.starts_with("since \"yesterday\" is not an RFC 3339"),
            "{err}"
        );
        let negative = EXAMPLE.replace("12.5", "-12.5");
        let err = UsageReport::from_json(&negative).unwrap_err().to_string();
        assert_eq!(
            err,
            "rows[0].cpu_seconds must be a finite number of at least 0 (got -12.5)"
        );
    }
}
