"""Validate OpenLineage RunEvents exported by Vigil (one JSON object per line).

Each event is checked twice:
- against the OpenLineage 2-0-2 JSON Schema and, for every standard facet, against that
  facet's own schema (vendored in openlineage-spec/), with date-time/uri/uuid formats
  asserted;
- by rebuilding it with openlineage-python's event model (whose validators parse the run
  id as a UUID and the event time as ISO 8601), and its Kafka dataset naming.

Usage: openlineage_check.py EVENTS.jsonl BOOTSTRAP_HOST:PORT
Prints one JSON summary line; exits non-zero on the first invalid event.
"""
import json
import pathlib
import sys

import jsonschema
from referencing import Registry, Resource
from openlineage.client.event_v2 import InputDataset, Job, OutputDataset, Run, RunEvent, RunState
from openlineage.client.naming.dataset import Kafka

SPEC_DIR = pathlib.Path(__file__).parent / "openlineage-spec"
BASE = "https://openlineage.io/spec/2-0-2/OpenLineage.json"


def registry():
    resources = []
    for path in SPEC_DIR.glob("*.json"):
        doc = json.loads(path.read_text())
        resources.append((doc["$id"], Resource.from_contents(doc)))
    return Registry().with_resources(resources)


def validator(reg, ref):
    cls = jsonschema.Draft202012Validator
    return cls({"$ref": ref}, registry=reg, format_checker=cls.FORMAT_CHECKER)


def facets_of(ev):
    """(where, facet) for every facet of an event."""
    yield from (("run." + k, v) for k, v in ev["run"].get("facets", {}).items())
    yield from (("job." + k, v) for k, v in ev["job"].get("facets", {}).items())
    for side in ("inputs", "outputs"):
        for d in ev.get(side, []):
            for group in ("facets", "inputFacets", "outputFacets"):
                yield from ((f"{side}.{d['name']}.{k}", v) for k, v in d.get(group, {}).items())


def main():
    path, bootstrap = sys.argv[1], sys.argv[2]
    host, port = bootstrap.rsplit(":", 1)
    kafka_ns = Kafka(bootstrap_server_host=host, port=port, topic="x").get_namespace()
    reg = registry()
    run_event = validator(reg, BASE + "#/$defs/RunEvent")
    facet_validators = {}
    counts = {}
    runs = {}
    checked_facets = 0
    lines = [l for l in pathlib.Path(path).read_text().splitlines() if l.strip()]
    for n, line in enumerate(lines, 1):
        ev = json.loads(line)
        errors = sorted(run_event.iter_errors(ev), key=str)
        if errors:
            sys.exit(f"event {n} ({ev.get('eventType')}) is not a valid RunEvent: {errors[0].message} at {list(errors[0].absolute_path)}")
        for where, facet in facets_of(ev):
            url = facet["_schemaURL"]
            if not url.startswith("https://openlineage.io/spec/facets/"):
                continue  # a custom facet: the RunEvent schema already checked its base
            v = facet_validators.setdefault(url, validator(reg, url))
            errors = sorted(v.iter_errors(facet), key=str)
            if errors:
                sys.exit(f"event {n}: facet {where} does not match {url}: {errors[0].message}")
            checked_facets += 1
        # The client's own model and validators.
        RunEvent(
            eventType=RunState(ev["eventType"]),
            eventTime=ev["eventTime"],
            run=Run(runId=ev["run"]["runId"]),
            job=Job(namespace=ev["job"]["namespace"], name=ev["job"]["name"]),
            producer=ev["producer"],
            inputs=[InputDataset(namespace=d["namespace"], name=d["name"]) for d in ev.get("inputs", [])],
            outputs=[OutputDataset(namespace=d["namespace"], name=d["name"]) for d in ev.get("outputs", [])],
        )
        for d in ev.get("inputs", []) + ev.get("outputs", []):
            if d["namespace"] != kafka_ns:
                sys.exit(f"event {n}: dataset {d['name']} has namespace {d['namespace']}, the Kafka naming convention says {kafka_ns}")
        counts[ev["eventType"]] = counts.get(ev["eventType"], 0) + 1
        runs.setdefault(ev["run"]["runId"], []).append(ev["eventType"])
    print(json.dumps({"ok": True, "events": len(lines), "facets": checked_facets, "types": counts, "runs": runs}))


if __name__ == "__main__":
    main()
