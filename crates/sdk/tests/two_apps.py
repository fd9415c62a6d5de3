"""Two kader apps through the SDK's Python bindings, against a real server.

    python3 two_apps.py BINDINGS_DIR SERVER_URL CODE_A CODE_B WORK_DIR

Each app enrols with its code, captures offline, syncs with a progress listener; the second
pulls the first's visit into its encrypted replica; both change the same weight offline; after
syncing, both phones show the field under review. Prints "ok" when every step held; raises otherwise.
"""
import os
import socket
import sys
import threading
import time

bindings, url, code_a, code_b, work = sys.argv[1:6]
sys.path.insert(0, bindings)
import posync_sdk as sdk  # noqa: E402


class Vault(sdk.SecretStore):
    """What the app would back with Android Keystore or the iOS Keychain."""

    def __init__(self):
        self.kept = {}

    def get(self, key):
        return self.kept.get(key)

    def put(self, key, value):
        self.kept[key] = value
        return True


def file_bytes(path):
    data = b""
    for p in (path, path + "-wal"):
        if os.path.exists(p):
            with open(p, "rb") as f:
                data += f.read()
    return data


class Progress(sdk.ProgressListener):
    def __init__(self):
        self.rounds = []

    def on_progress(self, progress):
        self.rounds.append(progress)


def visit(weight_g, name="Nur Lestari"):
    return sdk.VisitInput(
        posyandu="pos-hegarsari-melati-1", date="2026-11-23", person_id=None, name=name, sex="F",
        birth_date="2025-06-01", weight_g=weight_g, length_mm=720, muac_mm=None, group=None,
        immunisations=["MR-1"], notes="", services={},
    )


vault = Vault()
a_path = os.path.join(work, "a.sqlite")
a = sdk.Device.open_with_secret_store(a_path, vault)
# The second app keeps its replica encrypted, with a key from the Keystore/Keychain.
b_path = os.path.join(work, "b.sqlite")
b_key = os.urandom(32)
b = sdk.Device.open_encrypted(b_path, b_key)
assert a.device_id() != b.device_id()
assert a.enrol(url, code_a, "HP Euis") == "kader-0001"
assert b.enrol(url, code_b, "HP Nining") == "kader-0002"

# The credential lives in the app's secret store, not in the replica file.
import json  # noqa: E402
refresh = json.loads(vault.kept["posync.credential"])["refresh_token"]
assert refresh and refresh.encode() not in file_bytes(a_path), "the refresh token is in the replica file"

# Offline capture: what the kader sees comes back with the record.
empty = a.storage_used()
recorded = a.record_visit(visit(8500))
assert a.storage_used() > empty > 0, (empty, a.storage_used())
assert recorded.weight_for_age_status is not None, recorded
assert recorded.weight_for_age_z is not None and -3 < recorded.weight_for_age_z < 3, recorded

# An impossible weight is a typed error, and nothing is recorded.
try:
    a.record_visit(visit(90000, name="Budi"))
    raise AssertionError("an impossible weight was recorded")
except sdk.SdkError.Invalid as e:
    assert "weight" in str(e).lower(), e
assert [v.name for v in a.visits()] == ["Nur Lestari"]

# The register: a child with the mother's NIK, listed for the register screen.
person_id = a.register_person(sdk.PersonInput(
    posyandu="pos-hegarsari-melati-1", name="Rina Marlina", sex="F", birth_date="2025-03-02",
    nik=None, mother_nik="3279016502950003", mother_name="Ai Rohaeti", address="Dusun Sukamaju",
    kia_book=True))
listed = a.people("pos-hegarsari-melati-1")
assert [(p.person_id, p.name, p.mother_name) for p in listed] == [(person_id, "Rina Marlina", "Ai Rohaeti")], listed
assert [p.person_id for p in a.people(None)] == [person_id]

# Another life-cycle group, with its own measurements as services.
mother = a.record_visit(sdk.VisitInput(
    posyandu="pos-hegarsari-melati-1", date="2026-11-23", person_id=None, name="Sri Wahyuni", sex="F",
    birth_date="1998-03-12", weight_g=58000, length_mm=None, muac_mm=245, group="ibu_hamil",
    immunisations=[], notes="", services={"bp_systolic": "110", "bp_diastolic": "70", "gestational_weeks": "24"},
))
assert mother.weight_for_age_z is None, mother
try:
    a.record_visit(sdk.VisitInput(
        posyandu="pos-hegarsari-melati-1", date="2026-11-23", person_id=None, name="Sri Wahyuni", sex="F",
        birth_date="1998-03-12", weight_g=58000, length_mm=None, muac_mm=245, group="ibu_hamil",
        immunisations=[], notes="", services={"bp_systolic": "high"},
    ))
    raise AssertionError("a blood pressure of 'high' was recorded")
