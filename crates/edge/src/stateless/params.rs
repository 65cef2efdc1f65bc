//! `Mcp-Param-*` headers: a tool may mark arguments with `x-mcp-header` in
//! its input schema, and a 2026-07-28 client then mirrors each such argument
//! in a header (so intermediaries can route on it). A stdio server never
//! sees headers, so Berth holds them to the body, from the tool schemas of a
//! `tools/list` it keeps (refreshed when the server announces a change).

use std::collections::HashMap;

use axum::http::HeaderMap;
use berth_wire::modern::decode_header_value;
use serde::Deserialize;
use serde_json::Value;
use serde_json::value::RawValue;

use crate::error::EdgeError;

/// One annotated argument of a tool.
#[derive(Debug, Clone, PartialEq)]
struct Annotated {
    /// The argument (a top-level property of the input schema).
    property: String,
    /// `Mcp-Param-<name>`, as the client spells it (matched case-insensitively).
    header: String,
}

/// Annotated arguments per tool name; tools without any are absent.
#[derive(Debug, Default)]
pub(crate) struct ToolHeaders {
    tools: HashMap<String, Vec<Annotated>>,
}

impl ToolHeaders {
    /// Reads the `tools` of a `tools/list` answer (JSON-RPC response bytes),
    /// and the cursor of the next page, if any.
    pub(crate) fn from_list_answer(bytes: &[u8]) -> Option<(ToolHeaders, Option<String>)> {
        #[derive(Deserialize)]
        struct Answer {
            result: Option<ListResult>,
        }
        #[derive(Deserialize)]
        struct ListResult {
            #[serde(default)]
            tools: Vec<ToolEntry>,
            #[serde(rename = "nextCursor")]
            next_cursor: Option<String>,
        }
        #[derive(Deserialize)]
        struct ToolEntry {
            name: String,
            #[serde(rename = "inputSchema")]
            input_schema: Option<Schema>,
        }
        #[derive(Deserialize)]
        struct Schema {
            #[serde(default)]
            properties: HashMap<String, Property>,
        }
        #[derive(Deserialize)]
        struct Property {
            #[serde(rename = "x-mcp-header")]
            header: Option<String>,
        }
        let answer: Answer = serde_json::from_slice(bytes).ok()?;
        let result = answer.result?;
        let mut tools = HashMap::new();
        for tool in result.tools {
            let annotated: Vec<Annotated> = tool
                .input_schema
                .map(|s| s.properties)
                .unwrap_or_default()
                .into_iter()
                .filter_map(|(property, p)| {
                    Some(Annotated {
                        property,
                        header: format!("mcp-param-{}", p.header?.to_ascii_lowercase()),
                    })
                })
                .collect();
            if !annotated.is_empty() {
                tools.insert(tool.name, annotated);
            }
        }
        Some((ToolHeaders { tools }, result.next_cursor))
    }

    /// Adds the tools of another page.
    pub(crate) fn extend(&mut self, page: ToolHeaders) {
        self.tools.extend(page.tools);
    }

    /// Checks the `Mcp-Param-*` headers of a call to `tool` with `arguments`.
    pub(crate) fn check(
        &self,
        headers: &HeaderMap,
        tool: &str,
        arguments: Option<&RawValue>,
    ) -> Result<(), EdgeError> {
        let Some(annotated) = self.tools.get(tool) else {
            return Ok(());
        };
        let arguments: HashMap<String, Value> = arguments
            .and_then(|a| serde_json::from_str(a.get()).ok())
            .unwrap_or_default();
        for a in annotated {
            let shown = &a.header;
            let header = headers.get(shown.as_str());
            match (arguments.get(&a.property), header) {
                (None | Some(Value::Null), None) => {}
                (Some(value), None) => {
                    return Err(EdgeError::HeaderMismatch(format!(
                        "Header mismatch: argument `{}` of tool `{tool}` is marked x-mcp-header, so the request must carry {shown} = {value}",
                        a.property
                    )));
                }
                (None | Some(Value::Null), Some(_)) => {
                    return Err(EdgeError::HeaderMismatch(format!(
                        "Header mismatch: {shown} is set but the body has no argument `{}`",
                        a.property
                    )));
                }
                (Some(value), Some(header)) => {
                    let Some(got) = decode_header_value(header.as_bytes()) else {
                        return Err(EdgeError::HeaderMismatch(format!(
                            "Header mismatch: {shown} is not valid (plain visible ASCII, or =?base64?...?= with padded standard Base64)"
                        )));
                    };
                    if !same(value, got.trim()) {
                        return Err(EdgeError::HeaderMismatch(format!(
                            "Header mismatch: {shown} is {got:?} but argument `{}` is {value}",
                            a.property
                        )));
                    }
                }
            }
        }
        Ok(())
    }
}

/// Whether a header value stands for an argument: strings exactly, numbers
/// by value, booleans as `true`/`false`.
fn same(value: &Value, header: &str) -> bool {
    match value {
        Value::String(s) => s == header,
        Value::Bool(b) => header == if *b { "true" } else { "false" },
        Value::Number(n) => match (n.as_f64(), header.parse::<f64>()) {
            (Some(a), Ok(b)) => a == b,
            _ => false,
        },
        // Objects and arrays cannot be mirrored in a header.
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list() -> ToolHeaders {
        let answer = br#"{"jsonrpc":"2.0","id":1,"result":{"tools":[
            {"name":"plain","inputSchema":{"type":"object","properties":{"a":{"type":"string"}}}},
            {"name":"routed","inputSchema":{"type":"object","properties":{
                "region":{"type":"string","x-mcp-header":"Region"},
                "n":{"type":"number","x-mcp-header":"N"}}}}]}}"#;
        let (tools, next) = ToolHeaders::from_list_answer(answer).unwrap();
        assert_eq!(next, None);
        tools
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().unwrap());
        }
        h
    }

    fn args(text: &str) -> Box<RawValue> {
        RawValue::from_string(text.into()).unwrap()
    }

    #[test]
    fn annotated_arguments_must_be_mirrored() {
        let tools = list();
        assert!(
            tools
                .check(&HeaderMap::new(), "plain", Some(&args(r#"{"a":"x"}"#)))
                .is_ok()
        );
        let both = args(r#"{"region":"Hello","n":2}"#);
        let ok = headers(&[
            ("mcp-param-region", "=?base64?SGVsbG8=?="),
            ("mcp-param-n", "2.0"),
        ]);
        assert!(tools.check(&ok, "routed", Some(&both)).is_ok());
        let missing = headers(&[("mcp-param-n", "2")]);
        assert!(tools.check(&missing, "routed", Some(&both)).is_err());
        let unpadded = headers(&[
            ("mcp-param-region", "=?base64?SGVsbG8?="),
            ("mcp-param-n", "2"),
        ]);
        assert!(tools.check(&unpadded, "routed", Some(&both)).is_err());
        let literal = args(r#"{"region":"=?base64?SGVsbG8=","n":2}"#);
        let as_is = headers(&[
            ("mcp-param-region", "=?base64?SGVsbG8="),
            ("mcp-param-n", "2"),
        ]);
        assert!(tools.check(&as_is, "routed", Some(&literal)).is_ok());
        let stray = headers(&[("mcp-param-region", "x")]);
        assert!(tools.check(&stray, "routed", Some(&args("{}"))).is_err());
    }
}
