#!/usr/bin/python3
"""Writes the seed inputs of the append fuzzer into fuzz/corpus/seed-*.

Run with Debian's python3 (python3-protobuf) from anywhere:
    fuzz/gen_seeds.py            # rewrites fuzz/corpus/seed-*
    fuzz/gen_seeds.py OUT_DIR    # writes them elsewhere
Output is deterministic; commit it together with changes to this file.

Wire-mode seeds (first byte 0) are one serialized AppendEventsRequest each:
every step with every outcome, every catalog code, late, future-dated,
far-past and duplicate events, limits, unknown fields and enum values.
Recipe-mode seeds (first byte 1) follow the byte layout in fuzz/recipe.h
and cover several batches over the stall window. Seeds from the fuzzer
itself (merged by `scripts/fuzz --merge`) have other names and are left
alone.
"""
import os
import re
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
NOW = 1780315200  # fuzz/recipe.h kNowUnixSeconds

STEPS = ["PORTAL_REDIRECT", "SIGN_IN", "CONSENT", "OAUTH_CALLBACK",
         "TOKEN_EXCHANGE", "TOKEN_REFRESH", "DISCONNECT"]
OUTCOMES = ["STARTED", "SUCCEEDED", "FAILED", "DENIED"]


def load_protos():
    out = tempfile.mkdtemp(prefix="authtrail-seeds-")
    subprocess.run(["protoc", "-I", os.path.join(REPO, "proto"),
                    "--python_out=" + out, "authtrail/v1/event.proto",
                    "authtrail/v1/ingest.proto"], check=True)
    sys.path.insert(0, out)
    from authtrail.v1 import event_pb2, ingest_pb2  # noqa: E402
    return event_pb2, ingest_pb2


def catalog_codes():
    """The error codes of storage/failure_catalog.cc, in catalog order."""
    with open(os.path.join(REPO, "storage", "failure_catalog.cc")) as f:
        text = f.read()
    codes = []
    for code in re.findall(r'\{"([a-z_]+)",\s*(?:kAny|v1::STEP_)', text):
        if code not in codes:
            codes.append(code)
    return codes


def varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


class Seeds:
    def __init__(self, event_pb2, ingest_pb2, out_dir):
        self.ev = event_pb2
        self.ing = ingest_pb2
        self.out_dir = out_dir
        self.count = 0

    def event(self, eid, step, outcome, t=0, code="", conn="c-1",
              session="s-1", patient="p-1", http=0, request="", nanos=0):
        e = self.ev.AuthEvent()
        e.event_id = eid
        e.patient_id = patient
        e.connection_id = conn
        e.session_id = session
        e.source.id = "src-northwind"
        e.source.name = "Northwind Health – MyChart & Co"
        e.source.kind = self.ev.SOURCE_KIND_EHR
        if isinstance(step, str):
            step = self.ev.Step.Value("STEP_" + step)
        if isinstance(outcome, str):
            outcome = self.ev.Outcome.Value("OUTCOME_" + outcome)
        e.step = step
        e.outcome = outcome
        e.error_code = code
        e.http_status = http
        e.request_id = request
        e.emitter = "callback-handler"
        e.occurred_at.seconds = NOW + t
        e.occurred_at.nanos = nanos
        return e

    def write(self, name, data):
        with open(os.path.join(self.out_dir, "seed-" + name), "wb") as f:
            f.write(data)
        self.count += 1

    def wire(self, name, events, extra_event_bytes=None):
        """Mode byte 0, then the request. `extra_event_bytes` maps an event
        index to raw bytes appended to it (unknown fields)."""
        body = bytearray()
        for i, e in enumerate(events):
            data = e.SerializeToString(deterministic=True)
            if extra_event_bytes and i in extra_event_bytes:
                data += extra_event_bytes[i]
            body += b"\x0a" + varint(len(data)) + data
        self.write(name, b"\x00" + bytes(body))

    def recipe(self, name, ops):
        self.write(name, b"\x01" + bytes(ops))


def failure_outcome(code):
    return "DENIED" if code == "access_denied" else "FAILED"


