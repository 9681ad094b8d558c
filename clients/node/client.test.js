// End-to-end test of authtraild from a Node.js gRPC client.
//
// Starts the real authtraild binary on a loopback port the server picks
// itself (--listen=127.0.0.1:0, read back from its "ready" log line) over a
// temporary --data_dir, and talks to it the way a Node emitter or dashboard
// backend would: @grpc/grpc-js with the protos loaded at run time by
// @grpc/proto-loader from proto/ (the API) and clients/protos/ (the
// standard health and reflection services).
//
// Run through run_tests.sh, which installs the locked packages with
// `npm ci` and sets:
//   AUTHTRAILD_PATH        the authtraild binary
//   AUTHTRAIL_PROTO_DIR    the repository's proto/ folder
//   AUTHTRAIL_CLIENT_PROTOS  clients/protos/
'use strict';

const { describe, test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { spawn } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const readline = require('node:readline');

const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');
const protobuf = require('protobufjs');

function required(name) {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set (run through run_tests.sh)`);
  return value;
}

const AUTHTRAILD = required('AUTHTRAILD_PATH');
const PROTO_DIR = required('AUTHTRAIL_PROTO_DIR');
const CLIENT_PROTOS = required('AUTHTRAIL_CLIENT_PROTOS');
const DEADLINE_MS = 10000; // on every call: never call without a deadline

const API_SERVICES = [
  'authtrail.v1.AuthEventIngest',
  'authtrail.v1.AuthHistory',
  'authtrail.v1.AuthTrailAdmin',
];
const STANDARD_SERVICES = [
  'grpc.health.v1.Health',
  'grpc.reflection.v1alpha.ServerReflection',
];

// --- protos ------------------------------------------------------------------

const packageDefinition = protoLoader.loadSync(
  [
    'authtrail/v1/ingest.proto',
    'authtrail/v1/history.proto',
    'authtrail/v1/admin.proto',
    'grpc_health/v1/health.proto',
    'grpc_reflection/v1alpha/reflection.proto',
  ],
  {
    keepCase: true,
    longs: String,
    enums: String,
    defaults: true,
    oneofs: true,
    includeDirs: [PROTO_DIR, CLIENT_PROTOS],
  });
const loaded = grpc.loadPackageDefinition(packageDefinition);
const v1 = loaded.authtrail.v1;

// google.rpc.Status and BadRequest, to read error details. protobufjs
// bundles google/protobuf/any.proto.
const rpcRoot = new protobuf.Root();
rpcRoot.resolvePath = (origin, target) => path.join(PROTO_DIR, target);
rpcRoot.loadSync(['google/rpc/status.proto', 'google/rpc/error_details.proto'],
                 { keepCase: true });
const RpcStatus = rpcRoot.lookupType('google.rpc.Status');
const BadRequest = rpcRoot.lookupType('google.rpc.BadRequest');

// The google.rpc.BadRequest in an error's grpc-status-details-bin trailer.
function badRequestOf(error) {
  for (const bytes of error.metadata?.get('grpc-status-details-bin') ?? []) {
    const status = RpcStatus.decode(bytes);
    for (const detail of status.details) {
      if (detail.type_url.endsWith('/google.rpc.BadRequest')) {
        return { status, badRequest: BadRequest.decode(detail.value) };
      }
    }
  }
  return { status: null, badRequest: null };
}

// --- the server --------------------------------------------------------------

class Daemon {
  constructor(binary) {
    this.binary = binary;
    this.workDir = fs.mkdtempSync(path.join(os.tmpdir(), 'authtrail-node-client-'));
    this.log = [];
    this.exit = null; // resolves to the exit code (or the signal's name)
  }

  // Starts the binary and resolves with its address once it is ready.
  start(timeoutMs = 30000) {
    const env = Object.fromEntries(Object.entries(process.env)
      .filter(([k]) => !k.startsWith('AUTHTRAIL_'))); // no stray options
    this.child = spawn(this.binary, [
      '--listen=127.0.0.1:0',
      '--plaintext', // loopback only; plaintext must be asked for
      `--data_dir=${path.join(this.workDir, 'data')}`,
      '--metrics_listen=off',
      '--log_level=info',
      '--shutdown_grace_seconds=5',
    ], { stdio: ['ignore', 'pipe', 'pipe'], env });
    this.exit = new Promise((resolve) => {
      this.child.on('exit', (code, signal) => resolve(code ?? signal));
    });
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(
        `authtraild not ready after ${timeoutMs} ms:\n${this.logTail()}`)), timeoutMs);
      this.child.on('error', (e) => { clearTimeout(timer); reject(e); });
      this.exit.then((code) => {
        clearTimeout(timer);
        reject(new Error(`authtraild exited with ${code} before it was ready:\n` +
                         this.logTail()));
      });
      this.child.stdout.on('data', (d) => this.log.push(d.toString()));
      readline.createInterface({ input: this.child.stderr }).on('line', (line) => {
        this.log.push(line);
        let entry;
        try { entry = JSON.parse(line); } catch { return; }
        if (entry.event === 'ready') {
          clearTimeout(timer);
          this.address = `127.0.0.1:${entry.port}`;
          resolve(this.address);
        }
      });
    });
  }

  // SIGTERM; resolves with the exit code ('killed' if it took over 30 s).
  async stop(timeoutMs = 30000) {
    if (!this.child || this.child.exitCode !== null || this.child.signalCode !== null) {
      return this.exit ? this.exit : null;
    }
    this.child.kill('SIGTERM');
    let timer;
    const result = await Promise.race([
      this.exit,
      new Promise((resolve) => { timer = setTimeout(() => resolve('timeout'), timeoutMs); }),
    ]);
    clearTimeout(timer);
    if (result === 'timeout') {
      this.child.kill('SIGKILL');
      await this.exit;
      return 'killed';
    }
    return result;
  }

  logTail(lines = 20) {
    return this.log.slice(-lines).join('\n');
  }

  cleanUp() {
    fs.rmSync(this.workDir, { recursive: true, force: true });
  }
}

// --- calls -------------------------------------------------------------------

function deadline() {
  return new Date(Date.now() + DEADLINE_MS);
}

// A unary call as a promise, always with a deadline.
function unary(client, method, request) {
  return new Promise((resolve, reject) => {
    client[method](request, { deadline: deadline() }, (error, reply) => {
      if (error) reject(error); else resolve(reply);
    });
  });
}

const RETRYABLE = new Set([grpc.status.UNAVAILABLE, grpc.status.DEADLINE_EXCEEDED,
                           grpc.status.RESOURCE_EXHAUSTED, grpc.status.CANCELLED]);
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// Appends one batch; retries transient failures with the same event ids.
// The request is built once, so every try carries the same event ids: a try
// whose reply was lost comes back as duplicates at the original positions.
// Exponential backoff with full jitter. INVALID_ARGUMENT, ALREADY_EXISTS and
// the rest are thrown at once: resending unchanged cannot help.
async function appendWithRetry(client, events, { attempts = 6, baseMs = 100, capMs = 5000 } = {}) {
  const request = { events };
  for (let attempt = 0; ; attempt++) {
    try {
      return await unary(client, 'AppendEvents', request);
    } catch (error) {
      if (!RETRYABLE.has(error.code) || attempt + 1 >= attempts) throw error;
      await sleep(Math.random() * Math.min(capMs, baseMs * 2 ** attempt));
    }
  }
}

// Makes real calls, but the reply of the first one is lost on the way back:
// the caller sees DEADLINE_EXCEEDED although the server stored the batch.
function lostReplyClient(client) {
  const fake = {
    calls: 0,
    lostReply: null,
    AppendEvents(request, options, callback) {
      fake.calls += 1;
      const call = fake.calls;
      client.AppendEvents(request, options, (error, reply) => {
        if (!error && call === 1) {
          fake.lostReply = reply;
          const lost = new Error('reply lost');
          lost.code = grpc.status.DEADLINE_EXCEEDED;
          callback(lost);
        } else {
          callback(error, reply);
        }
      });
    },
  };
  return fake;
}

// Resolves with the error a call fails with; fails if it succeeds.
async function failure(promise) {
  try {
    await promise;
  } catch (error) {
    return error;
  }
  assert.fail('the call succeeded; an error was expected');
}

// --- event builders ------------------------------------------------------------

const T0 = Math.floor(Date.now() / 1000) - 3 * 3600; // three hours ago

function event(eventId, patient, connection, session, step, outcome, at,
               errorCode = '') {
  return {
    event_id: eventId,
    patient_id: patient,
    connection_id: connection,
    session_id: session,
    source: { id: 'src-northwind', name: 'Epic MyChart – Northwind Health',
              kind: 'SOURCE_KIND_EHR' },
    step: `STEP_${step}`,
    outcome: `OUTCOME_${outcome}`,
    error_code: errorCode,
    occurred_at: { seconds: String(at), nanos: 0 },
    request_id: `req-${eventId}`,
    emitter: 'node-client-test',
  };
}

function successfulAttempt(prefix, patient, connection, session, start) {
  const flow = [['PORTAL_REDIRECT', 'STARTED'], ['PORTAL_REDIRECT', 'SUCCEEDED'],
                ['SIGN_IN', 'SUCCEEDED'], ['CONSENT', 'SUCCEEDED'],
                ['OAUTH_CALLBACK', 'SUCCEEDED'], ['TOKEN_EXCHANGE', 'STARTED'],
                ['TOKEN_EXCHANGE', 'SUCCEEDED']];
  return flow.map(([step, outcome], i) =>
    event(`${prefix}-${i + 1}`, patient, connection, session, step, outcome,
          start + 60 * i));
}

function declinedAttempt(prefix, patient, connection, session, start) {
  return [
    event(`${prefix}-1`, patient, connection, session, 'PORTAL_REDIRECT', 'STARTED', start),
    event(`${prefix}-2`, patient, connection, session, 'PORTAL_REDIRECT', 'SUCCEEDED', start + 2),
    event(`${prefix}-3`, patient, connection, session, 'SIGN_IN', 'SUCCEEDED', start + 40),
    event(`${prefix}-4`, patient, connection, session, 'CONSENT', 'DENIED', start + 70,
          'access_denied'),
    event(`${prefix}-5`, patient, connection, session, 'OAUTH_CALLBACK', 'DENIED', start + 71,
          'access_denied'),
  ];
}

// --- the tests -------------------------------------------------------------------

const daemon = new Daemon(AUTHTRAILD);
let ingest, history, health, reflection;

function append(events) {
  return unary(ingest, 'AppendEvents', { events });
}

before(async () => {
  const address = await daemon.start();
  const credentials = grpc.credentials.createInsecure();
  ingest = new v1.AuthEventIngest(address, credentials);
  history = new v1.AuthHistory(address, credentials);
  health = new loaded.grpc.health.v1.Health(address, credentials);
  reflection = new loaded.grpc.reflection.v1alpha.ServerReflection(address, credentials);
  // Until the health service says SERVING (the database is open).
  const until = Date.now() + 20000;
  for (;;) {
    try {
      const reply = await unary(health, 'Check', { service: '' });
      if (reply.status === 'SERVING') break;
    } catch (error) {
      if (Date.now() > until) throw error;
    }
    if (Date.now() > until) throw new Error('authtraild did not answer SERVING');
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
});

let closed = false;
function closeClients() {
  if (closed) return;
  closed = true;
  for (const client of [ingest, history, health, reflection]) client?.close();
}

after(async () => {
  closeClients();
  await daemon.stop();
  daemon.cleanUp();
});

describe('a successful attempt and a declined one', () => {
  const success = successfulAttempt('ok', 'pat-1', 'conn-1', 'sess-1', T0);
  const decline = declinedAttempt('no', 'pat-1', 'conn-2', 'sess-2', T0 + 3600);
  let results;

  before(async () => {
    results = [...(await append(success)).results, ...(await append(decline)).results];
  });

  test('append returns one new position per event', () => {
    assert.equal(results.length, 12);
    const positions = results.map((r) => BigInt(r.position));
    assert.ok(positions.every((p, i) => p > 0n && (i === 0 || p > positions[i - 1])));
    assert.ok(results.every((r) => r.duplicate === false));
  });

  test('ListConnections gives each state', async () => {
    const reply = await unary(history, 'ListConnections', { patient_id: 'pat-1' });
    assert.deepEqual(reply.connections.map((c) => [c.connection_id, c.state]), [
      ['conn-1', 'CONNECTION_STATE_ACTIVE'],
      ['conn-2', 'CONNECTION_STATE_DENIED'],
    ]);
  });

  test('GetConnection: ACTIVE', async () => {
    const c = await unary(history, 'GetConnection', { connection_id: 'conn-1' });
    assert.equal(c.state, 'CONNECTION_STATE_ACTIVE');
    assert.equal(c.patient_id, 'pat-1');
    assert.equal(c.current_session_id, 'sess-1');
    assert.equal(c.source.name, 'Epic MyChart – Northwind Health');
    assert.equal(c.event_count, '7'); // uint64 as a string (longs: String)
    assert.equal(c.last_event.event_id, 'ok-7');
    assert.equal(c.last_failure, null);
  });

  test('GetConnection: DENIED', async () => {
    const c = await unary(history, 'GetConnection', { connection_id: 'conn-2' });
    assert.equal(c.state, 'CONNECTION_STATE_DENIED');
    assert.equal(c.last_failure.error_code, 'access_denied');
    assert.equal(c.last_failure.category, 'FAILURE_CATEGORY_PATIENT_DECLINED');
  });

  test('GetConnection of an unknown id is NOT_FOUND', async () => {
    const error = await failure(unary(history, 'GetConnection', { connection_id: 'nobody' }));
    assert.equal(error.code, grpc.status.NOT_FOUND);
  });

  const answers = (d) => [d.reached_portal, d.signed_in, d.approved_access,
                          d.token_exchanged, d.refresh_failed_later].map((f) => f.answer);

  test('DiagnoseSession of the successful attempt', async () => {
    const d = await unary(history, 'DiagnoseSession', { session_id: 'sess-1' });
    assert.deepEqual(answers(d), ['ANSWER_YES', 'ANSWER_YES', 'ANSWER_YES', 'ANSWER_YES',
                                  'ANSWER_UNKNOWN']);
    assert.equal(d.token_exchanged.evidence.event_id, 'ok-7');
    assert.equal(d.furthest_step, 'STEP_TOKEN_EXCHANGE');
    assert.equal(d.root_cause, null);
    assert.equal(d.event_count, '7');
    assert.equal(d.connection_id, 'conn-1');
  });

  test('DiagnoseSession of the declined attempt', async () => {
    const d = await unary(history, 'DiagnoseSession', { session_id: 'sess-2' });
    assert.deepEqual(answers(d), ['ANSWER_YES', 'ANSWER_YES', 'ANSWER_NO', 'ANSWER_NO',
                                  'ANSWER_UNKNOWN']);
    assert.equal(d.root_cause.error_code, 'access_denied');
    assert.equal(d.root_cause.event.event_id, 'no-4');
    assert.equal(d.root_cause.event.step, 'STEP_CONSENT');
  });

  test('ListEvents pages without gaps or repeats', async () => {
    const request = { filter: { patient_id: 'pat-1' }, page_size: 5, oldest_first: true };
    const seen = [];
    let pages = 0;
    for (;;) {
      const reply = await unary(history, 'ListEvents', request);
      pages += 1;
      seen.push(...reply.events.map((r) => r.event.event_id));
      if (!reply.next_page_token) break;
      request.page_token = reply.next_page_token;
    }
    assert.equal(pages, 3);
    assert.deepEqual(seen, [...success, ...decline].map((e) => e.event_id));
  });
});

describe('standard services', () => {
  test('health is SERVING', async () => {
    const reply = await unary(health, 'Check', { service: '' });
    assert.equal(reply.status, 'SERVING');
  });

  test('health of an unknown service is NOT_FOUND', async () => {
    const error = await failure(unary(health, 'Check', { service: 'no.Such' }));
    assert.equal(error.code, grpc.status.NOT_FOUND);
  });

  test('reflection lists every service', async () => {
    const replies = await new Promise((resolve, reject) => {
      const out = [];
      const call = reflection.ServerReflectionInfo({ deadline: deadline() });
      call.on('data', (reply) => out.push(reply));
      call.on('error', reject);
      call.on('end', () => resolve(out));
      call.write({ list_services: '*' });
      call.end();
    });
    assert.equal(replies.length, 1);
    assert.equal(replies[0].message_response, 'list_services_response');
    const names = replies[0].list_services_response.service.map((s) => s.name);
    for (const service of [...API_SERVICES, ...STANDARD_SERVICES]) {
      assert.ok(names.includes(service), `${service} not in ${names}`);
    }
  });
});

describe('errors and retries', () => {
  test('an invalid event is INVALID_ARGUMENT with a BadRequest', async () => {
    const good = event('bad-batch-1', 'pat-9', 'conn-9', 'sess-9', 'PORTAL_REDIRECT',
                       'STARTED', T0);
    // FAILED without an error_code breaks a rule.
    const bad = event('bad-batch-2', 'pat-9', 'conn-9', 'sess-9', 'PORTAL_REDIRECT',
                      'FAILED', T0 + 1);
    const error = await failure(append([good, bad]));
    assert.equal(error.code, grpc.status.INVALID_ARGUMENT);
    assert.match(error.details, /events\[1\]\.error_code/);
    const { status, badRequest } = badRequestOf(error);
    assert.ok(status, 'no google.rpc.BadRequest in the grpc-status-details-bin trailer');
    assert.equal(status.code, grpc.status.INVALID_ARGUMENT);
    assert.deepEqual(badRequest.field_violations.map((v) => v.field),
                     ['events[1].error_code']);
    assert.ok(badRequest.field_violations[0].description);
    // All-or-nothing: the valid event of the refused batch was not kept.
    const reply = await append([good]);
    assert.equal(reply.results[0].duplicate, false);
  });

  test('a retry with the same event ids is a duplicate', async () => {
    const batch = ['STARTED', 'SUCCEEDED'].map((outcome, i) =>
      event(`retry-${i}`, 'pat-8', 'conn-8', 'sess-8', 'PORTAL_REDIRECT', outcome, T0 + i));
    const first = await append(batch);
    const again = await append(batch);
    assert.deepEqual(first.results.map((r) => r.duplicate), [false, false]);
    assert.deepEqual(again.results.map((r) => r.duplicate), [true, true]);
    assert.deepEqual(again.results.map((r) => r.position),
                     first.results.map((r) => r.position));
  });

  test('a retry after a lost reply gets the original positions', async () => {
    const client = lostReplyClient(ingest);
    const batch = [0, 1, 2].map((i) =>
      event(`lost-${i}`, 'pat-6', 'conn-6', 'sess-6', 'SIGN_IN', 'SUCCEEDED', T0 + i));
    const reply = await appendWithRetry(client, batch, { baseMs: 10 });
    assert.equal(client.calls, 2);
    assert.deepEqual(client.lostReply.results.map((r) => r.duplicate), [false, false, false]);
    assert.deepEqual(reply.results.map((r) => r.duplicate), [true, true, true]);
    assert.deepEqual(reply.results.map((r) => r.position),
                     client.lostReply.results.map((r) => r.position));
  });

  test('INVALID_ARGUMENT is not retried', async () => {
    const client = lostReplyClient(ingest);
    // DENIED without an error_code breaks a rule.
    const bad = event('never-1', 'pat-6', 'conn-6', 'sess-6', 'SIGN_IN', 'DENIED', T0);
    const error = await failure(appendWithRetry(client, [bad], { baseMs: 10 }));
    assert.equal(error.code, grpc.status.INVALID_ARGUMENT);
    assert.equal(client.calls, 1);
  });

  test('the same event id with other content is ALREADY_EXISTS', async () => {
    await append([event('reuse-1', 'pat-7', 'conn-7', 'sess-7', 'SIGN_IN', 'SUCCEEDED', T0)]);
    const error = await failure(append([
      event('reuse-1', 'pat-7', 'conn-7', 'sess-7', 'SIGN_IN', 'FAILED', T0, 'login_failed'),
    ]));
    assert.equal(error.code, grpc.status.ALREADY_EXISTS);
  });
});

// Last: top-level tests run in order, after the suites above.
test('SIGTERM stops the server with exit code 0', async () => {
  closeClients();
  const code = await daemon.stop();
  assert.equal(code, 0, `authtraild exited with ${code}; log:\n${daemon.logTail()}`);
});
