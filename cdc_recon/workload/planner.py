"""What the workload does next: a seeded plan of small transactions (pure, no I/O).

Given the keys the tables hold when it starts, a `Planner` draws each transaction's
statements: a table by weight, an operation by the configured `Mix`, a key, the values.
The same seed on the same starting keys draws the same statements, run after run.

A transaction never touches one row twice: the pipeline's change identity is
(table, key, transaction), so two changes of one key in one transaction would be one
change to a CDC consumer. A drawn update or delete of a table without rows, or of a row
the transaction already touched, becomes an insert.

    >>> planner = Planner(StartState.empty(), Mix.parse("insert=1"), seed=1)
    >>> [(s.table, s.kind) for s in planner.transaction(2)]
    [('orders', 'insert'), ('customers', 'insert')]
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from cdc_recon.exceptions import UsageError
from cdc_recon.workload import values as v
from cdc_recon.workload.tables import BY_NAME, TABLES

Kind = Literal["insert", "update", "delete"]
KINDS: tuple[Kind, ...] = ("insert", "update", "delete")
Key = tuple[Any, ...]

TABLE_WEIGHTS = {
    "customers": 0.15,
    "accounts": 0.15,
    "orders": 0.25,
    "order_items": 0.25,
    "transactions": 0.20,
}
BIO_UPDATE_SHARE = 0.05  # of customer updates; the others leave the TOASTed bio unchanged


@dataclass(frozen=True)
class Mix:
    """Shares of inserts, updates and deletes; parsed from `insert=0.5,update=0.4,...`."""

    insert: float = 0.5
    update: float = 0.4
    delete: float = 0.1

    def __post_init__(self) -> None:
        shares = (self.insert, self.update, self.delete)
        if min(shares) < 0 or sum(shares) <= 0:
            raise UsageError(f"mix shares must be >= 0 and not all 0: {self}", value=str(self))

    @classmethod
    def parse(cls, spec: str) -> Mix:
        shares = dict.fromkeys(KINDS, 0.0)
        for part in filter(None, (p.strip() for p in spec.split(","))):
            name, sep, share = part.partition("=")
            if not sep or name.strip() not in shares:
                message = f"bad mix item {part!r}: use insert=N,update=N,delete=N"
                raise UsageError(message, value=spec)
            try:
                shares[name.strip()] = float(share)  # type: ignore[index]
            except ValueError as exc:
                raise UsageError(f"bad mix share {part!r}: not a number", value=spec) from exc
        return cls(**shares)

    def weights(self) -> tuple[float, float, float]:
        return (self.insert, self.update, self.delete)


@dataclass(frozen=True)
class Statement:
    """One row change: `key` names the row, `values` the columns written (none to delete)."""

    table: str
    kind: Kind
    key: Mapping[str, Any]
    values: Mapping[str, Any] = field(default_factory=dict)

    @property
    def key_tuple(self) -> Key:
        return tuple(self.key[column] for column in BY_NAME[self.table].key)


@dataclass(frozen=True)
class StartState:
    """The keys each table holds when the workload starts, in a deterministic order."""

    keys: Mapping[str, tuple[Key, ...]]

    @classmethod
    def empty(cls) -> StartState:
        return cls({table.name: () for table in TABLES})


class KeySet:
    """Keys with O(1) add, remove and a seeded random choice."""

    def __init__(self, keys: Iterable[Key] = ()) -> None:
        self._items: list[Key] = []
        self._index: dict[Key, int] = {}
        for key in keys:
            self.add(key)

    def __len__(self) -> int:
        return len(self._items)

    def add(self, key: Key) -> None:
        if key not in self._index:
            self._index[key] = len(self._items)
            self._items.append(key)

    def remove(self, key: Key) -> None:
        index = self._index.pop(key)
        last = self._items.pop()
        if index < len(self._items):
            self._items[index] = last
            self._index[last] = index

    def choice(self, rng: random.Random) -> Key:
        return self._items[rng.randrange(len(self._items))]


class Planner:
    """Draws the workload's transactions; see the module docstring."""

    def __init__(self, start: StartState, mix: Mix, seed: int) -> None:
        self.rng = random.Random(seed)
        self.mix = mix
        self.keys = {table.name: KeySet(start.keys.get(table.name, ())) for table in TABLES}
        self.next_id = {
            name: 1 + max((k[0] for k in self.keys_of(start, name)), default=0)
            for name in ("customers", "accounts", "orders")
        }
        self.next_line: dict[int, int] = {}
        for order_id, line_no in self.keys_of(start, "order_items"):
            self.next_line[order_id] = max(self.next_line.get(order_id, 1), line_no + 1)

    @staticmethod
    def keys_of(start: StartState, table: str) -> tuple[Key, ...]:
        return tuple(start.keys.get(table, ()))

    def transaction(self, size: int) -> list[Statement]:
        """`size` statements on distinct rows, to be committed together."""
        touched: set[tuple[str, Key]] = set()
        statements = []
        for _ in range(size):
            statement = self.statement(touched)
            touched.add((statement.table, statement.key_tuple))
            statements.append(statement)
        return statements

    def statement(self, touched: set[tuple[str, Key]]) -> Statement:
        names = list(TABLE_WEIGHTS)
        table = self.rng.choices(names, weights=[TABLE_WEIGHTS[n] for n in names])[0]
        kind: Kind = self.rng.choices(KINDS, weights=self.mix.weights())[0]
        rows = self.keys[table]
        if kind != "insert" and len(rows):
            key = rows.choice(self.rng)
            if (table, key) not in touched:
                return self._update(table, key) if kind == "update" else self._delete(table, key)
        return self._insert(table)

    def _named(self, table: str, key: Key) -> dict[str, Any]:
        return dict(zip(BY_NAME[table].key, key, strict=True))

    def _delete(self, table: str, key: Key) -> Statement:
        self.keys[table].remove(key)
        return Statement(table, "delete", self._named(table, key))

    def _update(self, table: str, key: Key) -> Statement:
        return Statement(table, "update", self._named(table, key), UPDATES[table](self))

    def _insert(self, table: str) -> Statement:
        key = self._new_key(table)
        self.keys[table].add(key)
        named = self._named(table, key)
        return Statement(table, "insert", named, {**named, **INSERTS[table](self)})

    def _new_key(self, table: str) -> Key:
        if table == "transactions":
            return (v.uuid4(self.rng),)
        if table == "order_items":
            orders = self.keys["orders"]
            order_id = orders.choice(self.rng)[0] if len(orders) else self.rng.randint(1, 100)
            line_no = self.next_line.get(order_id, 1)
            self.next_line[order_id] = line_no + 1
            return (order_id, line_no)
        key = self.next_id[table]
        self.next_id[table] = key + 1
        return (key,)

    def ref(self, table: str) -> int:
        """An id of `table` to refer to: an existing one when there is one."""
        rows = self.keys[table]
        return int(rows.choice(self.rng)[0]) if len(rows) else self.rng.randint(1, 1000)


