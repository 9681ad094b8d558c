#!/usr/bin/env python3
"""End-to-end test of authtraild from a Python gRPC client.

Starts the real authtraild binary on a loopback port the server picks
itself (--listen=127.0.0.1:0, read back from its "ready" log line) over a
temporary --data_dir, and talks to it the way a Python emitter or
dashboard backend would: stubs generated at test time with the system
protoc and grpc_python_plugin from proto/ (the API) and clients/protos/
(the standard health and reflection services), Debian's python3-grpcio and
python3-protobuf as the runtime.

    test_client.py AUTHTRAILD PROTO_DIR [unittest options]

AUTHTRAILD and PROTO_DIR may also come from the environment as
AUTHTRAILD_PATH and AUTHTRAIL_PROTO_DIR. PROTOC and GRPC_PYTHON_PLUGIN
override the code generators (default: `protoc` on PATH and
/usr/bin/grpc_python_plugin). A missing tool or module is a failure with a
message saying what to install, never a skip.
"""

import importlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import unittest

NAME = "python_client"
HERE = os.path.dirname(os.path.abspath(__file__))
CLIENT_PROTOS = os.path.join(os.path.dirname(HERE), "protos")
DEFAULT_PLUGIN = "/usr/bin/grpc_python_plugin"

# Names the services are served under, for health and reflection.
API_SERVICES = [
    "authtrail.v1.AuthEventIngest",
    "authtrail.v1.AuthHistory",
    "authtrail.v1.AuthTrailAdmin",
]
STANDARD_SERVICES = [
    "grpc.health.v1.Health",
    "grpc.reflection.v1alpha.ServerReflection",
]


def die(message):
    """A setup problem: say what is wrong and fail (exit 2), never skip."""
    print(f"{NAME}: FAILED before any test ran: {message}", file=sys.stderr)
    print(f"{NAME}: 0 passed, 1 failed")
    sys.exit(2)


# --- arguments and tools ----------------------------------------------------

def parse_args(argv):
    positional = [a for a in argv[1:] if not a.startswith("-")][:2]
    rest = [a for a in argv[1:] if a not in positional]
    binary = positional[0] if positional else os.environ.get("AUTHTRAILD_PATH")
    proto_dir = (positional[1] if len(positional) > 1
                 else os.environ.get("AUTHTRAIL_PROTO_DIR"))
    if not binary:
        die("no authtraild binary: pass it as the first argument or set "
            "AUTHTRAILD_PATH")
    if not (os.path.isfile(binary) and os.access(binary, os.X_OK)):
        die(f"authtraild binary {binary!r} does not exist or is not "
            "executable (build it: cmake --build build --target authtraild)")
    if not proto_dir:
        die("no proto folder: pass it as the second argument or set "
            "AUTHTRAIL_PROTO_DIR")
    if not os.path.isfile(os.path.join(proto_dir, "authtrail/v1/ingest.proto")):
        die(f"{proto_dir!r} does not hold authtrail/v1/ingest.proto")
    return os.path.abspath(binary), os.path.abspath(proto_dir), rest


def check_runtime():
    for module, package in (("grpc", "python3-grpcio"),
                            ("google.protobuf", "python3-protobuf")):
        try:
            importlib.import_module(module)
        except ImportError as e:
            die(f"cannot import {module} ({e}) with {sys.executable}: install "
                f"the Debian package {package} (scripts/install-deps does) "
                "and run this test with Debian's /usr/bin/python3")


def generate_stubs(proto_dir, out_dir):
    protoc = os.environ.get("PROTOC") or shutil.which("protoc")
    if not protoc:
        die("protoc not found on PATH: install the Debian package "
            "protobuf-compiler (scripts/install-deps does)")
    plugin = os.environ.get("GRPC_PYTHON_PLUGIN", DEFAULT_PLUGIN)
    if not os.access(plugin, os.X_OK):
        die(f"{plugin} not found: install the Debian package "
            "protobuf-compiler-grpc (scripts/install-deps does)")
    protos = [
        "google/rpc/status.proto",
        "google/rpc/error_details.proto",
        "authtrail/v1/event.proto",
        "authtrail/v1/ingest.proto",
        "authtrail/v1/history.proto",
        "authtrail/v1/admin.proto",
        "grpc_health/v1/health.proto",
        "grpc_reflection/v1alpha/reflection.proto",
    ]
    command = [protoc, f"-I{proto_dir}", f"-I{CLIENT_PROTOS}",
               f"--python_out={out_dir}", f"--grpc_out={out_dir}",
               f"--plugin=protoc-gen-grpc={plugin}"] + protos
    os.makedirs(out_dir, exist_ok=True)
    run = subprocess.run(command, capture_output=True, text=True)
    if run.returncode != 0:
        die("stub generation failed:\n  " + " ".join(command) + "\n" +
            run.stdout + run.stderr)
    sys.path.insert(0, out_dir)


