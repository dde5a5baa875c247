"""Evaluate decision rules with the real Open Policy Agent engine.

Reads one JSON document on stdin:
  {"modules": [[name, text], ...], "data": [object, ...],
   "cases": [{"decision": "data.pkg.rule", "input": {...}}, ...]}
and writes one JSON array on stdout, one entry per case:
  {"value": V} | {"undefined": true} | {"error": "code: message"}

Used by src/tests/opa_conformance.rs; OPA comes from scripts/fetch-opa.sh.
"""

import json
import sys

from opa_bindings.engine import OpaEngine, OpaError, OpaUndefinedError


def main():
    req = json.load(sys.stdin)
    engine = OpaEngine()
    for name, text in req["modules"]:
        engine.add_policy(name, text)
    for doc in req["data"]:
        engine.add_data(doc)
    out = []
    for case in req["cases"]:
        path = case["decision"].removeprefix("data.")
        try:
            out.append({"value": engine.eval_document(path, case["input"])})
        except OpaUndefinedError:
            out.append({"undefined": True})
        except OpaError as e:
            out.append({"error": f"{e.code}: {e.message}"})
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
