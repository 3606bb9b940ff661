//! The ordered (route, model) candidates for one request.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::time::Instant;
use tollgate_core::Principal;

use crate::config::FallbackConfig;
use crate::cooldown::Cooldowns;

/// One attempt's target: a route and the model asked of it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Candidate {
    pub(crate) route: Arc<str>,
    pub(crate) model: Arc<str>,
}

#[derive(Debug, Default)]
struct Entry {
    routes: Vec<Arc<str>>,
    substitutes: Vec<Arc<str>>,
}

/// The configuration, resolved once into shared strings.
#[derive(Debug, Default)]
pub(crate) struct Table {
    models: HashMap<String, Entry>,
    any: Option<Entry>,
}

impl Table {
    pub(crate) fn new(config: &FallbackConfig) -> Self {
        let mut table = Table::default();
        for (model, routes) in &config.models {
            let entry = Entry {
                routes: routes
                    .routes
                    .iter()
                    .map(|r| Arc::from(r.as_str()))
                    .collect(),
                substitutes: routes
                    .fallback_models
                    .iter()
                    .map(|m| Arc::from(m.as_str()))
                    .collect(),
            };
            if model == "*" {
                table.any = Some(entry);
            } else {
                table.models.insert(model.clone(), entry);
            }
        }
        table
    }

    fn entry(&self, model: &str) -> Option<&Entry> {
        self.models.get(model).or(self.any.as_ref())
    }

    /// The candidates for `model`, or `None` when no entry covers it (pass through).
    ///
    /// Routes of the model come first in configured order, then, when `substitute`, each
    /// substitute's routes (skipping models the principal may not use). Candidates whose
    /// route is cooling for that model are left out; if that leaves none, the one whose
    /// cooldown ends first is tried alone.
    pub(crate) fn plan(
        &self,
        model: &str,
        substitute: bool,
        principal: Option<&Principal>,
        cooldowns: &Cooldowns,
        now: Instant,
    ) -> Option<Vec<Candidate>> {
        let entry = self.entry(model)?;
        let requested: Arc<str> = Arc::from(model);
        let mut models = vec![requested.clone()];
        if substitute {
            for m in &entry.substitutes {
                let allowed = principal.is_none_or(|p| p.allows_model(m));
                if allowed && !models.contains(m) {
                    models.push(m.clone());
                }
            }
        }
        let mut all = Vec::new();
        for m in &models {
            let Some(e) = self.entry(m) else { continue };
            for r in &e.routes {
                let c = Candidate {
                    route: r.clone(),
                    model: m.clone(),
                };
                if !all.contains(&c) {
                    all.push(c);
                }
            }
        }
        let mut soonest: Option<(Instant, usize)> = None;
        let mut ready = Vec::with_capacity(all.len());
        for (i, c) in all.iter().enumerate() {
            match cooldowns.cooling_until(&c.route, &c.model, now) {
                None => ready.push(c.clone()),
                Some(until) => {
                    if soonest.is_none_or(|(t, _)| until < t) {
                        soonest = Some((until, i));
                    }
                }
            }
        }
        if ready.is_empty() {
            if let Some((_, i)) = soonest {
                ready.push(all[i].clone());
            }
        }
        Some(ready)
    }
}
