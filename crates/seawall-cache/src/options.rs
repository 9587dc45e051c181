//! What one call asks of the cache beyond its key.

use crate::class::{Class, EarlyRefresh, WriteStrategy};
use crate::error::{Error, Result};

/// The most tags one value may carry.
pub const MAX_TAGS: usize = 32;
/// The longest tag, in bytes.
pub const MAX_TAG_LEN: usize = 256;
/// The longest glob [`TieredCache::invalidate_pattern`] takes, in bytes.
///
/// [`TieredCache::invalidate_pattern`]: crate::TieredCache::invalidate_pattern
pub const MAX_PATTERN_LEN: usize = 2048;

/// A call's TTL class, tags and per-call overrides of the class's policy.
///
/// A [`Class`] converts into options with no tags and no overrides.
///
/// ```
/// use seawall_cache::{Class, Options, WriteStrategy};
///
/// let options = Options::new(Class::SCHEDULE)
///     .tag("user:42")
///     .write_strategy(WriteStrategy::Through)
///     .distributed_lock(true);
/// assert_eq!(options.class(), Class::SCHEDULE);
/// assert_eq!(options.tags(), ["user:42"]);
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Options {
    pub(crate) class: Class,
    pub(crate) tags: Vec<String>,
    pub(crate) early_refresh: Option<EarlyRefresh>,
    pub(crate) write: Option<WriteStrategy>,
    pub(crate) distributed_lock: Option<bool>,
}

impl Options {
    /// Options of `class`, with no tags and the class's policy.
    pub fn new(class: Class) -> Self {
        Self {
            class,
            tags: Vec::new(),
            early_refresh: None,
            write: None,
            distributed_lock: None,
        }
    }

    /// Adds a tag, so [`invalidate_tag`](crate::TieredCache::invalidate_tag)
    /// drops the value.
    #[must_use]
    pub fn tag(mut self, tag: impl Into<String>) -> Self {
        self.tags.push(tag.into());
        self
    }

    /// Overrides the class's early refresh for this call.
    #[must_use]
    pub fn early_refresh(mut self, refresh: EarlyRefresh) -> Self {
        self.early_refresh = Some(refresh);
        self
    }

    /// Overrides the class's write strategy for this call.
    #[must_use]
    pub fn write_strategy(mut self, strategy: WriteStrategy) -> Self {
        self.write = Some(strategy);
        self
    }

    /// Overrides whether a miss takes the distributed lock.
    #[must_use]
    pub fn distributed_lock(mut self, enabled: bool) -> Self {
        self.distributed_lock = Some(enabled);
        self
    }

    /// The TTL class.
    pub fn class(&self) -> Class {
        self.class
    }

    /// The tags.
    pub fn tags(&self) -> &[String] {
        &self.tags
    }

    pub(crate) fn validate(&self) -> Result<()> {
        if self.tags.len() > MAX_TAGS {
            return Err(Error::Invalid(format!(
                "{} tags; a value carries at most {MAX_TAGS}",
                self.tags.len()
            )));
        }
        match self
            .tags
            .iter()
            .find(|tag| tag.is_empty() || tag.len() > MAX_TAG_LEN)
        {
            Some(tag) => Err(Error::Invalid(format!(
                "a tag is 1 to {MAX_TAG_LEN} bytes, not {}",
                tag.len()
            ))),
            None => Ok(()),
        }
    }
}

impl From<Class> for Options {
    fn from(class: Class) -> Self {
        Self::new(class)
    }
}
