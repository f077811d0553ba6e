//! The state file's schema in one list: every domain declares its tables next to its code
//! (`auth::tables`, `delivery::tables`, …) and the store knows none of them, so this module is
//! where they meet — for the check that no two domains claim one table name and that a backup
//! carries every table.

use crate::store::tables::META;

/// The name of every table in the state file.
pub fn table_names() -> Vec<&'static str> {
    [
        &[META.name][..],
        crate::auth::tables::NAMES,
        crate::delivery::tables::NAMES,
        crate::integration::tables::NAMES,
        crate::incident::tables::NAMES,
        crate::webhook::tables::NAMES,
        crate::bot_webhook::tables::NAMES,
        crate::homepage::TABLE_NAMES,
        crate::schedule::tables::NAMES,
    ]
    .concat()
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;
    use crate::store::{Store, Table};

    #[test]
    fn table_names_are_unique() {
        let names = table_names();
        let mut seen = HashSet::new();
        for name in &names {
            assert!(seen.insert(*name), "table {name} is declared twice");
        }
    }

    #[test]
    fn backup_copies_every_table() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("state.redb")).unwrap();
        let names = table_names();
        let written = names.clone();
        store
            .write_blocking(move |w| {
                for name in written {
                    w.put(
                        &Table::<String, String>::new(name),
                        "schema-check",
                        &name.to_string(),
                    )?;
                }
                Ok(())
            })
            .unwrap();
        let out = dir.path().join("backup.redb");
        store.backup_to(&out).unwrap();
        store.close();

        let copy = Store::open(&out).unwrap();
        for name in names {
            let row = copy
                .read(|r| r.get(&Table::<String, String>::new(name), "schema-check"))
                .unwrap();
            assert_eq!(row.as_deref(), Some(name), "backup lost table {name}");
        }
        copy.close();
    }
}
