//! Interned names: each distinct limiter or rule name is stored once for the
//! life of the process, so a check carries names as plain references (no
//! reference count shared between threads) and compares them by address.

use std::collections::HashSet;
use std::sync::LazyLock;

use parking_lot::Mutex;

/// The one copy of `name`, kept until the process ends. Names are short and
/// validated (1 to 64 of `A-Z a-z 0-9 _ . -`), and a service uses a bounded
/// set of them, so what is kept stays small.
pub(crate) fn intern(name: &str) -> &'static str {
    static NAMES: LazyLock<Mutex<HashSet<&'static str>>> = LazyLock::new(Mutex::default);
    let mut names = NAMES.lock();
    if let Some(interned) = names.get(name) {
        return interned;
    }
    let interned: &'static str = Box::leak(Box::from(name));
    names.insert(interned);
    interned
}

/// Whether two interned names are the same name: one address comparison.
pub(crate) fn same(a: &'static str, b: &'static str) -> bool {
    std::ptr::eq(a, b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_is_kept_once() {
        let first = intern("api");
        let second = intern(&String::from("api"));
        assert!(same(first, second));
        assert!(!same(first, intern("auth")));
        assert_eq!(second, "api");
    }
}
