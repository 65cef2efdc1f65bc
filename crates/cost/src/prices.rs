//! `[cost]`: the prices the three models apply.

use serde::{Deserialize, Serialize};

use crate::CostError;

/// The `[cost]` section of berth.toml: what each pricing model charges, and
/// what a session reserves when a projection is billed as compute.
///
/// Every key is optional. The defaults are plausible 2026 list prices in USD
/// (on-demand, us-east-1-like regions); they are a starting point for a
/// comparison, not a quote: put your own contract's figures here.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Prices {
    /// Per-connection model: USD per connection-hour, one MCP session held
    /// open for an hour. Default `0.007`: about $5 per connection held open
    /// for a whole month (730 h), the shape of managed hosting priced per
    /// concurrent connection.
    pub per_connection_hour: f64,
    /// Per-request model: USD per 1,000 tool calls. Default `0.0085`: a
    /// serverless function's list price for one call, $0.20 per million
    /// invocations plus one second at 0.5 GB ($0.0000166667 per GB-second).
    pub per_1000_calls: f64,
    /// Included-with-compute model: USD per vCPU-hour. Default `0.04048`
    /// (on-demand container compute, Linux/x86).
    pub per_vcpu_hour: f64,
    /// Included-with-compute model: USD per GiB-hour of memory. Default
    /// `0.004445` (on-demand container compute).
    pub per_gib_hour: f64,
    /// Projections: the vCPUs one session's server process reserves.
    /// Default `0.1`.
    pub vcpu_per_session: f64,
    /// Projections: the GiB of memory one session's server process
    /// reserves. Default `0.125`.
    pub gib_per_session: f64,
    /// Included-with-compute model: the vCPUs the gateway host holds however
    /// many sessions there are (Berth itself and its headroom), billed for the
    /// whole period. Default `0.5`. This floor is what makes the compute line
    /// cross the other two: it costs more for a few agents and less for many.
    pub gateway_vcpu: f64,
    /// Included-with-compute model: the GiB of memory the gateway host holds
    /// however many sessions there are. Default `1.0`.
    pub gateway_gib: f64,
}

impl Default for Prices {
    fn default() -> Prices {
        Prices {
            per_connection_hour: 0.007,
            per_1000_calls: 0.0085,
            per_vcpu_hour: 0.04048,
            per_gib_hour: 0.004445,
            vcpu_per_session: 0.1,
            gib_per_session: 0.125,
            gateway_vcpu: 0.5,
            gateway_gib: 1.0,
        }
    }
}

impl Prices {
    /// Each key with its value, in the order they are documented.
    pub fn fields(&self) -> [(&'static str, f64); 8] {
        [
            ("per_connection_hour", self.per_connection_hour),
            ("per_1000_calls", self.per_1000_calls),
            ("per_vcpu_hour", self.per_vcpu_hour),
            ("per_gib_hour", self.per_gib_hour),
            ("vcpu_per_session", self.vcpu_per_session),
            ("gib_per_session", self.gib_per_session),
            ("gateway_vcpu", self.gateway_vcpu),
            ("gateway_gib", self.gateway_gib),
        ]
    }

    /// Refuses a negative or non-finite value, naming its key (`cost.KEY`).
    pub fn validate(&self) -> Result<(), CostError> {
        for (key, value) in self.fields() {
            non_negative(&format!("cost.{key}"), value)?;
        }
        Ok(())
    }

    /// USD for one session held open an hour, billed as compute.
    pub fn session_compute_hour(&self) -> f64 {
        self.vcpu_per_session * self.per_vcpu_hour + self.gib_per_session * self.per_gib_hour
    }

    /// USD for an hour of the gateway's own compute.
    pub fn gateway_compute_hour(&self) -> f64 {
        self.gateway_vcpu * self.per_vcpu_hour + self.gateway_gib * self.per_gib_hour
    }
}

/// `value` if it is finite and at least zero; else an error naming `what`.
pub(crate) fn non_negative(what: &str, value: f64) -> Result<f64, CostError> {
    if value.is_finite() && value >= 0.0 {
        Ok(value)
    } else {
        Err(CostError::Invalid {
            what: what.to_string(),
            value,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_is_optional_and_defaults() {
        let prices: Prices = toml::from_str("").unwrap();
        assert_eq!(prices, Prices::default());
        let prices: Prices = toml::from_str("per_vcpu_hour = 1\n").unwrap();
        assert_eq!(prices.per_vcpu_hour, 1.0);
        assert_eq!(prices.per_gib_hour, Prices::default().per_gib_hour);
    }

    #[test]
    fn unknown_keys_are_refused() {
        let err = toml::from_str::<Prices>("per_call = 0.1\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown field `per_call`"), "{err}");
    }

    #[test]
    fn negative_and_non_finite_values_are_refused_by_key() {
        let negative: Prices = toml::from_str("per_1000_calls = -0.5\n").unwrap();
        let err = negative.validate().unwrap_err().to_string();
        assert_eq!(
            err,
            "cost.per_1000_calls must be a finite number of at least 0 (got -0.5)"
        );
        let infinite: Prices = toml::from_str("gib_per_session = inf\n").unwrap();
        let err = infinite.validate().unwrap_err().to_string();
        assert!(err.starts_with("cost.gib_per_session must be"), "{err}");
        let nan: Prices = toml::from_str("gateway_vcpu = nan\n").unwrap();
        let err = nan.validate().unwrap_err().to_string();
        assert!(err.starts_with("cost.gateway_vcpu must be"), "{err}");
        assert!(Prices::default().validate().is_ok());
        let zero = Prices {
            per_connection_hour: 0.0,
            ..Prices::default()
        };
        assert!(zero.validate().is_ok(), "zero is a price (free)");
    }

    #[test]
    fn the_example_config_documents_every_key_at_its_default() {
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/berth.toml");
        let text = std::fs::read_to_string(&path).unwrap();
        let table: toml::Table = toml::from_str(&text).unwrap();
        let cost = table
            .get("cost")
            .and_then(|v| v.as_table())
            .expect("examples/berth.toml has a [cost] table");
        let keys: Vec<&str> = cost.keys().map(String::as_str).collect();
        let mut documented: Vec<&str> = Prices::default().fields().map(|(k, _)| k).to_vec();
        documented.sort_unstable();
        let mut keys = keys;
        keys.sort_unstable();
        assert_eq!(
            keys, documented,
            "[cost] in examples/berth.toml sets every key"
        );
        let prices: Prices = cost.clone().try_into().unwrap();
        assert_eq!(prices, Prices::default());
    }
}
