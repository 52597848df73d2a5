"""Full-text search on memory items, maintained by the database itself.

SQLite: an external-content FTS5 table (porter stemming) kept in step by triggers.
PostgreSQL: a generated `tsvector` column with a GIN index. Each half applies only on its own
database (`schema_editor.connection.vendor`); the model does not declare either, so the ORM never
writes them and selectors reach them with SQL.
"""

from django.db import migrations

SQLITE_FORWARD = [
    """CREATE VIRTUAL TABLE memory_item_fts USING fts5(
        content, content='mcp_services_memoryitem', content_rowid='id', tokenize='porter unicode61'
    )""",
    """CREATE TRIGGER memory_item_fts_insert AFTER INSERT ON mcp_services_memoryitem BEGIN
        INSERT INTO memory_item_fts(rowid, content) VALUES (new.id, new.content);
    END""",
    """CREATE TRIGGER memory_item_fts_delete AFTER DELETE ON mcp_services_memoryitem BEGIN
        INSERT INTO memory_item_fts(memory_item_fts, rowid, content) VALUES ('delete', old.id, old.content);
    END""",
    """CREATE TRIGGER memory_item_fts_update AFTER UPDATE OF content ON mcp_services_memoryitem BEGIN
        INSERT INTO memory_item_fts(memory_item_fts, rowid, content) VALUES ('delete', old.id, old.content);
        INSERT INTO memory_item_fts(rowid, content) VALUES (new.id, new.content);
    END""",
    "INSERT INTO memory_item_fts(memory_item_fts) VALUES ('rebuild')",
]
SQLITE_BACKWARD = [
    "DROP TRIGGER IF EXISTS memory_item_fts_update",
    "DROP TRIGGER IF EXISTS memory_item_fts_delete",
    "DROP TRIGGER IF EXISTS memory_item_fts_insert",
    "DROP TABLE IF EXISTS memory_item_fts",
]

POSTGRES_FORWARD = [
    """ALTER TABLE mcp_services_memoryitem ADD COLUMN search_vector tsvector
        GENERATED ALWAYS AS (to_tsvector('english', coalesce(content, ''))) STORED""",
    "CREATE INDEX memory_item_search ON mcp_services_memoryitem USING gin (search_vector)",
]
POSTGRES_BACKWARD = [
    "DROP INDEX IF EXISTS memory_item_search",
    "ALTER TABLE mcp_services_memoryitem DROP COLUMN IF EXISTS search_vector",
]

STATEMENTS = {
    "sqlite": (SQLITE_FORWARD, SQLITE_BACKWARD),
    "postgresql": (POSTGRES_FORWARD, POSTGRES_BACKWARD),
}


def _run(schema_editor, forward: bool) -> None:
    statements = STATEMENTS.get(schema_editor.connection.vendor)
    if statements is None:
        return
    for sql in statements[0] if forward else statements[1]:
        schema_editor.execute(sql)


def forwards(apps, schema_editor) -> None:
    _run(schema_editor, forward=True)


def backwards(apps, schema_editor) -> None:
    _run(schema_editor, forward=False)


class Migration(migrations.Migration):
    dependencies = [("mcp_services", "0001_initial")]

    operations = [migrations.RunPython(forwards, backwards, elidable=False)]