# -- the values of each table's inserts and updates -------------------------------------


def _customer(p: Planner) -> dict[str, Any]:
    r = p.rng
    return {
        "name": v.name(r),
        "email": v.maybe(r, f"user{r.randrange(10**6)}@exämple.org"),
        "country": v.maybe(r, r.choice(v.COUNTRIES)),
        "bio": v.maybe(r, v.bio(r), 0.05),
        "attributes": v.maybe(r, v.attributes(r)),
        "created_at": v.timestamp(r),
        "updated_at": v.maybe(r, v.timestamp(r)),
    }


def _customer_update(p: Planner) -> dict[str, Any]:
    r = p.rng
    changed: dict[str, Any] = {"name": v.name(r), "updated_at": v.timestamp(r)}
    if r.random() < 0.5:
        changed["attributes"] = v.maybe(r, v.attributes(r))
    if r.random() < BIO_UPDATE_SHARE:
        changed["bio"] = v.bio(r)
    return changed


def _account(p: Planner) -> dict[str, Any]:
    r = p.rng
    return {
        "customer_id": p.ref("customers"),
        "iban": f"DE{r.randrange(10**20):020d}",
        "currency": r.choice(v.CURRENCIES),
        "balance": v.amount(r),
        "status": r.choice(v.ACCOUNT_STATUS),
        "opened_at": v.timestamp(r),
        "updated_at": v.maybe(r, v.timestamp(r)),
    }


def _account_update(p: Planner) -> dict[str, Any]:
    r = p.rng
    return {
        "balance": v.amount(r),
        "status": r.choice(v.ACCOUNT_STATUS),
        "updated_at": v.timestamp(r),
    }


def _order(p: Planner) -> dict[str, Any]:
    r = p.rng
    return {
        "customer_id": p.ref("customers"),
        "status": r.choice(v.ORDER_STATUS),
        "total": v.amount(r),
        "currency": r.choice(v.CURRENCIES),
        "placed_at": v.timestamp(r),
        "shipping": v.maybe(r, v.address(r)),
        "note": v.maybe(r, v.text(r, r.randint(1, 12)), 0.3),
    }


def _order_update(p: Planner) -> dict[str, Any]:
    r = p.rng
    return {"status": r.choice(v.ORDER_STATUS), "total": v.amount(r), "note": v.text(r, 3)}


def _item(p: Planner) -> dict[str, Any]:
    r = p.rng
    return {
        "sku": r.choice(v.SKUS),
        "description": v.maybe(r, v.text(r, r.randint(1, 6))),
        "quantity": r.randint(1, 50),
        "unit_price": v.amount(r),
    }


def _item_update(p: Planner) -> dict[str, Any]:
    return {"quantity": p.rng.randint(0, 99), "unit_price": v.amount(p.rng)}


def _transaction(p: Planner) -> dict[str, Any]:
    r = p.rng
    return {
        "account_id": p.ref("accounts"),
        "amount": v.amount(r),
        "kind": r.choice(v.TX_KINDS),
        "booked_at": v.timestamp(r),
        "memo": v.maybe(r, v.text(r, r.randint(1, 8))),
        "metadata": v.maybe(r, v.metadata(r)),
    }


def _transaction_update(p: Planner) -> dict[str, Any]:
    r = p.rng
    return {"memo": v.text(r, 4), "metadata": v.maybe(r, v.metadata(r))}


ValuesOf = Callable[[Planner], dict[str, Any]]
INSERTS: dict[str, ValuesOf] = {
    "customers": _customer,
    "accounts": _account,
    "orders": _order,
    "order_items": _item,
    "transactions": _transaction,
}
UPDATES: dict[str, ValuesOf] = {
    "customers": _customer_update,
    "accounts": _account_update,
    "orders": _order_update,
    "order_items": _item_update,
    "transactions": _transaction_update,
}
