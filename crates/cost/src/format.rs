//! Numbers for people: dollars, quantities, prices.

/// Dollars: cents from $1 up (with thousands separators), four significant
/// digits below (`$0.0085`), never scientific notation.
pub fn usd(x: f64) -> String {
    let sign = if x < 0.0 { "-" } else { "" };
    let x = x.abs();
    let digits = if x == 0.0 || x >= 1.0 {
        format!("{x:.2}")
    } else {
        trim(&format!("{x:.*}", decimals_for(x, 4)), 2)
    };
    format!("{sign}${}", thousands(&digits))
}

/// A quantity: whole numbers as such (`48,000`), others to two decimals, or
/// three significant digits below 1 (`0.00347`).
pub fn qty(x: f64) -> String {
    let sign = if x < 0.0 { "-" } else { "" };
    let x = x.abs();
    let digits = if (x - x.round()).abs() < 1e-9 && x < 1e15 {
        format!("{x:.0}")
    } else if x >= 1.0 {
        trim(&format!("{x:.2}"), 0)
    } else {
        trim(&format!("{x:.*}", decimals_for(x, 3)), 0)
    };
    format!("{sign}{}", thousands(&digits))
}

/// A price as configured (shortest exact form: `0.04048`).
pub fn price(x: f64) -> String {
    format!("${x}")
}

/// Decimals that show `significant` significant digits of `0 < x < 1`.
fn decimals_for(x: f64, significant: i32) -> usize {
    let magnitude = x.log10().floor() as i32;
    (significant - 1 - magnitude).clamp(0, 12) as usize
}

/// Drops trailing zeros after the point, keeping at least `keep` decimals.
fn trim(s: &str, keep: usize) -> String {
    let Some(dot) = s.find('.') else {
        return s.to_string();
    };
    let mut end = s.len();
    while end > dot + 1 + keep && s.as_bytes()[end - 1] == b'0' {
        end -= 1;
    }
    if end == dot + 1 {
        end = dot;
    }
    s[..end].to_string()
}

/// `1234567.5` → `1,234,567.5`.
fn thousands(s: &str) -> String {
    let (int, frac) = match s.find('.') {
        Some(dot) => s.split_at(dot),
        None => (s, ""),
    };
    let mut out = String::new();
    for (i, c) in int.chars().enumerate() {
        if i > 0 && (int.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out + frac
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dollars() {
        assert_eq!(usd(0.0), "$0.00");
        assert_eq!(usd(16.0), "$16.00");
        assert_eq!(usd(1234567.891), "$1,234,567.89");
        assert_eq!(usd(0.96), "$0.96");
        assert_eq!(usd(0.768), "$0.768");
        assert_eq!(usd(0.0004), "$0.0004");
        assert_eq!(usd(0.000123456), "$0.0001235");
    }

    #[test]
    fn quantities() {
        assert_eq!(qty(48000.0), "48,000");
        assert_eq!(qty(1600.0), "1,600");
        assert_eq!(qty(2.4), "2.4");
        assert_eq!(qty(14.048780487), "14.05");
        assert_eq!(qty(0.003472), "0.00347");
        assert_eq!(qty(0.0), "0");
        assert_eq!(price(0.04048), "$0.04048");
    }
}
