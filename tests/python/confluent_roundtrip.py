"""Confluent's own Python client against a Vigil node's schema registry and `vigil broker`.

Registers an Avro schema through AvroSerializer, produces, evolves the schema compatibly and
produces more, checks that an incompatible registration gets HTTP 409, produces JSON Schema
records through JSONSerializer, then reads Vigil's Avro window results with AvroDeserializer
and compares every window with a model computed here.

Usage: confluent_roundtrip.py BOOTSTRAP REGISTRY_URL   (prints a JSON summary; exit 0 = pass)
"""
import json
import sys
import time

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.schema_registry.error import SchemaRegistryError
from confluent_kafka.schema_registry.json_schema import JSONSerializer
from confluent_kafka.serialization import MessageField, SerializationContext

BOOTSTRAP, REGISTRY = sys.argv[1], sys.argv[2]
PARTITIONS = 2
START_MS = 1_700_000_000_000
WINDOW_MS = 1_000
FAR_FUTURE_MS = 1_900_000_000_000

V1 = json.dumps({"type": "record", "name": "Payment", "namespace": "shop", "fields": [
    {"name": "user", "type": "string"},
    {"name": "amount", "type": "double"},
    {"name": "ts", "type": "long"}]})
# Compatible under BACKWARD: a new field with a default.
V2 = json.dumps({"type": "record", "name": "Payment", "namespace": "shop", "fields": [
    {"name": "user", "type": "string"},
    {"name": "amount", "type": "double"},
    {"name": "ts", "type": "long"},
    {"name": "country", "type": "string", "default": "DE"}]})
# Incompatible: amount changes type.
V3 = json.dumps({"type": "record", "name": "Payment", "namespace": "shop", "fields": [
    {"name": "user", "type": "string"},
    {"name": "amount", "type": "string"},
    {"name": "ts", "type": "long"}]})
CLICK = json.dumps({"$schema": "http://json-schema.org/draft-07/schema#", "title": "Click", "type": "object",
                    "properties": {"user": {"type": "string"}, "amount": {"type": "number"}, "ts": {"type": "integer"},
                                   "page": {"type": "string"}},
                    "required": ["user", "amount", "ts"]})


def fail(msg):
    print(json.dumps({"ok": False, "error": msg}))
    sys.exit(1)


client = SchemaRegistryClient({"url": REGISTRY})
producer = Producer({"bootstrap.servers": BOOTSTRAP, "linger.ms": 5})
expected = {}
produced = 0


def produce(topic, serializer, value, key):
    global produced
    ctx = SerializationContext(topic, MessageField.VALUE)
    producer.produce(topic, key=key.encode(), value=serializer(value, ctx))
    producer.poll(0)
    produced += 1


def model(rec):
    start = rec["ts"] // WINDOW_MS * WINDOW_MS
    k = f"w/{rec['user']}@{start}"
    c, s, lo, hi = expected.get(k, (0, 0.0, float("inf"), float("-inf")))
    expected[k] = (c + 1, s + rec["amount"], min(lo, rec["amount"]), max(hi, rec["amount"]))


ser_v1 = AvroSerializer(client, V1, conf={"auto.register.schemas": True})
for i in range(400):
    rec = {"user": f"u{i % 7}", "amount": float(i % 50) + 0.25, "ts": START_MS + i * 11}
    produce("payments", ser_v1, rec, rec["user"])
    model(rec)

ser_v2 = AvroSerializer(client, V2, conf={"auto.register.schemas": True})
for i in range(400, 800):
    rec = {"user": f"u{i % 7}", "amount": float(i % 50) + 0.5, "ts": START_MS + i * 11, "country": "FR"}
    produce("payments", ser_v2, rec, rec["user"])
    model(rec)

versions = client.get_versions("payments-value")
if versions != [1, 2]:
    fail(f"payments-value versions: {versions}")

try:
    client.register_schema("payments-value", Schema(V3, "AVRO"))
    fail("incompatible schema was registered")
except SchemaRegistryError as e:
    if e.http_status_code != 409:
        fail(f"incompatible registration: HTTP {e.http_status_code} {e.error_code} {e.error_message}")
    incompatible = {"http_status_code": e.http_status_code, "error_code": e.error_code}

ser_json = JSONSerializer(CLICK, client, conf={"auto.register.schemas": True})
for i in range(300):
    rec = {"user": f"u{i % 5}", "amount": float(i % 9), "ts": START_MS + 100_000 + i * 13, "page": "/home"}
    produce("clicks", ser_json, rec, rec["user"])
    model(rec)

# One far-future record per partition of each source closes every window above.
for topic, ser, rec in (("payments", ser_v2, {"user": "~s", "amount": 0.0, "ts": FAR_FUTURE_MS, "country": "DE"}),
                        ("clicks", ser_json, {"user": "~s", "amount": 0.0, "ts": FAR_FUTURE_MS})):
    for p in range(PARTITIONS):
        producer.produce(topic, key=b"~s", value=ser(rec, SerializationContext(topic, MessageField.VALUE)), partition=p)
        produced += 1
if producer.flush(30) != 0:
    fail("not every record was acknowledged")

# Vigil's Avro outputs, read with Confluent's deserializer.
deser = AvroDeserializer(client)
consumer = Consumer({"bootstrap.servers": BOOTSTRAP, "group.id": "confluent-roundtrip", "enable.auto.commit": False})
consumer.assign([TopicPartition("out", p, 0) for p in range(PARTITIONS)])
got = {}
deadline = time.time() + 120
while len(got) < len(expected) and time.time() < deadline:
    msg = consumer.poll(0.2)
    if msg is None or msg.error():
        continue
    w = deser(msg.value(), SerializationContext("out", MessageField.VALUE))
    got[msg.key().decode()] = w
consumer.close()

if len(got) != len(expected):
    fail(f"windows: got {len(got)}, expected {len(expected)}")
for k, (c, s, lo, hi) in expected.items():
    w = got.get(k)
    if w is None:
        fail(f"missing window {k}")
    m = w["metrics"]
    if w["aggregation"] != "w" or w["revision"] != 0 or w["records"] != c or m["count"] != c or abs(m["sum_amount"] - s) > 1e-6 or m["min_amount"] != lo or m["max_amount"] != hi:
        fail(f"window {k}: got {w}, expected count={c} sum={s} min={lo} max={hi}")
print(json.dumps({"ok": True, "produced": produced, "windows": len(got), "incompatible": incompatible}))
