//! Cache keys: a namespace, then ordered parts, escaped so that distinct
//! part lists never give the same key; long keys are hashed.

use std::fmt::{Display, Write};

use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// Keys longer than this are replaced by a hash.
pub const MAX_KEY_LEN: usize = 200;

/// Builds keys `<namespace>:<part>:<part>…`.
///
/// Each part is escaped (`\`, `:`, `#` and the glob characters `*?[]` get a
/// backslash), so two different part lists never give the same key and a
/// part cannot smuggle a separator or a wildcard into an invalidation
/// pattern. A key over [`MAX_KEY_LEN`] characters becomes
/// `<namespace>:#<sha-256 in hex>`.
///
/// ```
/// use seawall_cache::KeyBuilder;
///
/// # fn main() -> Result<(), seawall_cache::Error> {
/// let keys = KeyBuilder::new("review")?;
/// assert_eq!(keys.key(["today", "42"]), "review:today:42");
/// assert_eq!(keys.start().part("user").part(7).finish(), "review:user:7");
/// assert_ne!(keys.key(["a:b"]), keys.key(["a", "b"]));
/// assert!(keys.key(["x".repeat(300)]).starts_with("review:#"));
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyBuilder {
    namespace: String,
}

impl KeyBuilder {
    /// A builder for keys under `namespace`: 1 to 64 characters from
    /// `[A-Za-z0-9_.-]`.
    pub fn new(namespace: impl Into<String>) -> Result<Self> {
        let namespace = namespace.into();
        let valid = (1..=64).contains(&namespace.len())
            && namespace
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
        if !valid {
            return Err(Error::Invalid(format!(
                "a key namespace is 1 to 64 of [A-Za-z0-9_.-], not {namespace:?}"
            )));
        }
        Ok(Self { namespace })
    }

    /// The namespace.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The key of these parts, in order.
    pub fn key<I>(&self, parts: I) -> String
    where
        I: IntoIterator,
        I::Item: Display,
    {
        self.joined(parts).finish()
    }

    /// The parts appended in order, not yet hashed.
    fn joined<I>(&self, parts: I) -> KeyParts<'_>
    where
        I: IntoIterator,
        I::Item: Display,
    {
        parts.into_iter().fold(self.start(), KeyParts::part)
    }

    /// A key to add parts of different types to.
    pub fn start(&self) -> KeyParts<'_> {
        KeyParts {
            builder: self,
            key: self.namespace.clone(),
            part: String::new(),
        }
    }

    /// The parts of a key this builder made, unescaped, in order: the way
    /// back from a key (a [hot key](crate::HotKey), say) to what it is
    /// of. `None` for a key of another namespace, and for a hashed key,
    /// whose parts are gone.
    ///
    /// ```
    /// use seawall_cache::KeyBuilder;
    ///
    /// # fn main() -> Result<(), seawall_cache::Error> {
    /// let keys = KeyBuilder::new("review")?;
    /// let key = keys.start().part("a:b").part(7).finish();
    /// assert_eq!(keys.parts(&key), Some(vec!["a:b".to_owned(), "7".to_owned()]));
    /// assert_eq!(keys.parts("other:7"), None);
    /// # Ok(())
    /// # }
    /// ```
    pub fn parts(&self, key: &str) -> Option<Vec<String>> {
        let rest = key.strip_prefix(self.namespace.as_str())?;
        if rest.is_empty() {
            return Some(Vec::new());
        }
        let rest = rest.strip_prefix(':')?;
        if rest.starts_with('#') {
            return None;
        }
        let mut parts = vec![String::new()];
        let mut chars = rest.chars();
        while let Some(c) = chars.next() {
            match c {
                '\\' => parts.last_mut()?.push(chars.next()?),
                ':' => parts.push(String::new()),
                c => parts.last_mut()?.push(c),
            }
        }
        Some(parts)
    }

    /// A pattern matching every key that starts with these parts (escaped
    /// the same way), for [`TieredCache::invalidate_pattern`](crate::TieredCache::invalidate_pattern).
    pub fn prefix_pattern<I>(&self, parts: I) -> String
    where
        I: IntoIterator,
        I::Item: Display,
    {
        let mut pattern = crate::glob::escape(&self.joined(parts).key);
        pattern.push_str(":*");
        pattern
    }
}

/// A key being built; see [`KeyBuilder::start`].
#[derive(Debug)]
pub struct KeyParts<'a> {
    builder: &'a KeyBuilder,
    key: String,
    part: String,
}

impl KeyParts<'_> {
    /// Adds a part.
    #[must_use]
    pub fn part(mut self, part: impl Display) -> Self {
        self.part.clear();
        // Writing to a String cannot fail.
        let _ = write!(self.part, "{part}");
        self.key.push(':');
        for c in self.part.chars() {
            if matches!(c, '\\' | ':' | '#' | '*' | '?' | '[' | ']') {
                self.key.push('\\');
            }
            self.key.push(c);
        }
        self
    }

    /// The key, hashed if it is longer than [`MAX_KEY_LEN`].
    pub fn finish(self) -> String {
        if self.key.len() <= MAX_KEY_LEN {
            return self.key;
        }
        let digest = Sha256::digest(self.key.as_bytes());
        let mut key = String::with_capacity(self.builder.namespace.len() + 66);
        key.push_str(&self.builder.namespace);
        key.push_str(":#");
        for byte in digest {
            let _ = write!(key, "{byte:02x}");
        }
        key
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        /// Distinct part lists give distinct keys, short or hashed.
        #[test]
        fn the_key_builder_is_injective(
            a in prop::collection::vec(".{0,120}", 0..4),
            b in prop::collection::vec(".{0,120}", 0..4),
        ) {
            let keys = KeyBuilder::new("ns").expect("valid");
            prop_assume!(a != b);
            prop_assert_ne!(keys.key(&a), keys.key(&b));
        }

        /// Keys are never longer than the bound.
        #[test]
        fn keys_are_bounded(parts in prop::collection::vec(".{0,300}", 0..4)) {
            let keys = KeyBuilder::new("ns").expect("valid");
            prop_assert!(keys.key(&parts).len() <= MAX_KEY_LEN);
        }
    }

    #[test]
    fn separators_and_wildcards_are_escaped() {
        let keys = KeyBuilder::new("ns").expect("valid");
        assert_eq!(keys.key(["a:b", "*"]), r"ns:a\:b:\*");
        assert_eq!(keys.key([r"\"]), r"ns:\\");
        assert_eq!(keys.key(["#x"]), r"ns:\#x");
        let pattern = keys.prefix_pattern(["user", "4?"]);
        assert_eq!(pattern, r"ns:user:4\\\?:*");
        let key = keys.key(["user", "4?", "today"]);
        assert!(crate::glob::matches(pattern.as_bytes(), key.as_bytes()));
        assert!(!crate::glob::matches(
            pattern.as_bytes(),
            keys.key(["user", "4x", "today"]).as_bytes()
        ));
        assert!(KeyBuilder::new("").is_err());
        assert!(KeyBuilder::new("a:b").is_err());
        assert!(KeyBuilder::new("x".repeat(65)).is_err());
    }
}
