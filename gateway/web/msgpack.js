// A MessagePack decoder for what the gateway sends (Python's msgpack, use_bin_type=True):
// nil, bool, ints up to 64 bits, float32/64, str, bin, array, map; ext types are skipped as
// null. Written here rather than vendored: ~100 lines with no build step, and it can keep the
// hot path (thousands of small maps per positions frame) free of per-call allocations.

const utf8 = new TextDecoder("utf-8");

export class DecodeError extends Error {}

export function decode(buffer) {
  const bytes = buffer instanceof Uint8Array ? buffer : new Uint8Array(buffer);
  const r = { view: new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength), bytes, pos: 0 };
  const value = read(r);
  if (r.pos !== bytes.length) throw new DecodeError(`${bytes.length - r.pos} trailing bytes`);
  return value;
}

function need(r, n) {
  if (r.pos + n > r.bytes.length) throw new DecodeError("truncated");
}

function str(r, n) {
  need(r, n);
  const { bytes } = r;
  const start = r.pos;
  r.pos += n;
  if (n < 24) {
    // Short keys and ids are ASCII: building them by hand beats TextDecoder's call cost.
    let out = "";
    for (let i = start; i < start + n; i++) {
      const c = bytes[i];
      if (c > 0x7f) return utf8.decode(bytes.subarray(start, start + n));
      out += String.fromCharCode(c);
    }
    return out;
  }
  return utf8.decode(bytes.subarray(start, start + n));
}

function array(r, n) {
  const out = new Array(n);
  for (let i = 0; i < n; i++) out[i] = read(r);
  return out;
}

function map(r, n) {
  const out = {};
  for (let i = 0; i < n; i++) {
    const key = read(r);
    const value = read(r);
    // A bot-chosen key must not replace the object's prototype.
    if (key === "__proto__") Object.defineProperty(out, key, { value, enumerable: true });
    else out[key] = value;
  }
  return out;
}

function uint(r, n) {
  need(r, n);
  const v = r.view;
  const p = r.pos;
  r.pos += n;
  if (n === 1) return v.getUint8(p);
  if (n === 2) return v.getUint16(p);
  if (n === 4) return v.getUint32(p);
  const big = v.getBigUint64(p);
  return big <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(big) : big;
}

function sint(r, n) {
  need(r, n);
  const v = r.view;
  const p = r.pos;
  r.pos += n;
  if (n === 1) return v.getInt8(p);
  if (n === 2) return v.getInt16(p);
  if (n === 4) return v.getInt32(p);
  const big = v.getBigInt64(p);
  const safe = BigInt(Number.MAX_SAFE_INTEGER);
  return big <= safe && big >= -safe ? Number(big) : big;
}

function bin(r, n) {
  need(r, n);
  const out = r.bytes.slice(r.pos, r.pos + n);
  r.pos += n;
  return out;
}

function ext(r, n) {
  need(r, n + 1);
  r.pos += n + 1; // type byte + data: nothing the gateway sends; keep the stream aligned
  return null;
}

function read(r) {
  need(r, 1);
  const t = r.bytes[r.pos++];
  if (t <= 0x7f) return t;
  if (t <= 0x8f) return map(r, t & 0x0f);
  if (t <= 0x9f) return array(r, t & 0x0f);
  if (t <= 0xbf) return str(r, t & 0x1f);
  if (t >= 0xe0) return t - 0x100;
  switch (t) {
    case 0xc0: return null;
    case 0xc2: return false;
    case 0xc3: return true;
    case 0xc4: return bin(r, uint(r, 1));
    case 0xc5: return bin(r, uint(r, 2));
    case 0xc6: return bin(r, uint(r, 4));
    case 0xc7: return ext(r, uint(r, 1));
    case 0xc8: return ext(r, uint(r, 2));
    case 0xc9: return ext(r, uint(r, 4));
    case 0xca: { need(r, 4); const f = r.view.getFloat32(r.pos); r.pos += 4; return f; }
    case 0xcb: { need(r, 8); const f = r.view.getFloat64(r.pos); r.pos += 8; return f; }
    case 0xcc: return uint(r, 1);
    case 0xcd: return uint(r, 2);
    case 0xce: return uint(r, 4);
    case 0xcf: return uint(r, 8);
    case 0xd0: return sint(r, 1);
    case 0xd1: return sint(r, 2);
    case 0xd2: return sint(r, 4);
    case 0xd3: return sint(r, 8);
    case 0xd4: return ext(r, 1);
    case 0xd5: return ext(r, 2);
    case 0xd6: return ext(r, 4);
    case 0xd7: return ext(r, 8);
    case 0xd8: return ext(r, 16);
    case 0xd9: return str(r, uint(r, 1));
    case 0xda: return str(r, uint(r, 2));
    case 0xdb: return str(r, uint(r, 4));
    case 0xdc: return array(r, uint(r, 2));
    case 0xdd: return array(r, uint(r, 4));
    case 0xde: return map(r, uint(r, 2));
    case 0xdf: return map(r, uint(r, 4));
    default: throw new DecodeError(`bad type byte 0x${t.toString(16)}`);
  }
}
