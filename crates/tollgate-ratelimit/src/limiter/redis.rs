//! The Redis backend: one Lua script per check, so that every gateway instance sharing
//! the prefix shares each limit exactly.
//!
//! Each limited scope is one hash (`{prefix}k:{key_id}`, `{prefix}a:{account}`,
//! `{prefix}g`) with the four TATs in microseconds of the Redis server's clock (fields
//! `r`, `i`, `o`, `d`), so instances need not agree on time. A check sends all scopes and
//! dimensions of a request in one `EVALSHA`: the script reads `TIME`, evaluates exactly as
//! [`evaluate`](super::evaluate) does, writes only if everything fits, and sets the hash
//! to expire when its last TAT passes — idle state evicts itself, losslessly.
//! Settlements (output tokens charged, the input estimate corrected from the usage) are a
//! second script, sent in the background.
//!
//! The connection is a `ConnectionManager` created lazily: a gateway starts while Redis
//! is down, answers by the outage policy, and recovers by itself when Redis is back.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{RedisResult, Script};

use super::{Deltas, Dimension, Mode, Plan, Raw, Scope, Shared, View};
use crate::config::{ConfigError, OutagePolicy, RedisConfig};

/// Largest cost or tolerance sent to Lua (µs, ≈ 35 years): Lua numbers are doubles, exact
/// below 2^53.
const MAX_TICKS: u64 = 1 << 50;

const CHECK: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local fields = {'r', 'i', 'o', 'd'}
local cur, new = {}, {}
local ws, wd, wait = 0, 0, 0
for s = 1, #KEYS do
  local stored = redis.call('HMGET', KEYS[s], 'r', 'i', 'o', 'd')
  for d = 1, 4 do
    local i = (s - 1) * 4 + d
    local a = (i - 1) * 3
    local mode, cost, tau = tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2]), tonumber(ARGV[a + 3])
    local tat = tonumber(stored[d]) or 0
    cur[i], new[i] = tat, tat
    if mode ~= 0 then
      local w = nil
      if cost > tau then
        w = -1
      else
        local after = math.max(tat, now) + cost
        if after - now > tau then
          w = after - now - tau
        elseif mode == 1 then
          new[i] = after
        end
      end
      if w ~= nil and (ws == 0 or (wait ~= -1 and (w == -1 or w > wait))) then
        ws, wd, wait = s, d, w
      end
    end
  end
