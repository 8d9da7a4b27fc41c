// The store test matrix (issue 16): the same test body against SQLite and PostgreSQL.
//   for (const b of backends()) { const test = suite(`x store [${b.name}]`); ... b.place() ... }
// The PostgreSQL half runs in a fresh schema per place (t_<random>), dropped by cleanup(); when
// PostgreSQL is unreachable it FAILS (CI starts it with scripts/ensure-services.sh), never skips.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { testSchema } from './pg.ts';
import type { StorePlace } from './store-choice.ts';

export interface Backend {
  name: 'sqlite' | 'postgres';
  /** A fresh, empty place for one store (`what` names the SQLite file). */
  place(what?: string): StorePlace;
  /** Removes every place this backend handed out (close the stores first). */
  cleanup(): Promise<void>;
  /**
   * A store opening in a `before` hook, its failure printed: uvu counts the suite's tests as
   * not passed but says nothing of why (PostgreSQL unreachable: STORE_UNAVAILABLE).
   */
  opening<T>(p: Promise<T>): Promise<T>;
}

function opening<T>(this: Backend, p: Promise<T>): Promise<T> {
  return p.catch((e: unknown) => {
    process.stderr.write(`store test [${this.name}]: the store did not open: ${(e as Error).message}\n`);
    throw e;
  });
}

function sqliteBackend(): Backend {
  let dir: string | null = null;
  let n = 0;
  return {
    name: 'sqlite',
    place(what = 'store') {
      dir ??= mkdtempSync(join(tmpdir(), 'usbphone-store-'));
      return { kind: 'sqlite', file: join(dir, `${what}-${n++}.sqlite`) };
    },
    async cleanup() {
      if (dir) rmSync(dir, { recursive: true, force: true });
      dir = null;
    },
    opening,
  };
}

function pgBackend(): Backend {
  const made: { drop(): Promise<void> }[] = [];
  return {
    name: 'postgres',
    place() {
      const s = testSchema();
      made.push(s);
      return { kind: 'postgres', url: s.url, schema: s.schema };
    },
    async cleanup() {
      for (const s of made.splice(0)) {
        try {
          await s.drop();
        } catch (e) {
          // Unreachable: nothing was made there (the test itself has failed with STORE_UNAVAILABLE).
          if ((e as { code?: string }).code !== 'ECONNREFUSED') throw e;
        }
      }
    },
    opening,
  };
}

/** SQLite, then PostgreSQL: `STORE_BACKENDS=sqlite` (or postgres) runs one half only, for a quick local loop. */
export function backends(only = process.env.STORE_BACKENDS): Backend[] {
  const all = [sqliteBackend(), pgBackend()];
  return only ? all.filter((b) => only.split(',').includes(b.name)) : all;
}
