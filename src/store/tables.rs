//! The store's own table: facts about the file itself. Domains declare their tables next to
//! their code (`auth::tables`, `incident::tables`, …); the store knows none of them.

use super::Table;

/// Schema version, sequence counters and other small facts about the file itself.
pub const META: Table<String, u64> = Table::new("meta_v1");
