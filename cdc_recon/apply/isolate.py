"""Row by row in one statement per table: the rows the target rejects, isolated.

Python refuses what it can see is wrong before any SQL (`cdc_recon.fit`, the mapper);
what only the target can judge (a CHECK or foreign key, a unique index other than the
key, a trigger, a type Python does not check) fails the batch's set-based write with an
error of the data (`pg.sqlstate`). The applier then rolls back to the batch's savepoint
and writes the batch once more this way, in the same transaction:

1. the ledger lines are staged (`_cdcr_ledger`, as on the careful way);
2. per table, the winners' COPY text goes into a stage whose columns are all `text`, so
   the COPY itself cannot fail on a value;
3. set-based: the stage keys' key_state rows are copied aside (`_cdcr_before`), then
   key_state advances under the position guard (P3) for every staged key, noting each
   advanced key's previous position in `_cdcr_adv`. This takes the keys' row locks
   first, as the set-based write does, so a concurrent writer still cannot slip in;
4. one call of a PL/pgSQL function, made for this table and batch, walks the rows of the
   advanced keys: each is cast to the target's types and written (or deleted) in its
   own subtransaction (BEGIN ... EXCEPTION). A row that raises an error of the data is
   rolled back alone and returned with its SQLSTATE and message; an error that means
   the database is unavailable is raised again, so the batch is retried whole (P4);
5. set-based: the rejected keys' key_state rows go back to their copy (or away, for a
   key that had none), and the table's ledger lines move in, classified against
   `_cdcr_adv` like the careful way's, except those of rejected keys (P2: a change id
   already there is skipped);
6. the applier quarantines every change of a rejected key (reason `rejected`, P5).

One pass over the rows with one statement each, whatever the number rejected: no
bisection, which re-wrote a batch O(rejected x log rows) times. A crash anywhere in it
loses nothing: it is inside the batch's transaction, which commits once with the offsets.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any

from cdc_recon.apply import statements as st
from cdc_recon.apply.encode import Encoded, encode_ledger_stage
from cdc_recon.apply.mapping import MappedChange
from cdc_recon.apply.statements import TableStatements, ledger_move
from cdc_recon.batch import ApplyResult, Failure, FailureReason
from cdc_recon.pg.sql import quote_ident
from cdc_recon.pg.sqlstate import plpgsql_unavailable_test

COPY_CHUNK = st.COPY_CHUNK
# What to do about a rejection, where the SQLSTATE says it plainly.
HINTS = {
    "23502": "if the source no longer sends this column (dropped), drop its NOT NULL in "
    "the target or give it a default, then retry",
}
ADVANCED_DDL = (
    "CREATE TEMP TABLE IF NOT EXISTS _cdcr_adv (key_text text, previous_position bigint[]) "
    "ON COMMIT DELETE ROWS"
)
_EXTRA = ("_key", "_pos", "_op", "_uset", "_gap", "_first")


def write_rows(
    cur: Any, changes: list[MappedChange], encoded: Encoded, result: ApplyResult
) -> dict[tuple[str, str], str]:
    """Steps 1-5 on `cur`, inside the batch's savepoint; what each step wrote is counted
    in `result`. Returns the rejected keys, (target table, key_text), with the reason."""
    copy = f"COPY _cdcr_ledger ({st.STAGE_LEDGER_COLUMNS}) FROM STDIN"
    cur.copy_expert(copy, io.StringIO(encode_ledger_stage(changes)), size=COPY_CHUNK)
    rejected: dict[tuple[str, str], str] = {}
    for stage in encoded.tables:
        table = stage.table
        name = table.shape.table
        cur.copy_expert(copy_text_stage(table), io.StringIO(stage.text), size=COPY_CHUNK)
        cur.execute(advance(table), {"table": name})
        cur.execute(row_function(table, stage.missing_sets))
        cur.execute(f"SELECT * FROM {function_name(table)}()")
        bad = {key: _reason(state, message) for key, state, message in cur.fetchall()}
        rejected.update(((name, key), detail) for key, detail in bad.items())
        if bad:
            cur.execute(restore(table), {"table": name, "rejected": list(bad)})
        cur.execute(move_ledger(table), {"table": name, "rejected": list(bad)})
        for op, outcome, count in cur.fetchall():
            result.add_outcome(name, op, outcome, count)
        cur.execute(clear(table))
    cur.execute("TRUNCATE _cdcr_ledger")
    accepted = sum((c.target, c.key_text) not in rejected for c in changes)
    result.duplicates += accepted - (result.applied + result.superseded)
    return rejected


def failures(
    changes: list[MappedChange], reason: Callable[[MappedChange], str | None]
) -> list[Failure]:
    """Step 6: a `rejected` failure for each change `reason` has one for."""
    found = []
    for change in changes:
        detail = reason(change)
        if detail is not None:
            source = change.decoded.event.table if change.decoded.event else None
            found.append(Failure(change.decoded.message, FailureReason.REJECTED, detail, source))
    return found


def _reason(state: str, message: str) -> str:
    hint = HINTS.get(state)
    return f"{message} (SQLSTATE {state}" + (f"; {hint})" if hint else ")")


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
    return f"TRUNCATE _cdcr_adv, _cdcr_before, {quote_ident(text_stage(table))}"


def function_name(table: TableStatements) -> str:
    return f"pg_temp.{quote_ident(table.stage + '_rows')}"


def before_ddl(schema: str) -> str:
    return (
        "CREATE TEMP TABLE IF NOT EXISTS _cdcr_before ON COMMIT DELETE ROWS AS "
        f"SELECT * FROM {quote_ident(schema)}.key_state WITH NO DATA"
    )


def advance(table: TableStatements) -> str:
    """Step 3: copy the staged keys' key_state aside, advance it, note what advanced."""
    schema = quote_ident(table.control_schema)
    stage = quote_ident(text_stage(table))
    rows = f"SELECT %(table)s, _key, _pos::bigint[], _op = 'd', _gap::boolean FROM {stage}"
    return (
        f"WITH before AS (INSERT INTO _cdcr_before SELECT ks.* FROM {schema}.key_state ks "
        f"JOIN {stage} s ON ks.target_table = %(table)s AND ks.key_text = s._key), "
        f"adv AS ({table.key_state_upsert(rows)} RETURNING ks.key_text, ks.previous_position) "
        "INSERT INTO _cdcr_adv SELECT * FROM adv"
    )


