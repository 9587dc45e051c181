//! How values become bytes for Redis, and the envelope around them.
//!
//! Every value in L2 starts with a header: a magic byte, the envelope
//! version, the codec's id and the cache's format version. A value written by
//! another codec or another format version is a miss, never garbage: bump
//! [`format_version`](crate::TieredCacheBuilder::format_version) when a cached
//! type changes shape.

use serde::Serialize;
use serde::de::DeserializeOwned;

/// Why a codec could not encode or decode a value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct CodecError(pub String);

/// Turns values into bytes and back, through serde.
///
/// The methods are generic, so a codec is chosen as a type parameter of the
/// cache ([`TieredCache<C>`](crate::TieredCache)), not as a trait object.
pub trait Codec: Send + Sync + 'static {
    /// An id stored with every value, so values of another codec are misses.
    const ID: u8;
    /// The codec's name, for logs and stats.
    const NAME: &'static str;

    /// Appends the encoding of `value` to `out`.
    fn encode<T: Serialize + ?Sized>(value: &T, out: &mut Vec<u8>) -> Result<(), CodecError>;

    /// Decodes a whole value from `bytes`.
    fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError>;
}

/// The default codec: postcard, a compact binary format (varints, no field
/// names). Not self-describing: a changed type needs a new format version.
#[derive(Debug, Clone, Copy, Default)]
pub struct Binary;

impl Codec for Binary {
    const ID: u8 = 1;
    const NAME: &'static str = "binary";

    fn encode<T: Serialize + ?Sized>(value: &T, out: &mut Vec<u8>) -> Result<(), CodecError> {
        let bytes = postcard::to_extend(value, std::mem::take(out))
            .map_err(|error| CodecError(error.to_string()))?;
        *out = bytes;
        Ok(())
    }

    fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
        match postcard::take_from_bytes(bytes) {
            Ok((value, [])) => Ok(value),
            Ok((_, rest)) => Err(CodecError(format!("{} trailing bytes", rest.len()))),
            Err(error) => Err(CodecError(error.to_string())),
        }
    }
}

/// JSON through serde_json: larger and slower than [`Binary`], readable with
/// `redis-cli`, and tolerant of added optional fields.
#[derive(Debug, Clone, Copy, Default)]
pub struct Json;

impl Codec for Json {
    const ID: u8 = 2;
    const NAME: &'static str = "json";

    fn encode<T: Serialize + ?Sized>(value: &T, out: &mut Vec<u8>) -> Result<(), CodecError> {
        serde_json::to_writer(out, value).map_err(|error| CodecError(error.to_string()))
    }

    fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
        serde_json::from_slice(bytes).map_err(|error| CodecError(error.to_string()))
    }
}

/// The first byte of a value.
const VALUE: u8 = 0xCA;
/// The first byte of a tombstone: what an invalidated key holds for a while,
/// so a load that started before the invalidation cannot write its old value
/// back.
const TOMBSTONE: u8 = 0xCB;
/// The first byte of a lease: what a missing key holds while a load runs,
/// so the load's value is written only if nothing replaced the lease (a
/// `set`, or an invalidation of any kind) in the meantime.
const LEASE: u8 = 0xCC;
/// The envelope's own version.
const ENVELOPE_VERSION: u8 = 1;
/// Header bytes before the payload.
pub(crate) const HEADER: usize = 38;

/// What the header says about a value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Meta {
    /// When the value was loaded (Unix ms).
    pub(crate) created_ms: u64,
    /// Until when the value is fresh (Unix ms).
    pub(crate) fresh_until_ms: u64,
    /// Until when the value may stand in for a failed load (Unix ms); the
    /// key's expiry in Redis.
    pub(crate) stale_until_ms: u64,
    /// How long the load took (ms), for XFetch.
    pub(crate) delta_ms: u32,
    /// The TTL class's index.
    pub(crate) class: u16,
    /// The loader found nothing: a cached "not found".
    pub(crate) negative: bool,
}

