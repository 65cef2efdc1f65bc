//! Postgres values ⇄ JSON.
//!
//! Results arrive in the binary format (tokio-postgres always asks for it);
//! [`RawCell`] takes a cell's bytes whatever its type and [`to_json`] turns
//! them into a typed JSON value by type OID:
//!
//! | Postgres | JSON |
//! |---|---|
//! | `bool` | boolean |
//! | `int2`, `int4`, `oid` | number |
//! | `int8` | number when within ±(2^53−1) (exact in every JSON reader), else a string |
//! | `float4`, `float8` | number; `"NaN"`, `"Infinity"`, `"-Infinity"` as strings |
//! | `numeric` | string (exact), `"NaN"`, `"Infinity"`, `"-Infinity"` |
//! | `text`, `varchar`, `char(n)`, `name`, `"char"`, `uuid`, `inet`, `cidr`, `macaddr`, enums | string |
//! | `json`, `jsonb` | the JSON value itself |
//! | `date` | `"YYYY-MM-DD"` |
//! | `time` / `timetz` | `"HH:MM:SS[.ffffff]"` / with `+HH:MM` |
//! | `timestamp` | `"YYYY-MM-DDTHH:MM:SS[.ffffff]"` (no zone) |
//! | `timestamptz` | RFC 3339 in UTC, `"...+00:00"` |
//! | `interval` | ISO 8601 duration, as Postgres's `iso_8601` style writes it (`"P1Y2M3DT4H5M6.5S"`) |
//! | `bytea` | base64 (standard alphabet, padded) |
//! | arrays of these | JSON arrays (nested for several dimensions; lower bounds dropped) |
//! | domains | as their base type |
//! | `NULL` | `null` |
//!
//! Years outside 1..=9999 use ISO 8601's astronomical numbering (`"0000"` is
//! 1 BC, `"-0001"` is 2 BC); `infinity` / `-infinity` dates and timestamps are
//! those strings. Any other type is not decoded here: [`decodable`] says so, and
//! the caller asks Postgres for its text form instead (`::text`).
//!
//! Parameters go the other way as text ([`Param`]), so Postgres parses them
//! for whatever type the statement expects: `"2024-01-01"` for a date, `42`
//! for a numeric, `[1, 2]` for an `int4[]`, `{"a": 1}` for a `jsonb`.

use std::error::Error;
use std::fmt::Write as _;

use base64::Engine as _;
use bytes::BytesMut;
use fallible_iterator::FallibleIterator as _;
use postgres_protocol::types as wire;
use serde_json::{Number, Value};
use tokio_postgres::types::{Format, FromSql, IsNull, Kind, ToSql, Type, to_sql_checked};

type BoxError = Box<dyn Error + Sync + Send>;

/// OIDs of the types decoded here (pg_type.dat; checked against tokio-postgres in the tests).
mod oid {
    pub const BOOL: u32 = 16;
    pub const BYTEA: u32 = 17;
    pub const CHAR: u32 = 18;
    pub const NAME: u32 = 19;
    pub const INT8: u32 = 20;
    pub const INT2: u32 = 21;
    pub const INT4: u32 = 23;
    pub const TEXT: u32 = 25;
    pub const OID: u32 = 26;
    pub const JSON: u32 = 114;
    pub const CIDR: u32 = 650;
    pub const FLOAT4: u32 = 700;
    pub const FLOAT8: u32 = 701;
    pub const UNKNOWN: u32 = 705;
    pub const MACADDR8: u32 = 774;
    pub const MACADDR: u32 = 829;
    pub const INET: u32 = 869;
    pub const BPCHAR: u32 = 1042;
    pub const VARCHAR: u32 = 1043;
    pub const DATE: u32 = 1082;
    pub const TIME: u32 = 1083;
    pub const TIMESTAMP: u32 = 1114;
    pub const TIMESTAMPTZ: u32 = 1184;
    pub const INTERVAL: u32 = 1186;
    pub const TIMETZ: u32 = 1266;
    pub const NUMERIC: u32 = 1700;
    pub const UUID: u32 = 2950;
    pub const JSONB: u32 = 3802;

