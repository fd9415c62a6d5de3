#!/usr/bin/env python3
"""Generate fixtures/district-kota-banjar.json, the sample district hierarchy with users.

The fixture is a `posync-hierarchy/1` document: a strict unit tree (province > district >
subdistrict > puskesmas > village > posyandu) for a slice of Kota Banjar, Jawa Barat, plus the
users who work in it (300 kader, 6 puskesmas officers, one district admin and one district
reporter). The server's access-control tests use it, and it loads as a demo fixture.

Run from the repo root (it overwrites the fixture):

    python3 scripts/gen-district-fixture.py

Deterministic: stdlib only, no network, every random choice comes from random.Random(2026), so
the same script always writes byte-identical output. All rules are checked with asserts before
the file is written.

Place names: the kecamatan, desa and kelurahan are real Kota Banjar names. Kecamatan Banjar has
only 7 villages and Kecamatan Purwaharja 4, so to reach 12 the fixture also hangs Kelurahan
Hegarsari (really in Kecamatan Pataruman) under Kecamatan Banjar. Posyandu and person names are
invented.
"""

import itertools
import json
import os
import random
import re
import sys

FORMAT = "posync-hierarchy/1"
NOTE = (
    "Sample data for tests and demos: place names follow Kota Banjar, Jawa Barat (simplified to "
    "two kecamatan, with Kelurahan Hegarsari moved in from Kecamatan Pataruman), while posyandu "
    "and person names are invented."
)
OUT = os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "..", "fixtures", "district-kota-banjar.json"
)

KINDS = ["province", "district", "subdistrict", "puskesmas", "village", "posyandu"]
ID_RE = re.compile(r"^[a-z0-9_-]{1,64}$")

# (subdistrict slug, subdistrict name, puskesmas id, puskesmas name, [(village slug, prefix)])
SUBDISTRICTS = [
    (
        "banjar",
        "Kecamatan Banjar",
        "pkm-banjar-1",
        "Puskesmas Banjar 1",
        [
            ("hegarsari", "Kelurahan"),
            ("banjar", "Kelurahan"),
            ("mekarsari", "Kelurahan"),
            ("situbatu", "Kelurahan"),
            ("balokang", "Desa"),
            ("cibeureum", "Desa"),
            ("jajawar", "Desa"),
            ("neglasari", "Desa"),
        ],
    ),
    (
        "purwaharja",
        "Kecamatan Purwaharja",
        "pkm-purwaharja-1",
        "Puskesmas Purwaharja 1",
        [
            ("purwaharja", "Kelurahan"),
            ("karangpanimbal", "Kelurahan"),
            ("raharja", "Desa"),
            ("mekarharja", "Desa"),
        ],
    ),
]

FLOWERS = [
    "Melati", "Mawar", "Anggrek", "Kenanga", "Dahlia", "Flamboyan", "Cempaka", "Teratai",
    "Seruni", "Bougenville", "Asoka", "Nusa Indah", "Kamboja", "Sakura", "Tulip", "Lili",
    "Aster", "Kemuning", "Gardenia", "Matahari",
]

GIVEN_NAMES = [
    "Euis", "Siti", "Iis", "Eneng", "Neneng", "Yeni", "Yati", "Tati", "Cucu", "Imas",
    "Enok", "Lilis", "Nining", "Nia", "Rina", "Dewi", "Sri", "Ai", "Entin", "Popon",
    "Cicih", "Teti", "Wiwin", "Dedeh", "Elis", "Yayah", "Eti", "Oom", "Heni", "Iin",
    "Mimin", "Nenden", "Asih", "Kokom", "Titin", "Eulis", "Ratna", "Yuyun", "Tuti", "Wulan",
    "Santi", "Yanti",
]
FAMILY_NAMES = [
    "Nurhayati", "Rahmawati", "Kurniasih", "Sulastri", "Herawati", "Suryani", "Rohayati",
    "Mulyani", "Setiawati", "Maryani", "Komalasari", "Hartini", "Nurjanah", "Sumiati",
    "Fatimah", "Rosmiati", "Kartika", "Wulandari", "Handayani", "Permatasari", "Lestari",
    "Sukaesih", "Juariah", "Haryati", "Nuraeni", "Hasanah", "Solihah", "Rukmini", "Kusmiati",
    "Yuliani", "Sopiah", "Aisyah", "Nurlela", "Saadah", "Rostika", "Mardiah", "Marlina",
    "Pertiwi", "Rahayu", "Supriatin", "Sundari", "Apriani",
]

# (id, title, name, suffix, puskesmas id)
OFFICERS = [
    ("bidan-0001", "Bd.", "Siti Rahmawati", "A.Md.Keb", "pkm-banjar-1"),
    ("bidan-0002", "Bd.", "Neneng Komalasari", "S.Tr.Keb", "pkm-banjar-1"),
    ("bidan-0003", "Bd.", "Yuyun Yuningsih", "S.Tr.Keb", "pkm-purwaharja-1"),
    ("bidan-0004", "Bd.", "Dedeh Kurniasih", "A.Md.Keb", "pkm-purwaharja-1"),
    ("perawat-0001", "Ns.", "Asep Saepudin", "S.Kep", "pkm-banjar-1"),
    ("perawat-0002", "Ns.", "Rika Apriani", "S.Kep", "pkm-purwaharja-1"),
]
DISTRICT_STAFF = [
    ("dinkes-admin-01", "dr. Ridwan Hidayat, M.K.M.", "Ridwan Hidayat", "district_admin"),
    ("dinkes-laporan-01", "Nia Kurniawati, S.K.M.", "Nia Kurniawati", "district_reporter"),
]

