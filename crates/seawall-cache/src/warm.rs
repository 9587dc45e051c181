//! Warm-up: loading a set of keys ahead of traffic, a bounded number at a
//! time, with progress reports.

use futures_util::StreamExt;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::cache::TieredCache;
use crate::codec::Codec;
use crate::error::BoxError;
use crate::options::Options;

/// How far a warm-up has come.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct WarmUpProgress {
    /// Keys in the warm-up.
    pub total: usize,
    /// Keys done (loaded, already cached, or failed).
    pub done: usize,
    /// Keys whose load failed.
    pub failed: usize,
}

impl<C: Codec> TieredCache<C> {
    /// Loads every key of `items` that is not cached yet with `loader` (which
    /// gets the key), cached by the key's own options, at most `concurrency`
    /// at a time (at least one), calling `progress` after each key; returns
    /// the final progress. A failed key is counted and the warm-up goes on.
    pub async fn warm_up<T, I, O, F, Fut, E>(
        &self,
        items: I,
        concurrency: usize,
        loader: F,
        mut progress: impl FnMut(WarmUpProgress),
    ) -> WarmUpProgress
    where
        T: Serialize + DeserializeOwned + Clone + Send + Sync + 'static,
        I: IntoIterator<Item = (String, O)>,
        O: Into<Options>,
        F: Fn(&str) -> Fut,
        Fut: Future<Output = Result<Option<T>, E>> + Send + 'static,
        E: Into<BoxError> + Send + 'static,
    {
        let items: Vec<(String, Options)> = items
            .into_iter()
            .map(|(key, options)| (key, options.into()))
            .collect();
        let mut state = WarmUpProgress {
            total: items.len(),
            ..WarmUpProgress::default()
        };
        progress(state);
        let loader = &loader;
        let loads = futures_util::stream::iter(items)
            .map(|(key, options)| async move {
                // Not through `get_or_load`: a warm-up's reads are no
                // traffic, and would keep the keys it warms ranked hot.
                crate::load::get_or_load::<T, C, _, _, E>(&self.inner, &key, options, || {
                    loader(&key)
                })
                .await
                .is_ok()
            })
            .buffer_unordered(concurrency.max(1));
        futures_util::pin_mut!(loads);
        while let Some(loaded) = loads.next().await {
            state.done += 1;
            if !loaded {
                state.failed += 1;
            }
            progress(state);
        }
        state
    }
}
