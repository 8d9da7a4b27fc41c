# The project's front door. Every target installs what it needs first.
SHELL := /bin/bash
NODE_BIN := node_modules/.bin
USBPHONE := node bin/usbphone.js
STATE ?= state

.PHONY: all deps tools test typecheck test-slow sim serve image inspect bench clean help

all: help

help:
	@echo "make sim        boot one virtual phone against servers on loopback and watch it log in"
	@echo "make test       type check + every test (ends with 'N passed, N failed')"
	@echo "make test-slow  the slow suites (exhaustive power cuts, fleets)"
	@echo "make serve      gateway + registration primary/backup + two business servers on loopback"
	@echo "make image      build a factory flash image into $(STATE)/phone.img"
	@echo "make inspect IMAGE=FILE   inspect a flash image"
	@echo "make bench      run the benchmarks in bench/"

# npm ci, keyed on the lock file: reinstalls only when package-lock.json changes.
node_modules/.stamp: package-lock.json
	npm ci --no-audit --no-fund
	@touch $@

deps: node_modules/.stamp

# Real tools the tests drive (fsck.fat, mtools, xorriso); installed when missing.
tools:
	@bash scripts/ensure-tools.sh

typecheck: deps
	$(NODE_BIN)/tsc --noEmit -p .

test: deps tools typecheck
	node scripts/run-tests.mjs

test-slow: deps tools
	SLOW=1 node scripts/run-tests.mjs

sim: deps
	$(USBPHONE) sim

serve: deps
	$(USBPHONE) serve all --state $(STATE)

image: deps
	@mkdir -p $(STATE)
	$(USBPHONE) image --serial SN-0000001 --out $(STATE)/phone.img --fuses $(STATE)/phone.fuses --master-key $(STATE)/master.key

inspect: deps
	$(USBPHONE) inspect $(IMAGE) $(if $(FUSES),--fuses $(FUSES),)

bench: deps
	@for f in bench/*.bench.ts; do echo "== $$f"; $(NODE_BIN)/tsx $$f || exit 1; done

clean:
	rm -rf $(STATE) tmp