    pub const ALL: &[u32] = &[
        BOOL,
        BYTEA,
        CHAR,
        NAME,
        INT8,
        INT2,
        INT4,
        TEXT,
        OID,
        JSON,
        CIDR,
        FLOAT4,
        FLOAT8,
        UNKNOWN,
        MACADDR8,
        MACADDR,
        INET,
        BPCHAR,
        VARCHAR,
        DATE,
        TIME,
        TIMESTAMP,
        TIMESTAMPTZ,
        INTERVAL,
        TIMETZ,
        NUMERIC,
        UUID,
        JSONB,
    ];
}

/// The largest integer every JSON reader holds exactly (2^53 − 1).
const MAX_SAFE_INTEGER: i64 = (1 << 53) - 1;
const MICROS_PER_DAY: i64 = 86_400_000_000;
/// 2000-01-01 (Postgres's epoch) in days since 1970-01-01.
const PG_EPOCH_DAYS: i64 = 10_957;

/// A cell as the server sent it, for any column type.
pub struct RawCell<'a>(pub Option<&'a [u8]>);

impl<'a> FromSql<'a> for RawCell<'a> {
    fn from_sql(_: &Type, raw: &'a [u8]) -> Result<Self, BoxError> {
        Ok(RawCell(Some(raw)))
    }

    fn from_sql_null(_: &Type) -> Result<Self, BoxError> {
        Ok(RawCell(None))
    }

    fn accepts(_: &Type) -> bool {
        true
    }
}

/// Whether [`to_json`] decodes values of `ty` (else ask for `::text`).
pub fn decodable(ty: &Type) -> bool {
    if oid::ALL.contains(&ty.oid()) {
        return true;
    }
    match ty.kind() {
        Kind::Array(element) | Kind::Domain(element) => decodable(element),
        Kind::Enum(_) => true,
        _ => false,
    }
}

/// The type as a result's `columns` list names it, with how it is rendered
/// when that is not obvious.
pub fn type_label(ty: &Type) -> String {
    let name = ty.name();
    let base = match ty.kind() {
        Kind::Domain(base) => base,
        Kind::Array(element) => match element.kind() {
            Kind::Domain(base) => base,
            _ => element,
        },
        _ => ty,
    };
    match base.oid() {
        oid::BYTEA => format!("{name} (base64)"),
        oid::INT8 => format!("{name} (number, or string beyond ±2^53)"),
        oid::NUMERIC => format!("{name} (string)"),
        oid::INTERVAL => format!("{name} (ISO 8601 duration)"),
        _ => name.to_string(),
    }
}

/// The JSON form of one cell of type `ty`; `None` is SQL NULL.
pub fn to_json(ty: &Type, raw: Option<&[u8]>) -> Result<Value, String> {
    match raw {
        None => Ok(Value::Null),
        Some(raw) => {
            decode(ty, raw).map_err(|e| format!("cannot decode a {} value: {e}", ty.name()))
        }
    }
}

/// Cuts a string value longer than `max` bytes (at a character boundary),
/// marking the cut; returns whether it cut. Other values are left whole.
pub fn clip(value: &mut Value, max: usize) -> bool {
    let Value::String(s) = value else {
        return false;
    };
    if s.len() <= max {
        return false;
    }
    let total = s.len();
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.truncate(end);
    let _ = write!(s, "… [cut: {total} bytes in all]");
    true
}

