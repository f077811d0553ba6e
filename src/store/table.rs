//! Typed tables over redb's byte tables: keys are strings or big-endian u64 (so both sort
//! naturally), values are JSON. Decoding errors surface as [`StoreError::Corrupt`], never panics.

use std::borrow::{Borrow, Cow};
use std::cell::RefCell;
use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::marker::PhantomData;
use std::ops::Bound;

use redb::{ReadableTable, TableDefinition};
use serde::{Serialize, de::DeserializeOwned};

use super::{StoreError, raw_def};

type RawReadTable = redb::ReadOnlyTable<&'static [u8], &'static [u8]>;
type RawWriteTable<'a> = redb::Table<'a, &'static [u8], &'static [u8]>;

/// A key form that can be written: `str` or `u64`.
pub trait KeyBytes {
    fn key_bytes(&self) -> Cow<'_, [u8]>;
}

impl KeyBytes for str {
    fn key_bytes(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(self.as_bytes())
    }
}
impl KeyBytes for String {
    fn key_bytes(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(self.as_bytes())
    }
}
impl KeyBytes for u64 {
    fn key_bytes(&self) -> Cow<'_, [u8]> {
        Cow::Owned(self.to_be_bytes().to_vec())
    }
}

/// An owned key type a table is declared with.
pub trait StoreKey: KeyBytes + Sized {
    fn from_key_bytes(bytes: &[u8]) -> Option<Self>;
}
impl StoreKey for String {
    fn from_key_bytes(bytes: &[u8]) -> Option<Self> {
        String::from_utf8(bytes.to_vec()).ok()
    }
}
impl StoreKey for u64 {
    fn from_key_bytes(bytes: &[u8]) -> Option<Self> {
        Some(u64::from_be_bytes(bytes.try_into().ok()?))
    }
}

/// A table of `V` rows keyed by `K`.
pub struct Table<K, V> {
    pub name: &'static str,
    _types: PhantomData<fn() -> (K, V)>,
}

impl<K: StoreKey, V: Serialize + DeserializeOwned> Table<K, V> {
    pub const fn new(name: &'static str) -> Self {
        Table {
            name,
            _types: PhantomData,
        }
    }

    fn def(&self) -> TableDefinition<'static, &'static [u8], &'static [u8]> {
        raw_def(self.name)
    }

    fn decode_value(&self, bytes: &[u8]) -> Result<V, StoreError> {
        serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt {
            table: self.name,
            reason: e.to_string(),
        })
    }

    fn decode_key(&self, bytes: &[u8]) -> Result<K, StoreError> {
        K::from_key_bytes(bytes).ok_or_else(|| StoreError::Corrupt {
            table: self.name,
            reason: "undecodable key".into(),
        })
    }
}

fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

fn collect<K: StoreKey, V: Serialize + DeserializeOwned>(
    table: &Table<K, V>,
    t: &impl ReadableTable<&'static [u8], &'static [u8]>,
    lower: Bound<&[u8]>,
    upper: Bound<&[u8]>,
    limit: usize,
    reverse: bool,
) -> Result<Vec<(K, V)>, StoreError> {
    let range = t.range::<&[u8]>((lower, upper))?;
    let mut out = Vec::new();
    let mut push = |entry: Result<_, redb::StorageError>| -> Result<bool, StoreError> {
        let (k, v): (redb::AccessGuard<&[u8]>, redb::AccessGuard<&[u8]>) = entry?;
        out.push((table.decode_key(k.value())?, table.decode_value(v.value())?));
        Ok(out.len() < limit)
    };
    if reverse {
        for entry in range.rev() {
            if !push(entry)? {
                break;
            }
        }
    } else {
        for entry in range {
            if !push(entry)? {
                break;
            }
        }
    }
    Ok(out)
}

/// Read-only queries shared by both transaction kinds.
macro_rules! read_methods {
    () => {
        pub fn get<K, V, Q>(&self, table: &Table<K, V>, key: &Q) -> Result<Option<V>, StoreError>
        where
            K: StoreKey + Borrow<Q>,
            V: Serialize + DeserializeOwned,
            Q: KeyBytes + ?Sized,
        {
            self.with_table(table, |t| {
                let Some(t) = t else { return Ok(None) };
                let found = t.get(key.key_bytes().as_ref())?;
                found.map(|v| table.decode_value(v.value())).transpose()
            })
        }

        /// Rows whose key starts with `prefix`, in key order, at most `limit`.
        pub fn scan_prefix<K, V>(
            &self,
            table: &Table<K, V>,
            prefix: &str,
            limit: usize,
        ) -> Result<Vec<(K, V)>, StoreError>
        where
            K: StoreKey,
            V: Serialize + DeserializeOwned,
        {
            self.with_table(table, |t| {
                let Some(t) = t else { return Ok(Vec::new()) };
                let end = prefix_end(prefix.as_bytes());
                let upper = end.as_deref().map_or(Bound::Unbounded, Bound::Excluded);
                collect(
                    table,
                    t,
                    Bound::Included(prefix.as_bytes()),
                    upper,
                    limit,
                    false,
                )
            })
        }

        /// Rows with keys after `after` (exclusive; from the start when `None`), ascending or,
        /// with `reverse`, descending from before `after`. At most `limit` rows.
        pub fn page<K, V>(
            &self,
            table: &Table<K, V>,
            after: Option<&K>,
            limit: usize,
            reverse: bool,
        ) -> Result<Vec<(K, V)>, StoreError>
        where
            K: StoreKey,
            V: Serialize + DeserializeOwned,
        {
            self.with_table(table, |t| {
                let Some(t) = t else { return Ok(Vec::new()) };
                let cursor = after.map(|k| k.key_bytes().into_owned());
                let (lower, upper) = match (&cursor, reverse) {
                    (None, _) => (Bound::Unbounded, Bound::Unbounded),
                    (Some(c), false) => (Bound::Excluded(c.as_slice()), Bound::Unbounded),
                    (Some(c), true) => (Bound::Unbounded, Bound::Excluded(c.as_slice())),
                };
                collect(table, t, lower, upper, limit, reverse)
            })
        }

        pub fn count<K, V>(&self, table: &Table<K, V>) -> Result<u64, StoreError>
        where
            K: StoreKey,
            V: Serialize + DeserializeOwned,
        {
            use redb::ReadableTableMetadata;
            self.with_table(table, |t| {
                Ok(match t {
                    Some(t) => t.len()?,
                    None => 0,
                })
            })
        }
    };
}

