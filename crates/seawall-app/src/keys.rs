//! API keys: issued to a tenant, and so to its tier; shown once, when
//! issued; stored as the SHA-256 of the key, which is 256 random bits, so
//! the digest needs no salt or slow hash to keep the key from being found
//! again; revoked by id. A request's key is verified through the cache
//! (see [`ApiCache::identity`](crate::cache::ApiCache::identity)): a key
//! the service issued is cached in both tiers, any other answer only in
//! this process, so a made-up key leaves nothing in Redis, and revoking a
//! key invalidates its entry on every instance.
//!
//! # How long a revoked key can still work
//!
//! "Not found" and "revoked" from the database are answers, never errors,
//! so no cached copy ever stands in for them. The window after
//! [`revoke`] answers, on each instance:
//!
//! | the instance | the key stops working |
//! |---|---|
//! | the one that revoked it | at once |
//! | any other that follows Redis's invalidation stream | when the invalidation arrives (milliseconds) |
//! | one that was cut off from Redis when it was revoked | at once: while cut off, its copies answer no read (each asks the database), and on reconnecting it replays what it missed, or clears them |
//! | one cut off from Redis that also cannot read the database | at most [`IDENTITY_TTL`] after its copy was loaded |
//! | every instance, when the one that revoked it died before Redis answered again (its unsent invalidations live in its memory only; `DELETE /api/keys/{id}` answered 503 and asked for a retry) | at most [`IDENTITY_TTL`] after the revocation (and a database read already under way then), when the copies in Redis and in every L1 expire; a retry of the revocation on a live instance ends it at once |
//!
//! So no revoked key works anywhere for longer than [`IDENTITY_TTL`] (a
//! minute) after its revocation.
//!
//! [`IDENTITY_TTL`]: crate::cache::IDENTITY_TTL

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use utoipa::ToSchema;

use crate::cache::ApiCache;
use crate::db::Db;

/// What every key starts with, so a leaked one is recognised by scanners.
pub const KEY_PREFIX: &str = "swk_";
/// How many characters a key has: the prefix and 64 hexadecimal digits.
pub const KEY_LENGTH: usize = KEY_PREFIX.len() + 64;
/// How many characters of a key its listing shows.
const SHOWN: usize = KEY_PREFIX.len() + 8;
/// The longest name of a key, in characters.
pub const MAX_NAME_CHARS: usize = 100;

/// Why a key could not be issued, listed or revoked.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The tenant a key was asked for does not exist.
    #[error("there is no tenant {0:?}")]
    NoTenant(String),
    /// The operating system's random source failed.
    #[error("the random source failed: {0}")]
    Random(getrandom::Error),
    /// The database failed.
    #[error("the database failed")]
    Database(#[source] sqlx::Error),
    /// The cache could not be asked.
    #[error("the cache failed")]
    Cache(#[source] seawall_cache::Error),
}

impl From<sqlx::Error> for KeyError {
    fn from(error: sqlx::Error) -> Self {
        Self::Database(error)
    }
}

/// A key as listed: everything but the key itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct KeyInfo {
    /// The key's id, which names it in the admin API and in the API
    /// limiter's keys (`key:<id>`).
    pub id: String,
    /// The tenant the key was issued to: its tier's quota applies.
    pub tenant_id: String,
    /// What the key is for.
    pub name: String,
    /// The key's first characters.
    pub prefix: String,
    /// When it was issued, in Unix milliseconds.
    pub created_ms: i64,
    /// When it was revoked, in Unix milliseconds; none while it is valid.
    pub revoked_ms: Option<i64>,
}

/// A key just issued: the key itself, shown this once, and its listing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct IssuedKey {
    /// The key: send it as `X-Api-Key`. It is not stored and cannot be
    /// shown again.
    pub key: String,
    /// The key as listed.
    #[serde(flatten)]
    pub info: KeyInfo,
}

/// Who a valid key speaks for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyIdentity {
    /// The key's id.
    pub id: String,
    /// Its tenant.
    pub tenant_id: String,
}