fn decode(ty: &Type, raw: &[u8]) -> Result<Value, BoxError> {
    Ok(match ty.oid() {
        oid::BOOL => Value::Bool(wire::bool_from_sql(raw)?),
        oid::INT2 => Value::from(wire::int2_from_sql(raw)?),
        oid::INT4 => Value::from(wire::int4_from_sql(raw)?),
        oid::OID => Value::from(wire::oid_from_sql(raw)?),
        oid::INT8 => int8(wire::int8_from_sql(raw)?),
        // Through its shortest decimal form, so 0.1::float4 is 0.1 and not 0.10000000149011612.
        oid::FLOAT4 => float(float4_as_f64(wire::float4_from_sql(raw)?)),
        oid::FLOAT8 => float(wire::float8_from_sql(raw)?),
        oid::NUMERIC => Value::String(numeric(raw)?),
        oid::TEXT | oid::VARCHAR | oid::BPCHAR | oid::NAME | oid::UNKNOWN => {
            Value::String(wire::text_from_sql(raw)?.to_owned())
        }
        oid::CHAR => Value::String(char::from(wire::char_from_sql(raw)? as u8).to_string()),
        oid::UUID => Value::String(uuid(wire::uuid_from_sql(raw)?)),
        oid::INET => Value::String(inet(raw, false)?),
        oid::CIDR => Value::String(inet(raw, true)?),
        oid::MACADDR => Value::String(hex_colon(&wire::macaddr_from_sql(raw)?)),
        oid::MACADDR8 => {
            if raw.len() != 8 {
                return Err("a macaddr8 value is 8 bytes".into());
            }
            Value::String(hex_colon(raw))
        }
        oid::JSON => serde_json::from_slice(raw)?,
        oid::JSONB => match raw.split_first() {
            Some((1, text)) => serde_json::from_slice(text)?,
            _ => return Err("unsupported jsonb binary version".into()),
        },
        oid::DATE => Value::String(date(wire::date_from_sql(raw)?)),
        oid::TIME => Value::String(time(wire::time_from_sql(raw)?)),
        oid::TIMETZ => Value::String(timetz(raw)?),
        oid::TIMESTAMP => Value::String(timestamp(wire::timestamp_from_sql(raw)?, false)),
        oid::TIMESTAMPTZ => Value::String(timestamp(wire::timestamp_from_sql(raw)?, true)),
        oid::INTERVAL => Value::String(interval(raw)?),
        oid::BYTEA => Value::String(base64::engine::general_purpose::STANDARD.encode(raw)),
        _ => match ty.kind() {
            Kind::Array(element) => array(element, raw)?,
            Kind::Domain(base) => decode(base, raw)?,
            // An enum's binary form is its label.
            Kind::Enum(_) => Value::String(wire::text_from_sql(raw)?.to_owned()),
            // Not expected (see `decodable`): the bytes, rather than nothing.
            _ => Value::String(base64::engine::general_purpose::STANDARD.encode(raw)),
        },
    })
}

fn float4_as_f64(v: f32) -> f64 {
    if v.is_finite() {
        v.to_string().parse().unwrap_or(f64::from(v))
    } else {
        f64::from(v)
    }
}

fn int8(v: i64) -> Value {
    if (-MAX_SAFE_INTEGER..=MAX_SAFE_INTEGER).contains(&v) {
        Value::from(v)
    } else {
        Value::String(v.to_string())
    }
}

fn float(v: f64) -> Value {
    match Number::from_f64(v) {
        Some(n) => Value::Number(n),
        None if v.is_nan() => Value::String("NaN".into()),
        None if v > 0.0 => Value::String("Infinity".into()),
        None => Value::String("-Infinity".into()),
    }
}

/// A `numeric` in its exact decimal form (what Postgres's text output writes).
fn numeric(mut raw: &[u8]) -> Result<String, BoxError> {
    let mut next = || -> Result<i16, BoxError> {
        let (head, rest) = raw
            .split_first_chunk::<2>()
            .ok_or("a numeric value is shorter than its header says")?;
        raw = rest;
        Ok(i16::from_be_bytes(*head))
    };
    let ndigits = next()?;
    let weight = next()?;
    let sign = next()? as u16;
    let dscale = next()? as u16;
    let digits = (0..ndigits.max(0))
        .map(|_| next())
        .collect::<Result<Vec<_>, _>>()?;
    match sign {
        0x0000 | 0x4000 => {}
        0xC000 => return Ok("NaN".into()),
        0xD000 => return Ok("Infinity".into()),
        0xF000 => return Ok("-Infinity".into()),
        other => return Err(format!("unknown numeric sign {other:#x}").into()),
    }
    // Digit i (base 10000) has weight `weight - i`.
    let digit = |i: i32| -> i16 {
        usize::try_from(i)
            .ok()
            .and_then(|i| digits.get(i).copied())
            .unwrap_or(0)
    };
    let mut out = String::new();
    if sign == 0x4000 {
        out.push('-');
    }
    if weight < 0 {
        out.push('0');
    } else {
        for i in 0..=i32::from(weight) {
            if i == 0 {
                let _ = write!(out, "{}", digit(i));
            } else {
                let _ = write!(out, "{:04}", digit(i));
            }
        }
    }
    if dscale > 0 {
        out.push('.');
        let mut fraction = String::new();
        let mut i = i32::from(weight) + 1;
        while fraction.len() < usize::from(dscale) {
            let _ = write!(fraction, "{:04}", digit(i));
            i += 1;
        }
        fraction.truncate(usize::from(dscale));
        out.push_str(&fraction);
    }
    Ok(out)
}