def restore(table: TableStatements) -> str:
    """Step 5: the rejected keys' (`%(rejected)s`) key_state as it was before the batch."""
    schema = quote_ident(table.control_schema)
    restored = ", ".join(
        f"{column} = b.{column}"
        for column in ("position", "deleted", "incomplete", "previous_position", "updated_at")
    )
    match = "ks.target_table = %(table)s AND ks.key_text = ANY(%(rejected)s::text[])"
    return (
        f"WITH back AS (UPDATE {schema}.key_state ks SET {restored} FROM _cdcr_before b "
        f"WHERE {match} AND b.key_text = ks.key_text RETURNING ks.key_text) "
        f"DELETE FROM {schema}.key_state ks WHERE {match} "
        "AND NOT EXISTS (SELECT 1 FROM _cdcr_before b WHERE b.key_text = ks.key_text)"
    )


def row_function(table: TableStatements, missing_sets: dict[frozenset[int], int]) -> str:
    """`CREATE OR REPLACE FUNCTION` for step 4, returning (key, sqlstate, message) rows.

    Built from the reflected shape and the mapping only (quoted identifiers, the
    catalog's type names); values stay in the stage and reach SQL as record fields.
    """
    shape = table.shape
    if not shape.types:
        raise ValueError(f"{shape.table}: the row-by-row write needs the column types")
    cast = {
        column: f"t.{quote_ident(column)}::{type_name}"
        for column, type_name in zip(shape.columns, shape.types, strict=True)
    }
    writes = [f"IF t._op = 'd' THEN {_delete(table, cast)};"]
    for missing, uset in missing_sets.items():
        present = table.present(missing)
        values = ", ".join(cast[column] for column in present)
        upsert = table.row_upsert(present, f"VALUES ({values})")
        writes.append(f"ELSIF t._uset = '{uset}' THEN {upsert};")
    writes.append("END IF;")
    body = f"""
DECLARE t record;
BEGIN
  FOR t IN SELECT s.* FROM {quote_ident(text_stage(table))} s JOIN _cdcr_adv a
      ON a.key_text = s._key LOOP
    BEGIN
      {" ".join(writes)}
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


def _delete(table: TableStatements, cast: dict[str, str]) -> str:
    match = " AND ".join(f"{quote_ident(c)} = {cast[c]}" for c in table.shape.key)
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