/// A consistent read snapshot.
pub struct ReadTx {
    tx: redb::ReadTransaction,
}

impl ReadTx {
    pub(super) fn new(tx: redb::ReadTransaction) -> Self {
        ReadTx { tx }
    }

    fn with_table<K: StoreKey, V: Serialize + DeserializeOwned, R>(
        &self,
        table: &Table<K, V>,
        f: impl FnOnce(Option<&RawReadTable>) -> Result<R, StoreError>,
    ) -> Result<R, StoreError> {
        match self.tx.open_table(table.def()) {
            Ok(t) => f(Some(&t)),
            // A table nobody has written to yet reads as empty.
            Err(redb::TableError::TableDoesNotExist(_)) => f(None),
            Err(e) => Err(e.into()),
        }
    }

    read_methods!();
}

/// The shared write transaction of one group commit. Each table is opened once per commit and
/// kept open for every write of the batch: opening and closing a redb table per write was a
/// third of the writer's work on the callback path.
pub struct WriteTx<'a> {
    tx: &'a redb::WriteTransaction,
    open: RefCell<HashMap<&'static str, RawWriteTable<'a>>>,
}

impl<'a> WriteTx<'a> {
    pub(super) fn new(tx: &'a redb::WriteTransaction) -> Self {
        WriteTx {
            tx,
            open: RefCell::new(HashMap::new()),
        }
    }

    /// Runs `f` on the open handle of `table` (opening, and so creating, it on first use).
    /// `f` never calls back into this transaction, so the borrow cannot be taken twice.
    fn with_table_mut<K: StoreKey, V: Serialize + DeserializeOwned, R>(
        &self,
        table: &Table<K, V>,
        f: impl FnOnce(&mut RawWriteTable<'a>) -> Result<R, StoreError>,
    ) -> Result<R, StoreError> {
        let mut open = self.open.borrow_mut();
        let handle = match open.entry(table.name) {
            Entry::Occupied(e) => e.into_mut(),
            Entry::Vacant(e) => e.insert(self.tx.open_table(table.def())?),
        };
        f(handle)
    }

    fn with_table<K: StoreKey, V: Serialize + DeserializeOwned, R>(
        &self,
        table: &Table<K, V>,
        f: impl FnOnce(Option<&RawWriteTable<'a>>) -> Result<R, StoreError>,
    ) -> Result<R, StoreError> {
        self.with_table_mut(table, |t| f(Some(t)))
    }

    read_methods!();

    pub fn put<K, V, Q>(&self, table: &Table<K, V>, key: &Q, value: &V) -> Result<(), StoreError>
    where
        K: StoreKey + Borrow<Q>,
        V: Serialize + DeserializeOwned,
        Q: KeyBytes + ?Sized,
    {
        let bytes = serde_json::to_vec(value).map_err(|e| StoreError::Encode {
            table: table.name,
            reason: e.to_string(),
        })?;
        self.with_table_mut(table, |t| {
            t.insert(key.key_bytes().as_ref(), bytes.as_slice())?;
            Ok(())
        })
    }

    /// Removes a row; says whether it was there.
    pub fn remove<K, V, Q>(&self, table: &Table<K, V>, key: &Q) -> Result<bool, StoreError>
    where
        K: StoreKey + Borrow<Q>,
        V: Serialize + DeserializeOwned,
        Q: KeyBytes + ?Sized,
    {
        self.with_table_mut(table, |t| Ok(t.remove(key.key_bytes().as_ref())?.is_some()))
    }

    /// The next value of a named monotonic counter (starting at 1), kept in the meta table.
    pub fn next_sequence(&self, name: &str) -> Result<u64, StoreError> {
        let key = format!("seq/{name}");
        let next = self.get(&super::tables::META, key.as_str())?.unwrap_or(0) + 1;
        self.put(&super::tables::META, key.as_str(), &next)?;
        Ok(next)
    }
}