# --- the server ---------------------------------------------------------------

class Daemon:
    """The real authtraild in a child process."""

    def __init__(self, binary, work_dir):
        self.binary = binary
        self.data_dir = os.path.join(work_dir, "data")
        self.log_path = os.path.join(work_dir, "authtraild.log")
        self.process = None
        self.address = None

    def start(self, timeout=30.0):
        # Options from the environment (AUTHTRAIL_*) must not leak in.
        env = {k: v for k, v in os.environ.items()
               if not k.startswith("AUTHTRAIL_")}
        self.log = open(self.log_path, "wb")
        self.process = subprocess.Popen(
            # Loopback only, so plaintext (which must be asked for).
            [self.binary, "--listen=127.0.0.1:0", "--plaintext",
             f"--data_dir={self.data_dir}", "--metrics_listen=off",
             "--log_level=info", "--shutdown_grace_seconds=5"],
            stdin=subprocess.DEVNULL, stdout=self.log, stderr=self.log,
            env=env)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            port = self._ready_port()
            if port:
                self.address = f"127.0.0.1:{port}"
                return
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"authtraild exited with {self.process.returncode} "
                    f"before it was ready:\n{self.log_tail()}")
            time.sleep(0.02)
        raise RuntimeError(f"authtraild not ready after {timeout}s:\n"
                           f"{self.log_tail()}")

    def _ready_port(self):
        with open(self.log_path, "rb") as f:
            for line in f:
                try:
                    entry = json.loads(line)
                except ValueError:
                    continue
                if entry.get("event") == "ready":
                    return int(entry["port"])
        return None

    def stop(self, timeout=30.0):
        """SIGTERM, then the exit code (None if it had to be killed)."""
        if self.process is None or self.process.poll() is not None:
            return self.process.returncode if self.process else None
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            return None
        finally:
            self.log.close()

    def log_tail(self, lines=20):
        try:
            with open(self.log_path, "r", errors="replace") as f:
                return "".join(f.readlines()[-lines:])
        except OSError:
            return "(no log)"


# Filled in by main() once the stubs exist and the server answers.
grpc = None
pb = {}          # short name -> generated module
DAEMON = None
CHANNEL = None
DEADLINE = 10.0  # seconds, on every call: never call without a deadline


def load_modules():
    global grpc
    grpc = importlib.import_module("grpc")
    for short, module in {
        "event": "authtrail.v1.event_pb2",
        "ingest": "authtrail.v1.ingest_pb2",
        "ingest_grpc": "authtrail.v1.ingest_pb2_grpc",
        "history": "authtrail.v1.history_pb2",
        "history_grpc": "authtrail.v1.history_pb2_grpc",
        "admin": "authtrail.v1.admin_pb2",
        "admin_grpc": "authtrail.v1.admin_pb2_grpc",
        "status": "google.rpc.status_pb2",
        "error_details": "google.rpc.error_details_pb2",
        "health": "grpc_health.v1.health_pb2",
        "health_grpc": "grpc_health.v1.health_pb2_grpc",
        "reflection": "grpc_reflection.v1alpha.reflection_pb2",
        "reflection_grpc": "grpc_reflection.v1alpha.reflection_pb2_grpc",
    }.items():
        pb[short] = importlib.import_module(module)


def wait_until_serving(channel, timeout=20.0):
    """Until the health service says SERVING (the database is open)."""
    health = pb["health_grpc"].HealthStub(channel)
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            reply = health.Check(pb["health"].HealthCheckRequest(service=""),
                                 timeout=1.0, wait_for_ready=True)
            if reply.status == pb["health"].HealthCheckResponse.SERVING:
                return
            last = reply
        except grpc.RpcError as e:
            last = e
        time.sleep(0.05)
    raise RuntimeError(f"authtraild did not answer SERVING: {last}")


# --- event builders ----------------------------------------------------------

T0 = int(time.time()) - 3 * 3600  # three hours ago, whole seconds


