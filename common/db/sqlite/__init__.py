"""SQLite with a cross-process write turn (`common.db.sqlite.base`); settings' ENGINE for SQLite."""
