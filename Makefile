# make test  — installs what the tests need when missing, then vets and runs
#              every test under the race detector (real Caddy, real Redis).
# make run   — the quick start: Caddy with the memory store on localhost.
# make bench — the go test benchmarks (handler and store, both stores).

GO          ?= go
STATICCHECK ?= honnef.co/go/tools/cmd/staticcheck@v0.8.2
SUDO        := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: test deps vet build run bench clean fuzz

test: deps vet
	$(GO) test -race -count=1 -timeout 40m ./...

# deps installs system packages with apt-get only when they are missing.
deps:
	@command -v redis-server >/dev/null 2>&1 || { \
		echo "installing redis-server"; \
		$(SUDO) apt-get update -qq && $(SUDO) DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null; }
	@# Debian starts a system redis on install; tests run their own on free ports.
	$(GO) mod download

vet:
	@unformatted=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
		if [ -n "$$unformatted" ]; then echo "gofmt needed: $$unformatted"; exit 1; fi
	$(GO) vet ./...
	$(GO) run $(STATICCHECK) ./...

build:
	$(GO) build -o bin/caddy ./cmd/caddy

run:
	@test -n "$$JWT_SECRET" || { echo "set JWT_SECRET (e.g. export JWT_SECRET=\$$(openssl rand -hex 32))"; exit 1; }
	$(GO) run ./cmd/caddy run --config Caddyfile.example

bench: deps
	$(GO) test -run '^$$' -bench . -benchmem ./handlers/ ./store/

clean:
	rm -rf bin

# fuzz runs each fuzz target for FUZZTIME (seed corpora under testdata/fuzz run in every `go test`).
FUZZTIME ?= 30s
fuzz:
	$(GO) test -run '^$$' -fuzz '^FuzzDecodeCreate$$' -fuzztime $(FUZZTIME) ./internal/validate/
	$(GO) test -run '^$$' -fuzz '^FuzzDecodeSubmit$$' -fuzztime $(FUZZTIME) ./internal/validate/
	$(GO) test -run '^$$' -fuzz '^FuzzVerifyHeader$$' -fuzztime $(FUZZTIME) ./internal/auth/
	$(GO) test -run '^$$' -fuzz '^FuzzCaddyfile$$' -fuzztime $(FUZZTIME) .