def event(event_id, patient, connection, session, step, outcome, at,
          error_code="", source_name="Epic MyChart – Northwind Health"):
    e = pb["event"]
    ts = importlib.import_module("google.protobuf.timestamp_pb2").Timestamp(
        seconds=at)
    return e.AuthEvent(
        event_id=event_id, patient_id=patient, connection_id=connection,
        session_id=session,
        source=e.Source(id="src-northwind", name=source_name,
                        kind=e.SOURCE_KIND_EHR),
        step=e.Step.Value(f"STEP_{step}"),
        outcome=e.Outcome.Value(f"OUTCOME_{outcome}"),
        error_code=error_code, occurred_at=ts, request_id=f"req-{event_id}",
        emitter="python-client-test")


def successful_attempt(prefix, patient, connection, session, start):
    flow = [("PORTAL_REDIRECT", "STARTED"), ("PORTAL_REDIRECT", "SUCCEEDED"),
            ("SIGN_IN", "SUCCEEDED"), ("CONSENT", "SUCCEEDED"),
            ("OAUTH_CALLBACK", "SUCCEEDED"), ("TOKEN_EXCHANGE", "STARTED"),
            ("TOKEN_EXCHANGE", "SUCCEEDED")]
    return [event(f"{prefix}-{i + 1}", patient, connection, session, step,
                  outcome, start + 60 * i)
            for i, (step, outcome) in enumerate(flow)]


def declined_attempt(prefix, patient, connection, session, start):
    return [
        event(f"{prefix}-1", patient, connection, session, "PORTAL_REDIRECT",
              "STARTED", start),
        event(f"{prefix}-2", patient, connection, session, "PORTAL_REDIRECT",
              "SUCCEEDED", start + 2),
        event(f"{prefix}-3", patient, connection, session, "SIGN_IN",
              "SUCCEEDED", start + 40),
        event(f"{prefix}-4", patient, connection, session, "CONSENT",
              "DENIED", start + 70, error_code="access_denied"),
        event(f"{prefix}-5", patient, connection, session, "OAUTH_CALLBACK",
              "DENIED", start + 71, error_code="access_denied"),
    ]


def append(events):
    request = pb["ingest"].AppendEventsRequest(events=events)
    return pb["ingest_grpc"].AuthEventIngestStub(CHANNEL).AppendEvents(
        request, timeout=DEADLINE)


def retryable_codes():
    return {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED,
            grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.CANCELLED}


def append_with_retry(stub, events, attempts=6, base=0.1, cap=5.0,
                      timeout=DEADLINE):
    """Appends one batch; retries transient failures with the same event ids.

    The request is built once, so every try carries the same event ids: a
    try whose reply was lost comes back as duplicates at the original
    positions. Exponential backoff with full jitter. INVALID_ARGUMENT,
    ALREADY_EXISTS and the rest are raised at once: resending unchanged
    cannot help.
    """
    request = pb["ingest"].AppendEventsRequest(events=events)
    for attempt in range(attempts):
        try:
            return stub.AppendEvents(request, timeout=timeout)
        except grpc.RpcError as e:
            if e.code() not in retryable_codes() or attempt + 1 == attempts:
                raise
            time.sleep(random.uniform(0, min(cap, base * 2 ** attempt)))


def fake_rpc_error(code):
    """An RpcError as the transport raises it, with status `code`."""

    class FakeRpcError(grpc.RpcError):
        def code(self):
            return code

    return FakeRpcError(code)


class LostReplyStub:
    """Makes real calls, but the reply of the first one is lost on the way
    back: the caller sees DEADLINE_EXCEEDED although the server stored the
    batch."""

    def __init__(self, stub):
        self.stub = stub
        self.calls = 0
        self.lost_reply = None

    def AppendEvents(self, request, timeout):
        self.calls += 1
        reply = self.stub.AppendEvents(request, timeout=timeout)
        if self.calls == 1:
            self.lost_reply = reply
            raise fake_rpc_error(grpc.StatusCode.DEADLINE_EXCEEDED)
        return reply


def bad_request_of(error):
    """The google.rpc.BadRequest in an RpcError's trailers, or None."""
    for key, value in error.trailing_metadata() or ():
        if key == "grpc-status-details-bin":
            status = pb["status"].Status.FromString(value)
            for detail in status.details:
                bad = pb["error_details"].BadRequest()
                if detail.Unpack(bad):
                    return status, bad
    return None, None


# --- the tests ---------------------------------------------------------------

