// The power-cut search (sim/power-cut-search.ts) over a host overwriting a file on the phone's
// disk unit (a new cluster chain first, the old one freed after: two FAT passes), as
// sim/power-cut-search-host.test.ts does for creating and deleting one.
import { test } from 'uvu';
import { setLogSink } from '../server-kit/log.ts';
import { hostWriteSearchTest } from './power-cut-tests.ts';

setLogSink(() => {});
hostWriteSearchTest('host-overwrite', 'README.TXT');
test.run();