/// The SHA-256 of `key`, in hexadecimal: what is stored and cached.
pub fn digest(key: &str) -> String {
    hex(&Sha256::digest(key.as_bytes()))
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::new(), |mut text, byte| {
        let _ = write!(text, "{byte:02x}");
        text
    })
}

/// Whether `key` has the form of a key the service issues.
pub fn is_well_formed(key: &str) -> bool {
    key.len() == KEY_LENGTH
        && key.starts_with(KEY_PREFIX)
        && key[KEY_PREFIX.len()..]
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

type Row = (String, String, String, String, i64, Option<i64>);
/// A [`Row`] and the key's digest.
type RowWithDigest = (String, String, String, String, i64, Option<i64>, String);

fn info((id, tenant_id, name, prefix, created_ms, revoked_ms): Row) -> KeyInfo {
    KeyInfo {
        id,
        tenant_id,
        name,
        prefix,
        created_ms,
        revoked_ms,
    }
}

/// Issues a key to `tenant`, named `name`, at `now_ms`; the key is in the
/// answer and nowhere else.
pub async fn issue(db: &Db, tenant: &str, name: &str, now_ms: i64) -> Result<IssuedKey, KeyError> {
    let mut secret = [0_u8; 32];
    getrandom::fill(&mut secret).map_err(KeyError::Random)?;
    let mut id = [0_u8; 8];
    getrandom::fill(&mut id).map_err(KeyError::Random)?;
    let key = format!("{KEY_PREFIX}{}", hex(&secret));
    let info = KeyInfo {
        id: format!("k{}", hex(&id)),
        tenant_id: tenant.to_owned(),
        name: name.to_owned(),
        prefix: key[..SHOWN].to_owned(),
        created_ms: now_ms,
        revoked_ms: None,
    };
    let mut transaction = db.begin_write().await?;
    let known: Option<(String,)> = sqlx::query_as("SELECT id FROM tenants WHERE id = $1")
        .bind(tenant)
        .fetch_optional(&mut *transaction)
        .await?;
    if known.is_none() {
        return Err(KeyError::NoTenant(tenant.to_owned()));
    }
    sqlx::query(
        "INSERT INTO api_keys (id, digest, tenant_id, name, prefix, created_ms) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(&info.id)
    .bind(digest(&key))
    .bind(&info.tenant_id)
    .bind(&info.name)
    .bind(&info.prefix)
    .bind(info.created_ms)
    .execute(&mut *transaction)
    .await?;
    transaction.commit().await?;
    Ok(IssuedKey { key, info })
}

/// The most keys one page lists.
pub const MAX_PAGE: i64 = 1_000;

/// Where a page of keys begins: after the key issued at `created_ms` with
/// id `id`, in the listing's order (newest first, then by id). Written as
/// `<created_ms>.<id>`, the `next` of the page before.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyCursor {
    /// When the last key of the page before was issued.
    pub created_ms: i64,
    /// Its id.
    pub id: String,
}

impl KeyCursor {
    /// The cursor after `key`.
    fn after(key: &KeyInfo) -> Self {
        Self {
            created_ms: key.created_ms,
            id: key.id.clone(),
        }
    }

    /// Reads a cursor written by [`Display`](std::fmt::Display); `None`
    /// for anything else.
    pub fn parse(text: &str) -> Option<Self> {
        let (created_ms, id) = text.split_once('.')?;
        let created_ms = created_ms.parse().ok().filter(|ms: &i64| *ms >= 0)?;
        let well_formed = id.len() == 17
            && id.starts_with('k')
            && id[1..]
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        well_formed.then(|| Self {
            created_ms,
            id: id.to_owned(),
        })
    }
}

impl std::fmt::Display for KeyCursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.created_ms, self.id)
    }
}

