// A vendor signing key for tests and benchmarks only (the factory's own key is a secret in its
// state directory: `usbphone image` creates `vendor.key`, never in the working tree). Fixed, so
// test images are reproducible; nothing but tests, benches and the deterministic simulator use it.
import { vendorPublicKey } from '../boot-manifest.ts';

export const TEST_VENDOR_KEY = new Uint8Array(32).fill(0x76);
export const TEST_VENDOR_PUB = vendorPublicKey(TEST_VENDOR_KEY);
