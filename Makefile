# The two commands a newcomer types: `make serve` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
CONFIG ?= conf/default.toml
APT_PACKAGES := libdb5.3-dev gcc make

.PHONY: install serve test sim sim-scale bench lint clean

# Install those of the Debian packages $(1) that are missing (apt-get update first), then
# stop and disable the system services $(2) their install may have started.
define apt_ensure
	@missing=""; for p in $(1); do \
	  dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing system packages:$$missing"; \
	  SUDO=""; [ "$$(id -u)" -eq 0 ] || SUDO=sudo; \
	  $$SUDO apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing || exit 1; \
	  for s in $(2); do \
	    $$SUDO systemctl disable -q $$s >/dev/null 2>&1 || true; \
	    $$SUDO systemctl stop $$s >/dev/null 2>&1 || true; done; \
	fi
endef

install: $(STAMP)

$(STAMP): setup.cfg pyproject.toml
	$(call apt_ensure,$(APT_PACKAGES),)
	@[ -x $(BIN)/python ] || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	BERKELEYDB_DIR=/usr $(BIN)/python -m pip install -q -e '.[test,bench]'
	@touch $(STAMP)

serve: install
	$(BIN)/seda-dynamo serve --config $(CONFIG)

test: install
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q -n 2 --dist worksteal

# The deterministic simulator (seda_dynamo/sim): SEEDS seeds from SEED, of NODES nodes,
# under the FAULTS nemesis (calm, default, harsh: seda_dynamo/sim/nemesis.py);
# any seed with an anomaly replays exactly with SEED=that SEEDS=1.
SEED  ?= 0
SEEDS ?= 100
NODES ?= 3
FAULTS ?= default

sim: install
	$(BIN)/python -m seda_dynamo.sim --seed $(SEED) --seeds $(SEEDS) --nodes $(NODES) --faults $(FAULTS)

# The re-injection demonstration (issue 13): each patch of tests/sim/reinjected undoes one
# fixed bug in a temp copy of the tree; the simulator (up to MAX_SEEDS seeds of 5 nodes)
# and the fuzzers run there, and say which finds it after how many seeds or cases.
MAX_SEEDS ?= 20
.PHONY: reinject
reinject: install
	$(BIN)/python -m seda_dynamo.sim.reinject --max-seeds $(MAX_SEEDS)

# Scale by simulation (seda_dynamo/sim/scale.py): a join's gossip rounds, the view's
# bytes and partition balance at 50 and 200 nodes (3 seeds each) and 500 (1 seed, about
# 15 minutes), a join's transfer time at 50; rewrites the Scale section of
# seda_dynamo/sim/report.md and its plot.
sim-scale: install
	$(BIN)/python -m seda_dynamo.sim.scale

# The peers seda-dynamo is measured against (bench/peers.py). Debian starts their system
# services on install; they are stopped and disabled: the benchmarks start their own.
BENCH_APT_PACKAGES := etcd-server redis-server

bench: install
	$(call apt_ensure,$(BENCH_APT_PACKAGES),etcd redis-server)
	BERKELEYDB_DIR=/usr $(BIN)/python -m pip install -q -e '.[bench,plots]'
	$(BIN)/python -m bench.report

lint: install
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .hypothesis .benchmarks .ruff_cache

# The fault-injection suite (tests/faults) with long schedules (about 8 minutes), the
# fuzzers (tests/fuzz) ten times longer (one node's handlers and a simulated cluster's
# node: 8 minutes on a busy 2-core machine; a real node: 200 s), then the memory soak: a node
# at 80% of its peak for 10 minutes, RSS per stage (bench/soak.py).
.PHONY: soak
soak: install
	SEDA_SOAK=1 $(BIN)/python -m pytest tests/faults -q -o faulthandler_timeout=0
	SEDA_SOAK=1 $(BIN)/python -m pytest tests/fuzz -q -o faulthandler_timeout=0
	$(BIN)/python -m bench.soak