/// A decoded L2 value: a tombstone, or a header and its payload.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Stored<'a> {
    /// The key was invalidated; the bytes identify that invalidation.
    Tombstone(&'a [u8]),
    /// A load holds the key; the bytes identify that load.
    Lease(&'a [u8]),
    /// A value of this codec and format version, its tags and its payload.
    Value(Meta, Vec<String>, &'a [u8]),
    /// Another codec's or format version's value, or bytes that are not ours.
    Foreign,
}

/// Writes the header of a value and its tags (each at most `u16::MAX`
/// bytes, at most 255 of them: [`Options`](crate::Options) checks); the
/// payload follows.
pub(crate) fn header(codec: u8, format: u32, meta: &Meta, tags: &[String], out: &mut Vec<u8>) {
    out.push(VALUE);
    out.push(ENVELOPE_VERSION);
    out.push(codec);
    out.extend_from_slice(&format.to_le_bytes());
    out.push(u8::from(meta.negative));
    out.extend_from_slice(&meta.created_ms.to_le_bytes());
    out.extend_from_slice(&meta.fresh_until_ms.to_le_bytes());
    out.extend_from_slice(&meta.stale_until_ms.to_le_bytes());
    out.extend_from_slice(&meta.delta_ms.to_le_bytes());
    out.extend_from_slice(&meta.class.to_le_bytes());
    out.push(u8::try_from(tags.len()).unwrap_or(u8::MAX));
    for tag in tags.iter().take(usize::from(u8::MAX)) {
        let len = u16::try_from(tag.len()).unwrap_or(u16::MAX);
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&tag.as_bytes()[..usize::from(len)]);
    }
}

/// A new tombstone, unique to one invalidation.
pub(crate) fn tombstone() -> Vec<u8> {
    marker(TOMBSTONE)
}

/// A new lease, unique to one load.
pub(crate) fn lease() -> Vec<u8> {
    marker(LEASE)
}

fn marker(kind: u8) -> Vec<u8> {
    let mut bytes = vec![kind, ENVELOPE_VERSION];
    bytes.extend_from_slice(&crate::lock::random_u64().to_le_bytes());
    bytes
}

/// Reads what `bytes` hold, for this codec and format version.
pub(crate) fn parse(codec: u8, format: u32, bytes: &[u8]) -> Stored<'_> {
    match bytes {
        [TOMBSTONE, ENVELOPE_VERSION, ..] => Stored::Tombstone(bytes),
        [LEASE, ENVELOPE_VERSION, ..] => Stored::Lease(bytes),
        [VALUE, ENVELOPE_VERSION, id, rest @ ..] if *id == codec && bytes.len() >= HEADER => {
            let u64_at = |at: usize| {
                let mut word = [0_u8; 8];
                word.copy_from_slice(&rest[at..at + 8]);
                u64::from_le_bytes(word)
            };
            let mut version = [0_u8; 4];
            version.copy_from_slice(&rest[..4]);
            if u32::from_le_bytes(version) != format || rest[4] > 1 {
                return Stored::Foreign;
            }
            let mut delta = [0_u8; 4];
            delta.copy_from_slice(&rest[29..33]);
            let meta = Meta {
                negative: rest[4] == 1,
                created_ms: u64_at(5),
                fresh_until_ms: u64_at(13),
                stale_until_ms: u64_at(21),
                delta_ms: u32::from_le_bytes(delta),
                class: u16::from_le_bytes([rest[33], rest[34]]),
            };
            match tags(&bytes[HEADER..]) {
                Some((tags, payload)) => Stored::Value(meta, tags, payload),
                None => Stored::Foreign,
            }
        }
        _ => Stored::Foreign,
    }
}

/// Reads the tags after the header; `None` if they are cut short.
fn tags(bytes: &[u8]) -> Option<(Vec<String>, &[u8])> {
    let (&count, mut rest) = bytes.split_first()?;
    let mut tags = Vec::with_capacity(usize::from(count));
    for _ in 0..count {
        let len = usize::from(u16::from_le_bytes([*rest.first()?, *rest.get(1)?]));
        let tag = rest.get(2..2 + len)?;
        tags.push(String::from_utf8(tag.to_vec()).ok()?);
        rest = &rest[2 + len..];
    }
    Some((tags, rest))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_header_reads_back_and_another_format_is_foreign() {
        let meta = Meta {
            created_ms: 1,
            fresh_until_ms: 2,
            stale_until_ms: 3,
            delta_ms: 4,
            class: 5,
            negative: true,
        };
        let mut bytes = Vec::new();
        header(Binary::ID, 7, &meta, &[], &mut bytes);
        assert_eq!(bytes.len(), HEADER + 1);
        bytes.extend_from_slice(b"payload");
        assert_eq!(
            parse(Binary::ID, 7, &bytes),
            Stored::Value(meta, vec![], b"payload")
        );
        let tags = vec!["user:42".to_owned(), String::new()];
        let mut tagged = Vec::new();
        header(Binary::ID, 7, &meta, &tags, &mut tagged);
        tagged.extend_from_slice(b"x");
        assert_eq!(
            parse(Binary::ID, 7, &tagged),
            Stored::Value(meta, tags, b"x")
        );
        assert_eq!(parse(Binary::ID, 7, &tagged[..HEADER + 4]), Stored::Foreign);
        assert_eq!(parse(Binary::ID, 8, &bytes), Stored::Foreign);
        assert_eq!(parse(Json::ID, 7, &bytes), Stored::Foreign);
        assert_eq!(parse(Binary::ID, 7, &bytes[..HEADER - 1]), Stored::Foreign);
        assert_eq!(parse(Binary::ID, 7, b"plain text"), Stored::Foreign);
        let tomb = tombstone();
        assert_eq!(parse(Binary::ID, 7, &tomb), Stored::Tombstone(&tomb));
        assert_ne!(tombstone(), tomb, "each invalidation has its own tombstone");
        let lease = lease();
        assert_eq!(parse(Binary::ID, 7, &lease), Stored::Lease(&lease));
    }

    #[test]
    fn a_truncated_binary_value_is_an_error() {
        let mut out = Vec::new();
        Binary::encode(&("a string", 42_u64), &mut out).expect("encodes");
        assert!(Binary::decode::<(String, u64)>(&out[..out.len() - 1]).is_err());
        let mut longer = out.clone();
        longer.push(0);
        assert!(Binary::decode::<(String, u64)>(&longer).is_err());
        assert_eq!(
            Binary::decode::<(String, u64)>(&out),
            Ok(("a string".to_owned(), 42))
        );
    }
}
