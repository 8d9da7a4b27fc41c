# The project's front door. Every target installs what it needs first.
SHELL := /bin/bash
NODE_BIN := node_modules/.bin
USBPHONE := node bin/usbphone.js
STATE ?= state
# make sim GATEWAY=ws://127.0.0.1:7400/ plugs the phone into servers that already run (make serve).
GATEWAY ?=
# make inspect inspects the phone make sim plugs in, unless IMAGE= names another image.
IMAGE ?= $(STATE)/phone.img

.PHONY: all deps tools services test typecheck test-slow test-pg test-cluster soak sim serve image inspect bench bench-scale bench-scale-quick bench-held clean help

all: help

help:
	@echo "make sim        boot one virtual phone and watch it log in: starts the servers on loopback,"
	@echo "                keeps the phone and the servers' files in $(STATE)/ (STATE=DIR); run it again"
	@echo "                for a second boot. With 'make serve' running: make sim GATEWAY=ws://127.0.0.1:7400/"
	@echo "make test       type check + every test, exhaustive power cuts included, then the files whose stores follow"
	@echo "                STORE_URL again on PostgreSQL (one final 'N passed, N failed' for both passes)"
	@echo "make test-slow  every test, plus the 1000-phone fleet as a correctness test (SLOW=1)"
	@echo "make test-pg    every test file but the SQLite-only ones (docs/deploy.md) with every store on PostgreSQL"
	@echo "                (STORE_URL, a database of the run's own, dropped after); FILES=... runs those only"
	@echo "make test-cluster  the reference topology on several hosts of this machine (network namespaces;"
	@echo "                loopback addresses without root): kill -9 and a cut link under a fleet of phones"
	@echo "                (also part of make test); figures printed"

	@echo "make soak       the deterministic simulation over 100,000 seeds (SEEDS=N, FROM=S), SOAK_JOBS worker processes (default: the cores); failing seeds printed with their replay"
	@echo "make services   start PostgreSQL (127.0.0.1:5432) and Redis (127.0.0.1:6379) when they are not running (make test does)"
	@echo "make serve      gateway + registration primary/backup + two business servers on loopback, state in $(STATE)/"
	@echo "make image      build a factory flash image into $(STATE)/factory.img (the phone make sim uses is $(STATE)/phone.img)"
	@echo "make inspect    inspect a flash image: $(STATE)/phone.img, or IMAGE=FILE [FUSES=FILE]"
	@echo "make bench      run the benchmarks in bench/"
	@echo "make bench-scale  a million phones in one run (usbphone sim --devices 1000000; SCALE_DEVICES=N): memory per"
	@echo "                phone and the cost curve; hours on 2 cores"
	@echo "make bench-scale-quick  the same with 10,000 phones (minutes)"
	@echo "make bench-held 50,000 connections held across 4 gateway workers (HELD_PHONES, HELD_WORKERS): the gateway's"
	@echo "                memory per idle connection and a table push reaching all of them"
	@echo "make clean      remove $(STATE)/ (servers' databases and keys, the phone and its saved login) and tmp/"
	@echo "the command itself: node bin/usbphone.js --help (or npx usbphone --help, after npm ci)"

# npm ci, keyed on the lock file: reinstalls only when package-lock.json changes.
node_modules/.stamp: package-lock.json
	npm ci --no-audit --no-fund
	@touch $@

deps: node_modules/.stamp

# Real tools the tests drive (fsck.fat, mtools, xorriso); installed when missing.
tools:
	@bash scripts/ensure-tools.sh

# PostgreSQL and Redis for the tests of the scaled-out back end (never needed by make sim/serve).
services:
	@bash scripts/ensure-services.sh

typecheck: deps
	$(NODE_BIN)/tsc --noEmit -p .

# Every test on SQLite, then a second pass on PostgreSQL over the files whose stores followed
# STORE_URL in the first (docs/decisions.md 118; scripts/run-tests.mjs --pg-pass).
test: deps tools services typecheck
	node scripts/run-tests.mjs --pg-pass

# Every test file but the SQLite-only ones (scripts/store-suites.mjs) with every store on PostgreSQL.
test-pg: deps services
	node scripts/test-pg.mjs $(FILES)

test-slow: deps tools
	SLOW=1 node scripts/run-tests.mjs

# The whole system in one deterministic simulation (issue 14; docs/simulation.md): make test runs
# seeds 1-1000, the soak 100,000 from FROM, one worker process per core (SOAK_JOBS). Hours on
# two cores (docs/benchmarks.md §"Deterministic simulation").
SEEDS ?= 100000
FROM ?= 1001
SOAK_JOBS ?= $(shell nproc 2>/dev/null || echo 2)
soak: deps
	$(USBPHONE) simulate --seeds $(SEEDS) --from $(FROM) --jobs $(SOAK_JOBS)

test-cluster: deps services
	$(NODE_BIN)/tsx deploy/cluster/cluster.test.ts

sim: deps
	$(USBPHONE) sim --state $(STATE) $(if $(GATEWAY),--gateway $(GATEWAY),)

serve: deps
	$(USBPHONE) serve all --state $(STATE)

image: deps
	$(USBPHONE) image --serial SN-0000001 --state $(STATE) --out $(STATE)/factory.img --fuses $(STATE)/factory.fuses --master-key $(STATE)/master.key

inspect: deps
	@if [ ! -e "$(IMAGE)" ]; then echo "no $(IMAGE): run 'make sim' (the phone it plugs in) or 'make image' (then make inspect IMAGE=$(STATE)/factory.img)"; exit 2; fi
	$(USBPHONE) inspect $(IMAGE) $(if $(FUSES),--fuses $(FUSES),$(if $(filter $(STATE)/phone.img,$(IMAGE)),$(if $(wildcard $(STATE)/phone.fuses),--fuses $(STATE)/phone.fuses,),))

bench: deps
	@for f in bench/*.bench.ts; do echo "== $$f"; $(NODE_BIN)/tsx $$f || exit 1; done

# A million phones in one run (issue 15): the phones' heap is bigger than node's default limit.
SCALE_DEVICES ?= 1000000
bench-scale: deps
	node --max-old-space-size=16384 bin/usbphone.js sim --devices $(SCALE_DEVICES) --concurrency 64

bench-scale-quick: deps
	node --max-old-space-size=4096 bin/usbphone.js sim --devices 10000 --concurrency 64

bench-held: deps
	$(NODE_BIN)/tsx bench/held.bench.ts

clean:
	rm -rf $(STATE) tmp