class AppendAndReadTest(unittest.TestCase):
    """A full successful attempt and a declined one, then the read side."""

    @classmethod
    def setUpClass(cls):
        h = pb["history"]
        cls.history = pb["history_grpc"].AuthHistoryStub(CHANNEL)
        cls.ACTIVE = h.CONNECTION_STATE_ACTIVE
        cls.DENIED = h.CONNECTION_STATE_DENIED
        cls.success = successful_attempt("ok", "pat-1", "conn-1", "sess-1", T0)
        cls.decline = declined_attempt("no", "pat-1", "conn-2", "sess-2",
                                       T0 + 3600)
        cls.success_reply = append(cls.success)
        cls.decline_reply = append(cls.decline)

    def test_append_returns_one_new_position_per_event(self):
        results = (list(self.success_reply.results) +
                   list(self.decline_reply.results))
        self.assertEqual(len(results), 12)
        positions = [r.position for r in results]
        self.assertEqual(positions, sorted(positions))
        self.assertEqual(len(set(positions)), 12)
        self.assertTrue(all(p > 0 for p in positions))
        self.assertFalse(any(r.duplicate for r in results))

    def test_list_connections_gives_each_state(self):
        reply = self.history.ListConnections(
            pb["history"].ListConnectionsRequest(patient_id="pat-1"),
            timeout=DEADLINE)
        states = {c.connection_id: c.state for c in reply.connections}
        self.assertEqual(states, {"conn-1": self.ACTIVE,
                                  "conn-2": self.DENIED})
        self.assertEqual([c.connection_id for c in reply.connections],
                         ["conn-1", "conn-2"])

    def test_get_connection_active(self):
        c = self.history.GetConnection(
            pb["history"].GetConnectionRequest(connection_id="conn-1"),
            timeout=DEADLINE)
        self.assertEqual(c.state, self.ACTIVE)
        self.assertEqual(c.patient_id, "pat-1")
        self.assertEqual(c.current_session_id, "sess-1")
        self.assertEqual(c.source.name, "Epic MyChart – Northwind Health")
        self.assertEqual(c.event_count, 7)
        self.assertEqual(c.last_event.event_id, "ok-7")
        self.assertFalse(c.HasField("last_failure"))

    def test_get_connection_denied(self):
        c = self.history.GetConnection(
            pb["history"].GetConnectionRequest(connection_id="conn-2"),
            timeout=DEADLINE)
        self.assertEqual(c.state, self.DENIED)
        self.assertEqual(c.last_failure.error_code, "access_denied")
        self.assertEqual(c.last_failure.category,
                         pb["history"].FAILURE_CATEGORY_PATIENT_DECLINED)

    def test_get_unknown_connection_is_not_found(self):
        with self.assertRaises(grpc.RpcError) as caught:
            self.history.GetConnection(
                pb["history"].GetConnectionRequest(connection_id="nobody"),
                timeout=DEADLINE)
        self.assertEqual(caught.exception.code(), grpc.StatusCode.NOT_FOUND)

    def answers(self, d):
        name = pb["history"].Answer.Name
        return [name(f.answer) for f in (
            d.reached_portal, d.signed_in, d.approved_access,
            d.token_exchanged, d.refresh_failed_later)]

    def test_diagnose_successful_session(self):
        d = self.history.DiagnoseSession(
            pb["history"].DiagnoseSessionRequest(session_id="sess-1"),
            timeout=DEADLINE)
        self.assertEqual(self.answers(d), ["ANSWER_YES", "ANSWER_YES",
                                           "ANSWER_YES", "ANSWER_YES",
                                           "ANSWER_UNKNOWN"])
        self.assertEqual(d.token_exchanged.evidence.event_id, "ok-7")
        self.assertEqual(d.furthest_step, pb["event"].STEP_TOKEN_EXCHANGE)
        self.assertFalse(d.HasField("root_cause"))
        self.assertEqual(d.event_count, 7)
        self.assertEqual(d.connection_id, "conn-1")

    def test_diagnose_declined_session(self):
        d = self.history.DiagnoseSession(
            pb["history"].DiagnoseSessionRequest(session_id="sess-2"),
            timeout=DEADLINE)
        self.assertEqual(self.answers(d), ["ANSWER_YES", "ANSWER_YES",
                                           "ANSWER_NO", "ANSWER_NO",
                                           "ANSWER_UNKNOWN"])
        self.assertTrue(d.HasField("root_cause"))
        self.assertEqual(d.root_cause.error_code, "access_denied")
        self.assertEqual(d.root_cause.event.event_id, "no-4")
        self.assertEqual(d.root_cause.event.step, pb["event"].STEP_CONSENT)

    def test_list_events_pages_without_gaps_or_repeats(self):
        h = pb["history"]
        request = h.ListEventsRequest(filter=h.EventFilter(patient_id="pat-1"),
                                      page_size=5, oldest_first=True)
        seen, pages = [], 0
        while True:
            reply = self.history.ListEvents(request, timeout=DEADLINE)
            pages += 1
            seen += [r.event.event_id for r in reply.events]
            if not reply.next_page_token:
                break
            request.page_token = reply.next_page_token
        self.assertEqual(pages, 3)
        self.assertEqual(seen, [e.event_id for e in self.success] +
                         [e.event_id for e in self.decline])

    def test_foreign_page_token_is_invalid_argument(self):
        h = pb["history"]
        first = self.history.ListEvents(
            h.ListEventsRequest(filter=h.EventFilter(patient_id="pat-1"),
                                page_size=5), timeout=DEADLINE)
        self.assertTrue(first.next_page_token)
        with self.assertRaises(grpc.RpcError) as caught:
            self.history.ListEvents(
                h.ListEventsRequest(filter=h.EventFilter(patient_id="pat-2"),
                                    page_size=5,
                                    page_token=first.next_page_token),
                timeout=DEADLINE)
        self.assertEqual(caught.exception.code(),
                         grpc.StatusCode.INVALID_ARGUMENT)


