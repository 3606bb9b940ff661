use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use tollgate_core::{Clock, RenderOptions, SystemClock};
use tower::Layer;

use super::service::KeyAuth;
use super::{
    Config, DEFAULT_CACHE_CAPACITY, DEFAULT_CACHE_TTL, DEFAULT_LAST_USED_INTERVAL,
    DEFAULT_NEGATIVE_CACHE_TTL, Shared,
};
use crate::{KeyFormat, KeyLookup};

/// Authenticates requests by API key against a [`KeyLookup`]; see the
/// [module docs](super) for headers, rejections and cache semantics.
///
/// Every service made by one layer (and its clones) shares one cache.
pub struct KeyAuthLayer<K> {
    shared: Arc<Shared<K>>,
}

impl<K: KeyLookup + 'static> KeyAuthLayer<K> {
    /// A layer over `store` with the default cache (5 s, 1 s for unknown keys, 10 000
    /// entries), the system clock, and last use recorded at most once a minute per key.
    pub fn new(store: K) -> KeyAuthLayer<K> {
        let config = Config {
            cache_ttl: DEFAULT_CACHE_TTL,
            negative_cache_ttl: DEFAULT_NEGATIVE_CACHE_TTL,
            cache_capacity: DEFAULT_CACHE_CAPACITY,
            clock: Arc::new(SystemClock),
            render: RenderOptions::default(),
            last_used_interval: DEFAULT_LAST_USED_INTERVAL,
            key_format: store.key_format(),
        };
        KeyAuthLayer {
            shared: Arc::new(Shared::new(Arc::new(store), config)),
        }
    }

    /// How long a found key is served from the cache. Disabling a key, suspending its
    /// account or changing its scope takes effect within this time. `Duration::ZERO`
    /// asks the store on every request.
    pub fn cache_ttl(self, ttl: Duration) -> KeyAuthLayer<K> {
        self.reconfigure(|c| c.cache_ttl = ttl)
    }

    /// How long an unknown key is remembered as unknown, so a flood of bad keys does not
    /// reach the store. A key created meanwhile works after at most this time.
    pub fn negative_cache_ttl(self, ttl: Duration) -> KeyAuthLayer<K> {
        self.reconfigure(|c| c.negative_cache_ttl = ttl)
    }

    /// Most entries the cache holds (found and unknown keys together).
    pub fn cache_capacity(self, entries: usize) -> KeyAuthLayer<K> {
        self.reconfigure(|c| c.cache_capacity = entries)
    }

    /// Where time comes from: monotonic for the cache, wall for expiry and last use.
    pub fn clock(self, clock: Arc<dyn Clock>) -> KeyAuthLayer<K> {
        self.reconfigure(|c| c.clock = clock)
    }

    /// How rejections are rendered.
    pub fn render_options(self, render: RenderOptions) -> KeyAuthLayer<K> {
        self.reconfigure(|c| c.render = render)
    }

    /// Least time between two `last_used_at` writes for one key (whole seconds).
    pub fn last_used_interval(self, every: Duration) -> KeyAuthLayer<K> {
        self.reconfigure(|c| c.last_used_interval = every)
    }

    /// Which presented keys are refused before the store is asked (and diagnosed: an
    /// `sk-ant-…` key sent by mistake, a cut-short key). Default: the store's
    /// [`KeyLookup::key_format`]; set it here to accept keys of another format from a
    /// store you don't control.
    pub fn key_format(self, format: KeyFormat) -> KeyAuthLayer<K> {
        self.reconfigure(|c| c.key_format = format)
    }

    /// The store the layer asks.
    pub fn store(&self) -> &K {
        &self.shared.store
    }

    fn reconfigure(self, change: impl FnOnce(&mut Config)) -> KeyAuthLayer<K> {
        let mut config = self.shared.config.clone();
        change(&mut config);
        KeyAuthLayer {
            shared: Arc::new(Shared::new(self.shared.store.clone(), config)),
        }
    }
}

impl<K> Clone for KeyAuthLayer<K> {
    fn clone(&self) -> Self {
        KeyAuthLayer {
            shared: self.shared.clone(),
        }
    }
}

impl<K> fmt::Debug for KeyAuthLayer<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyAuthLayer")
            .field("config", &self.shared.config)
            .finish_non_exhaustive()
    }
}

impl<S, K> Layer<S> for KeyAuthLayer<K> {
    type Service = KeyAuth<S, K>;

    fn layer(&self, inner: S) -> Self::Service {
        KeyAuth {
            inner,
            shared: self.shared.clone(),
        }
    }
}