fn uuid(b: [u8; 16]) -> String {
    let hex: String = b.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

/// `inet` as Postgres writes it (the mask only when it is not the whole
/// address), `cidr` always with its mask.
fn inet(raw: &[u8], cidr: bool) -> Result<String, BoxError> {
    let value = wire::inet_from_sql(raw)?;
    let full = if value.addr().is_ipv4() { 32 } else { 128 };
    Ok(if cidr || value.netmask() != full {
        format!("{}/{}", value.addr(), value.netmask())
    } else {
        value.addr().to_string()
    })
}

fn hex_colon(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Days since 1970-01-01 → (year, month, day), proleptic Gregorian
/// (H. Hinnant's `civil_from_days`).
fn civil(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

fn ymd(days_since_2000: i64) -> String {
    let (y, m, d) = civil(days_since_2000 + PG_EPOCH_DAYS);
    let year = match y {
        0..=9999 => format!("{y:04}"),
        y if y < 0 => format!("-{:04}", -y),
        y => format!("+{y}"),
    };
    format!("{year}-{m:02}-{d:02}")
}

fn date(days: i32) -> String {
    match days {
        i32::MAX => "infinity".into(),
        i32::MIN => "-infinity".into(),
        days => ymd(i64::from(days)),
    }
}

/// `HH:MM:SS`, with the fraction (trailing zeros dropped) when there is one.
fn time(micros: i64) -> String {
    let seconds = micros / 1_000_000;
    let fraction = micros % 1_000_000;
    let mut out = format!(
        "{:02}:{:02}:{:02}",
        seconds / 3600,
        seconds / 60 % 60,
        seconds % 60
    );
    push_fraction(&mut out, fraction);
    out
}

fn push_fraction(out: &mut String, micros: i64) {
    if micros != 0 {
        let digits = format!("{:06}", micros.abs());
        out.push('.');
        out.push_str(digits.trim_end_matches('0'));
    }
}

fn timetz(raw: &[u8]) -> Result<String, BoxError> {
    let (micros, zone) = raw
        .split_first_chunk::<8>()
        .and_then(|(t, z)| {
            Some((
                i64::from_be_bytes(*t),
                i32::from_be_bytes(z.try_into().ok()?),
            ))
        })
        .ok_or("a timetz value is 12 bytes")?;
    // Postgres stores the zone in seconds west of UTC.
    let offset = -i64::from(zone);
    let sign = if offset < 0 { '-' } else { '+' };
    let abs = offset.abs();
    let mut out = format!(
        "{}{sign}{:02}:{:02}",
        time(micros),
        abs / 3600,
        abs / 60 % 60
    );
    if abs % 60 != 0 {
        let _ = write!(out, ":{:02}", abs % 60);
    }
    Ok(out)
}

fn timestamp(micros: i64, utc: bool) -> String {
    match micros {
        i64::MAX => return "infinity".into(),
        i64::MIN => return "-infinity".into(),
        _ => {}
    }
    let days = micros.div_euclid(MICROS_PER_DAY);
    let rest = micros.rem_euclid(MICROS_PER_DAY);
    let mut out = format!("{}T{}", ymd(days), time(rest));
    if utc {
        out.push_str("+00:00");
    }
    out
}

/// An interval as ISO 8601 (Postgres's `IntervalStyle = iso_8601`: each
/// part carries its own sign).
fn interval(raw: &[u8]) -> Result<String, BoxError> {
    if raw.len() != 16 {
        return Err("an interval value is 16 bytes".into());
    }
    let micros = i64::from_be_bytes(raw[0..8].try_into()?);
    let days = i32::from_be_bytes(raw[8..12].try_into()?);
    let months = i32::from_be_bytes(raw[12..16].try_into()?);
    Ok(iso_interval(months, days, micros))
}

fn iso_interval(months: i32, days: i32, micros: i64) -> String {
    if months == 0 && days == 0 && micros == 0 {
        return "PT0S".into();
    }
    let mut out = String::from("P");
    let (years, months) = (months / 12, months % 12);
    for (n, unit) in [(years, 'Y'), (months, 'M'), (days, 'D')] {
        if n != 0 {
            let _ = write!(out, "{n}{unit}");
        }
    }
    if micros != 0 {
        out.push('T');
        let hours = micros / 3_600_000_000;
        let minutes = micros / 60_000_000 % 60;
        let seconds = micros % 60_000_000;
        for (n, unit) in [(hours, 'H'), (minutes, 'M')] {
            if n != 0 {
                let _ = write!(out, "{n}{unit}");
            }
        }
        if seconds != 0 {
            if seconds < 0 {
                out.push('-');
            }
            let _ = write!(out, "{}", seconds.abs() / 1_000_000);
            push_fraction(&mut out, seconds % 1_000_000);
            out.push('S');
        }
    }
    out
}

fn array(element: &Type, raw: &[u8]) -> Result<Value, BoxError> {
    let array = wire::array_from_sql(raw)?;
    let dims: Vec<usize> = array
        .dimensions()
        .map(|d| Ok(usize::try_from(d.len).unwrap_or(0)))
        .collect()?;
    let mut values = Vec::new();
    let mut cells = array.values();
    while let Some(cell) = cells.next()? {
        values.push(match cell {
            None => Value::Null,
            Some(raw) => decode(element, raw)?,
        });
    }
    if dims.is_empty() {
        return Ok(Value::Array(Vec::new()));
    }
    let mut values = values.into_iter();
    Ok(nest(&dims, &mut values))
}

/// Rebuilds row-major `values` into nested arrays of the sizes in `dims`.
fn nest(dims: &[usize], values: &mut impl Iterator<Item = Value>) -> Value {
    match dims.split_first() {
        Some((&len, [])) => Value::Array(values.take(len).collect()),
        Some((&len, inner)) => Value::Array((0..len).map(|_| nest(inner, values)).collect()),
        None => Value::Null,
    }
}

/// A statement parameter, sent as text for Postgres to parse as the type
/// the statement expects.
#[derive(Debug)]
pub struct Param(pub Value);

impl ToSql for Param {
    fn to_sql(&self, ty: &Type, out: &mut BytesMut) -> Result<IsNull, BoxError> {
        let text = match &self.0 {
            Value::Null => return Ok(IsNull::Yes),
            Value::String(s) => {
                out.extend_from_slice(s.as_bytes());
                return Ok(IsNull::No);
            }
            Value::Bool(b) => b.to_string(),
            Value::Number(n) => n.to_string(),
            Value::Array(items) if matches!(ty.kind(), Kind::Array(_)) => array_literal(items),
            // Objects (and arrays) for json/jsonb parameters.
            other => other.to_string(),
        };
        out.extend_from_slice(text.as_bytes());
        Ok(IsNull::No)
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    fn encode_format(&self, _: &Type) -> Format {
        Format::Text
    }

    to_sql_checked!();
}

/// A JSON array as a Postgres array literal: `[1, null, "a\"b"]` → `{1,NULL,"a\"b"}`.
fn array_literal(items: &[Value]) -> String {
    let mut out = String::from("{");
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        match item {
            Value::Null => out.push_str("NULL"),
            Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            Value::Number(n) => out.push_str(&n.to_string()),
            Value::Array(inner) => out.push_str(&array_literal(inner)),
            Value::String(s) => quote_element(&mut out, s),
            Value::Object(_) => quote_element(&mut out, &item.to_string()),
        }
    }
    out.push('}');
    out
}

fn quote_element(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn num(ndigits: i16, weight: i16, sign: u16, dscale: u16, digits: &[i16]) -> Vec<u8> {
        let mut raw = Vec::new();
        for v in [ndigits, weight, sign as i16, dscale as i16] {
            raw.extend_from_slice(&v.to_be_bytes());
        }
        for d in digits {
            raw.extend_from_slice(&d.to_be_bytes());
        }
        raw
    }

    #[test]
    fn oids_match_the_driver() {
        for (ours, theirs) in [
            (oid::BOOL, Type::BOOL),
            (oid::BYTEA, Type::BYTEA),
            (oid::CHAR, Type::CHAR),
            (oid::NAME, Type::NAME),
            (oid::INT8, Type::INT8),
            (oid::INT2, Type::INT2),
            (oid::INT4, Type::INT4),
            (oid::TEXT, Type::TEXT),
            (oid::OID, Type::OID),
            (oid::JSON, Type::JSON),
            (oid::CIDR, Type::CIDR),
            (oid::FLOAT4, Type::FLOAT4),
            (oid::FLOAT8, Type::FLOAT8),
            (oid::UNKNOWN, Type::UNKNOWN),
            (oid::MACADDR8, Type::MACADDR8),
            (oid::MACADDR, Type::MACADDR),
            (oid::INET, Type::INET),
            (oid::BPCHAR, Type::BPCHAR),
            (oid::VARCHAR, Type::VARCHAR),
            (oid::DATE, Type::DATE),
            (oid::TIME, Type::TIME),
            (oid::TIMESTAMP, Type::TIMESTAMP),
            (oid::TIMESTAMPTZ, Type::TIMESTAMPTZ),
            (oid::INTERVAL, Type::INTERVAL),
            (oid::TIMETZ, Type::TIMETZ),
            (oid::NUMERIC, Type::NUMERIC),
            (oid::UUID, Type::UUID),
            (oid::JSONB, Type::JSONB),
        ] {
            assert_eq!(ours, theirs.oid(), "{theirs}");
        }
    }

    #[test]
    fn scalars() {
        let j = |ty: Type, raw: &[u8]| to_json(&ty, Some(raw)).unwrap();
        assert_eq!(j(Type::BOOL, &[1]), json!(true));
        assert_eq!(j(Type::INT2, &(-7i16).to_be_bytes()), json!(-7));
        assert_eq!(j(Type::INT4, &123_456i32.to_be_bytes()), json!(123_456));
        assert_eq!(
            j(Type::INT8, &MAX_SAFE_INTEGER.to_be_bytes()),
            json!(9_007_199_254_740_991i64)
        );
        assert_eq!(
            j(Type::INT8, &(MAX_SAFE_INTEGER + 1).to_be_bytes()),
            json!("9007199254740992")
        );
        assert_eq!(
            j(Type::INT8, &i64::MIN.to_be_bytes()),
            json!("-9223372036854775808")
        );
        assert_eq!(j(Type::FLOAT4, &0.1f32.to_be_bytes()), json!(0.1));
        assert_eq!(j(Type::FLOAT8, &2.5f64.to_be_bytes()), json!(2.5));
        assert_eq!(j(Type::FLOAT8, &f64::NAN.to_be_bytes()), json!("NaN"));
        assert_eq!(
            j(Type::FLOAT8, &f64::INFINITY.to_be_bytes()),
            json!("Infinity")
        );
        assert_eq!(
            j(Type::FLOAT4, &f32::NEG_INFINITY.to_be_bytes()),
            json!("-Infinity")
        );
        assert_eq!(j(Type::TEXT, "héllo".as_bytes()), json!("héllo"));
        assert_eq!(j(Type::CHAR, b"r"), json!("r"));
        assert_eq!(to_json(&Type::TEXT, None).unwrap(), Value::Null);
        assert_eq!(
            j(
                Type::UUID,
                &[
                    0x12, 0x34, 0x56, 0x78, 0x9a, 0xbc, 0xde, 0xf0, 1, 2, 3, 4, 5, 6, 7, 8
                ]
            ),
            json!("12345678-9abc-def0-0102-030405060708")
        );
        assert_eq!(
            j(Type::MACADDR, &[8, 0, 0x2b, 1, 2, 3]),
            json!("08:00:2b:01:02:03")
        );
        assert_eq!(j(Type::BYTEA, b"\x00\xffhi"), json!("AP9oaQ=="));
        assert_eq!(j(Type::JSON, br#"{"a":[1,2]}"#), json!({"a": [1, 2]}));
        assert_eq!(j(Type::JSONB, b"\x01{\"b\": null}"), json!({"b": null}));
    }

    #[test]
    fn network_addresses() {
        let mut raw = BytesMut::new();
        wire::inet_to_sql("10.1.2.3".parse().unwrap(), 32, &mut raw);
        assert_eq!(to_json(&Type::INET, Some(&raw)).unwrap(), json!("10.1.2.3"));
        let mut raw = BytesMut::new();
        wire::inet_to_sql("10.1.0.0".parse().unwrap(), 16, &mut raw);
        assert_eq!(
            to_json(&Type::INET, Some(&raw)).unwrap(),
            json!("10.1.0.0/16")
        );
        assert_eq!(
            to_json(&Type::CIDR, Some(&raw)).unwrap(),
            json!("10.1.0.0/16")
        );
        let mut raw = BytesMut::new();
        wire::inet_to_sql("::1".parse().unwrap(), 128, &mut raw);
        assert_eq!(to_json(&Type::CIDR, Some(&raw)).unwrap(), json!("::1/128"));
    }

    #[test]
    fn numerics_are_exact_strings() {
        let n = |raw: Vec<u8>| numeric(&raw).unwrap();
        assert_eq!(n(num(0, 0, 0, 0, &[])), "0");
        assert_eq!(n(num(0, 0, 0, 2, &[])), "0.00");
        assert_eq!(n(num(1, 0, 0, 0, &[42])), "42");
        // 12345678.9012 = 1234 5678 . 9012
        assert_eq!(n(num(3, 1, 0, 4, &[1234, 5678, 9012])), "12345678.9012");
        // -0.0001
        assert_eq!(n(num(1, -1, 0x4000, 4, &[1])), "-0.0001");
        // 0.00000001 (first fractional group is all zeros)
        assert_eq!(n(num(1, -2, 0, 8, &[1])), "0.00000001");
        // 1e20 = 1 0000 0000 0000 0000 0000 with trailing groups omitted
        assert_eq!(n(num(1, 5, 0, 0, &[1])), "100000000000000000000");
        // 3.10 (scale kept)
        assert_eq!(n(num(2, 0, 0, 2, &[3, 1000])), "3.10");
        assert_eq!(n(num(0, 0, 0xC000, 0, &[])), "NaN");
        assert_eq!(n(num(0, 0, 0xD000, 0, &[])), "Infinity");
        assert_eq!(n(num(0, 0, 0xF000, 0, &[])), "-Infinity");
        assert!(numeric(&[0, 1]).is_err());
    }

    #[test]
    fn dates_and_times() {
        assert_eq!(date(0), "2000-01-01");
        assert_eq!(date(-1), "1999-12-31");
        assert_eq!(date(8_826), "2024-03-01");
        assert_eq!(date(i32::MAX), "infinity");
        assert_eq!(date(-730_119), "0001-01-01");
        assert_eq!(date(-730_120), "0000-12-31");
        assert_eq!(time(0), "00:00:00");
        assert_eq!(time(45_296_500_000), "12:34:56.5");
        assert_eq!(time(86_399_999_999), "23:59:59.999999");
        assert_eq!(timestamp(0, false), "2000-01-01T00:00:00");
        assert_eq!(timestamp(-1, true), "1999-12-31T23:59:59.999999+00:00");
        assert_eq!(timestamp(i64::MIN, true), "-infinity");
        // 2024-02-29 13:14:15.123 UTC
        let micros = (8_825 * MICROS_PER_DAY) + 47_655_123_000;
        assert_eq!(timestamp(micros, true), "2024-02-29T13:14:15.123+00:00");
        let mut raw = 3_600_000_000i64.to_be_bytes().to_vec();
        raw.extend_from_slice(&(-19_800i32).to_be_bytes()); // +05:30
        assert_eq!(timetz(&raw).unwrap(), "01:00:00+05:30");
        let mut raw = 0i64.to_be_bytes().to_vec();
        raw.extend_from_slice(&(28_800i32).to_be_bytes()); // -08:00
        assert_eq!(timetz(&raw).unwrap(), "00:00:00-08:00");
    }

    #[test]
    fn intervals_as_iso_8601() {
        assert_eq!(iso_interval(0, 0, 0), "PT0S");
        assert_eq!(iso_interval(14, 3, 14_706_500_000), "P1Y2M3DT4H5M6.5S");
        assert_eq!(iso_interval(0, 1, 0), "P1D");
        assert_eq!(iso_interval(-1, 0, -1_500_000), "P-1MT-1.5S");
        assert_eq!(iso_interval(0, 0, 90_000_000), "PT1M30S");
        let mut raw = 1_000_000i64.to_be_bytes().to_vec();
        raw.extend_from_slice(&2i32.to_be_bytes());
        raw.extend_from_slice(&0i32.to_be_bytes());
        assert_eq!(
            to_json(&Type::INTERVAL, Some(&raw)).unwrap(),
            json!("P2DT1S")
        );
    }

    #[test]
    fn arrays_nest_by_dimension() {
        let mut raw = BytesMut::new();
        let values: Vec<Option<i32>> = vec![Some(1), None, Some(3), Some(4)];
        wire::array_to_sql(
            [
                wire::ArrayDimension {
                    len: 2,
                    lower_bound: 1,
                },
                wire::ArrayDimension {
                    len: 2,
                    lower_bound: 1,
                },
            ],
            Type::INT4.oid(),
            values,
            |v, buf| match v {
                Some(v) => {
                    wire::int4_to_sql(v, buf);
                    Ok(postgres_protocol::IsNull::No)
                }
                None => Ok(postgres_protocol::IsNull::Yes),
            },
            &mut raw,
        )
        .unwrap();
        assert_eq!(
            to_json(&Type::INT4_ARRAY, Some(&raw)).unwrap(),
            json!([[1, null], [3, 4]])
        );
        let mut raw = BytesMut::new();
        wire::array_to_sql(
            [],
            Type::TEXT.oid(),
            Vec::<&str>::new(),
            |v, buf| {
                wire::text_to_sql(v, buf);
                Ok(postgres_protocol::IsNull::No)
            },
            &mut raw,
        )
        .unwrap();
        assert_eq!(to_json(&Type::TEXT_ARRAY, Some(&raw)).unwrap(), json!([]));
        assert!(decodable(&Type::TIMESTAMPTZ_ARRAY));
        assert!(!decodable(&Type::TS_VECTOR));
        assert!(!decodable(&Type::POINT_ARRAY));
    }

    #[test]
    fn params_go_as_text() {
        let text = |v: Value, ty: Type| {
            let mut out = BytesMut::new();
            let null = Param(v).to_sql(&ty, &mut out).unwrap();
            (
                matches!(null, IsNull::Yes),
                String::from_utf8(out.to_vec()).unwrap(),
            )
        };
        assert_eq!(text(json!(null), Type::INT4), (true, String::new()));
        assert_eq!(text(json!(42), Type::INT4), (false, "42".into()));
        assert_eq!(text(json!("x'y"), Type::TEXT), (false, "x'y".into()));
        assert_eq!(text(json!(true), Type::BOOL), (false, "true".into()));
        assert_eq!(
            text(json!({"a": 1}), Type::JSONB),
            (false, r#"{"a":1}"#.into())
        );
        assert_eq!(text(json!([1, 2]), Type::JSONB), (false, "[1,2]".into()));
        assert_eq!(
            text(json!([1, null, "a\"b", [2]]), Type::TEXT_ARRAY),
            (false, r#"{1,NULL,"a\"b",{2}}"#.into())
        );
        assert!(matches!(
            Param(json!(1)).encode_format(&Type::INT4),
            Format::Text
        ));
    }

    #[test]
    fn long_strings_are_clipped_at_a_char_boundary() {
        let mut v = json!("aé".repeat(10));
        assert!(clip(&mut v, 4));
        assert_eq!(v, json!("aéa… [cut: 30 bytes in all]"));
        let mut small = json!("abc");
        assert!(!clip(&mut small, 4));
        let mut number = json!(12345);
        assert!(!clip(&mut number, 1));
    }

    #[test]
    fn labels_say_how_values_are_rendered() {
        assert_eq!(type_label(&Type::BYTEA), "bytea (base64)");
        assert_eq!(type_label(&Type::NUMERIC_ARRAY), "_numeric (string)");
        assert_eq!(type_label(&Type::TEXT), "text");
    }
}
