# btrfsdio: see README.md. Everything runs as root on Debian 12 with Go.
GO      ?= go
BIN     ?= bin/btrfsdio
VERSION := $(shell git describe --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -X main.version=$(VERSION)

.PHONY: all build vet unit vm-test test demo bench review clean

all: build

build:
	CGO_ENABLED=0 $(GO) build -ldflags "$(LDFLAGS)" -o $(BIN) ./cmd/btrfsdio

vet:
	@bad=$$(gofmt -l $$(git ls-files '*.go')); [ -z "$$bad" ] || { echo "gofmt: $$bad"; exit 1; }
	$(GO) vet ./...

# Unit and in-process tests, race detector on.
unit:
	$(GO) test -race -timeout 45m ./...

# The real device: boots Debian's 6.12 kernel under qemu and runs the
# end-to-end guest script.
vm-test:
	scripts/e2e.sh e2e --timeout 2400

# The README's test command.
test: vet unit vm-test

# The README's main command: the bug and the fix on a real ublk device.
demo:
	scripts/e2e.sh demo --timeout 1200

# The seed's table for the in-process engine, plus the Go benchmark with
# allocations per request.
bench: build
	./$(BIN) bench --rounds 5 --json bench.json --svg bench.svg
	$(GO) test -run '^$$' -bench . -benchmem -benchtime 5x ./btrfsdio

# Hold the Go against the seed patch, hunk by hunk (fails on drift).
review:
	scripts/review -q

clean:
	rm -rf $(BIN) .vm-work bench.json bench.svg
