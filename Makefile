# Developer and CI targets for Shoal. Run `make help` for the list.

GO       ?= go
FUZZTIME ?= 20s
IMAGE    ?= shoal/gridnode
VERSION  ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
BIN      := bin

.PHONY: help test test-process fuzz bench vet lint build image

help:
	@echo "make test          unit and in-process cluster tests, with the race detector"
	@echo "make test-process  tests that run real gridnode processes (kill -9, SIGTERM)"
	@echo "make fuzz          every fuzz target for FUZZTIME ($(FUZZTIME)) each"
	@echo "make bench         benchmarks"
	@echo "make vet           go vet, including the process tests"
	@echo "make lint          gofmt check and go vet"
	@echo "make build         static gridnode binary in $(BIN)/"
	@echo "make image         FROM scratch Docker image $(IMAGE):$(VERSION) of that binary"

test:
	$(GO) test -race -count=1 ./...

test-process:
	$(GO) test -race -count=1 -timeout 5m -tags process ./tests/process/...

# Fuzz targets are listed per package by `go test -list`; -fuzz takes one
# package and one target at a time.
fuzz:
	@set -e; \
	out=$$($(GO) test -list 'Fuzz.*' ./...) || { echo "$$out"; exit 1; }; \
	list=$$(echo "$$out" | awk '/^Fuzz/ { f[n++] = $$1; next } /^ok/ { for (i = 0; i < n; i++) print $$2 "," f[i]; n = 0 }'); \
	if [ -z "$$list" ]; then echo "no fuzz targets"; exit 0; fi; \
	for pf in $$list; do \
		pkg=$${pf%%,*}; fn=$${pf#*,}; \
		echo "==> fuzz $$pkg $$fn for $(FUZZTIME)"; \
		$(GO) test -run '^$$' -fuzz "^$$fn$$" -fuzztime $(FUZZTIME) $$pkg; \
	done

bench:
	$(GO) test -run '^$$' -bench . -benchmem ./...

vet:
	$(GO) vet ./...
	$(GO) vet -tags process ./tests/...

lint: vet
	@out=$$(gofmt -l .); if [ -n "$$out" ]; then echo "gofmt -l reports unformatted files:"; echo "$$out"; exit 1; fi

build:
	CGO_ENABLED=0 GOOS=linux $(GO) build -trimpath -ldflags "-s -w -X main.version=$(VERSION)" -o $(BIN)/gridnode ./cmd/gridnode

# The binary is built here on the host and copied into an empty image, so
# that nothing needs to be pulled.
image: build
	docker build -t $(IMAGE):$(VERSION) -t $(IMAGE):latest .
