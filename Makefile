# make test  — installs what the tests need when missing, then vets and runs
#              every test under the race detector (real Caddy, real Redis).
# make run   — the quick start: Caddy with the memory store on localhost.
# make bench — the go test benchmarks (handler and store, both stores; page weight;
#              submit → WebSocket watcher latency on real Caddy processes).
# make bench-harness — cmd/feedback-bench: throughput against Caddy's own ceiling,
#              answer latency, held-connection cost, Redis memory per session.
# make fuzz  — every fuzz target for FUZZTIME each.
# make xcaddy-check — build Caddy with xcaddy from this checkout, as most users
#              install the module, and serve /health from it once.

GO          ?= go
STATICCHECK ?= honnef.co/go/tools/cmd/staticcheck@v0.8.2
SUDO        := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: test deps vet build run bench bench-harness clean fuzz xcaddy-check

test: deps vet xcaddy-check
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
	@# A real OpenID provider (oidc-provider) for the login oidc tests, pinned by its lock file.
	@test e2e/oidcjs/node_modules/.package-lock.json -nt e2e/oidcjs/package-lock.json || { cd e2e/oidcjs && npm ci --no-audit --no-fund --loglevel=error; }
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

# xcaddy-check builds Caddy the way most users install this module
# (xcaddy build --with github.com/mcpfeedback/caddy-mcp-feedback=<checkout>),
# with the Caddy version go.mod names, checks that list-modules shows the
# handler and both stores, then runs it on a free loopback port with the
# memory store and asks /health once. Whatever happens, the process and the
# temporary directory are gone afterwards (trap).
# By default it compiles with plain `go build` flags and this machine's cgo
# setting, so that it shares Go's build cache with the e2e tests' build of
# ./cmd/caddy (CI compiles Caddy once); xcaddy's own defaults (-trimpath
# -ldflags "-w -s", no cgo) are `make xcaddy-check XCADDY_BUILD_FLAGS=
# XCADDY_CGO=0`, which compiles everything a second time.
XCADDY             ?= github.com/caddyserver/xcaddy/cmd/xcaddy@v0.4.5
XCADDY_BUILD_FLAGS ?= -buildvcs=false
XCADDY_CGO         ?= $(shell $(GO) env CGO_ENABLED)
MODULE             := github.com/mcpfeedback/caddy-mcp-feedback
xcaddy-check: SHELL := /bin/bash
xcaddy-check:
	@set -euo pipefail; \
	tmp=$$(mktemp -d); pid=""; \
	cleanup() { \
		if [ -n "$$pid" ] && kill -0 "$$pid" 2>/dev/null; then \
			kill "$$pid"; \
			for _ in $$(seq 100); do kill -0 "$$pid" 2>/dev/null || break; sleep 0.1; done; \
			kill -9 "$$pid" 2>/dev/null || true; \
		fi; \
		rm -rf "$$tmp"; \
	}; \
	trap cleanup EXIT; trap 'exit 130' INT TERM; \
	caddy_version=$$($(GO) list -m -f '{{.Version}}' github.com/caddyserver/caddy/v2); \
	echo "xcaddy-check: xcaddy build $$caddy_version --with $(MODULE)@v0.0.0=$(CURDIR)"; \
	start=$$(date +%s); \
	( cd "$$tmp" && XCADDY_GO_BUILD_FLAGS='$(XCADDY_BUILD_FLAGS)' CGO_ENABLED='$(XCADDY_CGO)' XCADDY_SETCAP=0 \
		$(GO) run $(XCADDY) build "$$caddy_version" --output "$$tmp/caddy" --with $(MODULE)@v0.0.0=$(CURDIR) ) >"$$tmp/build.log" 2>&1 \
		|| { tail -n 40 "$$tmp/build.log"; echo "xcaddy-check: xcaddy build failed"; exit 1; }; \
	echo "xcaddy-check: built in $$(( $$(date +%s) - start )) s"; \
	"$$tmp/caddy" list-modules >"$$tmp/modules"; \
	for m in http.handlers.mcp_feedback http.handlers.mcp_feedback.stores.memory http.handlers.mcp_feedback.stores.redis; do \
		grep -qx "$$m" "$$tmp/modules" || { echo "xcaddy-check: $$m is not in list-modules"; exit 1; }; \
	done; \
	for _ in $$(seq 20); do \
		port=$$(( 20000 + RANDOM % 40000 )); \
		(exec 3<>"/dev/tcp/127.0.0.1/$$port") 2>/dev/null || break; \
	done; \
	printf '{\n\tadmin off\n\tpersist_config off\n}\nhttp://127.0.0.1:%s {\n\tmcp_feedback {\n\t\tjwt_secret {env.JWT_SECRET}\n\t\tstore memory\n\t}\n}\n' "$$port" >"$$tmp/Caddyfile"; \
	JWT_SECRET=xcaddy-check-0123456789abcdef0123456789 HOME="$$tmp" XDG_CONFIG_HOME="$$tmp" XDG_DATA_HOME="$$tmp" \
		"$$tmp/caddy" run --config "$$tmp/Caddyfile" --adapter caddyfile >"$$tmp/caddy.log" 2>&1 & pid=$$!; \
	status=""; \
	for _ in $$(seq 300); do \
		kill -0 "$$pid" 2>/dev/null || break; \
		if { exec 3<>"/dev/tcp/127.0.0.1/$$port"; } 2>/dev/null; then \
			printf 'GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n' >&3; \
			status=$$(head -n 1 <&3 | tr -d '\r'); exec 3<&-; \
			break; \
		fi; \
		sleep 0.1; \
	done; \
	case "$$status" in \
		"HTTP/1.1 200 OK") echo "xcaddy-check: list-modules has the handler and both stores; GET /health: $$status";; \
		*) tail -n 40 "$$tmp/caddy.log"; echo "xcaddy-check: GET /health answered '$$status', want 200"; exit 1;; \
	esac
