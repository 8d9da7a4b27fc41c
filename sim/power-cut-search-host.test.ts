// The power-cut search (sim/power-cut-search.ts) over a host's writes to the phone's disk unit
// (the free zone, FAT, through the power-safe disk controller): creating a file, every mutating
// flash operation cut in turn and every program torn in its middle, each on a fresh phone, and
// each distinct recovery the disk controller makes at the next power-on cut again at each of
// its operations; then a replug: every file the write did not touch reads back as it was, the
// volume mounts, fsck.fat -n names none of them, the hidden and virtual zones are byte-identical
// and the phone logs in (its boot files, MAIN.EXE first, still verify).
// Overwriting a file: sim/power-cut-search-overwrite.test.ts; deleting one:
// sim/power-cut-search-delete.test.ts (one host write per file keeps each under a minute).
import { test } from 'uvu';
import { setLogSink } from '../server-kit/log.ts';
import { hostWriteSearchTest } from './power-cut-tests.ts';

setLogSink(() => {});
hostWriteSearchTest('host-create', 'NOTE.TXT');
test.run();
