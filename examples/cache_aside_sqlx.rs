//! Cache-aside with seawall-cache in front of a SQL database: rows of an
//! in-memory SQLite table are read through `TieredCache::get_or_load`, with
//! a sqlx query as the loader. The program reads a book twice (a load, then
//! a hit), updates it and drops every cached view of it with one tag
//! invalidation, and reads it again (a fresh load with the new value); a
//! second book, tagged differently, stays cached throughout.
//!
//! The cache is in process only, or has a shared Redis tier behind it when
//! `REDIS_URL` is set (e.g. `REDIS_URL=redis://127.0.0.1:6379`).
//!
//! Run: `cargo run -p seawall-examples --example cache_aside_sqlx`

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use fred::prelude::{Builder, ClientLike, Config};
use seawall_cache::{Class, Options, Policy, TieredCache};
use serde::{Deserialize, Serialize};
use sqlx::SqlitePool;

/// A row of `books`, as cached.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Book {
    id: i64,
    title: String,
    copies: i64,
}

/// The source of truth, and how often the cache had to ask it.
#[derive(Clone)]
struct Library {
    db: SqlitePool,
    queries: Arc<AtomicU64>,
}

impl Library {
    /// The loader: one query, `None` when the row does not exist. It owns a
    /// clone of the pool, because the cache runs it in a task of its own.
    fn load(&self, id: i64) -> impl Future<Output = Result<Option<Book>, sqlx::Error>> + use<> {
        let (db, queries) = (self.db.clone(), Arc::clone(&self.queries));
        async move {
            queries.fetch_add(1, Ordering::Relaxed);
            tracing::info!(id, "cache miss: querying the database");
            let row: Option<(i64, String, i64)> =
                sqlx::query_as("SELECT id, title, copies FROM books WHERE id = ?")
                    .bind(id)
                    .fetch_optional(&db)
                    .await?;
            Ok(row.map(|(id, title, copies)| Book { id, title, copies }))
        }
    }

    fn queries(&self) -> u64 {
        self.queries.load(Ordering::Relaxed)
    }
}

/// Every cached view of a book carries its tag, so one invalidation drops
/// them all.
fn book_tag(id: i64) -> String {
    format!("book:{id}")
}

async fn book(
    cache: &TieredCache,
    library: &Library,
    class: Class,
    id: i64,
) -> Result<Option<Book>, seawall_cache::Error> {
    let options = Options::new(class).tag(book_tag(id));
    cache
        .get_or_load(&format!("book:{id}"), options, || library.load(id))
        .await
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter("info")
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
        .init();

    let db = SqlitePool::connect("sqlite::memory:").await?;
    sqlx::query(
        "CREATE TABLE books (id INTEGER PRIMARY KEY, title TEXT NOT NULL, copies INTEGER NOT NULL)",
    )
    .execute(&db)
    .await?;
    for (id, title, copies) in [(1, "Dune", 3), (2, "Solaris", 1), (3, "Roadside Picnic", 2)] {
        sqlx::query("INSERT INTO books (id, title, copies) VALUES (?, ?, ?)")
            .bind(id)
            .bind(title)
            .bind(copies)
            .execute(&db)
            .await?;
    }
    let library = Library {
        db,
        queries: Arc::new(AtomicU64::new(0)),
    };

    // Rows live ten minutes; L1 keeps them for one, which bounds how long an
    // instance that missed an invalidation could serve an old row.
    let builder = TieredCache::builder()
        .prefix("seawall:example:books")
        .define(
            "rows",
            Policy::new(Duration::from_secs(600)).l1_ttl(Duration::from_secs(60)),
        );
    let cache = match std::env::var("REDIS_URL") {
        Ok(url) => {
            let client = Builder::from_config(Config::from_url(&url)?)
                .with_performance_config(|p| p.default_command_timeout = Duration::from_secs(1))
                .build()?;
            client.init().await?;
            let cache = builder.redis(client).build()?;
            // The database is new at every run: forget what an earlier run cached.
            cache.clear().await?;
            // L1 answers once the cache follows other instances'
            // invalidations; until then every read goes to Redis.
            let following = cache.wait_following(Duration::from_secs(2)).await;
            tracing::info!(%url, following, "cache: L1 in front of Redis");
            cache
        }
        Err(_) => {
            tracing::info!("cache: L1 only (set REDIS_URL to add Redis)");
            builder.build()?
        }
    };
    let rows = cache.class("rows").ok_or("the class defined above")?;

    let first = book(&cache, &library, rows, 1).await?;
    tracing::info!(?first, queries = library.queries(), "first read of book 1");
    let again = book(&cache, &library, rows, 1).await?;
    tracing::info!(
        ?again,
        queries = library.queries(),
        "second read: a hit, no query"
    );
    let other = book(&cache, &library, rows, 2).await?;
    tracing::info!(?other, queries = library.queries(), "book 2 is cached too");

    // A second view of book 1, tagged like the row it comes from.
    let label_key = "book:1:label";
    let label: Option<String> = cache
        .get_or_load(label_key, Options::new(rows).tag(book_tag(1)), {
            let load = library.load(1);
            || async move {
                let book = load.await?;
                Ok::<_, sqlx::Error>(book.map(|b| format!("{} ({} copies)", b.title, b.copies)))
            }
        })
        .await?;
    tracing::info!(?label, queries = library.queries(), "book 1's label");

    // A loan: the write goes to the database, then every cached view of the
    // book is dropped (on every instance, with Redis).
    sqlx::query("UPDATE books SET copies = copies - 1 WHERE id = ?")
        .bind(1)
        .execute(&library.db)
        .await?;
    cache.invalidate_tag(&book_tag(1)).await?;
    tracing::info!(
        row = ?cache.get::<Book>("book:1", rows).await,
        label = ?cache.get::<String>(label_key, rows).await,
        "book 1 updated and its tag invalidated: both views are gone"
    );

    let reloaded = book(&cache, &library, rows, 1).await?;
    tracing::info!(
        ?reloaded,
        queries = library.queries(),
        "book 1 reloaded with the new count"
    );
    let other = book(&cache, &library, rows, 2).await?;
    tracing::info!(
        ?other,
        queries = library.queries(),
        "book 2 was not invalidated: still a hit"
    );
    let missing = book(&cache, &library, rows, 99).await?;
    let missing_again = book(&cache, &library, rows, 99).await?;
    tracing::info!(
        ?missing,
        ?missing_again,
        queries = library.queries(),
        "a missing row is cached as \"not found\" too"
    );

    if let Some(stats) = cache.stats().classes.iter().find(|c| c.class == "rows") {
        tracing::info!(
            l1_hits = stats.l1.hits,
            l1_misses = stats.l1.misses,
            l2_hits = stats.l2.hits,
            loads = stats.loads,
            hit_ratio = format!("{:.2}", stats.hit_ratio),
            "stats of the rows class"
        );
    }
    Ok(())
}
