# make test  — installs what the tests need when missing, then vets and runs
#              every test under the race detector (real Caddy, real Redis).
# make run   — the quick start: Caddy with the memory store on localhost.
# make bench — the go test benchmarks (handler and store, both stores; page weight;
#              submit → WebSocket watcher latency on real Caddy processes).
# make bench-harness — cmd/feedback-bench: throughput against Caddy's own ceiling,
#              answer latency, held-connection cost, Redis memory per session.
# make fuzz  — every fuzz target for FUZZTIME each.

GO          ?= go
STATICCHECK ?= honnef.co/go/tools/cmd/staticcheck@v0.8.2
SUDO        := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: test deps vet build run bench bench-harness clean fuzz

test: deps vet
	$(GO) test -race -count=1 -timeout 40m ./...

# deps installs system packages with apt-get only when they are missing.
deps:
	@command -v redis-server >/dev/null 2>&1 || { \
		echo "installing redis-server"; \
		$(SUDO) apt-get update -qq && $(SUDO) DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null; }
	@# Debian starts a system redis on install; tests run their own on free ports.
	@# The answer page's browser tests drive Debian's chromium (never a downloaded
	@# browser), with a CJK font so that the zh pages render, and inject axe-core.
	@{ command -v chromium >/dev/null 2>&1 && fc-list 2>/dev/null | grep -qi "wenquanyi\|noto sans cjk"; } || { \
		echo "installing chromium and a CJK font"; \
		$(SUDO) apt-get update -qq && $(SUDO) DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium fonts-wqy-microhei >/dev/null; }
	@test -f e2e/browserjs/node_modules/axe-core/axe.min.js || { command -v npm >/dev/null 2>&1 || { \
		echo "installing npm"; $(SUDO) apt-get update -qq && $(SUDO) DEBIAN_FRONTEND=noninteractive apt-get install -y -qq npm >/dev/null; }; \
		cd e2e/browserjs && npm ci --no-audit --no-fund --loglevel=error; }
	@# The MCP tests' real clients (TS SDK, mcp-remote, Inspector, conformance, and Node 22 from npm), pinned by their lock file.
	@test e2e/mcpjs/node_modules/.package-lock.json -nt e2e/mcpjs/package-lock.json || { cd e2e/mcpjs && npm ci --no-audit --no-fund --loglevel=error; }
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
	$(GO) test -run '^$$' -bench . -benchmem ./handlers/ ./store/ ./ui/
	$(GO) test -run '^$$' -bench SubmitToWatcher -benchtime 200x ./e2e/

# bench-harness: the whole system on this machine (real Caddy processes and Redis),
# as a Markdown report; QUICK=1 for a short run.
bench-harness: deps
	$(GO) run ./cmd/feedback-bench $(if $(QUICK),-quick) -out bench-report.md

clean:
	rm -rf bin bench-report.md

# fuzz runs each fuzz target for FUZZTIME (seed corpora under testdata/fuzz run in every `go test`).
FUZZTIME ?= 30s
fuzz:
	$(GO) test -run '^$$' -fuzz '^FuzzDecodeCreate$$' -fuzztime $(FUZZTIME) ./internal/validate/
	$(GO) test -run '^$$' -fuzz '^FuzzDecodeSubmit$$' -fuzztime $(FUZZTIME) ./internal/validate/
	$(GO) test -run '^$$' -fuzz '^FuzzVerifyHeader$$' -fuzztime $(FUZZTIME) ./internal/auth/
	$(GO) test -run '^$$' -fuzz '^FuzzCaddyfile$$' -fuzztime $(FUZZTIME) .
	$(GO) test -run '^$$' -fuzz '^FuzzRenderMarkdown$$' -fuzztime $(FUZZTIME) ./ui/
	$(GO) test -run '^$$' -fuzz '^FuzzWSFirstMessage$$' -fuzztime $(FUZZTIME) ./handlers/