class StandardServicesTest(unittest.TestCase):
    """grpc.health.v1 and server reflection."""

    def test_health_is_serving(self):
        # The server reports one status for the whole server, under "".
        health = pb["health_grpc"].HealthStub(CHANNEL)
        reply = health.Check(pb["health"].HealthCheckRequest(service=""),
                             timeout=DEADLINE)
        self.assertEqual(reply.status,
                         pb["health"].HealthCheckResponse.SERVING)

    def test_health_of_unknown_service_is_not_found(self):
        health = pb["health_grpc"].HealthStub(CHANNEL)
        with self.assertRaises(grpc.RpcError) as caught:
            health.Check(pb["health"].HealthCheckRequest(service="no.Such"),
                         timeout=DEADLINE)
        self.assertEqual(caught.exception.code(), grpc.StatusCode.NOT_FOUND)

    def test_reflection_lists_every_service(self):
        r = pb["reflection"]
        stub = pb["reflection_grpc"].ServerReflectionStub(CHANNEL)
        replies = list(stub.ServerReflectionInfo(
            iter([r.ServerReflectionRequest(list_services="*")]),
            timeout=DEADLINE))
        self.assertEqual(len(replies), 1)
        self.assertEqual(replies[0].WhichOneof("message_response"),
                         "list_services_response")
        names = {s.name for s in replies[0].list_services_response.service}
        for service in API_SERVICES + STANDARD_SERVICES:
            self.assertIn(service, names)


