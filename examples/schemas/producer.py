"""Produce Avro payments with Confluent's client through a Vigil node's schema registry.

    pip install "confluent-kafka[avro,schemaregistry]==2.16.1"
    python examples/schemas/producer.py 127.0.0.1:9092 http://127.0.0.1:9899 [count]

The serializer registers examples/schemas/payment-v1.avsc under `payments-value` (or finds
it registered) and frames each record with its id, as any Confluent producer does.
"""
import pathlib
import sys
import time

from confluent_kafka import Producer
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext

bootstrap, registry = sys.argv[1], sys.argv[2]
count = int(sys.argv[3]) if len(sys.argv) > 3 else 1000
schema = (pathlib.Path(__file__).parent / "payment-v1.avsc").read_text()

serializer = AvroSerializer(SchemaRegistryClient({"url": registry}), schema)
producer = Producer({"bootstrap.servers": bootstrap})
ctx = SerializationContext("payments", MessageField.VALUE)
now = int(time.time() * 1000)
for i in range(count):
    payment = {"user": f"user-{i % 20:03}", "amount": round(5 + (i * 7.3) % 300, 2), "ts": now + i}
    producer.produce("payments", key=payment["user"].encode(), value=serializer(payment, ctx))
    producer.poll(0)
producer.flush(30)
print(f"produced {count} Avro payments to payments (subject payments-value)")