/// One page of keys, revoked ones included, newest first: at most `limit`
/// (1 to [`MAX_PAGE`]) from `after` on, and the cursor of the next page
/// when there is one.
pub async fn list(
    db: &Db,
    limit: i64,
    after: Option<&KeyCursor>,
) -> Result<(Vec<KeyInfo>, Option<KeyCursor>), KeyError> {
    let limit = limit.clamp(1, MAX_PAGE);
    let mut conn = db.acquire().await?;
    // One more than the page, to know whether another follows.
    let rows: Vec<Row> = match after {
        None => {
            sqlx::query_as(
                "SELECT id, tenant_id, name, prefix, created_ms, revoked_ms FROM api_keys \
                 ORDER BY created_ms DESC, id LIMIT $1",
            )
            .bind(limit + 1)
            .fetch_all(&mut *conn)
            .await?
        }
        Some(cursor) => {
            sqlx::query_as(
                "SELECT id, tenant_id, name, prefix, created_ms, revoked_ms FROM api_keys \
                 WHERE created_ms < $1 OR (created_ms = $1 AND id > $2) \
                 ORDER BY created_ms DESC, id LIMIT $3",
            )
            .bind(cursor.created_ms)
            .bind(&cursor.id)
            .bind(limit + 1)
            .fetch_all(&mut *conn)
            .await?
        }
    };
    let mut keys: Vec<KeyInfo> = rows.into_iter().map(info).collect();
    let more = keys.len() > usize::try_from(limit).unwrap_or(usize::MAX);
    keys.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
    let next = more.then(|| keys.last().map(KeyCursor::after)).flatten();
    Ok((keys, next))
}

/// Revokes key `id` at `now_ms` (a key revoked before keeps its time) and
/// drops it from the cache of every instance; `None` when there is no such
/// key. The database is written first: an instance that reads the key
/// again after the invalidation finds it revoked.
pub async fn revoke(
    db: &Db,
    cache: Option<&ApiCache>,
    id: &str,
    now_ms: i64,
) -> Result<Option<KeyInfo>, KeyError> {
    let mut transaction = db.begin_write().await?;
    sqlx::query("UPDATE api_keys SET revoked_ms = $2 WHERE id = $1 AND revoked_ms IS NULL")
        .bind(id)
        .bind(now_ms)
        .execute(&mut *transaction)
        .await?;
    let row: Option<RowWithDigest> = sqlx::query_as(
        "SELECT id, tenant_id, name, prefix, created_ms, revoked_ms, digest \
             FROM api_keys WHERE id = $1",
    )
    .bind(id)
    .fetch_optional(&mut *transaction)
    .await?;
    transaction.commit().await?;
    let Some((id, tenant_id, name, prefix, created_ms, revoked_ms, digest)) = row else {
        return Ok(None);
    };
    if let Some(cache) = cache {
        cache
            .cache()
            .invalidate(&cache.api_key_key(&digest))
            .await
            .map_err(KeyError::Cache)?;
    }
    Ok(Some(info((
        id, tenant_id, name, prefix, created_ms, revoked_ms,
    ))))
}

/// Who the key whose digest is `digest` speaks for, read from the database;
/// `None` for a key never issued or revoked.
pub async fn find(db: &Db, digest: &str) -> Result<Option<KeyIdentity>, sqlx::Error> {
    let row: Option<(String, String)> = sqlx::query_as(
        "SELECT id, tenant_id FROM api_keys WHERE digest = $1 AND revoked_ms IS NULL",
    )
    .bind(digest)
    .fetch_optional(&mut *db.acquire().await?)
    .await?;
    Ok(row.map(|(id, tenant_id)| KeyIdentity { id, tenant_id }))
}

/// Who `key` speaks for when this process knows it already (its cache
/// holds the key's identity), without a database or Redis read; `None` when
/// [`verify`] would have to read them, or the key is malformed.
pub fn verify_known(cache: Option<&ApiCache>, key: &str) -> Option<KeyIdentity> {
    let cache = cache?;
    if !is_well_formed(key) {
        return None;
    }
    cache.known_identity(&cache.api_key_key(&digest(key)))
}

