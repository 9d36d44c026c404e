"""Column values for the workload, drawn from a seeded `random.Random` (pure, no I/O).

The values are the ones that break CDC pipelines: names in many scripts with emoji,
quotes, backslashes and newlines; amounts at numeric(18,2)'s limits, zero and negative;
timestamps before 1970 and with microseconds; nested jsonb with unicode and numbers; and
a bio of 8-20 KB that lives in TOAST.

    >>> import random
    >>> rng = random.Random(7)
    >>> str(amount(rng)).count(".") == 1
    True
"""

from __future__ import annotations

import datetime as dt
import random
import uuid
from decimal import Decimal
from typing import Any

NAMES = (
    "Ada Lovelace",
    "José Álvarez",
    "Zoë Ærøskøbing",
    "王小明",
    "佐藤 花子",
    "김민준",
    "Ñúñez O'Brien",
    'Bob "the builder"',
    "back\\slash",
    "Ελένη Παπαδοπούλου",
    "Мария Иванова",
    "محمد علي",
    "Grüße 🎉",
    "Ω≈ç√∫",
    "tab\there",
    "line\nbreak",
)
WORDS = (
    "order", "refund", "ledger", "shipment", "invoice", "balance", "ünïcödé", "naïve",
    "café", "日本語", "中文字符", "한국어", "emoji🚀", "🔥", "👩‍💻", "✓", "€", "£",
    "quote'd", 'dq"', "back\\slash", "tab\t", "Ελληνικά", "русский", "עברית", "العربية",
    "ﬁ", "e\u0301", "ß", "İstanbul",
)  # fmt: skip
COUNTRIES = ("DE", "FR", "JP", "CN", "KR", "US", "BR", "EG", "GR", "IL", "IN", "NO")
CURRENCIES = ("EUR", "USD", "JPY", "GBP", "CNY", "KRW", "BRL", "CHF")
ACCOUNT_STATUS = ("open", "frozen", "closing", "closed")
ORDER_STATUS = ("new", "paid", "packed", "shipped", "delivered", "cancelled", "returned")
TX_KINDS = ("card", "transfer", "refund", "fee", "interest", "chargeback")
SKUS = ("SKU-0001", "SKU-ÄÖÜ", "SKU-日本-42", "SKU-🎁", "SKU-ZERO")

MAX_AMOUNT = Decimal("9999999999999999.99")  # numeric(18,2)
EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
FIRST_SECOND = -5 * 365 * 86400  # 1965
LAST_SECOND = 66 * 365 * 86400  # 2035
BIO_MIN, BIO_MAX = 8_000, 20_000  # characters


def text(rng: random.Random, words: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(words))


def name(rng: random.Random) -> str:
    return f"{rng.choice(NAMES)} {rng.randrange(10_000)}"


def maybe(rng: random.Random, value: Any, none_share: float = 0.1) -> Any:
    """`value`, or None in `none_share` of the draws: nullable columns get NULLs."""
    return None if rng.random() < none_share else value


def timestamp(rng: random.Random) -> dt.datetime:
    """A UTC instant between 1965 and 2035 with microseconds."""
    seconds = rng.randint(FIRST_SECOND, LAST_SECOND)
    return EPOCH + dt.timedelta(seconds=seconds, microseconds=rng.randrange(1_000_000))


def amount(rng: random.Random) -> Decimal:
    """Mostly everyday amounts, sometimes zero, negative or at numeric(18,2)'s limits."""
    draw = rng.random()
    if draw < 0.03:
        return Decimal("0.00")
    if draw < 0.06:
        return MAX_AMOUNT if rng.random() < 0.5 else -MAX_AMOUNT
    cents = rng.randint(-5_000_000, 50_000_000)
    return Decimal(cents).scaleb(-2)


def bio(rng: random.Random) -> str:
    """8-20 KB of varied text: always TOASTed (the column is STORAGE EXTERNAL)."""
    size = rng.randint(BIO_MIN, BIO_MAX)
    parts: list[str] = []
    length = 0
    while length < size:
        word = rng.choice(WORDS) if rng.random() < 0.5 else f"{rng.getrandbits(48):x}"
        parts.append(word)
        length += len(word) + 1
    return " ".join(parts)[:size]


def uuid4(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def attributes(rng: random.Random) -> dict[str, Any]:
    return {
        "tier": rng.choice(["gold", "silver", "bronze", "🏆 platinum"]),
        "tags": [rng.choice(WORDS) for _ in range(rng.randint(0, 4))],
        "score": round(rng.uniform(-1000, 1000), 3),
        "prefs": {"lang": rng.choice(["de", "ja", "zh", "ko", "ar"]), "mail": rng.random() < 0.5},
        "referrer": maybe(rng, name(rng), 0.5),
    }


def address(rng: random.Random) -> dict[str, Any]:
    return {
        "street": f"{text(rng, 2)} {rng.randint(1, 999)}",
        "city": rng.choice(["München", "東京", "서울", "São Paulo", "Αθήνα", "Zürich"]),
        "country": rng.choice(COUNTRIES),
        "lines": [text(rng, 2) for _ in range(rng.randint(0, 2))],
    }


def metadata(rng: random.Random) -> dict[str, Any]:
    return {
        "channel": rng.choice(["web", "app", "pos", "batch"]),
        "rate": rng.choice([1, 0.5, 1.0825, 1e-6, 123456.789]),
        "merchant": {"name": name(rng), "mcc": rng.randint(1000, 9999)},
    }
