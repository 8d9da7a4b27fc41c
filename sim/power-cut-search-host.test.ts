// The power-cut search (sim/power-cut-search.ts) over a host's writes to the phone's disk unit
// (the free zone, FAT, through the power-safe disk controller): creating a file and deleting one,
// every mutating flash operation cut in turn and every program torn in its middle, each on a
// fresh phone, then a replug: every file the write did not touch reads back as it was, the
// volume mounts, fsck.fat -n names none of them, the hidden and virtual zones are byte-identical
// and the phone logs in (its boot files, MAIN.EXE first, still verify).
// Overwriting a file: sim/power-cut-search-overwrite.test.ts (a file each keeps each under a minute).
import { test } from 'uvu';
import { setLogSink } from '../server-kit/log.ts';
import { hostWriteSearchTest } from './power-cut-tests.ts';

setLogSink(() => {});
hostWriteSearchTest('host-create', 'NOTE.TXT');
hostWriteSearchTest('host-delete', 'README.TXT');
test.run();