/// Who `key` speaks for: through the cache when there is one (a key never
/// issued or revoked is remembered in this process only), else from the
/// database at every call; `None` for a malformed, unknown or revoked key.
pub async fn verify(
    db: &Db,
    cache: Option<&ApiCache>,
    key: &str,
) -> Result<Option<KeyIdentity>, KeyError> {
    if !is_well_formed(key) {
        return Ok(None);
    }
    let digest = digest(key);
    let Some(cache) = cache else {
        return Ok(find(db, &digest).await?);
    };
    let db = db.clone();
    let key = cache.api_key_key(&digest);
    cache
        .identity(&key, move || async move { find(&db, &digest).await })
        .await
        .map_err(KeyError::Cache)
}

#[cfg(test)]
mod tests {
    use seawall_testkit::{Postgres, RedisServer};

    use super::*;
    use crate::{Config, setup};

    /// Issues, verifies through the cache (on Redis), lists and revokes, on
    /// the database `url`; an unknown key leaves nothing in Redis.
    /// The database at `url` (no demo data) and, with `redis`, the cache
    /// on it, following its invalidations, as the service builds them.
    async fn parts(url: String, redis: Option<&RedisServer>) -> (Db, Option<ApiCache>) {
        let mut config = Config::default();
        config.database.url = url;
        config.demo.seed = false;
        config.redis.url = redis.map(RedisServer::url);
        let monitor = setup::monitor(&config).expect("monitor");
        let db = setup::database(&config, &monitor).await.expect("database");
        let Some(_) = redis else {
            return (db, None);
        };
        let client = setup::redis(&config).await.expect("redis");
        let cache = ApiCache::build(&config.cache, client.as_ref(), &monitor)
            .expect("cache")
            .expect("on");
        assert!(
            cache
                .cache()
                .wait_following(seawall_testkit::wait::patience())
                .await,
            "the cache never followed Redis"
        );
        (db, Some(cache))
    }

    fn sqlite_url(dir: &tempfile::TempDir) -> String {
        format!("sqlite://{}?mode=rwc", dir.path().join("k.db").display())
    }

