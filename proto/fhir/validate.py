#!/usr/bin/env python3
"""Validate FHIR Bundles (JSON files) with an implementation posync did not write: the
`fhir.resources` models (R4B subpackage; pin in .ci/run). Every entry's resource is parsed
as its own resource class and the Bundle as a whole: required elements, cardinalities,
choice types ([x]), data type formats (dates, decimals, ids, uris) and unknown elements.

Usage: validate.py BUNDLE.json... ; exit 0 when every file is valid, 1 otherwise, 2 when the
validator is not installed. Prints one line per file: `valid FILE: N resources (Type=n ...)`
or `invalid FILE: ...` with the validator's messages.
"""
import collections
import json
import sys

try:
    from fhir.resources.R4B import construct_fhir_element
except ImportError:
    print("fhir.resources is not installed: python3 -m pip install 'fhir.resources==7.1.0'", file=sys.stderr)
    sys.exit(2)


def validate(path):
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    errors = []
    kinds = collections.Counter()
    for i, entry in enumerate(data.get("entry", [])):
        resource = entry.get("resource", {})
        kind = resource.get("resourceType", "?")
        kinds[kind] += 1
        try:
            construct_fhir_element(kind, resource)
        except Exception as e:  # the validator's own error, reported as is
            errors.append(f"entry {i} ({kind}): {e}")
    try:
        construct_fhir_element("Bundle", data)
    except Exception as e:
        errors.append(f"Bundle: {e}")
    return errors, kinds


def main(paths):
    ok = True
    for path in paths:
        errors, kinds = validate(path)
        if errors:
            ok = False
            print(f"invalid {path}:")
            for e in errors:
                print("  " + e.replace("\n", "\n  "))
        else:
            summary = " ".join(f"{k}={n}" for k, n in sorted(kinds.items()))
            print(f"valid {path}: {sum(kinds.values())} resources ({summary})")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