N_POSYANDU = 40
N_KADER = 300
N_DUAL = 10
FIRST_KADER = "Euis Nurhayati"


def slug(text):
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def counts_summing_to(rng, n, lo, hi, total):
    """n ints in [lo, hi] summing to total, not all equal (rejection sampling, deterministic)."""
    while True:
        xs = [rng.randint(lo, hi) for _ in range(n)]
        if sum(xs) == total and len(set(xs)) > 1:
            return xs


def build(rng):
    units = [
        {"id": "jawa-barat", "kind": "province", "name": "Jawa Barat"},
        {"id": "kota-banjar", "kind": "district", "parent": "jawa-barat", "name": "Kota Banjar"},
    ]
    n_villages = sum(len(s[4]) for s in SUBDISTRICTS)
    per_village = counts_summing_to(rng, n_villages, 2, 5, N_POSYANDU)

    posyandu = []  # (id, village id) in listing order
    vi = 0
    for sub_slug, sub_name, pkm_id, pkm_name, villages in SUBDISTRICTS:
        kec_id = "kec-" + sub_slug
        units.append({"id": kec_id, "kind": "subdistrict", "parent": "kota-banjar", "name": sub_name})
        units.append({"id": pkm_id, "kind": "puskesmas", "parent": kec_id, "name": pkm_name})
        for v_slug, prefix in villages:
            v_id = ("kel-" if prefix == "Kelurahan" else "desa-") + v_slug
            v_name = "%s %s" % (prefix, v_slug.capitalize())
            units.append({"id": v_id, "kind": "village", "parent": pkm_id, "name": v_name})
            k = per_village[vi]
            vi += 1
            # Some villages number one flower per RW (Melati 1, Melati 2, ...); the rest give
            # each posyandu its own flower, numbered by RW. Hegarsari leads with Melati 1.
            if v_slug == "hegarsari" or rng.random() < 0.25:
                flower = "Melati" if v_slug == "hegarsari" else rng.choice(FLOWERS)
                names = [(flower, i + 1) for i in range(k)]
            else:
                rws = sorted(rng.sample(range(1, 10), k))
                names = list(zip(rng.sample(FLOWERS, k), rws))
            for flower, n in names:
                p_id = "pos-%s-%s-%d" % (v_slug, slug(flower), n)
                units.append(
                    {"id": p_id, "kind": "posyandu", "parent": v_id, "name": "Posyandu %s %d" % (flower, n)}
                )
                posyandu.append((p_id, v_id))

    # Kader: primary posyandu in listing order, 5-10 each; then N_DUAL of them also serve a
    # second posyandu of the same village, keeping every posyandu at 10 kader or fewer.
    per_pos = counts_summing_to(rng, len(posyandu), 5, 10, N_KADER)
    reserved = {FIRST_KADER} | {o[2] for o in OFFICERS} | {s[2] for s in DISTRICT_STAFF}
    pool = [
        "%s %s" % gf
        for gf in itertools.product(GIVEN_NAMES, FAMILY_NAMES)
        if "%s %s" % gf not in reserved
    ]
    names = [FIRST_KADER] + rng.sample(pool, N_KADER - 1)
    kaders = []
    i = 0
    for (p_id, _), c in zip(posyandu, per_pos):
        for _ in range(c):
            kaders.append({"id": "kader-%04d" % (i + 1), "name": names[i], "role": "kader", "units": [p_id]})
            i += 1

    village_of = dict(posyandu)
    load = {p: c for (p, _), c in zip(posyandu, per_pos)}
    order = list(range(N_KADER))
    rng.shuffle(order)
    dual = 0
    for idx in order:
        if dual == N_DUAL:
            break
        home = kaders[idx]["units"][0]
        options = [p for p, v in posyandu if v == village_of[home] and p != home and load[p] < 10]
        if not options:
            continue
        second = rng.choice(options)
        load[second] += 1
        # keep units in unit-listing order
        pos_index = {p: j for j, (p, _) in enumerate(posyandu)}
        kaders[idx]["units"] = sorted([home, second], key=pos_index.get)
        dual += 1

    users = list(kaders)
    for uid, title, name, suffix, pkm in OFFICERS:
        users.append(
            {"id": uid, "name": "%s %s, %s" % (title, name, suffix), "role": "puskesmas_officer", "units": [pkm]}
        )
    for uid, full, _, role in DISTRICT_STAFF:
        users.append({"id": uid, "name": full, "role": role, "units": ["kota-banjar"]})
    return units, users


