// CRC-32 (IEEE 802.3, reflected, polynomial 0xEDB88320): the keyless integrity check of the
// partition table and of sealed records, so an inspector without the fuses still finds a
// flipped bit. It is not authentication: sealed records carry a Poly1305 tag for that.
const TABLE = (() => {
  const t = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    t[n] = c >>> 0;
  }
  return t;
})();

/** CRC-32 of the concatenation of parts. crc32(utf8('123456789')) = 0xCBF43926. */
export function crc32(...parts: Uint8Array[]): number {
  let c = 0xffffffff;
  for (const p of parts) for (let i = 0; i < p.length; i++) c = TABLE[(c ^ p[i]!) & 0xff]! ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}