except sdk.SdkError.Invalid as e:
    assert "bp_systolic" in str(e), e

# Sync with progress; the other phone pulls the visits.
heard = Progress()
done = a.sync_now(60, heard)
assert done.pushed_docs >= 1 and heard.rounds, (done, heard.rounds)
b.sync_now(60, None)
assert sorted(v.name for v in b.visits()) == ["Nur Lestari", "Sri Wahyuni"], b.visits()

# Both re-weigh the child offline, differently: a conflict for the bidan, on both phones.
a.edit_measurement(recorded.session_id, recorded.visit_id, "weight_g", 8600)
b.edit_field(recorded.session_id, recorded.visit_id, "weight_g", "8700")
# A field is edited as the form holds it, checked by its kind before anything is written.
try:
    b.edit_field(recorded.session_id, recorded.visit_id, "weight_g", "berat")
    raise AssertionError("a weight that is not a number was written")
except sdk.SdkError.Invalid as e:
    assert "weight_g" in str(e), e
for device in (a, b, a):
    device.sync_now(60, None)
for device in (a, b):
    row = [v for v in device.visits() if v.visit_id == recorded.visit_id][0]
    assert row.under_review == ["weight_g"], row
    assert row.weight_g in (8600, 8700), row
    [conflict] = device.conflicts()
    assert conflict.field == "weight_g" and conflict.record_id == recorded.visit_id, conflict
    assert sorted(conflict.values) == ["8600", "8700"], conflict

# A phone that is not enrolled is told so, as a typed error.
lone = sdk.Device.open(os.path.join(work, "lone.sqlite"))
try:
    lone.sync_now(5, None)
    raise AssertionError("an unenrolled phone synced")
except sdk.SdkError.NotEnrolled:
    pass
# Cancel: a sync stuck on a server that never answers stops at once when the app cancels it,
# and the phone syncs again afterwards.
silent = socket.socket()
silent.bind(("127.0.0.1", 0))
silent.listen(8)
a.set_server("http://127.0.0.1:%d" % silent.getsockname()[1])
a.record_visit(visit(8800, name="Siti Aminah"))
outcome = {}


def stuck_sync():
    try:
        a.sync_now(60, None)
        outcome["done"] = True
    except sdk.SdkError.Cancelled:
        outcome["cancelled"] = time.monotonic()


worker = threading.Thread(target=stuck_sync)
started = time.monotonic()
worker.start()
time.sleep(0.5)
a.cancel()
worker.join(10)
assert not worker.is_alive(), "the cancelled sync did not stop"
assert "cancelled" in outcome and outcome["cancelled"] - started < 5, outcome
a.set_server(url)
a.sync_now(60, None)
b.sync_now(60, None)
assert "Siti Aminah" in [v.name for v in b.visits()], "what was captured before the cancel reaches the server"
# Reopened with the same store, the phone still syncs; without it, it is not enrolled.
del a
a = sdk.Device.open_with_secret_store(a_path, vault)
a.sync_now(60, None)
bare = sdk.Device.open(a_path)
try:
    bare.sync_now(5, None)
    raise AssertionError("a copy of the file without the secret store signed in")
except sdk.SdkError.NotEnrolled:
    pass
assert refresh.encode() not in file_bytes(a_path)
# The encrypted replica holds the pulled visits, none readable in its file; a wrong key or
# no key is a typed error, and a key for the plain replica is refused.
b_bytes = file_bytes(b_path)
assert b"SQLite format 3" not in b_bytes and b"Nur Lestari" not in b_bytes and b"Siti Aminah" not in b_bytes
for wrong in (lambda: sdk.Device.open_encrypted(b_path, bytes(32)), lambda: sdk.Device.open(b_path)):
    try:
        wrong()
        raise AssertionError("the encrypted replica opened without its key")
    except sdk.SdkError.WrongKey as e:
        assert "key" in str(e), e
try:
    sdk.Device.open_encrypted(a_path, b_key)
    raise AssertionError("a key opened a plain replica")
except sdk.SdkError.Invalid:
    pass
del b
assert "Siti Aminah" in [v.name for v in sdk.Device.open_encrypted(b_path, b_key).visits()]
print("ok")
