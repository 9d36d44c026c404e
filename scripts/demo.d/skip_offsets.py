"""The demo's fault: move the group's stored offsets past N unread messages per partition.

This is what a consumer does when it commits its offsets before its writes succeed and
then dies: those messages are never applied. cdc_recon resumes from the offsets stored
in the target, so moving them there is enough.

Usage: python skip_offsets.py CONFIG N
"""

from __future__ import annotations

import sys

import psycopg2
from confluent_kafka import Consumer, TopicPartition

from cdc_recon.config import load_settings


def main() -> None:
    settings = load_settings(sys.argv[1])
    skip = int(sys.argv[2])
    consumer = Consumer({"bootstrap.servers": settings.kafka_bootstrap, "group.id": "demo-peek"})
    schema = settings.control_schema
    skipped = 0
    with psycopg2.connect(settings.target_url.get_secret_value()) as conn, conn.cursor() as cur:
        cur.execute(
            f'SELECT topic, kafka_partition, next_offset FROM "{schema}".offsets '
            "WHERE group_id = %s",
            (settings.group_id,),
        )
        for topic, partition, stored in cur.fetchall():
            _, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), 10)
            moved = min(stored + skip, high)
            skipped += moved - stored
            cur.execute(
                f'UPDATE "{schema}".offsets SET next_offset = %s '
                "WHERE group_id = %s AND topic = %s AND kafka_partition = %s",
                (moved, settings.group_id, topic, partition),
            )
    consumer.close()
    print(f"moved the stored offsets past {skipped} unread messages")


if __name__ == "__main__":
    main()
