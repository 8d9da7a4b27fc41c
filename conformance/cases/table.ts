// §16 (S3.11): the attack statistics table a registration server hands on in credReply.table.
// A server may send none (it has no table yet, or one too large for a credential reply); when it
// sends one, it is the policy server's signed table, unchanged: the suite checks its shape and
// limits always, and its signature only when given the policy server's public key (an optional
// input, --policy-key; the phone holds it from the factory).
import { decode } from '../../protocol/cbor.ts';
import { decodeTableBody, verifyTable, TableLimits } from '../../protocol/attack-table.ts';
import { CRED_TABLE_MAX_BYTES, encodeEnvelope, MsgType } from '../../protocol/messages.ts';
import { pass, fail, expectRefusal, type Case, type CaseContext, type Outcome } from '../suite.ts';
import { register } from '../flows.ts';

/** The signed wrapper [body, signature(64)]: two byte strings (docs/protocol.md §16 `signed-table`). */
const SIGNED_LIMITS = { maxFrameBytes: TableLimits.maxTableBytes, maxDepth: 1, maxArrayItems: 2, maxMapEntries: 0, maxStringBytes: TableLimits.maxTableBytes, maxItems: 3 };

/** The table of a credential reply, or the outcome when there is none to check. */
async function tableOf(ctx: CaseContext, expected: string): Promise<Uint8Array | Outcome> {
  const r = await register(ctx);
  if (r.kind !== 'cred') return fail(expected, `registration: ${r.kind === 'other' ? r.text : 'notFound'}`);
  if (!r.cred.table) return { verdict: 'informational', expected, note: 'the credReply carries no table (allowed: a server without one, or with one too large for a credential reply, sends none)' };
  return r.cred.table;
}

export const tableCases: Case[] = [
  {
    section: '§16',
    title: 'a tablePush sent by a device (only the gateway sends one) -> GW_BAD_DIRECTION at a gateway, MSG_UNEXPECTED at a server, and close',
    async run(ctx) {
      const c = await ctx.connect();
      c.send(encodeEnvelope(MsgType.tablePush, 0, ctx.target.regDest, [new Uint8Array(96)]));
      return expectRefusal(c, ['GW_BAD_DIRECTION', 'MSG_UNEXPECTED']);
    },
  },
  {
    section: '§16',
    title: `a credReply's table, when present, is a signed table [body, signature(64)] within its limits (at most ${CRED_TABLE_MAX_BYTES} bytes, ${TableLimits.maxSites} sites) whose body parses`,
    async run(ctx) {
      const expected = 'no table (informational), or [bstr body, bstr .size 64] whose body is a table of docs/protocol.md §16 (label, version, issuedAt < expiresAt, sites sorted and unique, rates within 1e6)';
      const t = await tableOf(ctx, expected);
      if (!(t instanceof Uint8Array)) return t;
      let body: Uint8Array;
      try {
        const v = decode(t, SIGNED_LIMITS);
        if (!Array.isArray(v) || v.length !== 2 || !(v[0] instanceof Uint8Array) || !(v[1] instanceof Uint8Array)) return fail(expected, 'the table is not [bstr, bstr]');
        if (v[1].length !== 64) return fail(expected, `the signature is ${v[1].length} bytes, not 64 (Ed25519)`);
        body = v[0];
      } catch (e) {
        return fail(expected, `the table does not decode as a signed table: ${(e as Error).message}`);
      }
      try {
        const table = decodeTableBody(body);
        return pass(expected, `version ${table.version}, ${table.sites.length} site(s), ${t.length} bytes${ctx.target.policyKey ? '' : '; signature not checked (no --policy-key)'}`);
      } catch (e) {
        return fail(expected, `the body is not a table: ${(e as Error).message}`);
      }
    },
  },
  {
    section: '§16',
    title: "a credReply's table, when present, verifies under the policy server's public key (else the phone refuses it: TABLE_BAD_SIGNATURE)",
    needs: 'policy-key',
    async run(ctx) {
      const expected = 'an Ed25519 signature over the body bytes that verifies under --policy-key (RFC 8032), and a table not yet expired';
      const t = await tableOf(ctx, expected);
      if (!(t instanceof Uint8Array)) return t;
      const v = verifyTable(t, ctx.target.policyKey!, Date.now(), null);
      if (v.ok) return pass(expected, `version ${v.table.version}`);
      // A server that lost its policy server keeps the last table: an expired one is signed but stale.
      if (v.code === 'TABLE_EXPIRED') return { verdict: 'non-strict', expected, note: `signed, but ${v.reason}: the phone keeps the table it has` };
      return fail(expected, `${v.code}: ${v.reason}`);
    },
  },
];
