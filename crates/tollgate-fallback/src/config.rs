//! Fallback settings, as the gateway's TOML holds them.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

/// Which upstream routes serve each model, in order, and how long a failed route rests.
///
/// ```toml
/// [fallback]
/// cooldown_base_ms = 1000     # a failed route rests base · 2^(failures-1), unless it sent retry-after
/// cooldown_max_ms = 60000     # … and never longer than this
///
/// [fallback.models."claude-opus-4-8"]
/// routes = ["anthropic-a", "anthropic-b"]       # same model, tried in this order
/// fallback_models = ["claude-sonnet-4-6"]       # opt-in substitution; default none
///
/// [fallback.models."*"]                          # every other model
/// routes = ["anthropic-a", "anthropic-b"]
/// ```
///
/// A model with no entry and no `"*"` entry passes through untouched (no route is
/// chosen; the upstream client picks one itself). Route names are the gateway's upstream
/// names; check them with [`FallbackConfig::validate`].
#[derive(Clone, Debug, PartialEq, Deserialize, serde::Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct FallbackConfig {
    /// Routes per model id; `"*"` for every model without its own entry. Default: none.
    pub models: BTreeMap<String, ModelRoutes>,
    /// First cooldown of a failed route, in milliseconds, doubled per consecutive
    /// failure. A `retry-after` from the route wins. Default 1000.
    pub cooldown_base_ms: u64,
    /// Longest cooldown, in milliseconds (also caps a route's `retry-after`). Default 60 000.
    pub cooldown_max_ms: u64,
}

impl Default for FallbackConfig {
    fn default() -> Self {
        FallbackConfig {
            models: BTreeMap::new(),
            cooldown_base_ms: 1_000,
            cooldown_max_ms: 60_000,
        }
    }
}

/// The routes of one model, and the models that may stand in for it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct ModelRoutes {
    /// Upstream routes serving this same model, in the order they are tried.
    pub routes: Vec<String>,
    /// Models to substitute, in order, once every route of this model has failed.
    /// Off (empty) by default: a substitution changes what the client gets, so it is
    /// only made when configured, and never for a request that opts out
    /// (`x-tollgate-no-substitute: 1`). A substitute is served by its own entry's routes
    /// (or `"*"`'s).
    #[serde(default)]
    pub fallback_models: Vec<String>,
}

impl FallbackConfig {
    /// Check the values against the upstream route names the gateway knows; the error
    /// names the key and says what to do.
    ///
    /// # Errors
    ///
    /// A message such as `models."claude-opus-4-8".routes[1]: unknown route "anthropic-c";
    /// use one of: anthropic-a, anthropic-b`.
    pub fn validate(&self, known_routes: &[&str]) -> Result<(), String> {
        if self.cooldown_max_ms < self.cooldown_base_ms {
            return Err(format!(
                "cooldown_max_ms: must be at least cooldown_base_ms ({}), got {}",
                self.cooldown_base_ms, self.cooldown_max_ms
            ));
        }
        for (model, entry) in &self.models {
            if entry.routes.is_empty() {
                return Err(format!(
                    "models.{model:?}.routes: must name at least one route"
                ));
            }
            for (i, route) in entry.routes.iter().enumerate() {
                if !known_routes.contains(&route.as_str()) {
                    return Err(format!(
                        "models.{model:?}.routes[{i}]: unknown route {route:?}; use one of: {}",
                        known_routes.join(", ")
                    ));
                }
            }
            for (i, substitute) in entry.fallback_models.iter().enumerate() {
                if !self.models.contains_key(substitute) && !self.models.contains_key("*") {
                    return Err(format!(
                        "models.{model:?}.fallback_models[{i}]: no routes serve {substitute:?}; add a models.{substitute:?} entry or a \"*\" entry"
                    ));
                }
            }
        }
        Ok(())
    }

    pub(crate) fn cooldown_base(&self) -> Duration {
        Duration::from_millis(self.cooldown_base_ms)
    }

    pub(crate) fn cooldown_max(&self) -> Duration {
        Duration::from_millis(self.cooldown_max_ms.max(self.cooldown_base_ms))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOML: &str = r#"
        cooldown_base_ms = 500

        [models."claude-opus-4-8"]
        routes = ["a", "b"]
        fallback_models = ["claude-sonnet-4-6"]

        [models."*"]
        routes = ["a"]
    "#;

    #[test]
    fn toml_tables_fill_in_defaults() {
        let c: FallbackConfig = toml::from_str(TOML).expect("valid TOML");
        assert_eq!(c.cooldown_base_ms, 500);
        assert_eq!(c.cooldown_max_ms, 60_000);
        assert_eq!(c.models["claude-opus-4-8"].routes, ["a", "b"]);
        assert!(c.models["*"].fallback_models.is_empty());
        assert_eq!(c.validate(&["a", "b"]), Ok(()));
    }

    #[test]
    fn substitution_is_off_by_default() {
        let c: FallbackConfig =
            toml::from_str("[models.m]\nroutes = [\"a\"]\n").expect("valid TOML");
        assert!(c.models["m"].fallback_models.is_empty());
    }

    #[test]
    fn validate_names_an_unknown_route() {
        let c: FallbackConfig = toml::from_str(TOML).expect("valid TOML");
        let err = c.validate(&["a"]).err().unwrap_or_default();
        assert!(
            err.starts_with("models.\"claude-opus-4-8\".routes[1]: unknown route \"b\""),
            "{err}"
        );
    }

    #[test]
    fn validate_refuses_a_substitute_without_routes() {
        let c: FallbackConfig =
            toml::from_str("[models.m]\nroutes = [\"a\"]\nfallback_models = [\"n\"]\n")
                .expect("valid TOML");
        let err = c.validate(&["a"]).err().unwrap_or_default();
        assert!(err.contains("no routes serve \"n\""), "{err}");
    }
}
