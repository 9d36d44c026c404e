"""Row by row in one statement per table: the rows the target rejects, isolated.

Python refuses what it can see is wrong before any SQL (`cdc_recon.fit`, the mapper);
what only the target can judge (a CHECK or foreign key, a unique index other than the
key, a trigger, a type Python does not check) fails the batch's set-based write with an
error of the data (`db.sqlstate`). The applier then rolls back to the batch's savepoint
and writes the batch once more this way, in the same transaction:

1. the ledger lines are staged (`_cdcr_ledger`, as on the careful way);
2. per table, the winners' COPY text goes into a stage whose columns are all `text`, so
   the COPY itself cannot fail on a value;
3. one call of a PL/pgSQL function, made for this table and batch, walks that stage:
   for each row, in its own subtransaction (BEGIN ... EXCEPTION), it casts the row to
   the target's types, advances `key_state` under the position guard (P3) and, when the
   key advanced, writes or deletes the row, noting the key's previous position in
   `_cdcr_adv`. A row that raises an error of the data is rolled back alone (its
   key_state too) and returned with its SQLSTATE and message; an error that means the
   database is unavailable is raised again, so the batch is retried whole (P4);
4. the table's ledger lines move in, classified against `_cdcr_adv` like the careful
   way's, except those of rejected keys (P2: a change id already there is skipped);
5. the applier quarantines every change of a rejected key (reason `rejected`, P5).

The cost is one pass over the rows whatever the number rejected: no bisection, which
re-wrote a batch O(rejected x log rows) times. A crash anywhere in it loses nothing:
it is inside the batch's transaction, which commits once with the offsets.
"""

from __future__ import annotations

from cdc_recon.db.sql import quote_ident, quote_literal
from cdc_recon.db.sqlstate import plpgsql_unavailable_test
from cdc_recon.db.statements import TableStatements, ledger_move

ADVANCED_DDL = (
    "CREATE TEMP TABLE IF NOT EXISTS _cdcr_adv (key_text text, previous_position bigint[]) "
    "ON COMMIT DELETE ROWS"
)
_EXTRA = ("_key", "_pos", "_op", "_uset", "_gap", "_first")


def text_stage(table: TableStatements) -> str:
    return f"{table.stage}_text"


def text_stage_ddl(table: TableStatements) -> str:
    """The all-text twin of the table's stage: same columns, no type to fail a COPY."""
    columns = [quote_ident(c) for c in table.shape.columns] + list(_EXTRA)
    typed = ", ".join(f"{column} text" for column in columns)
    return (
        f"CREATE TEMP TABLE IF NOT EXISTS {quote_ident(text_stage(table))} ({typed}) "
        "ON COMMIT DELETE ROWS"
    )


def copy_text_stage(table: TableStatements) -> str:
    columns = ", ".join(table.stage_columns)
    return f"COPY {quote_ident(text_stage(table))} ({columns}) FROM STDIN"


def clear(table: TableStatements) -> str:
    return f"TRUNCATE _cdcr_adv, {quote_ident(text_stage(table))}"


def function_name(table: TableStatements) -> str:
    return f"pg_temp.{quote_ident(table.stage + '_rows')}"


def row_function(table: TableStatements, missing_sets: dict[frozenset[int], int]) -> str:
    """`CREATE OR REPLACE FUNCTION` for step 3, returning (key, sqlstate, message) rows.

    Built from the reflected shape and the mapping only (quoted identifiers, the
    catalog's type names); values stay in the stage and reach SQL as record fields.
    """
    shape = table.shape
    if not shape.types:
        raise ValueError(f"{shape.table}: the row-by-row write needs the column types")
    casts = ", ".join(
        f"t.{quote_ident(c)}::{type_name} AS {quote_ident(c)}"
        for c, type_name in zip(shape.columns, shape.types, strict=True)
    )
    casts += (
        ", t._key AS _key, t._pos::bigint[] AS _pos, t._op AS _op, t._uset::int AS _uset, "
        "t._gap::boolean AS _gap"
    )
    key_state = table.key_state_upsert(
        f"VALUES ({quote_literal(shape.table)}, r._key, r._pos, r._op = 'd', r._gap)"
    )
    writes = [f"IF r._op = 'd' THEN {_delete(table)};"]
    for missing, uset in missing_sets.items():
        present = table.present(missing)
        values = ", ".join(f"r.{quote_ident(c)}" for c in present)
        upsert = table.row_upsert(present, f"VALUES ({values})")
        writes.append(f"ELSIF r._uset = {uset} THEN {upsert};")
    writes.append("END IF;")
    body = f"""
DECLARE t record; r record; prev bigint[];
BEGIN
  FOR t IN SELECT * FROM {quote_ident(text_stage(table))} LOOP
    BEGIN
      SELECT {casts} INTO r;
      {key_state} RETURNING ks.previous_position INTO prev;
      IF FOUND THEN
        INSERT INTO _cdcr_adv VALUES (r._key, prev);
        {' '.join(writes)}
      END IF;
    EXCEPTION WHEN OTHERS THEN
      IF {plpgsql_unavailable_test()} THEN RAISE; END IF;
      rejected_key := t._key; rejected_state := SQLSTATE; rejected_message := SQLERRM;
      RETURN NEXT;
    END;
  END LOOP;
END"""
    tag = _dollar_tag(body)
    return (
        f"CREATE OR REPLACE FUNCTION {function_name(table)}() "
        "RETURNS TABLE (rejected_key text, rejected_state text, rejected_message text) "
        f"LANGUAGE plpgsql AS {tag}{body}{tag}"
    )


def move_ledger(table: TableStatements) -> str:
    """Step 4: the table's staged ledger lines, but rejected keys' (`%(rejected)s`)."""
    where = "l.target_table = %(table)s AND l.key_text <> ALL(%(rejected)s::text[])"
    return f"WITH {ledger_move(table.control_schema, '_cdcr_adv', where)}"


def _delete(table: TableStatements) -> str:
    match = " AND ".join(f"{quote_ident(c)} = r.{quote_ident(c)}" for c in table.shape.key)
    if table.mapping.delete_mode == "soft":
        flag = quote_ident(table.mapping.soft_delete_column)
        return f"UPDATE {table.table} SET {flag} = true WHERE {match}"
    return f"DELETE FROM {table.table} WHERE {match}"


def _dollar_tag(body: str) -> str:
    """A dollar-quote delimiter that the body (quoted names included) does not hold."""
    tag, n = "$cdcr$", 0
    while tag in body:
        n += 1
        tag = f"$cdcr{n}$"
    return tag