    async fn round_trip(url: String) {
        let redis = RedisServer::start().expect("redis starts");
        let (db, cache) = parts(url, Some(&redis)).await;
        let cache = cache.expect("a cache");

        let issued = issue(&db, "demo-premium", "batch", 1_000)
            .await
            .expect("issued");
        assert!(is_well_formed(&issued.key), "{}", issued.key);
        let identity = verify(&db, Some(&cache), &issued.key)
            .await
            .expect("verified");
        assert_eq!(
            identity,
            Some(KeyIdentity {
                id: issued.info.id.clone(),
                tenant_id: "demo-premium".to_owned()
            })
        );
        assert!(matches!(
            issue(&db, "nobody", "x", 1).await,
            Err(KeyError::NoTenant(_))
        ));
        let mut conn = redis.connect().expect("connect");
        let count = |conn: &mut seawall_testkit::Conn| {
            conn.cmd(&["DBSIZE"])
                .expect("DBSIZE")
                .as_int()
                .expect("an integer")
        };
        let before = count(&mut conn);
        let made_up = format!("{KEY_PREFIX}{}", "ab".repeat(32));
        for _ in 0..3 {
            assert_eq!(
                verify(&db, Some(&cache), &made_up).await.expect("answered"),
                None
            );
        }
        assert_eq!(count(&mut conn), before, "an unknown key wrote to Redis");

        let revoked = revoke(&db, Some(&cache), &issued.info.id, 2_000)
            .await
            .expect("revoked")
            .expect("found");
        assert_eq!(revoked.revoked_ms, Some(2_000));
        assert_eq!(
            verify(&db, Some(&cache), &issued.key)
                .await
                .expect("answered"),
            None
        );
        let again = revoke(&db, Some(&cache), &issued.info.id, 3_000)
            .await
            .expect("revoked")
            .expect("found");
        assert_eq!(again.revoked_ms, Some(2_000), "the first revocation stands");
        assert!(
            revoke(&db, None, "k-none", 1)
                .await
                .expect("answered")
                .is_none()
        );
        let (listed, next) = list(&db, MAX_PAGE, None).await.expect("listed");
        assert_eq!(listed, vec![revoked]);
        assert_eq!(next, None);
        db.close().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn keys_round_trip_on_sqlite() {
        let dir = tempfile::tempdir().expect("temp dir");
        round_trip(sqlite_url(&dir)).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn keys_round_trip_on_postgres() {
        let postgres = Postgres::start().expect("postgres starts");
        round_trip(postgres.url()).await;
    }

    /// Every key can be reached, a page at a time: pages follow each
    /// other without a gap or a repeat, keys issued in the same millisecond
    /// included, and a malformed cursor is refused.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn keys_are_listed_a_page_at_a_time() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (db, _) = parts(sqlite_url(&dir), None).await;
        let mut issued = Vec::new();
        for created_ms in [10, 20, 20, 20, 30] {
            let key = issue(&db, "demo-basic", "paged", created_ms)
                .await
                .expect("issued");
            issued.push(key.info);
        }
        issued.sort_by(|a, b| b.created_ms.cmp(&a.created_ms).then(a.id.cmp(&b.id)));
        let mut listed = Vec::new();
        let mut after: Option<KeyCursor> = None;
        loop {
            let (page, next) = list(&db, 2, after.as_ref()).await.expect("listed");
            assert!(page.len() <= 2);
            listed.extend(page);
            let Some(next) = next else { break };
            assert_eq!(KeyCursor::parse(&next.to_string()), Some(next.clone()));
            after = Some(next);
        }
        assert_eq!(listed, issued);
        for bad in [
            "",
            "10",
            "10.",
            ".k0123456789abcdef",
            "-1.k0123456789abcdef",
            "10.K0123456789ABCDEF",
            "10.k0123",
        ] {
            assert_eq!(KeyCursor::parse(bad), None, "{bad:?}");
        }
        db.close().await;
    }

    /// The database's "revoked" is an answer, not a failed load: an
    /// instance cut off from Redis, and so from the revocation's
    /// invalidation, never lets its cached copy of the key stand in for it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_revoked_key_fails_at_once_on_an_instance_cut_off_from_redis() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut redis = RedisServer::start().expect("redis starts");
        let (db, cache) = parts(sqlite_url(&dir), Some(&redis)).await;
        let cache = cache.expect("a cache");
        let issued = issue(&db, "demo-premium", "batch", 1_000)
            .await
            .expect("issued");
        assert!(
            verify(&db, Some(&cache), &issued.key)
                .await
                .expect("verified")
                .is_some(),
            "the key works before it is revoked"
        );

        redis.kill().expect("redis stops");
        seawall_testkit::wait::until("the cache to notice it is cut off from Redis", || {
            !cache.cache().follows_invalidations()
        });
        // Revoked through another instance: the database says so, and the
        // invalidation cannot reach this one.
        revoke(&db, None, &issued.info.id, 2_000)
            .await
            .expect("revoked")
            .expect("found");
        for attempt in 0..3 {
            assert_eq!(
                verify(&db, Some(&cache), &issued.key)
                    .await
                    .expect("answered"),
                None,
                "attempt {attempt}: the revoked key was served from this instance's copy"
            );
        }
        db.close().await;
    }

    #[test]
    fn keys_are_recognised_by_their_form() {
        let key = format!("{KEY_PREFIX}{}", "0a".repeat(32));
        assert!(is_well_formed(&key));
        assert!(!is_well_formed(&key[..KEY_LENGTH - 1]));
        assert!(!is_well_formed(&key.replace('a', "A")));
        assert!(!is_well_formed(&format!("swx_{}", "0a".repeat(32))));
        assert_eq!(digest("abc").len(), 64);
        assert_eq!(
            digest("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
