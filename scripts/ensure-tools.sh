#!/usr/bin/env bash
# Installs the real tools the tests use to read our images, when they are missing.
# fsck.fat and mkfs.fat (dosfstools), mdir/mcopy (mtools), xorriso, xmllint (libxml2-utils: the
# conformance suite's JUnit XML checked against its schema); Debian's chromium for the live page's
# browser tests (deploy/page.test.ts, driven by playwright-core, which downloads no browser).
# Needs root (CI and the dev machines are).
set -euo pipefail
need=()
command -v fsck.fat >/dev/null 2>&1 || need+=(dosfstools)
command -v mdir >/dev/null 2>&1 || need+=(mtools)
command -v xorriso >/dev/null 2>&1 || need+=(xorriso)
command -v xmllint >/dev/null 2>&1 || need+=(libxml2-utils)
[ -x /usr/bin/chromium ] || need+=(chromium)
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ]; then
  echo "ensure-tools: missing ${need[*]} and not root; the tests that use them will fail" >&2
  exit 0
fi
echo "ensure-tools: installing ${need[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null
apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
