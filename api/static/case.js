// Case page: event details on focus, and verification in the panel's own browser.
// Verification trusts only the log key the panel enters (pinned in localStorage): it
// checks the checkpoint's Ed25519 signature, each event's RFC 9162 inclusion proof, the
// case's hash chain and each agency signature, all with WebCrypto.
"use strict";

const enc = new TextEncoder();

function b64(text) {
  const bin = atob(text);
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
}

function hex(bytes) {
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

function concat(...parts) {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) { out.set(p, at); at += p.length; }
  return out;
}

function equal(a, b) {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}

async function sha256(bytes) {
  return new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));
}

async function ed25519(publicKey, signature, message) {
  const key = await crypto.subtle.importKey("raw", publicKey, { name: "Ed25519" }, false, ["verify"]);
  return crypto.subtle.verify({ name: "Ed25519" }, key, signature, message);
}

// RFC 9162 section 2.1.3.2.
async function rootFromInclusion(index, size, leaf, proof) {
  if (index >= size) throw new Error(`leaf index ${index} is not below tree size ${size}`);
  let fn = index, sn = size - 1, r = leaf;
  for (const p of proof) {
    if (p.length !== 32) throw new Error("proof hash is not 32 bytes");
    if (sn === 0) throw new Error("inclusion proof too long");
    if ((fn & 1) === 1 || fn === sn) {
      r = await sha256(concat(new Uint8Array([1]), p, r));
      while ((fn & 1) === 0 && fn !== 0) { fn >>= 1; sn >>= 1; }
    } else {
      r = await sha256(concat(new Uint8Array([1]), r, p));
    }
    fn >>= 1; sn >>= 1;
  }
  if (sn !== 0) throw new Error("inclusion proof too short");
  return r;
}

async function openCheckpoint(note, logKey) {
  const [name, keyHash, material] = [logKey.split("+")[0], logKey.split("+")[1],
    logKey.split("+").slice(2).join("+")];
  const raw = b64(material);
  if (raw[0] !== 1 || raw.length !== 33) throw new Error("the log key is not an Ed25519 note key");
  const publicKey = raw.slice(1);
  const idHash = (await sha256(concat(enc.encode(name + "\n"), raw))).slice(0, 4);
  if (hex(idHash) !== keyHash) throw new Error("the log key's hash does not match its name and key");
  const cut = note.lastIndexOf("\n\n");
  const text = note.slice(0, cut + 1);
  const lines = note.slice(cut + 2).split("\n").filter((l) => l);
  for (const line of lines) {
    const m = line.match(/^\u2014 (\S+) ([A-Za-z0-9+/=]+)$/);
    if (!m || m[1] !== name) continue;
    const blob = b64(m[2]);
    if (!equal(blob.slice(0, 4), idHash)) continue;
    if (!(await ed25519(publicKey, blob.slice(4), enc.encode(text)))) {
      throw new Error("the checkpoint's signature does not verify with this log key");
    }
    const [origin, size, root] = text.split("\n");
    if (origin !== name) throw new Error("the checkpoint names another log");
    return { size: Number(size), root: b64(root), publicKey };
  }
  throw new Error("the checkpoint is not signed by this log key");
}

async function verifyCase(bundleUrl, logKey) {
  const response = await fetch(bundleUrl, { credentials: "same-origin" });
  if (!response.ok) throw new Error(`could not fetch the case (${response.status})`);
  const bundle = await response.json();
  const checkpoint = await openCheckpoint(bundle.checkpoint, logKey);
  const keys = new Map();
  const caseStream = `case/${bundle.case_id}`;
  const caseEvents = [];
  for (const entry of bundle.entries) {
    const bytes = b64(entry.bytes);
    const leaf = await sha256(concat(new Uint8Array([0]), bytes));
    const proof = entry.inclusion.map(b64);
    const envelope = JSON.parse(new TextDecoder().decode(bytes));
    const body = JSON.parse(envelope.body);
    const root = await rootFromInclusion(entry.leaf_index, checkpoint.size, leaf, proof);
    if (!equal(root, checkpoint.root)) {
      throw new Error(`${entry.stream} seq ${entry.seq} (event ${body.event_id}): its inclusion proof does not match the signed checkpoint`);
    }
    if (body.type === "AGENCY_KEY_ADDED") {
      const pk = b64(body.payload.public_key);
      keys.set(hex(await sha256(pk)).slice(0, 32), { agency: body.agency_id, pk });
    }
    if (entry.stream === caseStream) caseEvents.push({ entry, bytes, envelope, body });
  }
  caseEvents.sort((a, b) => a.envelope.seq - b.envelope.seq);
  let prev = null;
  for (const [n, e] of caseEvents.entries()) {
    const where = `seq ${e.envelope.seq} (event ${e.body.event_id})`;
    if (e.envelope.seq !== n + 1) throw new Error(`${where}: events are missing before it`);
    if (e.envelope.prev_hash !== prev) throw new Error(`${where}: it does not follow the previous event's hash`);
    prev = hex(await sha256(e.bytes));
    const signer = e.body.agency === "ledger" ? { agency: "ledger", pk: checkpoint.publicKey } : keys.get(e.body.key_id);
    if (!signer || signer.agency !== e.body.agency) throw new Error(`${where}: signed with a key that is not ${e.body.agency}'s`);
    const message = concat(enc.encode("response-ledger/v1/event-body\n"), enc.encode(e.envelope.body));
    if (!(await ed25519(signer.pk, b64(e.envelope.sig), message))) throw new Error(`${where}: its signature does not verify`);
  }
  return { events: caseEvents.length, size: checkpoint.size };
}

document.addEventListener("DOMContentLoaded", () => {
  const detail = document.getElementById("mark-detail");
  for (const el of document.querySelectorAll("#timeline .mark, #timeline .bar")) {
    el.addEventListener("focus", () => { detail.textContent = el.getAttribute("aria-label"); });
    el.addEventListener("mouseenter", () => { detail.textContent = el.getAttribute("aria-label"); });
  }
  const input = document.getElementById("log-key");
  const result = document.getElementById("verify-result");
  const pinned = localStorage.getItem("ledger-log-key");
  if (pinned) input.value = pinned;
  document.getElementById("verify-button").addEventListener("click", async () => {
    result.className = "";
    result.textContent = "Verifying…";
    const key = input.value.trim();
    localStorage.setItem("ledger-log-key", key);
    try {
      const started = performance.now();
      const outcome = await verifyCase(input.dataset.bundle, key);
      result.className = "ok";
      result.textContent = `Verified: all ${outcome.events} events of this case are in the log's signed checkpoint of ${outcome.size} events, correctly chained and signed (${Math.round(performance.now() - started)} ms).`;
    } catch (err) {
      result.className = "fail";
      result.textContent = `Verification FAILED: ${err.message}`;
    }
  });
});
