# Every target does its own set-up: a fresh clone needs nothing but python3 (and apt for the
# database servers the tests start throwaway copies of).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
SYSDEPS := $(VENV)/.sysdeps-stamp
MF_MODULES := scripts/mineflayer/node_modules/.package-lock.json
PEER_MODULES := scripts/bench-peer/node_modules/.package-lock.json
PORT ?= 8080
# Node 22 that scripts/install-system-deps.sh installs when the machine's node is older.
export PATH := $(CURDIR)/.tools/bin:$(PATH)

.PHONY: run test test-fallback test-random fuzz lock token bench bench-capacity bench-path bench-history bench-cluster bench-regions chaos lint format demo cluster minecraft-demo clean

# requirements.lock pins every package (make lock rewrites it); a dependency added to
# pyproject.toml but not yet locked still installs, unpinned, until the next `make lock`.
$(STAMP): pyproject.toml requirements.lock
	test -d $(VENV) || $(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c requirements.lock -e '.[server,dev]'
	touch $(STAMP)

$(SYSDEPS): scripts/install-system-deps.sh | $(STAMP)
	bash scripts/install-system-deps.sh
	touch $(SYSDEPS)

$(MF_MODULES): scripts/mineflayer/package-lock.json | $(SYSDEPS)
	cd scripts/mineflayer && npm ci --no-audit --no-fund --loglevel=error

$(PEER_MODULES): scripts/bench-peer/package-lock.json | $(SYSDEPS)
	cd scripts/bench-peer && npm ci --no-audit --no-fund --loglevel=error

## run: the gateway on embedded defaults (SQLite, in-process bus and cache)
run: $(STAMP)
	@bash scripts/run.sh $(PORT)

# The WebSocket tests, run a second time by `make test` on aiohttp's public paths only
# (GATEWAY_DIRECT_DISPATCH=0: the fallback when its internals change, see gateway/direct_ws.py).
WS_TESTS := tests/integration/test_websockets.py tests/integration/test_input_limits.py \
	tests/integration/test_slow_bot.py tests/integration/test_slow_viewer.py \
	tests/integration/test_oversized_close.py tests/integration/test_client.py \
	tests/integration/test_token_expiry.py

## test: every test, against throwaway PostgreSQL/Redis servers the tests start; then the
## WebSocket tests again without direct dispatch
test: $(STAMP) $(SYSDEPS) $(MF_MODULES) $(PEER_MODULES)
	$(BIN)/ruff check gateway tests scripts
	$(BIN)/python -m pytest -q
	@$(MAKE) --no-print-directory test-fallback

## test-fallback: only the WebSocket tests without direct dispatch (aiohttp's public paths)
test-fallback: $(STAMP) $(SYSDEPS)
	GATEWAY_DIRECT_DISPATCH=0 $(BIN)/python -m pytest -q $(WS_TESTS)

## test-random: the same tests in a random order (pytest-randomly; SEED=N repeats an order)
test-random: $(STAMP) $(SYSDEPS) $(MF_MODULES) $(PEER_MODULES)
	$(BIN)/python -m pytest -q -p randomly $(if $(SEED),--randomly-seed=$(SEED),)

## lock: re-resolve pyproject.toml's ranges into requirements.lock (then run make test, commit both)
lock:
	PY=$(PY) bash scripts/lock.sh

## token: print a bearer token (ROLE=npc|viewer|admin SUB=name [TTL=seconds]); use make -s
token: $(STAMP)
	@$(BIN)/python -m gateway token --role $(or $(ROLE),npc) --sub $(or $(SUB),miner_1) $(if $(TTL),--ttl $(TTL),)

## fuzz: generated frames on both WebSocket endpoints of a real replica (FRAMES, default 100,000)
fuzz: $(STAMP)
	$(BIN)/python -m tests.fuzz --frames $(or $(FRAMES),100000) $(if $(SEED),--seed $(SEED),)

## demo: the gateway on embedded defaults with 50 simulated bots; prints the map URL
demo: $(STAMP)
	bash scripts/demo.sh

## minecraft-demo: a local Minecraft world, the gateway and wandering mineflayer bots (NPCS=5)
minecraft-demo: $(STAMP) $(MF_MODULES)
	PORT=$(PORT) bash scripts/minecraft-demo.sh

## bench: load benchmark (1,000 bots x 10 Hz + 200 viewers on PostgreSQL; QUICK=1 for a short run)
bench: $(STAMP) $(SYSDEPS) $(PEER_MODULES)
	$(BIN)/python scripts/bench.py $(if $(QUICK),--quick,) $(BENCH_ARGS)

## bench-capacity: highest updates/s at e2e p99 <= 550 ms: 1 process, 2 (+ Redis), Node.js peer
bench-capacity: $(STAMP) $(SYSDEPS) $(PEER_MODULES)
	$(BIN)/python scripts/bench_capacity.py $(BENCH_ARGS)

## bench-path: pathfinding throughput and event-loop lag; world model ingest and visibility
bench-path: $(STAMP)
	$(BIN)/python scripts/bench_path.py $(BENCH_ARGS)
	$(BIN)/python scripts/bench_world.py

## bench-history: event history (§6.5): seq numbering embedded vs Redis, recovery of 10,000 events
bench-history: $(STAMP) $(SYSDEPS)
	$(BIN)/python scripts/bench_history.py $(BENCH_ARGS)

## cluster: REPLICAS (default 3) replicas on 8081.. behind nginx on $(PORT), one PostgreSQL + Redis
cluster: $(STAMP) $(SYSDEPS)
	$(BIN)/python scripts/cluster.py --replicas $(or $(REPLICAS),3) --port $(PORT)

## bench-cluster: 3 replicas on one PostgreSQL + Redis (QUICK=1: 300 bots x 10 Hz + 30 viewers)
bench-cluster: $(STAMP) $(SYSDEPS)
	$(BIN)/python scripts/bench_cluster.py $(if $(QUICK),--quick,) $(BENCH_ARGS)
	$(BIN)/python scripts/bench_regions.py $(if $(QUICK),--replicas 2 4 --seconds 5,)

## bench-regions: inbound bus bytes per replica for 2-16 replicas, all-fleet vs region channels
bench-regions: $(STAMP) $(SYSDEPS)
	$(BIN)/python scripts/bench_regions.py

## chaos: soak under scheduled faults, 2 replicas behind nginx (MINUTES=10; exits 1 on loss)
chaos: $(STAMP) $(SYSDEPS)
	$(BIN)/python scripts/chaos.py --minutes $(or $(MINUTES),10) $(CHAOS_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check gateway tests scripts
	$(BIN)/ruff format --check gateway tests scripts

format: $(STAMP)
	$(BIN)/ruff format gateway tests scripts
	$(BIN)/ruff check --fix gateway tests scripts

clean:
	rm -rf $(VENV) .tools var .pytest_cache .ruff_cache test-artifacts
