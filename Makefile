# The README's commands. `make test` does the whole set-up on a fresh machine.
GO ?= go

.PHONY: test deps vet unit demo bench fuzz

test: deps vet unit

deps:
	./scripts/deps.sh

# go.mod must say what the code imports: `go mod tidy -diff` prints what
# tidy would change and fails if anything.
vet:
	$(GO) mod tidy -diff
	@test -z "$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))" || { gofmt -l .; echo "gofmt: files above need formatting"; exit 1; }
	$(GO) vet ./...

# -race everywhere: most packages run goroutines. Fuzz targets run their seed
# corpus here; `make fuzz` explores further.
unit:
	$(GO) test -race -timeout 20m ./...

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