def validate(units, users):
    by_id = {}
    for u in units:
        assert ID_RE.match(u["id"]), u["id"]
        assert u["id"] not in by_id, "duplicate unit id " + u["id"]
        assert u["kind"] in KINDS, u
        assert u["name"], u
        if u["kind"] == "province":
            assert "parent" not in u, u
        else:
            parent = by_id.get(u["parent"])
            assert parent is not None, "parent missing or listed after child: %r" % u
            assert KINDS.index(parent["kind"]) == KINDS.index(u["kind"]) - 1, u
        by_id[u["id"]] = u

    def of_kind(kind):
        return [u for u in units if u["kind"] == kind]

    assert [u["name"] for u in of_kind("province")] == ["Jawa Barat"]
    assert [u["name"] for u in of_kind("district")] == ["Kota Banjar"]
    assert [u["name"] for u in of_kind("subdistrict")] == ["Kecamatan Banjar", "Kecamatan Purwaharja"]
    pkms = of_kind("puskesmas")
    assert len(pkms) == 2 and len({p["parent"] for p in pkms}) == 2
    villages = of_kind("village")
    assert len(villages) == 12
    assert all(re.match(r"^(Kelurahan|Desa) [A-Z][a-z]+$", v["name"]) for v in villages)
    posy = of_kind("posyandu")
    assert len(posy) == N_POSYANDU
    flower_slugs = {slug(f) for f in FLOWERS}
    for p in posy:
        m = re.match(r"^pos-([a-z]+)-([a-z-]+)-(\d+)$", p["id"])
        assert m and m.group(2) in flower_slugs, p["id"]
        assert p["parent"].split("-", 1)[1] == m.group(1), p
        assert re.match(r"^Posyandu [A-Z][a-z]+( [A-Z][a-z]+)? \d+$", p["name"]), p
    per_village = [sum(1 for p in posy if p["parent"] == v["id"]) for v in villages]
    assert all(2 <= n <= 5 for n in per_village) and len(set(per_village)) > 1, per_village

    seen = set()
    for u in users:
        assert ID_RE.match(u["id"]), u["id"]
        assert u["id"] not in seen, "duplicate user id " + u["id"]
        seen.add(u["id"])
        assert u["units"] and all(x in by_id for x in u["units"]), u
        assert len(set(u["units"])) == len(u["units"]), u

    kaders = [u for u in users if u["role"] == "kader"]
    assert [k["id"] for k in kaders] == ["kader-%04d" % (i + 1) for i in range(N_KADER)]
    assert len({k["name"] for k in kaders}) == N_KADER, "duplicate kader name"
    dual = [k for k in kaders if len(k["units"]) == 2]
    assert len(dual) == N_DUAL and all(len(k["units"]) in (1, 2) for k in kaders)
    for k in kaders:
        assert all(by_id[x]["kind"] == "posyandu" for x in k["units"]), k
        assert len({by_id[x]["parent"] for x in k["units"]}) == 1, k
    for p in posy:
        n = sum(1 for k in kaders if p["id"] in k["units"])
        assert 5 <= n <= 10, (p["id"], n)

    officers = [u for u in users if u["role"] == "puskesmas_officer"]
    assert len(officers) == 6
    for pkm in pkms:
        staff = [o for o in officers if o["units"] == [pkm["id"]]]
        assert len(staff) == 3, pkm
    assert all(re.match(r"^(Bd|Ns)\. .+, \S+$", o["name"]) for o in officers)
    assert {o["name"][:3] for o in officers} == {"Bd.", "Ns."}
    for role in ("district_admin", "district_reporter"):
        rs = [u for u in users if u["role"] == role]
        assert len(rs) == 1 and rs[0]["units"] == ["kota-banjar"], role
    assert len(users) == N_KADER + 6 + 2


def render(doc):
    def line(obj):
        return json.dumps(obj, ensure_ascii=False, separators=(", ", ": "))

    out = ["{"]
    out.append('  "format": %s,' % line(doc["format"]))
    out.append('  "note": %s,' % line(doc["note"]))
    for key, last in (("units", False), ("users", True)):
        out.append('  "%s": [' % key)
        items = doc[key]
        for j, item in enumerate(items):
            out.append("    " + line(item) + ("," if j < len(items) - 1 else ""))
        out.append("  ]" + ("" if last else ","))
    out.append("}")
    text = "\n".join(out) + "\n"
    assert json.loads(text) == doc
    return text


def main():
    rng = random.Random(2026)
    units, users = build(rng)
    validate(units, users)
    doc = {"format": FORMAT, "note": NOTE, "units": units, "users": users}
    text = render(doc)
    with open(OUT, "w", encoding="utf-8", newline="\n") as f:
        f.write(text)
    kinds = {k: sum(1 for u in units if u["kind"] == k) for k in KINDS}
    roles = {}
    for u in users:
        roles[u["role"]] = roles.get(u["role"], 0) + 1
    print(
        "wrote %s: %s; users %d (%s; %d kader on two posyandu)"
        % (
            os.path.relpath(OUT),
            ", ".join("%s %d" % kv for kv in kinds.items()),
            len(users),
            ", ".join("%s %d" % kv for kv in roles.items()),
            sum(1 for u in users if u["role"] == "kader" and len(u["units"]) == 2),
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