class ErrorsAndRetriesTest(unittest.TestCase):
    """INVALID_ARGUMENT details, idempotent retries, ALREADY_EXISTS."""

    def test_invalid_event_is_invalid_argument_with_bad_request(self):
        good = event("bad-batch-1", "pat-9", "conn-9", "sess-9",
                     "PORTAL_REDIRECT", "STARTED", T0)
        # FAILED without an error_code breaks a rule.
        bad = event("bad-batch-2", "pat-9", "conn-9", "sess-9",
                    "PORTAL_REDIRECT", "FAILED", T0 + 1)
        with self.assertRaises(grpc.RpcError) as caught:
            append([good, bad])
        error = caught.exception
        self.assertEqual(error.code(), grpc.StatusCode.INVALID_ARGUMENT)
        self.assertIn("events[1].error_code", error.details())
        status, bad_request = bad_request_of(error)
        self.assertIsNotNone(status, "no google.rpc.BadRequest in the "
                             "grpc-status-details-bin trailer")
        self.assertEqual(status.code, grpc.StatusCode.INVALID_ARGUMENT.value[0])
        fields = [v.field for v in bad_request.field_violations]
        self.assertEqual(fields, ["events[1].error_code"])
        self.assertTrue(bad_request.field_violations[0].description)
        # All-or-nothing: the valid event of the refused batch was not kept.
        reply = append([good])
        self.assertFalse(reply.results[0].duplicate)

    def test_retry_with_same_event_id_is_duplicate(self):
        batch = [event(f"retry-{i}", "pat-8", "conn-8", "sess-8",
                       "PORTAL_REDIRECT", outcome, T0 + i)
                 for i, outcome in enumerate(["STARTED", "SUCCEEDED"])]
        first = append(batch)
        again = append(batch)
        self.assertEqual([r.duplicate for r in first.results], [False, False])
        self.assertEqual([r.duplicate for r in again.results], [True, True])
        self.assertEqual([r.position for r in again.results],
                         [r.position for r in first.results])

    def test_retry_after_a_lost_reply_gets_the_original_positions(self):
        stub = LostReplyStub(pb["ingest_grpc"].AuthEventIngestStub(CHANNEL))
        batch = [event(f"lost-{i}", "pat-6", "conn-6", "sess-6",
                       "SIGN_IN", "SUCCEEDED", T0 + i) for i in range(3)]
        reply = append_with_retry(stub, batch, base=0.01)
        self.assertEqual(stub.calls, 2)
        self.assertEqual([r.duplicate for r in stub.lost_reply.results],
                         [False, False, False])
        self.assertEqual([r.duplicate for r in reply.results],
                         [True, True, True])
        self.assertEqual([r.position for r in reply.results],
                         [r.position for r in stub.lost_reply.results])

    def test_invalid_argument_is_not_retried(self):
        stub = LostReplyStub(pb["ingest_grpc"].AuthEventIngestStub(CHANNEL))
        bad = event("never-1", "pat-6", "conn-6", "sess-6", "SIGN_IN",
                    "DENIED", T0)  # DENIED without an error_code
        with self.assertRaises(grpc.RpcError) as caught:
            append_with_retry(stub, [bad], base=0.01)
        self.assertEqual(caught.exception.code(),
                         grpc.StatusCode.INVALID_ARGUMENT)
        self.assertEqual(stub.calls, 1)

    def test_same_event_id_other_content_is_already_exists(self):
        original = event("reuse-1", "pat-7", "conn-7", "sess-7",
                         "SIGN_IN", "SUCCEEDED", T0)
        append([original])
        changed = event("reuse-1", "pat-7", "conn-7", "sess-7",
                        "SIGN_IN", "FAILED", T0, error_code="login_failed")
        with self.assertRaises(grpc.RpcError) as caught:
            append([changed])
        self.assertEqual(caught.exception.code(),
                         grpc.StatusCode.ALREADY_EXISTS)


class Result(unittest.TextTestResult):
    """Counts passes, for the closing summary line."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.passed = 0

    def addSuccess(self, test):
        super().addSuccess(test)
        self.passed += 1


def main():
    global DAEMON, CHANNEL
    binary, proto_dir, rest = parse_args(sys.argv)
    check_runtime()
    work_dir = tempfile.mkdtemp(prefix="authtrail-python-client-")
    try:
        generate_stubs(proto_dir, os.path.join(work_dir, "gen"))
        load_modules()
        DAEMON = Daemon(binary, work_dir)
        try:
            DAEMON.start()
            CHANNEL = grpc.insecure_channel(DAEMON.address)
            wait_until_serving(CHANNEL)
        except Exception as e:  # noqa: BLE001 - reported, then exit 2
            DAEMON.stop()
            die(str(e))
        print(f"{NAME}: authtraild {binary} on {DAEMON.address}",
              file=sys.stderr)

        program = unittest.main(argv=[sys.argv[0]] + rest, exit=False,
                                testRunner=unittest.TextTestRunner(
                                    resultclass=Result, verbosity=2))
        result = program.result
        passed = result.passed
        # A test with failing subtests counts once.
        failed = len({getattr(t, "test_case", t).id()
                      for t, _ in result.failures + result.errors} |
                     {t.id() for t in result.unexpectedSuccesses})

        CHANNEL.close()
        code = DAEMON.stop()
        if code == 0:
            passed += 1
            print(f"{NAME}: SIGTERM: authtraild exited with 0", file=sys.stderr)
        else:
            failed += 1
            print(f"{NAME}: FAIL: SIGTERM: authtraild exited with {code} "
                  f"(None: killed after 30 s); log:\n{DAEMON.log_tail()}",
                  file=sys.stderr)
        if failed or result.testsRun == 0:
            print(f"{NAME}: server log:\n{DAEMON.log_tail(40)}",
                  file=sys.stderr)
        # The SIGTERM check counts as one test.
        print(f"{NAME}: {passed} passed, {failed} failed")
        return 0 if failed == 0 and result.testsRun > 0 else 1
    finally:
        if DAEMON is not None:
            DAEMON.stop()
        shutil.rmtree(work_dir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