def main():
    out_dir = sys.argv[1] if len(sys.argv) > 1 else os.path.join(HERE,
                                                                 "corpus")
    os.makedirs(out_dir, exist_ok=True)
    for name in os.listdir(out_dir):
        if name.startswith("seed-"):
            os.remove(os.path.join(out_dir, name))
    event_pb2, ingest_pb2 = load_protos()
    s = Seeds(event_pb2, ingest_pb2, out_dir)
    E = s.event

    # A whole successful attempt, then refreshes.
    flow = []
    for i, step in enumerate(STEPS[:5]):
        flow.append(E("ok-%d-start" % i, step, "STARTED", t=-600 + 20 * i))
        flow.append(E("ok-%d-done" % i, step, "SUCCEEDED", t=-590 + 20 * i))
    s.wire("attempt-success", flow)
    refresh = [E("rf-1", "TOKEN_REFRESH", "STARTED", session="", request="r-1"),
               E("rf-2", "TOKEN_REFRESH", "SUCCEEDED", t=1, session="",
                 request="r-1")]
    s.wire("attempt-then-refresh", flow + refresh)

    # Every step with every outcome, alone.
    for step in STEPS:
        for outcome in OUTCOMES:
            code = ""
            if outcome == "FAILED":
                code = "server_error"
            elif outcome == "DENIED":
                code = "access_denied"
            session = "" if step in ("TOKEN_REFRESH", "DISCONNECT") else "s-1"
            s.wire("%s-%s" % (step.lower(), outcome.lower()),
                   [E("one", step, outcome, code=code, session=session)])

    # Every catalog code, at the step where it is seen, after an attempt
    # that issued tokens for refresh codes.
    for code in catalog_codes() + ["code_already_used", "Invalid_Grant"]:
        s.wire("code-%s-exchange" % code,
               [E("x-1", "OAUTH_CALLBACK", "SUCCEEDED", t=-5),
                E("x-2", "TOKEN_EXCHANGE", failure_outcome(code), code=code)])
        s.wire("code-%s-refresh" % code,
               flow + [E("x-3", "TOKEN_REFRESH", failure_outcome(code),
                         t=60, code=code, session="", request="r-9")])
    # HTTP statuses that make a failure transient whatever its code.
    for http in (408, 429, 500, 503):
        s.wire("refresh-http-%d" % http,
               flow + [E("h-1", "TOKEN_REFRESH", "FAILED", t=60,
                         code="invalid_grant", session="", http=http)])
    s.wire("refresh-transient-twice",
           flow + [E("t-1", "TOKEN_REFRESH", "FAILED", t=60, code="timeout",
                     session=""),
                   E("t-2", "TOKEN_REFRESH", "FAILED", t=120,
                     code="temporarily_unavailable", session="", http=503)])
    s.wire("disconnect-then-refresh",
           flow + [E("d-1", "DISCONNECT", "SUCCEEDED", t=60, session=""),
                   E("d-2", "TOKEN_REFRESH", "SUCCEEDED", t=120, session="")])
    s.wire("unattributed-callback",
           [E("u-1", "OAUTH_CALLBACK", "FAILED", code="state_mismatch",
              conn="", patient="", session="")])
    # Root cause is the first failure: the later one arrives first.
    s.wire("root-cause-arrives-late",
           [E("rc-2", "TOKEN_EXCHANGE", "FAILED", t=10,
              code="code_already_used"),
            E("rc-1", "TOKEN_EXCHANGE", "FAILED", t=0, code="invalid_grant")])

    # Late, tied, future-dated, far-past and far-future events.
    s.wire("late-earlier-step",
           [E("l-1", "TOKEN_EXCHANGE", "SUCCEEDED", t=0),
            E("l-2", "SIGN_IN", "FAILED", t=-300, code="login_failed")])
    s.wire("same-time-ties",
           [E("tie-1", "CONSENT", "SUCCEEDED"),
            E("tie-2", "CONSENT", "DENIED", code="access_denied"),
            E("tie-3", "CONSENT", "STARTED")])
    s.wire("future-dated",
           [E("f-1", "SIGN_IN", "SUCCEEDED", t=3600),
            E("f-2", "CONSENT", "DENIED", t=10, code="access_denied")])
    s.wire("future-tolerance-edge",
           [E("fe-1", "SIGN_IN", "SUCCEEDED", t=300),
            E("fe-2", "SIGN_IN", "FAILED", t=300, nanos=1,
              code="login_failed")])
    s.wire("too-far-ahead",
           [E("fa-1", "SIGN_IN", "SUCCEEDED", t=24 * 3600 + 1)])
    s.wire("before-2000",
           [E("fp-1", "SIGN_IN", "SUCCEEDED", t=946684799 - NOW)])
    s.wire("stalled-attempt",
           [E("st-1", "PORTAL_REDIRECT", "SUCCEEDED", t=-7200),
            E("st-2", "SIGN_IN", "STARTED", t=-7100)])

    # Duplicates and conflicts inside one request.
    d = E("dup-1", "CONSENT", "SUCCEEDED")
    s.wire("duplicate-in-batch", [d, d])
    d2 = E("dup-1", "CONSENT", "SUCCEEDED", request="r-other")
    s.wire("conflict-in-batch", [d, d2])

    # Validation rules and limits.
    bad = E("v-1", "SIGN_IN", "FAILED", code="")
    s.wire("failure-without-code", [bad])
    bad = E("v-2", "SIGN_IN", "SUCCEEDED")
    bad.error_description = "null"
    s.wire("description-null", [bad])
    bad = E("v-3", "SIGN_IN", "SUCCEEDED", patient="p" * 129)
    s.wire("id-too-long", [bad])
    bad = E("v-4", "SIGN_IN", "SUCCEEDED", patient=" p-1")
    s.wire("id-whitespace", [bad])
    bad = E("v-5", "SIGN_IN", "SUCCEEDED")
    for i in range(33):
        bad.attributes["k%02d" % i] = "v"
    s.wire("attributes-too-many", [bad])
    bad = E("v-6", "SIGN_IN", "FAILED", code="server_error", http=600)
    s.wire("http-out-of-range", [bad])
    bad = E("v-7", "SIGN_IN", "SUCCEEDED", nanos=0)
    bad.occurred_at.nanos = -1
    s.wire("nanos-negative", [bad])
    s.wire("step-unspecified", [E("v-8", 0, "SUCCEEDED")])
    s.write("empty-request", b"\x00")

    # Unknown fields (a newer emitter) and unknown enum numbers.
    unknown = b"\xf8\x06\x2a" + b"\x82\x07\x03new"  # fields 111 and 112
    s.wire("unknown-fields", [E("n-1", "SIGN_IN", "SUCCEEDED")],
           extra_event_bytes={0: unknown})
    s.wire("unknown-step", [E("n-2", 42, "SUCCEEDED"),
                            E("n-3", "CONSENT", "SUCCEEDED", t=1)])
    s.wire("unknown-outcome", [E("n-4", "CONSENT", 9),
                               E("n-5", "TOKEN_REFRESH", 9, session="")])

    # Recipe mode (fuzz/recipe.h). An event is op (0) then step, outcome,
    # ids, code, http, delta, flags. ids 0x25: c-0, s-0, p-0; 0xa9: c-1,
    # s-1, p-0 with a source. Codes: 12 invalid_grant, 4 access_denied,
    # 20 login_failed, 9 server_error.
    def ev(step, outcome, ids=0x25, code=0, http=0, delta=0, flags=0):
        return [0, step, outcome, ids, code, http, delta & 0xFF, flags]

    def flush(clock):
        return [7, clock]

    # Step indexes into kSteps: 0 redirect .. 4 exchange, 5 refresh,
    # 6 disconnect. Outcome indexes: 0 started, 1 succeeded, 2 failed,
    # 3 denied.
    ok_attempt = []
    for i in range(5):
        ok_attempt += ev(i, 0, delta=2 * i) + ev(i, 1, delta=2 * i + 1)
    s.recipe("recipe-success-then-silence", ok_attempt + flush(5))
    s.recipe("recipe-abandoned-then-new-attempt",
             ev(0, 1) + ev(1, 0, delta=1) + flush(5)
             + ev(0, 1, ids=0x29) + ev(1, 1, ids=0x29, delta=1))
    s.recipe("recipe-refresh-open-over-window",
             ok_attempt + flush(2)
             + ev(5, 0, ids=0x21 | 0x20, http=0x20) + flush(5))
    s.recipe("recipe-refresh-failures",
             ok_attempt + flush(6)
             + ev(5, 2, ids=0x21, code=9, http=12)
             + flush(1) + ev(5, 2, ids=0x21, code=12)
             + flush(1) + ev(6, 1, ids=0x21))
    s.recipe("recipe-late-over-batches",
             ev(4, 1, delta=10) + flush(3)
             + ev(1, 2, code=20, delta=-100 & 0xFF, flags=1)
             + ev(3, 3, code=4, delta=-3 & 0xFF, flags=2))
    s.recipe("recipe-retry-and-conflict",
             ev(2, 1) + ev(3, 1, delta=1) + flush(1) + [5, 0] + [5, 1]
             + flush(1) + [6, 0])
    s.recipe("recipe-future-dated",
             ev(1, 1, delta=60, flags=1) + ev(2, 1, delta=1) + flush(4)
             + ev(3, 1, delta=1))
    s.recipe("recipe-broken-field", ev(1, 1, flags=0xFF))
    print("wrote %d seeds to %s" % (s.count, out_dir))


if __name__ == "__main__":
    main()
