"""Produces JSON lines from stdin to a topic with confluent-kafka (a client calve did not
write), so tests do not only see data written by the same librdkafka build calve reads with.
An optional third argument is the producer's compression.type (none, gzip, snappy, lz4, zstd)."""
import sys

from confluent_kafka import Producer


def main():
    brokers, topic = sys.argv[1], sys.argv[2]
    compression = sys.argv[3] if len(sys.argv) > 3 else "none"
    p = Producer(
        {
            "bootstrap.servers": brokers,
            "enable.idempotence": True,
            "linger.ms": 5,
            "compression.type": compression,
        }
    )
    n = 0
    for line in sys.stdin:
        line = line.rstrip("\n")
        key, _, value = line.partition("\t")
        p.produce(topic, key=key.encode(), value=value.encode())
        n += 1
        if n % 1000 == 0:
            p.poll(0)
    remaining = p.flush(60)
    if remaining:
        raise SystemExit(f"{remaining} messages not delivered")
    print(n)


if __name__ == "__main__":
    main()
