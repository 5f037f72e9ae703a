# The README's commands. `make test` does the whole set-up on a fresh machine.
GO ?= go

.PHONY: test deps vet bin images unit unit-early unit-late demo bench fuzz

# The image build mostly waits on the network and the disk, so the tests
# that do not need the image run beside it; the rest run after it.
test: deps vet bin
	$(MAKE) -j2 images unit-early
	$(MAKE) unit-late

deps:
	./scripts/deps.sh

# go.mod must say what the code imports: `go mod tidy -diff` prints what
# tidy would change and fails if anything.
vet:
	$(GO) mod tidy -diff
	@test -z "$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))" || { gofmt -l .; echo "gofmt: files above need formatting"; exit 1; }
	$(GO) vet ./...

# The faasnet binary, without -race, for the tests to run (FAASNET_BIN).
FAASNET_BIN := $(CURDIR)/bin/faasnet

# The Python function's image and its eStargz conversion, built once here by
# the binary into the caches every package's tests read: converting ~800 MB
# inside a race-instrumented test binary took 16 minutes. Building needs root
# and debootstrap; without them the tests that need the image skip.
bin:
	$(GO) build -o $(FAASNET_BIN) ./cmd/faasnet

images: bin
	@if [ "$$(id -u)" = 0 ] && command -v debootstrap >/dev/null; then \
		echo "$(FAASNET_BIN) image python --convert-cache"; \
		start=$$(date +%s); \
		$(FAASNET_BIN) image python --convert-cache || exit 1; \
		echo "images: $$(( $$(date +%s) - start ))s"; \
	else \
		echo "images: not root or no debootstrap, so no Python image: the tests that need it skip"; \
	fi

# -race wherever goroutines run: it finds races between goroutines, so the
# packages in NO_RACE (pure data structures, without one goroutine, which
# unit-early checks) run without it, ten times faster. Fuzz targets run
# their seed corpus here; `make fuzz` explores further. Not -v: go test then
# prints each package's time on its "ok" line. A package's tests get at most
# UNIT_TIMEOUT. The slowest packages come first, so that they do not run
# alone at the end while the other core idles (go test starts packages in
# the order given). LATE holds the packages whose tests need the Python
# image (e2e, demo, pyimage), and cluster, so that the two halves take
# about as long.
UNIT_TIMEOUT ?= 10m
NO_RACE = ./ftree ./forest ./placement ./stripe
LATE = ./e2e ./cluster ./demo ./pyimage
EARLY_FIRST = ./worker ./manager/store ./manager ./bench
MODULE = github.com/faasnet/faasnet
RACE_TEST = FAASNET_BIN=$(FAASNET_BIN) $(GO) test -race -timeout $(UNIT_TIMEOUT)

unit: unit-early unit-late

unit-early: bin
	@! grep -n -E '(^|[^a-zA-Z_.])go (func|[a-zA-Z_.]+\()' $(addsuffix /*.go,$(NO_RACE)) || { echo "unit: the packages above start goroutines: take them out of NO_RACE"; exit 1; }
	$(RACE_TEST) $(EARLY_FIRST) $$($(GO) list ./... | grep -v -x $(foreach p,$(NO_RACE) $(LATE),-e '$(MODULE)/$(p:./%=%)'))
	$(GO) test -timeout $(UNIT_TIMEOUT) $(NO_RACE)

unit-late: bin
	$(RACE_TEST) $(LATE)

demo:
	$(GO) run ./cmd/faasnet demo

# A short exploration of every fuzz target (FUZZTIME each).
FUZZTIME ?= 20s
fuzz:
	@for pkg in $$($(GO) list ./...); do \
		for f in $$($(GO) test -list 'Fuzz.*' $$pkg | grep '^Fuzz'); do \
			echo "fuzz $$pkg $$f"; $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) $$pkg || exit 1; \
		done; \
	done
