# btrfsdio: see README.md. Everything runs as root on Debian 12 with Go.
GO      ?= go
BIN     ?= bin/btrfsdio
VERSION := $(shell git describe --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -X main.version=$(VERSION)

.PHONY: all build vet unit fuzz powercut check check-full check-modes check-peer check-peer-quick peer-selftest test demo bench bench-vm bench-vm-loop review install clean

all: build

build:
	CGO_ENABLED=0 $(GO) build -ldflags "$(LDFLAGS)" -o $(BIN) ./cmd/btrfsdio

vet:
	@bad=$$(gofmt -l $$(git ls-files '*.go')); [ -z "$$bad" ] || { echo "gofmt: $$bad"; exit 1; }
	$(GO) vet ./...

# Unit and in-process tests, race detector on.
unit:
	$(GO) test -race -timeout 45m ./...

# The on-disk parsers under the fuzzer, briefly (their seed corpora also run
# as plain tests in unit). The structure-aware targets recompute the
# checksums after mutating, so inputs reach the range checks and the open
# path. No minimisation: it stalls short runs, and a crashing input is saved
# under testdata/fuzz either way.
# Each target's budget is a count of executions (about 12 s each on the
# 2-core CI machine), not a duration: go1.26's coordinator can report a
# duration's own end as "context deadline exceeded" and fail a target that
# found nothing (go.dev/issue/75804, fixed in go1.27). FUZZTIME=5m for a
# longer hunt overrides every budget (and may hit that race once).
FUZZTIME ?=
fuzz_one = $(GO) test -run '^$$' -fuzzminimizetime 0 \
	-fuzztime $(if $(FUZZTIME),$(FUZZTIME),$(3)) -fuzz '^$(1)$$' $(2)
fuzz:
	$(call fuzz_one,FuzzDecodeSuperblock,./raid,200000x)
	$(call fuzz_one,FuzzSuperblockImage,./raid,200000x)
	$(call fuzz_one,FuzzDecodeMeta,./btrfsdio,250000x)
	$(call fuzz_one,FuzzDecodeMetaSealed,./btrfsdio,100000x)
	$(call fuzz_one,FuzzCheckImage,./btrfsdio,50000x)
	$(call fuzz_one,FuzzDecodeMetaLog,./btrfsdio,120000x)

# The power-loss replay harness (internal/powercut, after dm-log-writes and
# CrashMonkey) over the whole matrix: nine profiles x {cow, cow+datasum,
# nocow} x {bounce, zerocopy}. Every device write and flush is recorded; the
# images a power cut leaves at every flush (and around it, and at random
# points) are rebuilt, mounted, checked and read back against the model.
# Ends with "powercut: N cut points, M scenarios, F failures", exit 1 when F
# is not 0. GOFLAGS=-tags=nobarrier drops the commit's barriers: it must
# fail. POWERCUT_ARGS: -seed N, -scenario NAME, -maxcuts N, -j N.
POWERCUT_ARGS ?=
powercut:
	$(GO) build -o bin/powercut ./cmd/powercut
	bin/powercut $(POWERCUT_ARGS)

# The real device: the xfstests-style suite (tests/README.md), natively when
# this host has /dev/ublk-control, else in the VM (Debian's 6.12 kernel under
# qemu, tests/run-vm). CHECK_ARGS picks tests: make check CHECK_ARGS="-g quick".
CHECK_ARGS ?= -g auto
CHECK_TIMEOUT ?= 3600
check:
	@if [ -c /dev/ublk-control ]; then \
		$(MAKE) build && cd tests && BTRFSDIO_BIN=$(CURDIR)/$(BIN) ./check $(CHECK_ARGS); \
	else \
		tests/run-vm --timeout $(CHECK_TIMEOUT) -- $(CHECK_ARGS); \
	fi

# The whole matrix: nine profiles x {bounce, zerocopy} x {nodatasum, datasum}
# (tests/full.config; many hours under TCG, not in CI).
check-full:
	$(MAKE) check CHECK_ARGS="-c full.config -g auto" CHECK_TIMEOUT=172800

# The suite in upstream's later answers to the bug (issue 18): --dio
# fallback and --dio iomap-bounce (tests/modes.config). Not in `make check`,
# to keep CI short; dio/004 there adds one device in each.
check-modes:
	$(MAKE) check CHECK_ARGS="-c modes.config -g auto"

# Peer suites (issue 16): fstests on btrfsdio devices and on kernel loop
# devices over the same kind of images, same VM run, ext4 and xfs x {loop,
# bounce/raid1, zerocopy/raid10}; Debian 12 guest from scripts/peer-rootfs.sh
# (cached). PEER_TESTS="generic/091 generic/761" picks tests. Results and
# summary.md in results/peer/; fails when a test fails on ours only.
check-peer:
	scripts/peer-check

# The CI subset (scripts/peer/quick.list): ext4, loop vs bounce/raid1; then
# ublksrv's list next to ours (ublklist).
check-peer-quick:
	scripts/peer-check --quick

# The peer summary generator on fake fstests reports (no VM).
peer-selftest:
	scripts/peer/summary-test

# The README's test command (.ci/run): then the peer suites' summary
# generator on fake reports and the quick fstests subset, ours vs loop.
test: vet unit fuzz check peer-selftest check-peer-quick

# The README's main command: the bug and the fix on a real ublk device.
demo:
	scripts/e2e.sh demo --timeout 1200

# The seed's table for the in-process engine, plus the Go benchmark with
# allocations per request.
bench: build
	./$(BIN) bench --rounds 5 --json bench.json --svg bench.svg
	$(GO) test -run '^$$' -bench . -benchmem -benchtime 5x ./btrfsdio

# The same table on the real ublk device in the VM, with fio, next to the
# backing file and the kernel loop device, and in the same rounds the
# kernel's own btrfs (Debian's mkfs.btrfs, the 6.12 btrfs module) and an
# fsync-heavy ext4 job (scripts/guest/bench, kbench.sh; BENCH_ROUNDS,
# BENCH_SIZE). Results in .vm-bench/results/bench-vm.{txt,json}.
BENCH_ROUNDS ?= 3
BENCH_SIZE ?= 128M
bench-vm:
	scripts/e2e.sh bench --module loop --module btrfs --add-bin /usr/sbin/mkfs.btrfs \
		--workdir .vm-bench --timeout 5400 \
		--env BENCH_ROUNDS=$(BENCH_ROUNDS) --env BENCH_SIZE=$(BENCH_SIZE)

# The ublk data plane against its references (scripts/guest/bench-loop): our
# loop target next to ublksrv's (built by scripts/ublksrv-build.sh) and the
# kernel loop device, same tmpfs file, 1 and 2 queues, rounds interleaved,
# ratios printed, with our server's per-request profile. BENCH_BASE=COMMIT
# adds the base-qN columns: btrfsdio built from that commit, same run.
# Results in .vm-bench-loop/results/ (bench-loop.txt, profile/).
BENCH_LOOP_ROUNDS ?= 1
BENCH_LOOP_RUNTIME ?= 3
BENCH_BASE ?=
bench-vm-loop:
	scripts/bench-vm-loop.sh --rounds $(BENCH_LOOP_ROUNDS) --runtime $(BENCH_LOOP_RUNTIME) --base "$(BENCH_BASE)"

# Hold the Go against the seed patch, hunk by hunk, and against upstream's
# later diffs the port follows (fails on drift).
review:
	scripts/review -q
	scripts/review-upstream -q

# make install [PREFIX=/usr/local] [DESTDIR=]: the binary, the systemd unit
# template btrfsdio@.service (its paths set to BINDIR), the man page and the
# bash and zsh completions -- those three made by the built binary from its
# own help texts, so they cannot drift -- the logrotate config for
# /var/log/btrfsdio and an example /etc/btrfsdio/ID.conf.
PREFIX      ?= /usr/local
SYSCONFDIR  ?= /etc
BINDIR      ?= $(PREFIX)/sbin
MANDIR      ?= $(PREFIX)/share/man
UNITDIR     ?= $(PREFIX)/lib/systemd/system
BASHCOMPDIR ?= $(PREFIX)/share/bash-completion/completions
ZSHCOMPDIR  ?= $(PREFIX)/share/zsh/site-functions
DOCDIR      ?= $(PREFIX)/share/doc/btrfsdio
install: build
	install -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(MANDIR)/man8 $(DESTDIR)$(UNITDIR) \
		$(DESTDIR)$(BASHCOMPDIR) $(DESTDIR)$(ZSHCOMPDIR) $(DESTDIR)$(DOCDIR) \
		$(DESTDIR)$(SYSCONFDIR)/logrotate.d
	install -d -m 0755 $(DESTDIR)$(SYSCONFDIR)/btrfsdio
	install -m 0755 $(BIN) $(DESTDIR)$(BINDIR)/btrfsdio
	$(abspath $(BIN)) help --man >$(DESTDIR)$(MANDIR)/man8/btrfsdio.8
	$(abspath $(BIN)) completion bash >$(DESTDIR)$(BASHCOMPDIR)/btrfsdio
	$(abspath $(BIN)) completion zsh >$(DESTDIR)$(ZSHCOMPDIR)/_btrfsdio
	sed 's|@BINDIR@|$(BINDIR)|g' scripts/btrfsdio@.service >$(DESTDIR)$(UNITDIR)/btrfsdio@.service
	install -m 0644 scripts/btrfsdio.logrotate $(DESTDIR)$(SYSCONFDIR)/logrotate.d/btrfsdio
	install -m 0644 scripts/btrfsdio-example.conf $(DESTDIR)$(DOCDIR)/example.conf
	chmod 0644 $(DESTDIR)$(MANDIR)/man8/btrfsdio.8 $(DESTDIR)$(BASHCOMPDIR)/btrfsdio \
		$(DESTDIR)$(ZSHCOMPDIR)/_btrfsdio $(DESTDIR)$(UNITDIR)/btrfsdio@.service

clean:
	rm -rf $(BIN) bin/powercut bin/review .vm-work .vm-bench .vm-bench-loop results bench.json bench.svg
