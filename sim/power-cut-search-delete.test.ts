// The power-cut search (sim/power-cut-search.ts) over a host deleting a file on the phone's
// disk unit (the directory entry and the FAT chain freed), as sim/power-cut-search-host.test.ts
// does for creating one.
import { test } from 'uvu';
import { setLogSink } from '../server-kit/log.ts';
import { hostWriteSearchTest } from './power-cut-tests.ts';

setLogSink(() => {});
hostWriteSearchTest('host-delete', 'README.TXT');
test.run();
