.PHONY: run build test bench
run: ## start a broker (when missing) and the service, with the example topology
	bash scripts/run.sh
build: ## the binary: bin/publisher (bin/publisher -help lists the configuration)
	go build -o bin/publisher ./cmd/publisher
test: ## gofmt, vet, and every test with -race against real brokers
	bash scripts/test.sh
bench: ## the side-by-side load comparison (a private broker with the management plugin)
	bash scripts/bench.sh
