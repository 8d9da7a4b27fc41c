// The power-cut search (sim/power-cut-search.ts) over a bank registration (S4.1, S3.3): a phone
// with its SIM and its person registers at the bank, the boot's saves cut at every flash
// operation (the fingerprint template and the one-time-code seed go to the chip's NVM in
// between), and again in the next power-on's writes; after each, the person logs into the bank
// (or registers again when the cut came before the bank kept the account) and the chip's person
// state answers. The phone's other writes: sim/power-cut-search.test.ts.
import { test } from 'uvu';
import { setLogSink } from '../server-kit/log.ts';
import { firmwareWriteSearchTest, suiteCutWorld } from './power-cut-tests.ts';

setLogSink(() => {});

firmwareWriteSearchTest(suiteCutWorld(), 'bank-register', ['login', 'secrets'], 100);
test.run();