end
local out = {ws == 0 and 0 or 1, ws, wd, wait, now}
local tats = cur
if ws == 0 then
  tats = new
  for s = 1, #KEYS do
    local args, top = {}, 0
    for d = 1, 4 do
      local i = (s - 1) * 4 + d
      if new[i] ~= cur[i] then
        args[#args + 1] = fields[d]
        args[#args + 1] = string.format('%.0f', new[i])
      end
      if new[i] > top then top = new[i] end
    end
    if #args > 0 then
      redis.call('HSET', KEYS[s], unpack(args))
      redis.call('PEXPIREAT', KEYS[s], string.format('%.0f', math.ceil(top / 1000) + 1000))
    end
  end
end
for i = 1, #tats do out[5 + i] = tats[i] end
return out
";

const SETTLE: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local fields = {'r', 'i', 'o', 'd'}
for s = 1, #KEYS do
  local stored = redis.call('HMGET', KEYS[s], 'r', 'i', 'o', 'd')
  local args, top = {}, 0
  for d = 1, 4 do
    local tat = tonumber(stored[d]) or 0
    local delta = tonumber(ARGV[(s - 1) * 4 + d])
    local moved = tat
    if delta > 0 then
      moved = math.max(tat, now) + delta
    elseif delta < 0 and tat > now then
      moved = math.max(tat + delta, now)
    end
    if moved ~= tat then
      tat = moved
      args[#args + 1] = fields[d]
      args[#args + 1] = string.format('%.0f', tat)
    end
    if tat > top then top = tat end
  end
  if #args > 0 then
    redis.call('HSET', KEYS[s], unpack(args))
    redis.call('PEXPIREAT', KEYS[s], string.format('%.0f', math.ceil(top / 1000) + 1000))
  end
end
return 0
";

pub(crate) struct RedisBackend {
    conn: ConnectionManager,
    prefix: Arc<str>,
    on_outage: OutagePolicy,
    timeout: Duration,
    check: Arc<Script>,
    settle: Arc<Script>,
}

impl RedisBackend {
    pub(crate) fn new(cfg: &RedisConfig) -> Result<RedisBackend, ConfigError> {
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(ConfigError::new(
                "backend.kind",
                "the Redis backend must be created inside a Tokio runtime (it connects in the background)",
            ));
        }
        let client = redis::Client::open(cfg.url.as_str()).map_err(|e| {
            ConfigError::new(
                "backend.url",
                format!("{e}; write e.g. \"redis://127.0.0.1:6379\""),
            )
        })?;
        let timeout = Duration::from_millis(cfg.timeout_ms);
        let manager = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_millis(500));
        let conn = ConnectionManager::new_lazy_with_config(client, manager)
            .map_err(|e| ConfigError::new("backend", e.to_string()))?;
        Ok(RedisBackend {
            conn,
            prefix: Arc::from(cfg.prefix.as_str()),
            on_outage: cfg.on_outage,
            timeout,
            check: Arc::new(Script::new(CHECK)),
            settle: Arc::new(Script::new(SETTLE)),
        })
    }

    pub(crate) fn fails_open(&self) -> bool {
        self.on_outage == OutagePolicy::FailOpen
    }

    /// The Redis key of each limited scope of `plan`.
    fn key_names(&self, plan: &Plan, view: &View<'_>) -> [Option<String>; 3] {
        let prefix = &self.prefix;
        std::array::from_fn(|i| {
            view[i]?;
            match Scope::ALL[i] {
                Scope::Key => plan.key.as_ref().map(|(id, _)| format!("{prefix}k:{id}")),
                Scope::Account => plan.account.as_ref().map(|a| format!("{prefix}a:{a}")),
                Scope::Global => plan.global.then(|| format!("{prefix}g")),
            }
        })
    }

    /// One round trip: the plan comes back with the answer, so the caller can keep it for
    /// charging the output later.
    pub(crate) fn check(
        &self,
        shared: &Shared,
        plan: Plan,
    ) -> impl Future<Output = (Plan, Result<Raw, String>)> + Send + 'static {
        let view = shared.view(&plan);
        let names = self.key_names(&plan, &view);
        let mut keys = Vec::with_capacity(3);
        let mut scopes = Vec::with_capacity(3);
        let mut args: Vec<u64> = Vec::with_capacity(36);
        for scope in Scope::ALL {
            let (Some(name), Some(rates)) = (&names[scope.index()], view[scope.index()]) else {
                continue;
            };
            keys.push(name.clone());
            scopes.push(scope);
            for dim in Dimension::ALL {
                match &rates[dim.index()] {
                    None => args.extend([0, 0, 0]),
                    Some(rate) => {
                        let (mode, n) = Mode::of(dim, plan.tokens).code();
                        args.extend([
                            u64::from(mode),
                            rate.cost(n).min(MAX_TICKS + 1),
                            rate.tau.min(MAX_TICKS),
                        ]);
                    }
                }
            }
        }
        let (mut conn, script, timeout) = (self.conn.clone(), self.check.clone(), self.timeout);
        async move {
            let mut invocation = script.prepare_invoke();
            for key in &keys {
                invocation.key(key);
            }
            for arg in &args {
                invocation.arg(*arg);
            }
            let reply: Result<RedisResult<Vec<i64>>, _> =
                tokio::time::timeout(timeout, invocation.invoke_async(&mut conn)).await;
            let result = match reply {
                Err(_) => Err(format!(
                    "redis did not answer within {} ms",
                    timeout.as_millis()
                )),
                Ok(Err(e)) => Err(format!("redis: {e}")),
                Ok(Ok(values)) => parse(&values, &scopes),
            };
            (plan, result)
        }
    }

    /// Move the plan's TATs by `deltas` in the background (fire and forget; a failure is
    /// logged): output charged, the input estimate corrected.
    pub(crate) fn settle(&self, plan: &Plan, view: &View<'_>, deltas: &Deltas) {
        let mut keys = Vec::with_capacity(3);
        let mut args: Vec<i64> = Vec::with_capacity(12);
        for (name, delta) in self.key_names(plan, view).into_iter().zip(deltas) {
            let Some(name) = name else { continue };
            keys.push(name);
            args.extend(
                delta
                    .iter()
                    .map(|&d| d.clamp(-(MAX_TICKS as i64), MAX_TICKS as i64)),
            );
        }
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            tracing::warn!("usage not settled: no Tokio runtime to reach Redis from");
            return;
        };
        let (mut conn, script, timeout) = (self.conn.clone(), self.settle.clone(), self.timeout);
        rt.spawn(async move {
            let mut invocation = script.prepare_invoke();
            for key in &keys {
                invocation.key(key);
            }
            for arg in &args {
                invocation.arg(*arg);
            }
            let reply: Result<RedisResult<i64>, _> =
                tokio::time::timeout(timeout, invocation.invoke_async(&mut conn)).await;
            match reply {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => tracing::warn!(error = %e, "usage not settled: redis failed"),
                Err(_) => tracing::warn!("usage not settled: redis timed out"),
            }
        });
    }
}

fn parse(values: &[i64], scopes: &[Scope]) -> Result<Raw, String> {
    let bad = || format!("redis: unexpected script reply of {} values", values.len());
    if values.len() != 5 + 4 * scopes.len() {
        return Err(bad());
    }
    let tick = |v: i64| u64::try_from(v).unwrap_or(0);
    let refused = if values[0] == 0 {
        None
    } else {
        let scope = usize::try_from(values[1] - 1)
            .ok()
            .and_then(|i| scopes.get(i))
            .copied()
            .ok_or_else(bad)?;
        let dim = usize::try_from(values[2] - 1)
            .ok()
            .and_then(|i| Dimension::ALL.get(i))
            .copied()
            .ok_or_else(bad)?;
        let wait = (values[3] >= 0).then(|| tick(values[3]));
        Some((scope, dim, wait))
    };
    let mut tats = [[0; 4]; 3];
    for (pos, scope) in scopes.iter().enumerate() {
        for d in 0..4 {
            tats[scope.index()][d] = tick(values[5 + pos * 4 + d]);
        }
    }
    Ok(Raw {
        refused,
        tats,
        now: tick(values[4]),
    })
}
